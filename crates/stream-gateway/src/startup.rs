//! Mounts the stream route and builds the service.

use actix_web::{guard, web};
use service_kit::health::Health;
use service_kit::{App, Metrics, Settings, Shutdown};

use crate::routes::{self, GatewayState, LeanSubscribe};

/// Mounts `GET /event-stream` (only GET: the standalone binary mounts the
/// ingest's POST on the same path).
pub fn configure(cfg: &mut web::ServiceConfig, state: GatewayState) {
    cfg.service(
        web::resource(routes::PATH)
            .guard(guard::Get())
            .app_data(web::Data::new(state))
            .route(web::get().to(routes::subscribe)),
    );
}

/// Builds the gateway over `bus`, bound but not yet running.
pub fn build(settings: &Settings, bus: bus::Bus) -> anyhow::Result<App> {
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let state = GatewayState::new(settings, bus.clone(), shutdown.clone(), metrics.clone());
    let health = Health {
        bus,
        shutdown,
        metrics,
    };
    let lean = LeanSubscribe(state.clone());
    service_kit::serve_with_stream(
        &settings.http,
        health,
        move |cfg| {
            configure(cfg, state.clone());
            cfg.service(
                web::resource(routes::PATH).route(service_kit::health::method_not_allowed("GET")),
            );
        },
        Some(lean),
    )
}
