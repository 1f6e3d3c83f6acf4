//! A server built from the crate with a tiny stream route (a body fed from
//! a channel) and a tiny actix-http app, and raw-bytes clients of it.

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_http::body::{BodyStream, BoxBody, MessageBody as _};
use actix_http::{Method, Request, RequestHead, Response, StatusCode, Version};
use actix_server::ServerHandle;
use actix_service::fn_service;
use bytes::Bytes;
use connection::{AppFactory, Config, Observer, StreamEnd, StreamRoute};
use futures_util::StreamExt as _;
use testkit::RawClient;
use tokio::sync::mpsc;

/// Long enough for a loaded machine; only a hang ever reaches it.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// The request timeout and keep-alive of test servers.
pub const TIMEOUT: Duration = Duration::from_millis(300);

pub const STREAM_PATH: &str = "/event-stream";

pub type Observed = (&'static str, &'static str, u16);

/// What the test route and observer saw; shared with the test.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// One sender per stream opened, in order: frames sent are written,
    /// dropping it ends the stream.
    pub streams: Arc<Mutex<Vec<Option<mpsc::UnboundedSender<Bytes>>>>>,
    pub ended: Arc<Mutex<Vec<StreamEnd>>>,
    /// (method label, route, status) of each request observed.
    pub requests: Arc<Mutex<Vec<Observed>>>,
    /// The name of each thread a body was polled on, once each.
    pub polled_on: Arc<Mutex<Vec<String>>>,
    /// The peer address of each stream request the route was asked for.
    pub peers: Arc<Mutex<Vec<Option<std::net::SocketAddr>>>>,
}

/// What the route's bodies are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bodies {
    /// Fed by the test through [`Seen::streams`].
    Channel,
    /// One fixed frame, then the end (the same body the app serves).
    Fixed,
}

#[derive(Debug, Clone)]
pub struct TestRoute {
    seen: Seen,
    bodies: Bodies,
}

pub struct TestBody {
    frames: Frames,
    polled_on: Arc<Mutex<Vec<String>>>,
}

enum Frames {
    Channel(mpsc::UnboundedReceiver<Bytes>),
    Fixed(Option<Bytes>),
}

impl futures_core::Stream for TestBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let mut polled_on = self.polled_on.lock().unwrap();
        if !polled_on.contains(&thread) {
            polled_on.push(thread);
        }
        drop(polled_on);
        match &mut self.frames {
            Frames::Channel(rx) => rx.poll_recv(cx).map(|frame| frame.map(Ok)),
            Frames::Fixed(frame) => Poll::Ready(frame.take().map(Ok)),
        }
    }
}

pub const FIXED_FRAME: &[u8] = b"data: hello\n\n";

/// The stream's response head, as the gateway builds it: close-delimited
/// for HTTP/1.0.
fn stream_head(head: &RequestHead) -> Response<BoxBody> {
    let mut response = Response::with_body(StatusCode::OK, BoxBody::new(()));
    response.headers_mut().insert(
        actix_http::header::CONTENT_TYPE,
        actix_http::header::HeaderValue::from_static("text/event-stream"),
    );
    if head.version < Version::HTTP_11 {
        response.head_mut().no_chunking(true);
        response
            .head_mut()
            .set_connection_type(actix_http::ConnectionType::Close);
    }
    response
}

impl StreamRoute for TestRoute {
    type Body = TestBody;

    fn path(&self) -> &'static str {
        STREAM_PATH
    }

    async fn open(
        &self,
        head: &RequestHead,
    ) -> Result<(Response<BoxBody>, TestBody), Response<BoxBody>> {
        self.seen.peers.lock().unwrap().push(head.peer_addr);
        if head.uri.query() == Some("refuse") {
            return Err(Response::with_body(
                StatusCode::SERVICE_UNAVAILABLE,
                BoxBody::new("full"),
            ));
        }
        let frames = match self.bodies {
            Bodies::Channel => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.seen.streams.lock().unwrap().push(Some(tx));
                Frames::Channel(rx)
            }
            Bodies::Fixed => Frames::Fixed(Some(Bytes::from_static(FIXED_FRAME))),
        };
        let body = TestBody {
            frames,
            polled_on: self.seen.polled_on.clone(),
        };
        Ok((stream_head(head), body))
    }

    fn ended(&self, body: TestBody, end: StreamEnd) {
        drop(body);
        self.seen.ended.lock().unwrap().push(end);
    }
}

#[derive(Debug, Clone)]
pub struct TestObserver(Seen);

impl Observer for TestObserver {
    fn request(&self, method: &'static str, route: &'static str, status: StatusCode, _: Duration) {
        self.0
            .requests
            .lock()
            .unwrap()
            .push((method, route, status.as_u16()));
    }
}

/// A request for this path is answered with the peer's address as actix
/// saw it: `peer=Some(127.0.0.1:0)`.
pub const PEER_PATH: &str = "/peer";

/// A request for this path holds its worker's thread for [`BLOCK`].
pub const BLOCK_PATH: &str = "/block";
pub const BLOCK: Duration = Duration::from_secs(2);
/// Requests for [`BLOCK_PATH`] that have started blocking, in any test.
pub static BLOCKING: AtomicUsize = AtomicUsize::new(0);

/// The actix-http app: `GET /event-stream` streams the fixed frame (as the
/// route does), a `POST` or `PUT` echoes its body, [`BLOCK_PATH`] blocks its
/// thread, [`PEER_PATH`] answers the peer's address, anything else is
/// `200 ok`.
pub fn app() -> AppFactory {
    actix_service::boxed::factory(fn_service(|mut request: Request| async move {
        if matches!(request.method(), &Method::POST | &Method::PUT) {
            let mut payload = request.take_payload();
            let mut body = Vec::new();
            while let Some(chunk) = payload.next().await {
                match chunk {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(_) => {
                        return Ok::<_, Response<BoxBody>>(
                            Response::with_body(StatusCode::BAD_REQUEST, ()).map_into_boxed_body(),
                        );
                    }
                }
            }
            return Ok(Response::with_body(StatusCode::OK, body).map_into_boxed_body());
        }
        if request.path() == PEER_PATH {
            let peer = format!("peer={:?}", request.peer_addr());
            return Ok(Response::with_body(StatusCode::OK, peer).map_into_boxed_body());
        }
        if request.path() == BLOCK_PATH {
            // Holds the worker's thread, as a handler doing blocking work
            // by mistake (or the operating system descheduling it) would.
            BLOCKING.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(BLOCK);
            return Ok(Response::with_body(StatusCode::OK, "unblocked").map_into_boxed_body());
        }
        if request.method() == Method::GET && request.path() == STREAM_PATH {
            let (head, _) = stream_head(request.head()).into_parts();
            let frames =
                futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from_static(FIXED_FRAME))]);
            return Ok(head.set_body(BodyStream::new(frames).boxed()));
        }
        Ok(Response::with_body(StatusCode::OK, "ok").map_into_boxed_body())
    }))
}

pub struct TestServer {
    pub port: u16,
    pub seen: Seen,
    pub handle: ServerHandle,
}

pub fn config() -> Config {
    Config {
        host: "127.0.0.1".into(),
        port: 0,
        workers: 1,
        max_connections: 1000,
        max_connections_per_address: 0,
        request_timeout: TIMEOUT,
        keep_alive: TIMEOUT,
        send_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(10),
        stream_threads: 1,
        unix_socket: None,
        unix_socket_mode: 0o660,
    }
}

pub fn spawn_server() -> TestServer {
    spawn_server_with(config(), Bodies::Channel)
}

/// A unix socket in `config`, if any, is removed once the server stops.
pub fn spawn_server_with(config: Config, bodies: Bodies) -> TestServer {
    let seen = Seen::default();
    let route = TestRoute {
        seen: seen.clone(),
        bodies,
    };
    let bound = connection::bind(&config, app, Some(route), TestObserver(seen.clone())).unwrap();
    let port = bound.port();
    let (server, socket_file) = bound.into_server();
    let handle = server.handle();
    tokio::spawn(async move {
        let _ = server.await;
        drop(socket_file);
    });
    TestServer { port, seen, handle }
}

impl TestServer {
    pub async fn connect(&self) -> RawClient {
        connect(self.port, None).await
    }

    /// The sender of the `n`th stream opened, once it is open (taken: the
    /// stream ends when it is dropped).
    pub async fn stream(&self, n: usize) -> mpsc::UnboundedSender<Bytes> {
        wait_until(|| {
            let mut streams = self.seen.streams.lock().unwrap();
            streams.get_mut(n).and_then(Option::take)
        })
        .await
    }

    /// How the `n`th stream ended, once it has.
    pub async fn ended(&self, n: usize) -> StreamEnd {
        wait_until(|| self.seen.ended.lock().unwrap().get(n).copied()).await
    }
}

/// Polls `check` until it gives a value, or fails after [`PATIENCE`].
pub async fn wait_until<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Connects from `from` (any loopback address) or the default, with
/// Nagle's algorithm off so that each write leaves at once; reads wait up to
/// [`PATIENCE`].
pub async fn connect(port: u16, from: Option<Ipv4Addr>) -> RawClient {
    let client = RawClient::connect_from(port, from, None)
        .await
        .with_patience(PATIENCE);
    client.socket().set_nodelay(true).unwrap();
    client
}

/// A chunked frame as it appears on the wire.
pub fn chunk(frame: &str) -> String {
    format!("{:X}\r\n{frame}\r\n", frame.len())
}

pub const STREAM_REQUEST: &[u8] = b"GET /event-stream HTTP/1.1\r\nHost: x\r\n\r\n";
