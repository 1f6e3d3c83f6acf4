//! The embedded default: publishing and streaming in one process, on one
//! port, over the in-memory bus (or Redis, if configured).
//!
//! It mounts the ingest and gateway apps side by side: `POST /event-stream`
//! goes to ingest, `GET /event-stream` to the gateway, exactly as nginx
//! routes them in the distributed deployment.

use actix_web::web;
use service_kit::health::Health;
use service_kit::{App, Metrics, Settings, Shutdown};

/// Builds the combined app over `bus`, bound but not yet running.
pub fn build(settings: &Settings, bus: bus::Bus) -> anyhow::Result<App> {
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let ingest_state = ingest::IngestState {
        bus: bus.clone(),
        limits: settings.publish_limits(),
        metrics: metrics.clone(),
    };
    let gateway_state =
        stream_gateway::GatewayState::new(settings, bus.clone(), shutdown.clone(), metrics.clone());
    let max_body_bytes = settings.publish.max_body_bytes;
    let health = Health {
        bus,
        shutdown,
        metrics,
    };
    let lean = stream_gateway::routes::LeanSubscribe(gateway_state.clone());
    service_kit::serve_with_stream(
        &settings.http,
        health,
        move |cfg| {
            ingest::configure(cfg, ingest_state.clone(), max_body_bytes);
            stream_gateway::configure(cfg, gateway_state.clone());
            cfg.service(
                web::resource("/event-stream")
                    .route(service_kit::health::method_not_allowed("GET, POST")),
            );
        },
        Some(lean),
    )
}
