//! The socket as actix-http sees it: the bytes the fast path already read
//! come first, and the request deadline is enforced on its reads.
//!
//! actix-http arms its head timer only for a connection's first request,
//! and restarts it when it gets the connection; its own timer is switched
//! off and this one stands in, for every request: from the first byte read
//! while no response is in progress (for the first request, from accept;
//! for a head the fast path began, from that head's first byte) until the
//! first byte of a response is written, at most the request timeout. So a
//! request body (up to the service's limit, 64 KiB by default) must arrive
//! within the same bound, and so must the handler's answer; a response
//! being written (a stream actix serves included) clears it. When it
//! expires, a `408` is written if the socket takes it at once, and the read
//! fails so that actix drops the connection.
//!
//! No `408` follows a response that announced the connection's close:
//! what is read after it is the rest of its request's body, drained.
//!
//! Bytes of a next request that actix read together with the previous one
//! (pipelined in one packet) are not timed here once that response is
//! written: actix's keep-alive timer, armed after the response, closes the
//! connection (without a `408`) unless more bytes come, which start this
//! deadline.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_codec::{AsyncRead, AsyncWrite, ReadBuf};
use actix_http::ServiceConfig;
use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use crate::answer;
use crate::socket::Socket;

/// The connection handed to actix-http.
#[derive(Debug)]
pub(crate) struct Replay<S> {
    read: Bytes,
    io: S,
    timeout: Duration,
    /// The current request's deadline, while `armed`.
    due: Instant,
    /// Wakes the connection at or before `due`; allocated once. It is not
    /// moved for every request (a timer wheel update each, ~1 % of the
    /// process's time under publish load): a request only sets `due`, which
    /// is never earlier than where the timer already is, and when the timer
    /// fires early it is moved to `due` then. So it moves about once per
    /// timeout period, not once per request.
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    /// The last write could not go out: a `408` now would land in the
    /// middle of a response.
    write_blocked: bool,
    /// The next write starts a response.
    response_next: bool,
    /// The last response announced that the connection closes after it:
    /// bytes read since are the rest of its request's body being drained,
    /// not a new request, and get no `408`.
    closing: bool,
    /// Encodes the `408` (with a current `date`).
    config: ServiceConfig,
}

impl<S: Socket> Replay<S> {
    /// `io` with `read` replayed first; `deadline`, when given, is the
    /// current request's (carried over from the fast path).
    pub(crate) fn new(
        io: S,
        read: Bytes,
        timeout: Duration,
        deadline: Option<Instant>,
        config: ServiceConfig,
    ) -> Self {
        let due = deadline.unwrap_or_else(Instant::now);
        Replay {
            read,
            io,
            timeout,
            due,
            deadline: Box::pin(tokio::time::sleep_until(due)),
            armed: deadline.is_some(),
            write_blocked: false,
            response_next: true,
            closing: false,
            config,
        }
    }

    /// The timer fired: if the request's deadline is still ahead (the timer
    /// was left where an earlier request put it), moves it there and says so.
    fn postpone(&mut self, cx: &mut Context<'_>) -> bool {
        if Instant::now() >= self.due {
            return false;
        }
        self.deadline.as_mut().reset(self.due);
        // Ahead, so pending: registered to wake the connection then.
        self.deadline.as_mut().poll(cx).is_pending()
    }

    fn wrote(&mut self, result: &Poll<io::Result<usize>>, first: &[u8]) {
        match result {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.armed = false;
                self.write_blocked = false;
                if self.response_next {
                    self.response_next = false;
                    self.closing = announces_close(first);
                }
            }
            Poll::Pending => self.write_blocked = true,
            Poll::Ready(_) => self.write_blocked = false,
        }
    }
}

impl<S: Socket> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.armed && this.deadline.as_mut().poll(cx).is_ready() && !this.postpone(cx) {
            this.armed = false;
            if !this.write_blocked && !this.closing {
                // Best effort: whatever the socket takes now, nothing more.
                let _ = this.io.try_write(&answer::request_timeout(&this.config));
            }
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request not received in time",
            )));
        }
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before && !this.armed {
            // A request starts: its deadline runs from this byte. Polled
            // once so that its expiry wakes the connection.
            this.armed = true;
            this.response_next = true;
            this.due = Instant::now() + this.timeout;
            // Registers the timer's waker; a timer already run out (or
            // never started) is moved to the new deadline.
            if this.deadline.as_mut().poll(cx).is_ready() {
                let _ = this.postpone(cx);
            }
        }
        result
    }
}

impl<S: Socket> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&result, buf);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        let first = bufs
            .iter()
            .find(|buf| !buf.is_empty())
            .map_or(&[][..], |buf| &buf[..]);
        self.wrote(&result, first);
        result
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

/// Whether a response head (the start of `written`) closes the connection:
/// HTTP/1.1 with `connection: close`, HTTP/1.0 without `keep-alive`.
///
/// Runs once per response actix writes, so it reads the head line by line
/// (a handful of lines) instead of searching the whole write for each
/// needle: the search was ~2 % of the process's time under publish load.
fn announces_close(written: &[u8]) -> bool {
    let mut lines = written.split(|&byte| byte == b'\n');
    let http_10 = lines
        .next()
        .is_some_and(|status| status.starts_with(b"HTTP/1.0 "));
    let value = |wanted: &[u8]| {
        lines
            .clone()
            // The head ends at its first empty line (`\r\n\r\n`).
            .take_while(|line| !line.is_empty() && *line != b"\r")
            .any(|line| {
                line.len() >= HEADER.len() + wanted.len()
                    && line[..HEADER.len()].eq_ignore_ascii_case(HEADER)
                    && line[HEADER.len()..HEADER.len() + wanted.len()].eq_ignore_ascii_case(wanted)
            })
    };
    if http_10 {
        !value(b"keep-alive")
    } else {
        value(b"close")
    }
}

/// The header [`announces_close`] looks for, as actix writes it.
const HEADER: &[u8] = b"connection: ";

#[cfg(test)]
mod tests {
    use super::announces_close;

    #[test]
    fn a_closing_response_head_is_recognised() {
        let cases: [(&[u8], bool); 8] = [
            (
                b"HTTP/1.1 201 Created\r\ncontent-length: 17\r\n\r\nconnection: close",
                false,
            ),
            (b"HTTP/1.1 200 OK\r\nx-connection: close\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nconnection: close", true),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
            (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n", true),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                true,
            ),
            (b"HTTP/1.0 200 OK\r\n\r\n", true),
            (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n", false),
        ];
        for (head, closes) in cases {
            assert_eq!(
                announces_close(head),
                closes,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
