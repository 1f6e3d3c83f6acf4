//! Mounts the publish route and builds the service.

use actix_web::{guard, web};
use operations::Shared;
use service_kit::compose::{self, NoStreamRoute};
use service_kit::cors::Policy;
use service_kit::settings::HttpSettings;
use service_kit::{Access, App, EVENT_STREAM_PATH, Part, Settings};

use crate::extract;
use crate::limit::PublishLimit;
use crate::metrics::PublishMetrics;
use crate::routes::{self, IngestState};
use crate::settings::PublishSettings;

/// The publish part: `POST /event-stream` over `shared`'s bus (only POST:
/// the standalone binary mounts the gateway's GET on the same path), with
/// its metrics registered in `shared`'s registry and `http.cors` deciding
/// which other origins may publish and `access` whether a token must.
/// With `publish.rate_limit_per_sec` set, its pruning task starts here:
/// call it within a Tokio runtime.
pub fn part(
    settings: &PublishSettings,
    http: &HttpSettings,
    access: &Access,
    shared: &Shared,
) -> Part {
    let limit = PublishLimit::new(settings.rate_limit_per_sec, settings.rate_limit_burst);
    if let Some(limit) = &limit {
        limit.spawn_pruner();
    }
    let state = IngestState {
        bus: shared.bus.clone(),
        limits: settings.limits(),
        metrics: PublishMetrics::register(&shared.metrics, limit.as_ref()),
        cors: Policy::new(&http.cors),
        access: access.clone(),
        limit,
        idempotency: settings.idempotency(),
    };
    let max_body_bytes = settings.max_body_bytes;
    Part::new("POST", move |cfg| {
        let resource = web::resource(EVENT_STREAM_PATH)
            .guard(guard::Post())
            .app_data(web::Data::new(state.clone()));
        cfg.service(
            extract::with_body_limits(resource, max_body_bytes)
                .route(web::post().to(routes::publish)),
        );
    })
}

/// Builds the ingest service over `bus`, bound but not yet running.
pub fn build(settings: &Settings<PublishSettings>, bus: bus::Bus) -> anyhow::Result<App> {
    let shared = Shared::new(bus);
    let publish = part(&settings.own, &settings.http, &settings.access, &shared);
    compose::bind::<NoStreamRoute>(&settings.http, shared, vec![publish], None)
}
