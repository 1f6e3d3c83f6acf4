//! `GET /event-stream`, on both paths that serve it: actix-web's router and
//! the connection-level fast path (see the `connection` crate). Both go
//! through [`admit`], the one place a stream is admitted or refused.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::Response;
use actix_web::http::Version;
use actix_web::http::header::{CacheControl, CacheDirective, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError as _, web};
use connection::{RequestHead, StreamEnd, StreamRoute};

use operations::{Shared, Shutdown};
use service_kit::cors::Policy;
use service_kit::settings::HttpSettings;

use crate::error::StreamError;
use crate::metrics::StreamMetrics;
use crate::request;
use crate::settings::StreamSettings;
use crate::stream::{EventStream, Permit, StreamConfig};

/// The path streams are served on.
pub const PATH: &str = service_kit::EVENT_STREAM_PATH;

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
    pub metrics: StreamMetrics,
    /// `http.cors`: on the actix path actix-cors applies it; the fast path
    /// adds the same headers itself ([`LeanSubscribe`]).
    pub cors: Policy,
}

impl GatewayState {
    /// The state over `shared`, with the stream metrics registered in its
    /// registry.
    pub fn new(settings: &StreamSettings, http: &HttpSettings, shared: &Shared) -> Self {
        Self {
            bus: shared.bus.clone(),
            stream: StreamConfig {
                keepalive: Duration::from_millis(settings.keepalive_ms),
                retry: Duration::from_millis(settings.retry_ms),
                // Half the grace period: streams end well before the cut.
                shutdown_spread: Duration::from_millis(http.shutdown_grace_ms) / 2,
            },
            max_topics: settings.max_topics,
            max_streams: settings.max_streams(),
            open_streams: Arc::new(AtomicUsize::new(0)),
            shutdown: shared.shutdown.clone(),
            metrics: StreamMetrics::register(&shared.metrics),
            cors: Policy::new(&http.cors),
        }
    }
}

/// Opens an SSE stream. Headers and the `retry:` hint go out at once, before
/// any event, so EventSource clients leave CONNECTING immediately.
pub async fn subscribe(
    req: HttpRequest,
    state: web::Data<GatewayState>,
) -> Result<HttpResponse, StreamError> {
    let stream = admit(state.get_ref(), req.query_string(), req.headers()).await?;
    let mut response = response_head(req.version()).streaming(stream);
    close_delimited_for(req.version(), &mut response);
    Ok(response)
}

/// Everything a stream request does before its first byte, on both paths:
/// the refusals (stopping, bad request, too many streams, bus down), then
/// the stream.
pub async fn admit(
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

/// The status and headers of a stream's response to a `version` request.
fn response_head(version: Version) -> HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        // Tells nginx not to buffer this response.
        .insert_header(("X-Accel-Buffering", "no"));
    if version < Version::HTTP_11 {
        // The body will end with the connection (below).
        response.force_close();
    }
    response
}

/// HTTP/1.0 has no chunked encoding (RFC 9112 §6.1): a stream to an
/// HTTP/1.0 client is written bare and ends when the connection closes.
/// actix-http, and the fast path, frame a stream so when its head says
/// `no_chunking`.
fn close_delimited_for(version: Version, response: &mut HttpResponse) {
    if version < Version::HTTP_11 {
        response.head_mut().no_chunking(true);
    }
}

/// The stream route served on the connection itself, without actix-http's
/// per-connection buffers; the same checks and the same response as
/// [`subscribe`], CORS headers included (actix-cors adds those there).
/// A refused origin is served like any client, without CORS headers: the
/// browser keeps the stream from the page.
#[derive(Debug, Clone)]
pub struct LeanSubscribe(pub GatewayState);

impl StreamRoute for LeanSubscribe {
    type Body = EventStream;

    fn path(&self) -> &'static str {
        PATH
    }

    async fn open(
        &self,
        head: &RequestHead,
    ) -> Result<(Response<BoxBody>, EventStream), Response<BoxBody>> {
        let cors = &self.0.cors;
        let verdict = cors.judge(&head.headers, &head.method);
        match admit(&self.0, head.uri.query().unwrap_or_default(), &head.headers).await {
            Ok(stream) => {
                let mut response = response_head(head.version).finish();
                close_delimited_for(head.version, &mut response);
                cors.add_headers(&head.headers, verdict, response.headers_mut());
                Ok((response.into(), stream))
            }
            Err(error) => {
                let mut response = error.error_response();
                cors.add_headers(&head.headers, verdict, response.headers_mut());
                Err(response.into())
            }
        }
    }

    /// A stream whose writes timed out had a client that stopped reading:
    /// counted as a slow-client disconnect like one that fell a queue behind.
    fn ended(&self, mut body: EventStream, end: StreamEnd) {
        if end == StreamEnd::WriteTimedOut {
            body.client_stopped_reading();
        }
    }
}
