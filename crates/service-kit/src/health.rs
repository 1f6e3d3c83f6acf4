//! Liveness, readiness, metrics and JSend fallbacks, mounted on every service.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::jsend;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// What the operational routes need to answer.
#[derive(Debug, Clone)]
pub struct Health {
    pub bus: bus::Bus,
    pub shutdown: Shutdown,
    pub metrics: Metrics,
}

/// Mounts `/healthz`, `/readyz` and `/metrics`.
pub fn configure(cfg: &mut web::ServiceConfig, health: Health) {
    cfg.app_data(web::Data::new(health))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    jsend::respond(StatusCode::OK, &shared_types::JSend::success("alive"))
}

async fn readyz(health: web::Data<Health>) -> HttpResponse {
    if health.shutdown.is_draining() {
        return jsend::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if !health.bus.is_ready().await {
        return jsend::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("event bus ({}) not connected", health.bus.engine_name()),
        );
    }
    jsend::respond(StatusCode::OK, &shared_types::JSend::success("ready"))
}

async fn metrics(health: web::Data<Health>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(health.metrics.render(&health.bus))
}

/// JSend 404 for any unknown path.
pub async fn not_found() -> HttpResponse {
    jsend::fail(StatusCode::NOT_FOUND, "no such endpoint")
}

/// A route answering JSend 405 with the `Allow` header HTTP requires, for
/// a known path asked with a method it does not serve.
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::route().to(move || async move {
        let mut response = jsend::fail(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        response
    })
}
