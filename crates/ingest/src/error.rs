//! Every way a publish fails, rendered as JSend.

use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, ResponseError};
use service_kit::Refusal;
use shared_types::jsend;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// 400, JSend `fail`: the request broke a rule; says which.
    #[error("request validation error: {0}")]
    Invalid(String),
    /// 403, JSend `fail`: a page on another origin, not allowed by
    /// `http.cors.allowed_origins`, tried to publish.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// 401 (no token, or a refused one: says why, with `WWW-Authenticate`)
    /// or 403 (a valid token that does not cover the topic), JSend `fail`;
    /// only with `auth.publish = "token"`.
    #[error("{}", access_message(*.0))]
    Access(Refusal),
    /// 413, JSend `fail`: the body is over `publish.max_body_bytes`.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 415, JSend `fail`: a body in a format we do not read.
    #[error(
        "content type {0} is not accepted; send application/json, \
         application/x-www-form-urlencoded or multipart/form-data"
    )]
    UnsupportedMediaType(String),
    /// 429, JSend `fail`, `Retry-After` (whole seconds, at least 1): the
    /// client's address is over `publish.rate_limit_per_sec`; nothing was
    /// published.
    #[error("too many publishes from this address; retry later")]
    RateLimited(u64),
    /// 422, JSend `fail`: the idempotency key was used within the window
    /// for a different request (topic alike, event type or message not);
    /// nothing was published.
    #[error(
        "idempotency key already used for a different request to this topic; \
         use a new key for a new event"
    )]
    KeyReused,
    /// 503, JSend `error`: the bus did not confirm the event; the client may
    /// retry (with an idempotency key, safely: it is stored at most once).
    /// The client hears [`bus::Error::public_message`]; the engine's own
    /// text goes only to the log.
    #[error("{}", .0.public_message())]
    Bus(#[from] bus::Error),
    /// 500, JSend `error`: a bug or an I/O failure; details only in the log.
    #[error("internal error")]
    Internal(String),
}

impl ResponseError for PublishError {
    fn status_code(&self) -> StatusCode {
        match self {
            PublishError::Invalid(_) => StatusCode::BAD_REQUEST,
            PublishError::OriginNotAllowed => StatusCode::FORBIDDEN,
            PublishError::Access(refusal) => refusal.status(),
            PublishError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PublishError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PublishError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            PublishError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            PublishError::Bus(_) => StatusCode::SERVICE_UNAVAILABLE,
            PublishError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            PublishError::Bus(error) => {
                tracing::warn!(%error, "publish refused by the bus");
                jsend::error(status, self.to_string())
            }
            PublishError::Internal(detail) => {
                tracing::error!(%detail, "publish failed unexpectedly");
                jsend::error(status, self.to_string())
            }
            PublishError::Access(refusal) => refusal.answer(&self.to_string()),
            PublishError::RateLimited(retry_after) => {
                let mut response = jsend::fail(status, self.to_string());
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, (*retry_after).into());
                response
            }
            _ => jsend::fail(status, self.to_string()),
        }
    }
}

/// What a publisher refused access is told.
fn access_message(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Missing => "a token is required to publish",
        Refusal::Invalid(error) => error.message(),
        Refusal::NotCovered => "the token does not allow publishing to this topic",
    }
}
