//! Why a stream was refused before it started.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use shared_types::jsend;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// 400, JSend `fail`: bad topics or a bad last event id; says which.
    #[error("request validation error: {0}")]
    Invalid(String),
    /// 503, JSend `error`: the bus could not subscribe or replay; the client
    /// retries (EventSource does so by itself).
    #[error("{0}")]
    Bus(#[from] bus::Error),
    /// 503, JSend `error`: this replica is stopping; another one serves.
    #[error("shutting down")]
    ShuttingDown,
    /// 503, JSend `error`, with `Retry-After`: this replica already holds
    /// `stream.max_streams` streams; refusing is better than letting the
    /// process run out of file descriptors and leave clients hanging.
    #[error("too many open streams on this server; retry later")]
    Full,
}

impl ResponseError for StreamError {
    fn status_code(&self) -> StatusCode {
        match self {
            StreamError::Invalid(_) => StatusCode::BAD_REQUEST,
            StreamError::Bus(_) | StreamError::ShuttingDown | StreamError::Full => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            StreamError::Invalid(_) => jsend::fail(self.status_code(), self.to_string()),
            StreamError::Bus(error) => {
                tracing::warn!(%error, "stream refused by the bus");
                jsend::error(self.status_code(), self.to_string())
            }
            StreamError::ShuttingDown => jsend::error(self.status_code(), self.to_string()),
            StreamError::Full => {
                let mut response = jsend::error(self.status_code(), self.to_string());
                response.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    actix_web::http::header::HeaderValue::from_static("1"),
                );
                response
            }
        }
    }
}
