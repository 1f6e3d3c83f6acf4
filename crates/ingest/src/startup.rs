//! Mounts the publish route and builds the service.

use actix_web::{guard, web};
use service_kit::health::Health;
use service_kit::{App, Metrics, Settings, Shutdown};

use crate::extract;
use crate::routes::{self, IngestState};

/// Mounts `POST /event-stream` (only POST: the standalone binary mounts the
/// gateway's GET on the same path).
pub fn configure(cfg: &mut web::ServiceConfig, state: IngestState, max_body_bytes: usize) {
    let resource = web::resource("/event-stream")
        .guard(guard::Post())
        .app_data(web::Data::new(state));
    cfg.service(
        extract::with_body_limits(resource, max_body_bytes).route(web::post().to(routes::publish)),
    );
}

/// Builds the ingest service over `bus`, bound but not yet running.
pub fn build(settings: &Settings, bus: bus::Bus) -> anyhow::Result<App> {
    let metrics = Metrics::new();
    let state = IngestState {
        bus: bus.clone(),
        limits: settings.publish_limits(),
        metrics: metrics.clone(),
    };
    let health = Health {
        bus,
        shutdown: Shutdown::new(),
        metrics,
    };
    let max_body_bytes = settings.publish.max_body_bytes;
    service_kit::serve(&settings.http, health, move |cfg| {
        configure(cfg, state.clone(), max_body_bytes);
        cfg.service(
            web::resource("/event-stream").route(service_kit::health::method_not_allowed("POST")),
        );
    })
}
