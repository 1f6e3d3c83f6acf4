//! Liveness, readiness, metrics and JSend fallbacks, mounted on every service.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use shared_types::jsend;

use crate::Shared;

/// Mounts `/healthz`, `/readyz` and `/metrics`.
pub fn configure(cfg: &mut web::ServiceConfig, health: Shared) {
    cfg.app_data(web::Data::new(health))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    jsend::respond(StatusCode::OK, &shared_types::JSend::success("alive"))
}

async fn readyz(health: web::Data<Shared>) -> HttpResponse {
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

async fn metrics(health: web::Data<Shared>) -> HttpResponse {
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
pub fn method_not_allowed(allow: String) -> actix_web::Route {
    web::route().to(move || {
        let allow = allow.clone();
        async move {
            let mut response = jsend::fail(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::ALLOW, value);
            }
            response
        }
    })
}
