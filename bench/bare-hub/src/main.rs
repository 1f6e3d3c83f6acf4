//! A reference for benchmarks, not product code.
//!
//! The smallest broadcast hub that speaks what `loadgen` speaks, built the
//! obvious way on tokio and hyper: `bench/run` runs it next to event-stream
//! so every table shows how far the product is from this ceiling. It keeps
//! none of the product's promises: one channel (the `topic` a client names
//! is ignored), no validation, no limits, no drain, no metrics, and a client
//! that falls behind skips what it missed instead of being closed.
//!
//! - A multi-thread runtime (one worker per core unless `--threads`), each
//!   connection a task served by hyper's HTTP/1 server.
//! - `POST /event-stream` with a JSON `{"message": ...}`: the event gets the
//!   next number as its id, its SSE frame is encoded once, kept in a ring of
//!   the last [`HISTORY`] frames and sent on one `tokio::sync::broadcast`
//!   channel; `201` with `X-Event-Id`.
//! - `GET /event-stream`: `retry:`, then the frames after `Last-Event-ID`
//!   (header, or `lastEventId` in the query) from the ring, then live ones.
//!   Each client waits on its receiver, then drains it with `try_recv` into
//!   one body chunk of at most [`MAX_WRITE`] bytes.
//! - `GET /healthz`: `200`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// Frames kept for clients resuming with `Last-Event-ID`
/// (event-stream's `bus.history_size` default).
const HISTORY: usize = 1000;
/// Frames a client may fall behind before it skips some
/// (event-stream's `stream.queue_capacity` default).
const QUEUE: usize = 1024;
/// The most one write to a client carries.
const MAX_WRITE: usize = 64 * 1024;
/// The largest publish body read.
const MAX_BODY: usize = 64 * 1024;

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The one channel: its history ring and its broadcast sender.
#[derive(Debug)]
struct Hub {
    /// Taken to publish and to subscribe, so a new client's history and its
    /// receiver meet without a gap or a duplicate.
    ring: Mutex<Ring>,
    live: broadcast::Sender<(u64, Bytes)>,
}

#[derive(Debug, Default)]
struct Ring {
    last_id: u64,
    frames: VecDeque<(u64, Bytes)>,
}

#[derive(Debug, serde::Deserialize)]
struct Publish {
    message: String,
}

impl Hub {
    fn publish(&self, message: &str) -> u64 {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.last_id += 1;
        let id = ring.last_id;
        let mut frame = format!("id: {id}\nevent: message\n");
        for line in message.lines() {
            frame.push_str("data: ");
            frame.push_str(line);
            frame.push('\n');
        }
        frame.push('\n');
        let frame = Bytes::from(frame);
        if ring.frames.len() == HISTORY {
            ring.frames.pop_front();
        }
        ring.frames.push_back((id, frame.clone()));
        // No receiver is not an error: nobody listens yet.
        let _ = self.live.send((id, frame));
        id
    }

    /// A receiver, and the frames after `after` that it will not see.
    fn subscribe(&self, after: Option<u64>) -> (broadcast::Receiver<(u64, Bytes)>, BytesMut) {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let mut first = BytesMut::from(&b"retry: 3000\n\n"[..]);
        if let Some(after) = after {
            for (_, frame) in ring.frames.iter().filter(|(id, _)| *id > after) {
                first.extend_from_slice(frame);
            }
        }
        (self.live.subscribe(), first)
    }
}

/// A client's body: the first chunk, then whatever its receiver holds,
/// drained into one chunk per write. A lagging client skips what it missed.
fn stream_body(live: broadcast::Receiver<(u64, Bytes)>, first: BytesMut) -> Body {
    let chunks =
        futures_util::stream::unfold((live, Some(first)), |(mut live, first)| async move {
            let mut out = match first {
                Some(first) => first,
                None => loop {
                    match live.recv().await {
                        Ok((_, frame)) => break BytesMut::from(&frame[..]),
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    }
                },
            };
            while out.len() < MAX_WRITE {
                match live.try_recv() {
                    Ok((_, frame)) => out.extend_from_slice(&frame),
                    Err(TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
            let frame = Frame::data(out.freeze());
            Some((Ok::<_, Infallible>(frame), (live, None)))
        });
    StreamBody::new(chunks)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn whole(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

/// `Last-Event-ID` from the header, else from `?lastEventId=` (what a
/// client without custom headers sends); unreadable means none.
fn last_event_id(request: &Request<Incoming>) -> Option<u64> {
    let header = request
        .headers()
        .get("last-event-id")
        .and_then(|value| value.to_str().ok());
    let query = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("lastEventId="))
    });
    header.or(query)?.trim().parse().ok()
}

async fn handle(hub: Arc<Hub>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => whole(StatusCode::OK, "ok"),
        (&Method::GET, "/event-stream") => {
            let (live, first) = hub.subscribe(last_event_id(&request));
            let mut response = Response::new(stream_body(live, first));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            response
        }
        (&Method::POST, "/event-stream") => {
            let body = Limited::new(request.into_body(), MAX_BODY).collect().await;
            let publish = body
                .ok()
                .and_then(|body| serde_json::from_slice::<Publish>(&body.to_bytes()).ok());
            match publish {
                Some(publish) => {
                    let id = hub.publish(&publish.message);
                    let answer = serde_json::json!({"status": "success", "data": publish.message});
                    let mut response = whole(StatusCode::CREATED, answer.to_string());
                    let headers = response.headers_mut();
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    headers.insert("x-event-id", HeaderValue::from(id));
                    response
                }
                None => whole(StatusCode::BAD_REQUEST, "expected {\"message\": ...}"),
            }
        }
        (_, "/event-stream") => whole(StatusCode::METHOD_NOT_ALLOWED, ""),
        _ => whole(StatusCode::NOT_FOUND, ""),
    };
    Ok(response)
}

#[derive(Debug)]
struct Options {
    listen: SocketAddr,
    threads: Option<usize>,
}

fn options() -> Result<Options, String> {
    let usage = "usage: bare-hub [--listen ADDR] [--threads N]";
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 9991)),
        threads: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(usage)?;
        match arg.as_str() {
            "--listen" => options.listen = value.parse().map_err(|_| usage)?,
            "--threads" => options.threads = Some(value.parse().map_err(|_| usage)?),
            _ => return Err(usage.to_owned()),
        }
    }
    Ok(options)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = options.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime.enable_all().build()?.block_on(async move {
        let listener = TcpListener::bind(options.listen).await?;
        println!("bare-hub listening on {}", listener.local_addr()?);
        let hub = Arc::new(Hub {
            ring: Mutex::new(Ring::default()),
            live: broadcast::channel(QUEUE).0,
        });
        loop {
            let (socket, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors, for example: try again.
                Err(_) => continue,
            };
            let hub = hub.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| handle(hub.clone(), request));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    })
}
