//! Turning a JSend value into an HTTP response.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use shared_types::JSend;

/// A JSON response with the given status and JSend body.
pub fn respond(status: StatusCode, body: &JSend) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(ContentType::json())
        .body(body.to_json())
}

/// `fail` with a status, for the caller's mistakes.
pub fn fail(status: StatusCode, data: impl Into<String>) -> HttpResponse {
    respond(status, &JSend::fail(data))
}

/// `error` with a status, for ours.
pub fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    respond(status, &JSend::error(message))
}
