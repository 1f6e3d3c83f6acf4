//! `GET /event-stream`, on both paths that serve it: actix-web's router and
//! the connection-level fast path (see [`service_kit::connection`]).

use actix_web::http::header::{CacheControl, CacheDirective, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError as _, web};
use service_kit::connection::{RequestHead, StreamRoute};

use crate::error::StreamError;
use crate::request;
use crate::startup::GatewayState;
use crate::stream::{EventStream, Permit};

/// The path streams are served on.
pub const PATH: &str = "/event-stream";

/// Opens an SSE stream. Headers and the `retry:` hint go out at once, before
/// any event, so EventSource clients leave CONNECTING immediately.
pub async fn subscribe(
    req: HttpRequest,
    state: web::Data<GatewayState>,
) -> Result<HttpResponse, StreamError> {
    let stream = open(state.get_ref(), req.query_string(), req.headers()).await?;
    Ok(response_head().streaming(stream))
}

/// Everything a stream request does before its first byte: the refusals
/// (stopping, bad request, too many streams, bus down), then the stream.
async fn open(
    state: &GatewayState,
    query: &str,
    headers: &HeaderMap,
) -> Result<EventStream, StreamError> {
    if state.shutdown.is_draining() {
        return Err(StreamError::ShuttingDown);
    }
    let request = request::parse(query, headers, state.max_topics)?;
    let permit =
        Permit::acquire(&state.open_streams, state.max_streams).ok_or(StreamError::Full)?;
    Ok(EventStream::open(
        state.bus.clone(),
        &request.topics,
        request.cursor,
        state.stream.clone(),
        state.shutdown.clone(),
        state.metrics.clone(),
        permit,
    )
    .await?)
}

/// The status and headers of a stream's response.
fn response_head() -> HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        // Tells nginx not to buffer this response.
        .insert_header(("X-Accel-Buffering", "no"));
    response
}

/// The stream route served on the connection itself, without actix-http's
/// per-connection buffers; the same checks and the same response as
/// [`subscribe`].
#[derive(Debug, Clone)]
pub struct LeanSubscribe(pub GatewayState);

impl StreamRoute for LeanSubscribe {
    type Body = EventStream;

    fn path(&self) -> &'static str {
        PATH
    }

    async fn open(&self, head: &RequestHead) -> Result<(HttpResponse, EventStream), HttpResponse> {
        match open(&self.0, head.uri.query().unwrap_or_default(), &head.headers).await {
            Ok(stream) => Ok((response_head().finish(), stream)),
            Err(error) => Err(error.error_response()),
        }
    }
}
