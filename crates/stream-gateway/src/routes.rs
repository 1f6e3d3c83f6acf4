//! `GET /event-stream`, on both paths that serve it: actix-web's router and
//! the connection-level fast path (see the `connection` crate). Both go
//! through [`admit`], the one place a stream is admitted or refused, and
//! answer a refusal with [`StreamError::answer`]. `HEAD` (actix's path
//! only) checks the request as `GET` does and answers the stream's head.
//!
//! Both paths resolve the request's [`Client`] the same way (actix's in
//! service-kit's middleware, the fast path here, each from the peer and
//! `http.trusted_proxies`), echo its id in `X-Request-Id`, and write the
//! same access lines: an opened stream's "stream opened" line (instead of
//! the request line), a refusal's request line with its status, and the
//! stream's "stream closed" line when it is dropped.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::dev::Response;
use actix_web::http::Version;
use actix_web::http::header::{CacheControl, CacheDirective, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError as _, web};
use bytes::Bytes;
use connection::per_address::PerAddress;
use connection::{RequestHead, StreamEnd, StreamRoute};

use operations::metrics::Action;
use operations::{Shared, Shutdown};
use service_kit::access_log::{self, Logged};
use service_kit::client::REQUEST_ID;
use service_kit::cors::Policy;
use service_kit::settings::HttpSettings;
use service_kit::{Access, Client, Refusal, TrustedProxies};
use tracing::Instrument as _;

use crate::error::{Form, StreamError, retry_after_refusals, sse_refusal};
use crate::metrics::StreamMetrics;
use crate::request;
use crate::settings::StreamSettings;
use crate::stream::{EventStream, Permit, StreamConfig, StreamLog};

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
    /// `auth`: which topics are private, and the tokens that open them.
    pub access: Access,
    /// Streams held per client address (`stream.max_streams_per_address`);
    /// `None` when off. See [`crate::error::StreamError::AddressFull`].
    pub per_address: Option<PerAddress>,
    /// `http.trusted_proxies`: whose forwarding headers and request ids the
    /// fast path believes (actix's path resolves them in service-kit).
    pub proxies: TrustedProxies,
}

impl GatewayState {
    /// The state over `shared`, with the stream metrics registered in its
    /// registry.
    pub fn new(
        settings: &StreamSettings,
        http: &HttpSettings,
        access: &Access,
        shared: &Shared,
    ) -> Self {
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
            access: access.clone(),
            per_address: PerAddress::new(settings.max_streams_per_address),
            // Checked when the settings loaded.
            proxies: http.trusted_proxies().unwrap_or_default(),
        }
    }
}

/// Opens an SSE stream. Headers and the `retry:` hint go out at once, before
/// any event, so EventSource clients leave CONNECTING immediately.
pub async fn subscribe(req: HttpRequest, state: web::Data<GatewayState>) -> HttpResponse {
    let started = Instant::now();
    let client = access_log::client_of(&req);
    match admit(state.get_ref(), req.query_string(), req.headers(), &client).await {
        Ok(stream) => {
            access_log::stream_opened(req.path(), stream.topics(), started.elapsed(), &client);
            let mut response = response_head(req.version()).streaming(stream);
            close_delimited_for(req.version(), &mut response);
            response.extensions_mut().insert(Logged);
            response
        }
        Err(error) => error.answer(req.headers(), req.version(), state.stream.retry),
    }
}

/// `HEAD`: the request is checked as for `GET` (a bad topic is a 400, a
/// private topic without a token that opens it a 401 or 403), then
/// answered with a stream's status and headers, without subscribing.
pub async fn head(req: HttpRequest, state: web::Data<GatewayState>) -> HttpResponse {
    let checked = request::parse(req.query_string(), req.headers(), state.max_topics)
        .and_then(|request| may_read(&state, req.query_string(), req.headers(), &request));
    match checked {
        // An empty streamed body: the head says what a `GET` would
        // (chunked), and actix writes no body for `HEAD`.
        Ok(_) => response_head(req.version()).streaming(futures_util::stream::empty::<
            Result<Bytes, std::convert::Infallible>,
        >()),
        Err(error) => error.error_response(),
    }
}

/// Everything a stream request does before its first byte, on both paths:
/// the refusals (stopping, bad request, too many streams from `client`'s
/// address, access, too many streams, bus down), then the stream. A stream
/// a token opened ends at the token's `exp`; its close line names `client`.
///
/// The address's cap comes before the token: a client holding its most
/// streams costs no signature verification per attempt, and a refused
/// token gives its place back at once (the slot is dropped with the
/// error). It comes after the request's own checks, so a bad request is
/// the permanent `400` it always is.
pub async fn admit(
    state: &GatewayState,
    query: &str,
    headers: &HeaderMap,
    client: &Client,
) -> Result<EventStream, StreamError> {
    if state.shutdown.is_draining() {
        return Err(StreamError::ShuttingDown);
    }
    let request = request::parse(query, headers, state.max_topics)?;
    let address_slot = match (&state.per_address, client.address) {
        (Some(per_address), Some(address)) => {
            Some(per_address.admit(address).map_err(|refusals| {
                state.metrics.rate_limited().inc();
                tracing::info!(%address, refusals, "stream refused: streams per address");
                StreamError::AddressFull {
                    refusals,
                    retry: state.stream.retry,
                }
            })?)
        }
        _ => None,
    };
    let expires_at = may_read(state, query, headers, &request)?;
    let permit = Permit::acquire(&state.open_streams, state.max_streams, address_slot)
        .ok_or(StreamError::Full)?;
    Ok(EventStream::open(
        state.bus.clone(),
        &request.topics,
        request.resume,
        state.stream.clone(),
        state.shutdown.clone(),
        state.metrics.clone(),
        permit,
        expires_at,
        StreamLog::new(client),
    )
    .await?)
}

/// The access check of a subscription: `Some(exp)` when a token opened a
/// private topic. A refusal is logged with its label, never the token,
/// and counted in `es_auth_refusals_total`.
fn may_read(
    state: &GatewayState,
    query: &str,
    headers: &HeaderMap,
    request: &request::SubscribeRequest,
) -> Result<Option<u64>, StreamError> {
    state
        .access
        .may_subscribe(headers, query, &request.topics)
        .map_err(|refusal: Refusal| {
            state
                .metrics
                .auth_refusals()
                .count(Action::Subscribe, refusal.label());
            tracing::info!(refusal = refusal.label(), "stream refused: access");
            StreamError::Access(refusal)
        })
}

/// The status and headers of a stream's response to a `version` request.
pub(crate) fn response_head(version: Version) -> HttpResponseBuilder {
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

impl LeanSubscribe {
    /// Who sent `head`, as service-kit's middleware decides on actix's path.
    fn client(&self, head: &RequestHead) -> Client {
        self.0
            .proxies
            .client(head.peer_addr.map(|peer| peer.ip()), &head.headers)
    }

    /// `response` with the CORS headers actix-cors would have added on
    /// actix's path, and the request id: every answer this path writes
    /// goes through here, once.
    fn finish(
        &self,
        head: &RequestHead,
        client: &Client,
        mut response: HttpResponse,
    ) -> Response<BoxBody> {
        let cors = &self.0.cors;
        let verdict = cors.judge(&head.headers, &head.method);
        cors.add_headers(&head.headers, verdict, response.headers_mut());
        response
            .headers_mut()
            .insert(REQUEST_ID, client.request_id.header_value());
        response.into()
    }
}

impl StreamRoute for LeanSubscribe {
    type Body = EventStream;

    fn path(&self) -> &'static str {
        PATH
    }

    async fn open(
        &self,
        head: &RequestHead,
    ) -> Result<(Response<BoxBody>, EventStream), Response<BoxBody>> {
        let started = Instant::now();
        let client = self.client(head);
        let span = access_log::span(&client);
        let query = head.uri.query().unwrap_or_default();
        let admitted = admit(&self.0, query, &head.headers, &client)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        match admitted {
            Ok(stream) => {
                access_log::stream_opened(PATH, stream.topics(), started.elapsed(), &client);
                let mut response = response_head(head.version).finish();
                close_delimited_for(head.version, &mut response);
                Ok((self.finish(head, &client, response), stream))
            }
            Err(error) => {
                let response = self.finish(
                    head,
                    &client,
                    error.answer(&head.headers, head.version, self.0.stream.retry),
                );
                let bytes = match actix_web::body::MessageBody::size(response.body()) {
                    actix_web::body::BodySize::Sized(bytes) => Some(bytes),
                    _ => None,
                };
                access_log::request(
                    &head.method,
                    PATH,
                    response.status(),
                    started.elapsed(),
                    bytes,
                    &client,
                );
                Err(response)
            }
        }
    }

    /// The per-address cap is transient too: an EventSource gets the SSE
    /// form, with a delay that grows with the address's refusals in a row
    /// (the connection layer counts them while the address holds
    /// connections). It carries the CORS headers of any other answer: a
    /// page on another origin must be able to read it to retry.
    fn over_address_limit(&self, head: &RequestHead, refusals: u32) -> Option<Response<BoxBody>> {
        (Form::for_request(&head.headers) == Form::Sse).then(|| {
            let response = sse_refusal(
                head.version,
                retry_after_refusals(self.0.stream.retry, refusals),
                "too many connections from this address",
            );
            self.finish(head, &self.client(head), response)
        })
    }

    /// A stream whose writes timed out had a client that stopped reading:
    /// counted as a slow-client disconnect like one that fell a queue behind.
    /// Its close line says so too (it is written as `body` is dropped).
    fn ended(&self, mut body: EventStream, end: StreamEnd) {
        match end {
            StreamEnd::WriteTimedOut => body.client_stopped_reading(),
            StreamEnd::Failed => body.connection_failed(),
            StreamEnd::Finished | StreamEnd::ClientGone => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use actix_web::http::header::{ACCEPT, CONTENT_TYPE};
    use actix_web::test::{self, TestRequest};

    fn state() -> GatewayState {
        GatewayState {
            bus: bus::Bus::memory(bus::MemoryConfig::default()),
            stream: StreamConfig {
                keepalive: Duration::from_secs(15),
                retry: Duration::from_millis(3000),
                shutdown_spread: Duration::ZERO,
            },
            max_topics: 16,
            max_streams: 10,
            open_streams: Arc::new(AtomicUsize::new(0)),
            shutdown: Shutdown::new(),
            metrics: StreamMetrics::register(&operations::Metrics::new()),
            cors: Policy::new(&service_kit::settings::CorsSettings {
                allowed_origins: Vec::new(),
                allow_credentials: false,
                max_age_secs: 600,
            }),
            access: Access::open(),
            per_address: None,
            proxies: TrustedProxies::default(),
        }
    }

    /// The body of a whole answer, and its status and content type.
    async fn parts(response: Response<BoxBody>) -> (u16, String, String) {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    /// From outside, a draining process is hard to meet: the server stops
    /// accepting, and closes connections without a whole head, as soon as
    /// shutdown begins. The refusal itself is checked here, on both entry
    /// points, over a process that is draining but still serving.
    #[actix_web::test]
    async fn a_draining_gateway_answers_each_client_in_its_form_on_both_paths() {
        let state = state();
        state.shutdown.begin();
        let app = test::init_service(
            actix_web::App::new()
                .app_data(web::Data::new(state.clone()))
                .route(PATH, web::get().to(subscribe)),
        )
        .await;
        let lean = LeanSubscribe(state);
        for (accept, status, content_type) in [
            (Some("text/event-stream"), 200, "text/event-stream"),
            (None, 503, "application/json"),
        ] {
            let mut request = TestRequest::get().uri("/event-stream?topic=a");
            if let Some(accept) = accept {
                request = request.insert_header((ACCEPT, accept));
            }
            let request = request.to_request();
            let fast = match lean.open(request.head()).await {
                Err(refusal) => parts(refusal).await,
                Ok(_) => panic!("a draining gateway opened a stream"),
            };
            let actix = parts(
                test::call_service(&app, request)
                    .await
                    .map_into_boxed_body()
                    .into(),
            )
            .await;
            for (path, (got_status, got_type, body)) in [("fast", fast), ("actix", actix)] {
                assert_eq!(got_status, status, "{path} {accept:?}: {body}");
                assert_eq!(got_type, content_type, "{path} {accept:?}");
                if status == 200 {
                    let (retry, rest) = body
                        .strip_prefix("retry: ")
                        .and_then(|b| b.split_once('\n'))
                        .unwrap();
                    assert!(
                        (3000..=6000).contains(&retry.parse::<u64>().unwrap()),
                        "{body}"
                    );
                    assert_eq!(
                        rest,
                        ": unavailable: this server is restarting, retrying\n\n"
                    );
                } else {
                    assert_eq!(body, r#"{"status":"error","message":"shutting down"}"#);
                }
            }
        }
    }
}
