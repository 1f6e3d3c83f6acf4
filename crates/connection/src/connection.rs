//! One accepted connection, from its first byte to its close.
//!
//! actix-http's h1 dispatcher gives every connection an 8 KiB read buffer
//! and an 8 KiB write buffer and keeps both for as long as the connection
//! lives. For an idle SSE client, which sends one request head and then only
//! receives frames the process already holds, those buffers were most of its
//! memory. So a connection starts here, with no buffer of its own:
//!
//! 1. Read the request head into a small buffer (1 KiB, grown up to
//!    [`MAX_HEAD`]) and parse it with actix-http's own codec (so parsing,
//!    and later the response head, are exactly actix's).
//! 2. A plain `GET` of the stream route's path (HTTP/1.0 or 1.1, no body,
//!    no upgrade, no `Expect`) is served here: the route opens the stream
//!    or refuses it, the head is encoded by the codec, and the body's shared
//!    frames are written with vectored writes, framed as chunks (HTTP/1.1)
//!    or bare and then closed (a head with `no_chunking`, which HTTP/1.0
//!    needs), without copying them into a buffer. The body is written on
//!    the stream runtime, not on this worker (`write_elsewhere`; why, in
//!    `crate::server`). The route learns how the stream ended
//!    ([`StreamRoute::ended`]). Then the connection, back on this worker,
//!    waits for its next request, as actix's keep-alive would.
//! 3. Anything else (another path or method, a body, a head longer than
//!    [`MAX_HEAD`], bytes actix must judge) is handed to actix-http on the
//!    same connection, with the bytes already read replayed first and the
//!    request's deadline carried over (`replay`); actix serves that request
//!    and every later one.
//!
//! Promises kept on this path:
//! - a request head must be whole within the request timeout of its first
//!   byte (the first request's from accept; bytes pipelined during a stream
//!   from the stream's end): else `408` (best effort), then close;
//! - a client that closes its side ends its stream at once;
//! - at most 16 KiB may be pipelined during a stream (kept and served
//!   after it); more closes the connection;
//! - an idle connection closes after the keep-alive timeout, and an idle
//!   or half-read one at once when shutdown begins;
//! - a client over the per-address limit gets its head read (bounded by
//!   the deadline and [`MAX_HEAD`]) and a `503` (or, for a stream request,
//!   the route's [`StreamRoute::over_address_limit`] answer), then the
//!   connection closes;
//! - every answered stream request is given to the [`Observer`].

use std::future::Future;
use std::io::{self, IoSlice, Write as _};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_codec::{Decoder as _, Encoder as _};
use actix_http::body::BodySize;
use actix_http::error::DispatchError;
use actix_http::h1::{Codec, Message, MessageType};
use actix_http::{ConnectionType, Method, Protocol, Request, ServiceConfig, Version};
use actix_server::GracefulShutdownSignal;
use actix_service::Service as _;
use actix_service::boxed::BoxService;
use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::MAX_HEAD;
use crate::answer;
use crate::per_address::PerAddress;
use crate::replay::Replay;
use crate::route::{Observer, StreamEnd, StreamRoute, method_label};
use crate::socket::Socket;

/// What a head is first read into; grown up to [`MAX_HEAD`].
const HEAD_BUFFER: usize = 1024;
/// Bytes a client may send while its stream is open (a pipelined request,
/// kept for after the stream) before the connection is closed.
const MAX_PIPELINED: usize = 16 * 1024;

/// A stream route's body, as the connection writes it.
trait Body: Stream<Item = Result<Bytes, std::convert::Infallible>> + Unpin + Send + 'static {}

impl<B: Stream<Item = Result<Bytes, std::convert::Infallible>> + Unpin + Send + 'static> Body
    for B
{
}

/// actix-http's service for the connections handed to it.
pub(crate) type Actix<S> = BoxService<(Replay<S>, Protocol, Option<SocketAddr>), (), DispatchError>;

/// What every connection of one worker (and of one kind of socket) shares.
pub(crate) struct Worker<R, O, S> {
    pub(crate) route: Option<R>,
    pub(crate) observer: O,
    /// What the codec encodes response heads with (keep-alive on, the
    /// cached `date` header); actix-http is given the same.
    pub(crate) config: ServiceConfig,
    pub(crate) actix: Actix<S>,
    /// Fires when the server starts a graceful stop (and stays fired).
    pub(crate) stop: GracefulShutdownSignal,
    pub(crate) per_address: Option<PerAddress>,
    pub(crate) request_timeout: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) send_timeout: Duration,
    /// The runtime streams are written on (see `crate::server`); there is
    /// one exactly when there is a route.
    pub(crate) streams: Option<Handle>,
}

/// Serves one accepted connection until it closes.
///
/// This future is the connection's task for its whole life, so its size is
/// paid by every idle stream: every step (reading a head, opening a stream,
/// actix's dispatcher) is boxed while it runs, and while a stream is
/// written elsewhere it holds only a handle on that task.
///
/// An `async` block rather than an `async fn`: the arguments of an
/// `async fn` are moved into locals of its future, which then holds them
/// twice.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn serve<R: StreamRoute, O: Observer, S: Socket>(
    mut io: S,
    worker: Rc<Worker<R, O, S>>,
) -> impl Future<Output = ()> {
    async move {
        // The first request's deadline runs from accept.
        let first = Instant::now() + worker.request_timeout;
        io.set_send_timeout(worker.send_timeout);
        let admitted = match (&worker.per_address, io.peer()) {
            (Some(limits), Some(peer)) => limits.admit(peer.ip()).map(Some),
            _ => Ok(None),
        };
        if let Err(refusals) = admitted {
            return Box::pin(refuse(&worker, io, first, refusals)).await;
        }
        // Held for the connection's life: its place among its address's.
        let _slot = admitted.ok().flatten();
        let (Some(route), Some(streams)) = (worker.route.as_ref(), worker.streams.as_ref()) else {
            return Box::pin(hand_over(&worker, io, BytesMut::new(), Some(first))).await;
        };
        let mut buf = BytesMut::new();
        let mut wait = Wait {
            head: Some(first),
            idle: first,
        };
        loop {
            let head = Box::pin(read_head(
                &mut io,
                &mut buf,
                &worker,
                &mut wait,
                route.path(),
            ))
            .await;
            // Whatever is not a stream request leaves this loop.
            let Ok(Head::Stream(request)) = head else {
                return Box::pin(leave(&worker, io, buf, wait.head, head)).await;
            };
            // Opened in the stream runtime's context (see `InRuntime`); a
            // refusal is written there too.
            let peer = io.peer();
            let opening = Box::pin(open(&worker, route, *request, &mut io, peer));
            match InRuntime(streams, opening).await {
                Ok(Opened::Answered { keep_alive: true }) => {}
                Ok(Opened::Answered { keep_alive: false }) => return Box::pin(close(io)).await,
                Ok(Opened::Stream(stream)) => {
                    let keep_alive = stream.keep_alive;
                    let task = match write_elsewhere(streams, io, *stream, buf) {
                        Ok(task) => task,
                        Err((body, error)) => {
                            tracing::debug!(%error, "cannot move a stream's socket");
                            return route.ended(body, StreamEnd::Failed);
                        }
                    };
                    let Some((back, pipelined, body, end)) = task.await else {
                        return;
                    };
                    route.ended(body, end.stream_end());
                    // Registered with this worker's I/O driver again.
                    let Some(back) = back.and_then(|back| S::from_std(back).ok()) else {
                        return;
                    };
                    (io, buf) = (back, pipelined);
                    match end {
                        End::Finished if keep_alive && !stopped(&worker.stop) => {}
                        End::Finished | End::ClientGone => return Box::pin(close(io)).await,
                        End::Failed(error) => {
                            tracing::debug!(%error, "stream connection failed");
                            return;
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "connection failed while answering a stream request");
                    return;
                }
            }
            wait = Wait {
                head: None,
                idle: Instant::now() + worker.keep_alive,
            };
        }
    }
}

/// A connection whose next request is not for the stream route, or that
/// ended or failed before one: actix-http serves it from here, or it
/// closes (with a `408` if a request was late).
async fn leave<R: StreamRoute, O, S: Socket>(
    worker: &Worker<R, O, S>,
    io: S,
    buf: BytesMut,
    deadline: Option<Instant>,
    head: io::Result<Head>,
) {
    match head {
        Ok(Head::Other) => hand_over(worker, io, buf, deadline).await,
        Ok(Head::TimedOut) => request_timeout(worker, io).await,
        // A stream request does not leave the loop; closing is the answer
        // to anything else.
        Ok(Head::Closed | Head::Stream(_)) => close(io).await,
        Err(error) => tracing::debug!(%error, "connection failed while reading a request"),
    }
}

/// What comes back from the stream runtime when a stream ends: the socket
/// (unless it failed to move back), bytes of a next request received
/// meanwhile, the body (for [`StreamRoute::ended`]), how it ended.
type Written<B, S> = (Option<<S as Socket>::Std>, BytesMut, B, End);

/// Writes `stream` on the stream runtime.
///
/// The socket leaves this worker's I/O driver (`into_std`) for the stream
/// runtime's (`from_std` in its context), so its readiness is delivered on
/// the threads that write it; when the body ends it comes back the same
/// way. The caller awaits the task, so the worker still counts the
/// connection (`max_connections`), a graceful stop still waits for it, its
/// client address keeps its place, and the connection can serve a next
/// request; if the caller is dropped (a stop's grace ran out), so is the
/// task. If the socket cannot move, the body is handed back.
fn write_elsewhere<B: Body, S: Socket>(
    streams: &Handle,
    io: S,
    stream: StreamParts<B>,
    pipelined: BytesMut,
) -> Result<AbortOnDrop<Written<B, S>>, (B, io::Error)> {
    let moved = {
        let _entered = streams.enter();
        io.into_std().and_then(S::from_std)
    };
    match moved {
        Ok(io) => Ok(AbortOnDrop(streams.spawn(Writing {
            io: Some(io),
            head: Some(stream.head),
            writing: None,
            body: Some(stream.body),
            chunked: stream.chunked,
            ended: false,
            pipelined,
        }))),
        Err(error) => Err((stream.body, error)),
    }
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

/// `None` when the task was cancelled: the stream runtime is shutting
/// down (the server is gone), or it panicked.
impl<T> Future for AbortOnDrop<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls a future with the given runtime as the current one, so what it
/// creates that is bound to a runtime (a stream's timers, tasks it spawns)
/// belongs to that runtime, though the future is polled on this worker.
struct InRuntime<'a, F>(&'a Handle, Pin<Box<F>>);

impl<F: Future> Future for InRuntime<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = self.0.enter();
        self.1.as_mut().poll(cx)
    }
}

/// Whether the server's graceful stop has begun.
fn stopped(stop: &GracefulShutdownSignal) -> bool {
    let notified = pin!(stop.notified());
    notified
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

/// How long a connection may wait for a request head.
#[derive(Debug, Clone, Copy)]
struct Wait {
    /// The current request's deadline, once it has started (the first
    /// request's from the start).
    head: Option<Instant>,
    /// Keep-alive: while no request has started, the connection closes then.
    idle: Instant,
}

enum Head {
    /// A request for the stream route, parsed and removed from the buffer.
    /// Boxed: the connection's future keeps this value while the stream
    /// runs, so it must be small.
    Stream(Box<(Request, Codec)>),
    /// Anything else: actix-http serves the connection from here on.
    Other,
    /// The client closed, keep-alive ended, or shutdown began, between
    /// requests or in the middle of a head.
    Closed,
    /// A started request did not arrive whole in time.
    TimedOut,
}

async fn read_head<R: StreamRoute, O, S: Socket>(
    io: &mut S,
    buf: &mut BytesMut,
    worker: &Worker<R, O, S>,
    wait: &mut Wait,
    path: &str,
) -> io::Result<Head> {
    loop {
        if !buf.is_empty() {
            // Parse a copy, so that anything handed over is replayed whole.
            let mut codec = Codec::new(worker.config.clone());
            let mut rest = BytesMut::from(&buf[..]);
            match codec.decode(&mut rest) {
                Ok(Some(Message::Item(request))) => {
                    if !is_stream_request(&request, &codec, path) {
                        return Ok(Head::Other);
                    }
                    // What is left is pipelined; without any, free the buffer.
                    *buf = if rest.is_empty() {
                        BytesMut::new()
                    } else {
                        rest
                    };
                    return Ok(Head::Stream(Box::new((request, codec))));
                }
                Ok(None) if buf.len() < MAX_HEAD => {}
                // Too long, malformed (actix answers 400) or odd.
                Ok(_) | Err(_) => return Ok(Head::Other),
            }
            // A request has started (maybe pipelined during a stream, which
            // is then its start): from now on its deadline runs.
            wait.head
                .get_or_insert_with(|| Instant::now() + worker.request_timeout);
        }
        if buf.capacity() - buf.len() < HEAD_BUFFER / 4 {
            buf.reserve(HEAD_BUFFER);
        }
        let read = tokio::select! {
            read = io.read_buf(buf) => read?,
            // Every wait ends: a started head at its deadline (408), an
            // idle connection at the end of keep-alive.
            _ = tokio::time::sleep_until(wait.head.unwrap_or(wait.idle)) => {
                return Ok(if wait.head.is_some() { Head::TimedOut } else { Head::Closed });
            }
            // Shutdown closes idle and half-read connections at once: none
            // of them has been answered anything yet.
            _ = worker.stop.notified() => return Ok(Head::Closed),
        };
        if read == 0 {
            // A partial head then EOF is actix's to answer.
            return Ok(if buf.is_empty() {
                Head::Closed
            } else {
                Head::Other
            });
        }
    }
}

fn is_stream_request(request: &Request, codec: &Codec, path: &str) -> bool {
    let head = request.head();
    head.method == Method::GET
        && head.uri.path() == path
        && matches!(head.version, Version::HTTP_10 | Version::HTTP_11)
        && codec.message_type() == MessageType::None
        && !codec.upgrade()
        && !head.expect()
}

/// A stream request, answered or opened.
enum Opened<B> {
    /// Refused; the whole refusal is written.
    Answered { keep_alive: bool },
    /// Boxed: the connection's future keeps this value while the stream
    /// runs, so it must be small.
    Stream(Box<StreamParts<B>>),
}

/// An opened stream, ready to write.
struct StreamParts<B> {
    /// The response head, written with the first frame.
    head: Bytes,
    body: B,
    chunked: bool,
    /// The connection may serve another request once the body is over.
    keep_alive: bool,
}

/// Asks the route for the stream and encodes the response head exactly as
/// actix would; writes a refusal whole; gives the request to the observer.
/// The head carries the peer's address, as actix's requests do.
async fn open<R: StreamRoute, O: Observer, S: Socket>(
    worker: &Worker<R, O, S>,
    route: &R,
    (mut request, mut codec): (Request, Codec),
    io: &mut S,
    peer: Option<std::net::SocketAddr>,
) -> io::Result<Opened<R::Body>> {
    let started = std::time::Instant::now();
    request.head_mut().peer_addr = peer;
    let opened = route.open(request.head()).await;
    drop(request);
    let status = match &opened {
        Ok((head, _)) => head.status(),
        Err(refusal) => refusal.status(),
    };
    worker.observer.request(
        method_label(&Method::GET),
        route.path(),
        status,
        started.elapsed(),
    );
    let mut out = BytesMut::new();
    match opened {
        Err(refusal) => {
            let (head, body) = refusal.into_parts();
            let body = actix_http::body::to_bytes(body)
                .await
                .map_err(|error| io::Error::other(error.to_string()))?;
            codec.encode(
                Message::Item((head, BodySize::Sized(body.len() as u64))),
                &mut out,
            )?;
            out.extend_from_slice(&body);
            io.write_all(&out).await?;
            Ok(Opened::Answered {
                keep_alive: codec.keep_alive(),
            })
        }
        Ok((head, body)) => {
            let (mut head, _) = head.into_parts();
            // Chunks unless the route says not to (HTTP/1.0 has none);
            // without them the body ends with the connection, and the head
            // must not promise keep-alive.
            let chunked = head.head().chunked();
            if !chunked {
                head.head_mut().set_connection_type(ConnectionType::Close);
            }
            codec.encode(Message::Item((head, BodySize::Stream)), &mut out)?;
            Ok(Opened::Stream(Box::new(StreamParts {
                head: out.freeze(),
                body,
                chunked,
                keep_alive: codec.keep_alive() && chunked,
            })))
        }
    }
}

#[derive(Debug)]
enum End {
    /// The body ended and is written.
    Finished,
    /// The client closed its side; its stream is dropped unfinished.
    ClientGone,
    Failed(io::Error),
}

impl End {
    fn stream_end(&self) -> StreamEnd {
        match self {
            End::Finished => StreamEnd::Finished,
            End::ClientGone => StreamEnd::ClientGone,
            // With TCP_USER_TIMEOUT the kernel reports the unacknowledged
            // sends as ETIMEDOUT, on whichever side polls first.
            End::Failed(error) => match error.kind() {
                io::ErrorKind::TimedOut => StreamEnd::WriteTimedOut,
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => StreamEnd::ClientGone,
                _ => StreamEnd::Failed,
            },
        }
    }
}

/// The stream runtime's task for one stream: writes the response head and
/// then the body's frames as they come, while watching the client (its EOF
/// ends the stream at once).
///
/// Written by hand rather than as an `async` block, which would hold the
/// head and the socket twice: every idle stream holds one of these.
struct Writing<B, S> {
    /// Taken when the stream ends.
    io: Option<S>,
    /// The response head, until it is written (with the first frame when
    /// there is one at once).
    head: Option<Bytes>,
    /// The write in progress.
    writing: Option<Chunk>,
    /// Taken when the stream ends.
    body: Option<B>,
    chunked: bool,
    /// The body is over; the last chunk is being written.
    ended: bool,
    /// Bytes of a next request received meanwhile.
    pipelined: BytesMut,
}

impl<B: Body, S: Socket> Future for Writing<B, S> {
    type Output = Written<B, S>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Written<B, S>> {
        let this = self.get_mut();
        let end = match this.write(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(end)) => end,
            Poll::Ready(Err(error)) => End::Failed(error),
        };
        let io = this.io.take().and_then(|io| io.into_std().ok());
        let pipelined = std::mem::take(&mut this.pipelined);
        // Like any future, this one is not polled again once it is ready.
        let body = this
            .body
            .take()
            .expect("a stream's task polled after it ended");
        Poll::Ready((io, pipelined, body, end))
    }
}

impl<B: Body, S: Socket> Writing<B, S> {
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<End>> {
        let (Some(io), Some(body)) = (self.io.as_mut(), self.body.as_mut()) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        loop {
            if let Poll::Ready(ready) = io.poll_read_ready(cx) {
                ready?;
                let mut scratch = [0; 512];
                match io.try_read(&mut scratch) {
                    Ok(0) => return Poll::Ready(Ok(End::ClientGone)),
                    Ok(n) if self.pipelined.len() + n <= MAX_PIPELINED => {
                        self.pipelined.extend_from_slice(&scratch[..n]);
                    }
                    Ok(_) => {
                        return Poll::Ready(Err(io::Error::other(
                            "too many bytes sent during a stream",
                        )));
                    }
                    // Readiness is cleared: polling it again registers us.
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
                continue;
            }
            if let Some(chunk) = self.writing.as_mut() {
                let mut slices = [IoSlice::new(&[]); 4];
                let n = chunk.chunks_vectored(&mut slices);
                match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(written)) => {
                        chunk.advance(written);
                        if !chunk.has_remaining() {
                            self.writing = None;
                        }
                        continue;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.ended {
                return Poll::Ready(Ok(End::Finished));
            }
            match Pin::new(&mut *body).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // An empty chunk would end a chunked body.
                    if !frame.is_empty() || self.head.is_some() {
                        self.writing = Some(Chunk::new(self.head.take(), frame, self.chunked));
                    }
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    self.writing = Some(Chunk::last(self.head.take(), self.chunked));
                }
                Poll::Pending => match self.head.take() {
                    Some(head) => {
                        self.writing = Some(Chunk::new(Some(head), Bytes::new(), false));
                    }
                    None => return Poll::Pending,
                },
            }
        }
    }
}

/// One write of a stream body: maybe the response head, then a frame as a
/// chunk (`<size>\r\n<frame>\r\n`) or bare. The frame is the shared `Bytes`
/// itself; the parts go out in one vectored write.
struct Chunk {
    head: Bytes,
    size: [u8; 18],
    size_at: usize,
    size_end: usize,
    frame: Bytes,
    tail: &'static [u8],
}

impl Chunk {
    fn new(head: Option<Bytes>, frame: Bytes, chunked: bool) -> Self {
        let mut size = [0; 18];
        let mut size_end = 0;
        let mut tail: &'static [u8] = b"";
        if chunked && !frame.is_empty() {
            let mut cursor = &mut size[..];
            // 16 hex digits and CRLF always fit.
            let _ = write!(cursor, "{:X}\r\n", frame.len());
            size_end = 18 - cursor.len();
            tail = b"\r\n";
        }
        Chunk {
            head: head.unwrap_or_default(),
            size,
            size_at: 0,
            size_end,
            frame,
            tail,
        }
    }

    /// The end of a body: the last chunk, or nothing without chunks.
    fn last(head: Option<Bytes>, chunked: bool) -> Self {
        let mut chunk = Chunk::new(head, Bytes::new(), false);
        if chunked {
            chunk.tail = b"0\r\n\r\n";
        }
        chunk
    }

    fn parts(&self) -> [&[u8]; 4] {
        [
            &self.head,
            &self.size[self.size_at..self.size_end],
            &self.frame,
            self.tail,
        ]
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.parts().iter().map(|part| part.len()).sum()
    }

    fn chunk(&self) -> &[u8] {
        self.parts()
            .into_iter()
            .find(|part| !part.is_empty())
            .unwrap_or_default()
    }

    fn advance(&mut self, mut n: usize) {
        let step = n.min(self.head.len());
        self.head.advance(step);
        n -= step;
        let step = n.min(self.size_end - self.size_at);
        self.size_at += step;
        n -= step;
        let step = n.min(self.frame.len());
        self.frame.advance(step);
        n -= step;
        self.tail = &self.tail[n.min(self.tail.len())..];
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for part in self.parts() {
            if filled == dst.len() {
                break;
            }
            if !part.is_empty() {
                dst[filled] = IoSlice::new(part);
                filled += 1;
            }
        }
        filled
    }
}

/// A late request: `408` (best effort), then close.
async fn request_timeout<R, O, S: Socket>(worker: &Worker<R, O, S>, mut io: S) {
    write_briefly(&mut io, &answer::request_timeout(&worker.config)).await;
    close(io).await;
}

/// How long a closing answer may take to write: a client that does not
/// read it is not waited for (actix's disconnect timeout).
const CLOSING_WRITE: Duration = Duration::from_secs(1);

async fn write_briefly<S: Socket>(io: &mut S, bytes: &[u8]) {
    let _ = tokio::time::timeout(CLOSING_WRITE, io.write_all(bytes)).await;
}

/// A client over the per-address limit, refused `refusals` times in a
/// row: read its request head (bounded by the deadline and [`MAX_HEAD`]) so
/// that the answer reaches it, answer it (the stream route's answer for a
/// stream request, if it has one, else [`answer::too_many_connections`]),
/// close.
async fn refuse<R: StreamRoute, O, S: Socket>(
    worker: &Worker<R, O, S>,
    mut io: S,
    deadline: Instant,
    refusals: u32,
) {
    let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
    let (request, codec) = loop {
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            return Box::pin(close(io)).await;
        }
        let mut codec = Codec::new(worker.config.clone());
        match codec.decode(&mut BytesMut::from(&buf[..])) {
            Ok(Some(Message::Item(request))) => break (Some(request), codec),
            Ok(None) if buf.len() < MAX_HEAD => buf.reserve(HEAD_BUFFER),
            Ok(_) | Err(_) => break (None, Codec::new(worker.config.clone())),
        }
    };
    let route_answer = match (&worker.route, &request) {
        (Some(route), Some(request)) if is_stream_request(request, &codec, route.path()) => {
            route.over_address_limit(request.head(), refusals)
        }
        _ => None,
    };
    let response = match route_answer {
        Some(response) => answer::closing(codec, response).await,
        None => answer::too_many_connections(codec),
    };
    write_briefly(&mut io, &response).await;
    close(io).await;
}

async fn close<S: Socket>(mut io: S) {
    let _ = io.shutdown().await;
}

async fn hand_over<R, O, S: Socket>(
    worker: &Worker<R, O, S>,
    io: S,
    read: BytesMut,
    deadline: Option<Instant>,
) {
    let peer = io.peer();
    let io = Replay::new(
        io,
        read.freeze(),
        worker.request_timeout,
        deadline,
        worker.config.clone(),
    );
    // actix-http logs what it considers worth logging.
    let _ = worker.actix.call((io, Protocol::Http1, peer)).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::net::TcpStream;

    use super::*;

    /// A body the size an idle stream's is allowed (the gateway's
    /// `EventStream` is at most 512 bytes).
    struct Idle(#[allow(dead_code)] [u8; 512]);

    impl Stream for Idle {
        type Item = Result<Bytes, std::convert::Infallible>;

        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Pending
        }
    }

    #[derive(Clone)]
    struct IdleRoute;

    impl StreamRoute for IdleRoute {
        type Body = Idle;

        fn path(&self) -> &'static str {
            "/"
        }

        async fn open(
            &self,
            _: &actix_http::RequestHead,
        ) -> Result<
            (actix_http::Response<actix_http::body::BoxBody>, Idle),
            actix_http::Response<actix_http::body::BoxBody>,
        > {
            Ok((
                actix_http::Response::ok().map_into_boxed_body(),
                Idle([0; 512]),
            ))
        }
    }

    /// Every open stream holds its connection's future on the worker and
    /// its task's future on the stream runtime: what they add to the body
    /// is paid by every idle stream.
    #[tokio::test]
    async fn a_connection_and_its_stream_task_stay_small() {
        // actix's parts spawn local tasks of their own.
        tokio::task::LocalSet::new()
            .run_until(connection_and_stream_task_sizes())
            .await;
    }

    async fn connection_and_stream_task_sizes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let io = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let actix: Actix<TcpStream> = actix_service::boxed::service(actix_service::fn_service(
            |_: (Replay<TcpStream>, Protocol, Option<SocketAddr>)| async {
                Ok::<_, DispatchError>(())
            },
        ));
        let worker = Rc::new(Worker {
            route: Some(IdleRoute),
            observer: (),
            config: ServiceConfig::default(),
            actix,
            stop: actix_server::Server::build().graceful_shutdown_signal(),
            per_address: None,
            request_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            send_timeout: Duration::from_secs(30),
            streams: Some(Handle::current()),
        });
        let connection = std::mem::size_of_val(&serve(io, worker));
        let task = std::mem::size_of::<Writing<Idle, TcpStream>>();
        // 264 and 232 + 512 bytes when this was written; an `async fn`
        // version of the two held 592 and 1,456.
        assert!(
            connection <= 320,
            "the connection's future is {connection} bytes"
        );
        assert!(task <= 512 + 256, "the stream's task is {task} bytes");
    }

    fn written(mut chunk: Chunk, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while chunk.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 4];
            let n = chunk.chunks_vectored(&mut slices);
            let all: Vec<u8> = slices[..n].iter().flat_map(|s| s.to_vec()).collect();
            let take = step.min(all.len());
            out.extend_from_slice(&all[..take]);
            chunk.advance(take);
        }
        out
    }

    #[test]
    fn a_chunk_is_written_whole_however_the_writes_split_it() {
        let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n");
        let frame = Bytes::from(vec![b'x'; 300]);
        let mut expected = b"HTTP/1.1 200 OK\r\n\r\n12C\r\n".to_vec();
        expected.extend_from_slice(&frame);
        expected.extend_from_slice(b"\r\n");
        for step in [1, 2, 7, 20, 1000] {
            let chunk = Chunk::new(Some(head.clone()), frame.clone(), true);
            assert_eq!(written(chunk, step), expected, "step {step}");
        }
        assert_eq!(written(Chunk::last(None, true), 3), b"0\r\n\r\n");
        assert_eq!(written(Chunk::last(None, false), 3), b"");
        assert_eq!(written(Chunk::new(None, frame.clone(), false), 64), frame);
    }
}
