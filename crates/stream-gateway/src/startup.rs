//! Mounts the stream route and builds the service.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use actix_web::{guard, web};
use service_kit::health::Health;
use service_kit::{App, Metrics, Settings, Shutdown};

use crate::routes::{self, LeanSubscribe};
use crate::stream::StreamConfig;

/// What the stream handler needs.
#[derive(Debug, Clone)]
pub struct GatewayState {
    pub bus: bus::Bus,
    pub stream: StreamConfig,
    pub max_topics: usize,
    /// Streams this process may hold open; see [`crate::error::StreamError::Full`].
    pub max_streams: usize,
    pub open_streams: Arc<AtomicUsize>,
    pub shutdown: Shutdown,
    pub metrics: Metrics,
}

impl GatewayState {
    pub fn new(settings: &Settings, bus: bus::Bus, shutdown: Shutdown, metrics: Metrics) -> Self {
        Self {
            bus,
            stream: StreamConfig {
                keepalive: Duration::from_millis(settings.stream.keepalive_ms),
                retry: Duration::from_millis(settings.stream.retry_ms),
                // Half the grace period: streams end well before the cut.
                shutdown_spread: settings.shutdown_grace() / 2,
            },
            max_topics: settings.stream.max_topics,
            max_streams: settings.max_streams(),
            open_streams: Arc::new(AtomicUsize::new(0)),
            shutdown,
            metrics,
        }
    }
}

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
