//! `GET /event-stream`.

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::StreamError;
use crate::request;
use crate::startup::GatewayState;
use crate::stream::{EventStream, Permit};

/// Opens an SSE stream. Headers and the `retry:` hint go out at once, before
/// any event, so EventSource clients leave CONNECTING immediately.
pub async fn subscribe(
    req: HttpRequest,
    state: web::Data<GatewayState>,
) -> Result<HttpResponse, StreamError> {
    if state.shutdown.is_draining() {
        return Err(StreamError::ShuttingDown);
    }
    let request = request::parse(&req, state.max_topics)?;
    let permit =
        Permit::acquire(&state.open_streams, state.max_streams).ok_or(StreamError::Full)?;
    let stream = EventStream::open(
        state.bus.clone(),
        &request.topics,
        request.cursor,
        state.stream.clone(),
        state.shutdown.clone(),
        state.metrics.clone(),
        permit,
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        // Tells nginx not to buffer this response.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}
