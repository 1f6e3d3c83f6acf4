//! One TCP connection: a service's stream route served on the socket
//! itself, everything else handed to actix-http.
//!
//! actix-http's h1 dispatcher gives every connection an 8 KiB read buffer
//! and an 8 KiB write buffer and keeps both for as long as the connection
//! lives. For an idle SSE client, which sends one request head and then only
//! receives frames the process already holds, those buffers were most of its
//! memory. So a connection starts here, with no buffer of its own:
//!
//! 1. Read the request head into a small buffer and parse it with
//!    actix-http's own codec (so parsing, and later the response head, are
//!    exactly actix's).
//! 2. A plain `GET` of the stream route's path (HTTP/1.0 or 1.1, no body,
//!    no upgrade, no `Expect`) is served here: the route opens the stream
//!    or refuses it, the head is encoded by the codec, and the body's shared
//!    frames are written with vectored writes, framed as chunks, without
//!    copying them into a buffer. Then the connection waits for its next
//!    request, as actix's keep-alive would.
//! 3. Anything else (another path or method, a body, a head longer than
//!    [`MAX_HEAD`], bytes actix must judge) is handed to actix-http on the
//!    same connection, with the bytes already read replayed first; actix
//!    serves that request and every later one.
//!
//! What actix did for streams is kept: a client that closes its side ends
//! its stream at once (`h1_allow_half_closed(false)`), the first request
//! must arrive within the client request timeout (else 408), an idle
//! keep-alive connection closes after the keep-alive timeout or when
//! shutdown begins, and request metrics are recorded alike.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_codec::{AsyncRead, AsyncWrite, Decoder as _, Encoder as _, ReadBuf};
use actix_http::body::BodySize;
use actix_http::error::DispatchError;
use actix_http::h1::{Codec, Message, MessageType};
use actix_http::{Protocol, Request, Response, ServiceConfig, StatusCode};
use actix_service::Service as _;
use actix_service::boxed::BoxService;
use actix_web::HttpResponse;
use actix_web::http::{Method, Version};
use actix_web::rt::net::TcpStream;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub use actix_web::dev::RequestHead;

use crate::metrics::{Metrics, RequestLabels};
use crate::shutdown::Shutdown;

/// A request head longer than this is not read here: actix-http gets it
/// (and answers 431 past its own, larger limit). Browsers' EventSource
/// heads, cookies included, are usually well under it.
pub const MAX_HEAD: usize = 4096;
/// What a head is first read into; grown up to [`MAX_HEAD`].
const HEAD_BUFFER: usize = 1024;
/// Bytes a client may send while its stream is open (a pipelined request,
/// kept for after the stream) before the connection is closed.
const MAX_PIPELINED: usize = 16 * 1024;

/// A `GET` route whose responses are long-lived streams, served on the
/// connection itself instead of by actix-http (see the module docs).
pub trait StreamRoute: Clone + Send + 'static {
    /// The response body: shared frames, written as they come.
    type Body: Stream<Item = Result<Bytes, Infallible>> + Unpin + 'static;

    /// The exact path (without query) this route serves.
    fn path(&self) -> &'static str;

    /// Opens a stream for a bodiless `GET` of [`StreamRoute::path`]: the
    /// response head (its body is ignored) and the body, or a whole
    /// response refusing it.
    fn open(
        &self,
        head: &RequestHead,
    ) -> impl Future<Output = Result<(HttpResponse, Self::Body), HttpResponse>>;
}

/// For services without a stream route: every connection goes to actix.
#[derive(Debug, Clone, Copy)]
pub enum NoStreamRoute {}

impl StreamRoute for NoStreamRoute {
    type Body = futures_util::stream::Empty<Result<Bytes, Infallible>>;

    fn path(&self) -> &'static str {
        match *self {}
    }

    async fn open(&self, _: &RequestHead) -> Result<(HttpResponse, Self::Body), HttpResponse> {
        match *self {}
    }
}

/// actix-http's service for the connections handed to it.
pub(crate) type Actix = BoxService<(Replay, Protocol, Option<SocketAddr>), (), DispatchError>;

/// What every connection of one worker shares.
pub(crate) struct Worker<R> {
    pub(crate) route: Option<R>,
    /// The timeouts actix-http is given; also what the codec encodes
    /// response heads with (the cached `date` header included).
    pub(crate) config: ServiceConfig,
    pub(crate) actix: Actix,
    pub(crate) shutdown: Shutdown,
    pub(crate) metrics: Metrics,
    pub(crate) send_timeout: Duration,
}

/// Serves one accepted connection until it closes.
///
/// This future is the connection's task for its whole life, so its size is
/// paid by every idle stream: only writing the body happens inline, and
/// every other step (reading a head, opening a stream, actix's dispatcher)
/// is boxed while it runs.
pub(crate) async fn serve<R: StreamRoute>(io: TcpStream, worker: Rc<Worker<R>>) {
    // A stream client that stops reading entirely never lets its stream be
    // polled again; only the kernel can end such a connection.
    if let Err(error) = socket2::SockRef::from(&io).set_tcp_user_timeout(Some(worker.send_timeout))
    {
        tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT");
    }
    let Some(route) = worker.route.as_ref() else {
        return Box::pin(hand_over(&worker, io, BytesMut::new())).await;
    };
    let mut io = io;
    let mut buf = BytesMut::new();
    let mut wait = Wait::First(deadline(worker.config.client_request_deadline()));
    loop {
        let head = Box::pin(read_head(&mut io, &mut buf, &worker, wait, route.path())).await;
        let (request, codec) = match head {
            Ok(Head::Stream(request, codec)) => (request, codec),
            Ok(Head::Other) => return Box::pin(hand_over(&worker, io, buf)).await,
            Ok(Head::Closed) => return close(io).await,
            Ok(Head::TimedOut) => return Box::pin(request_timeout(&worker, io)).await,
            Err(error) => {
                tracing::debug!(%error, "connection failed while reading a request");
                return;
            }
        };
        // A statement of its own: the boxed future is freed before the body
        // is written, not kept for the stream's life as a match temporary.
        let opened = Box::pin(open(&worker, route, request, codec)).await;
        let keep_alive = match opened {
            Err(error) => Err(error),
            Ok(Opened::Refused {
                response,
                keep_alive,
            }) => io.write_all(&response).await.map(|()| keep_alive),
            Ok(Opened::Stream {
                head,
                body,
                chunked,
                keep_alive,
            }) => write_body(&mut io, head, body, chunked, &mut buf)
                .await
                .map(|end| keep_alive && end == End::Finished && !worker.shutdown.is_draining()),
        };
        match keep_alive {
            Ok(true) => {}
            Ok(false) => return close(io).await,
            Err(error) => {
                tracing::debug!(%error, "stream connection failed");
                return;
            }
        }
        wait = Wait::Next(deadline(worker.config.keep_alive_deadline()));
    }
}

fn deadline(at: Option<Instant>) -> Option<tokio::time::Instant> {
    at.map(tokio::time::Instant::from_std)
}

/// How long a connection may wait for a request head.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The first request's head must be complete by then (else 408).
    First(Option<tokio::time::Instant>),
    /// Keep-alive: the next request must start by then, and shutdown
    /// closes the connection while none has started.
    Next(Option<tokio::time::Instant>),
}

enum Head {
    /// A request for the stream route, parsed and removed from the buffer.
    Stream(Request, Codec),
    /// Anything else: actix-http serves the connection from here on.
    Other,
    /// The client closed, or keep-alive ended, between requests.
    Closed,
    /// The first request did not arrive in time.
    TimedOut,
}

async fn read_head<R: StreamRoute>(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    worker: &Worker<R>,
    wait: Wait,
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
                    return Ok(Head::Stream(request, codec));
                }
                Ok(None) if buf.len() < MAX_HEAD => {}
                // Too long, malformed (actix answers 400) or odd.
                Ok(_) | Err(_) => return Ok(Head::Other),
            }
        }
        if buf.capacity() - buf.len() < HEAD_BUFFER / 4 {
            buf.reserve(HEAD_BUFFER);
        }
        let read = match wait {
            Wait::First(Some(deadline)) => {
                match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
                    Ok(read) => read?,
                    Err(_) => return Ok(Head::TimedOut),
                }
            }
            // Like actix, once a later request has started its head may
            // take as long as it likes.
            Wait::First(None) | Wait::Next(None) => io.read_buf(buf).await?,
            Wait::Next(Some(_)) if !buf.is_empty() => io.read_buf(buf).await?,
            Wait::Next(Some(deadline)) => {
                tokio::select! {
                    read = io.read_buf(buf) => read?,
                    _ = tokio::time::sleep_until(deadline) => return Ok(Head::Closed),
                    _ = worker.shutdown.started() => return Ok(Head::Closed),
                }
            }
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

/// A stream request's answer, ready to write.
enum Opened<B> {
    /// A whole response refusing the stream.
    Refused { response: Bytes, keep_alive: bool },
    /// The response head, then the body.
    Stream {
        head: Bytes,
        body: B,
        chunked: bool,
        keep_alive: bool,
    },
}

/// Asks the route for the stream and encodes the response head exactly as
/// actix would; records the request in the metrics like actix-web's
/// middleware does.
async fn open<R: StreamRoute>(
    worker: &Worker<R>,
    route: &R,
    request: Request,
    mut codec: Codec,
) -> io::Result<Opened<R::Body>> {
    let started = Instant::now();
    let opened = route.open(request.head()).await;
    drop(request);
    let status = match &opened {
        Ok((head, _)) => head.status(),
        Err(refusal) => refusal.status(),
    };
    worker.metrics.observe_request(
        RequestLabels {
            method: Method::GET.to_string(),
            route: route.path().to_owned(),
            status: status.as_u16(),
        },
        started.elapsed(),
    );
    let mut out = BytesMut::new();
    match opened {
        Err(refusal) => {
            let (head, body) = Response::from(refusal).into_parts();
            let body = actix_web::body::to_bytes(body)
                .await
                .map_err(|error| io::Error::other(error.to_string()))?;
            codec.encode(
                Message::Item((head, BodySize::Sized(body.len() as u64))),
                &mut out,
            )?;
            out.extend_from_slice(&body);
            Ok(Opened::Refused {
                response: out.freeze(),
                keep_alive: codec.keep_alive(),
            })
        }
        Ok((head, body)) => {
            let (head, _) = Response::from(head).into_parts();
            // actix frames a stream as chunks unless the response says not
            // to; without chunks the body ends with the connection.
            let chunked = head.head().chunked();
            codec.encode(Message::Item((head, BodySize::Stream)), &mut out)?;
            Ok(Opened::Stream {
                head: out.freeze(),
                body,
                chunked,
                keep_alive: codec.keep_alive() && chunked,
            })
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The body ended and is written.
    Finished,
    /// The client closed its side; its stream is dropped unfinished.
    ClientGone,
}

/// Writes the response head and then the body's frames as they come,
/// while watching the client: its EOF ends the stream at once.
async fn write_body<B>(
    io: &mut TcpStream,
    head: Bytes,
    mut body: B,
    chunked: bool,
    pipelined: &mut BytesMut,
) -> io::Result<End>
where
    B: Stream<Item = Result<Bytes, Infallible>> + Unpin,
{
    // The head goes out with the first frame when there is one at once.
    let mut head = Some(head);
    let mut writing: Option<Chunk> = None;
    let mut ended = false;
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(ready) = io.poll_read_ready(cx) {
                ready?;
                let mut scratch = [0; 512];
                match io.try_read(&mut scratch) {
                    Ok(0) => return Poll::Ready(Ok(End::ClientGone)),
                    Ok(n) if pipelined.len() + n <= MAX_PIPELINED => {
                        pipelined.extend_from_slice(&scratch[..n]);
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
            if let Some(chunk) = writing.as_mut() {
                match tokio_util::io::poll_write_buf(Pin::new(&mut *io), cx, chunk) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(_)) => {
                        if !chunk.has_remaining() {
                            writing = None;
                        }
                        continue;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if ended {
                return Poll::Ready(Ok(End::Finished));
            }
            match Pin::new(&mut body).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // An empty chunk would end a chunked body.
                    if !frame.is_empty() || head.is_some() {
                        writing = Some(Chunk::new(head.take(), frame, chunked));
                    }
                }
                Poll::Ready(None) => {
                    ended = true;
                    writing = Some(Chunk::last(head.take(), chunked));
                }
                Poll::Pending => match head.take() {
                    Some(head) => writing = Some(Chunk::new(Some(head), Bytes::new(), false)),
                    None => return Poll::Pending,
                },
            }
        }
    })
    .await
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

/// What actix-http does when the first request is late: 408, then close.
async fn request_timeout<R>(worker: &Worker<R>, mut io: TcpStream) {
    let mut codec = Codec::new(worker.config.clone());
    let mut out = BytesMut::new();
    let timeout = Response::with_body(StatusCode::REQUEST_TIMEOUT, ());
    if codec
        .encode(Message::Item((timeout, BodySize::Sized(0))), &mut out)
        .is_ok()
    {
        let _ = io.write_all(&out).await;
    }
    close(io).await;
}

async fn close(mut io: TcpStream) {
    let _ = io.shutdown().await;
}

async fn hand_over<R>(worker: &Worker<R>, io: TcpStream, read: BytesMut) {
    let peer = io.peer_addr().ok();
    let io = Replay {
        read: read.freeze(),
        io,
    };
    // actix-http logs what it considers worth logging.
    let _ = worker.actix.call((io, Protocol::Http1, peer)).await;
}

/// The socket, with the bytes already read from it served first.
#[derive(Debug)]
pub(crate) struct Replay {
    read: Bytes,
    io: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
