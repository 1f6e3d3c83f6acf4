//! Mounts the stream route and builds the service.

use actix_web::{guard, web};
use service_kit::compose;
use service_kit::{App, Part, Settings, Shared};

use crate::page;
use crate::routes::{self, GatewayState, LeanSubscribe};

/// The stream part: `GET /event-stream` over `shared`'s bus (only GET: the
/// standalone binary mounts the ingest's POST on the same path), the live
/// page at `/`, and the stream route for the connection layer to serve on
/// the socket itself.
pub fn part(settings: &Settings, shared: &Shared) -> (Part, LeanSubscribe) {
    let state = GatewayState::new(settings, shared);
    let lean = LeanSubscribe(state.clone());
    let part = Part::new("GET", move |cfg| {
        cfg.service(
            web::resource(routes::PATH)
                .guard(guard::Get())
                .app_data(web::Data::new(state.clone()))
                .route(web::get().to(routes::subscribe)),
        );
        page::configure(cfg);
    });
    (part, lean)
}

/// Builds the gateway over `bus`, bound but not yet running.
pub fn build(settings: &Settings, bus: bus::Bus) -> anyhow::Result<App> {
    let shared = Shared::new(bus);
    let (stream, lean) = part(settings, &shared);
    compose::bind(&settings.http, shared, vec![stream], Some(lean))
}
