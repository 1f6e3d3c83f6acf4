//! A raw TCP client for tests that check the bytes on the wire: what a
//! server writes, in what framing, and when it closes the connection.
//!
//! An HTTP client library would hide exactly what these tests look at
//! (chunk sizes, headers it folds, a close it treats as the end of a body),
//! so [`RawClient`] only writes bytes and keeps every byte read, in order.
//! Every read is bounded: by the client's patience (see
//! [`RawClient::with_patience`]) or by a limit the caller passes.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// How long a read waits for what it expects unless told otherwise: long
/// enough for a loaded machine, so that only a hang ever reaches it.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Bytes asked of the socket per read. Only how they are split between
/// reads depends on it, never what ends up read.
const READ_SIZE: usize = 16 * 1024;

/// How much of what was read a failure message quotes: the end, where the
/// unexpected part usually is, without pasting megabytes of a stream.
const QUOTED: usize = 2048;

/// One connection to a server on loopback and everything read from it so
/// far.
#[derive(Debug)]
pub struct RawClient {
    socket: TcpStream,
    /// Every byte read, in order; reads only ever append.
    received: Vec<u8>,
    /// Where the part of `received` the test has not dealt with yet starts;
    /// [`RawClient::read_until`] looks for its needle only from here, so
    /// that it finds it in the next response rather than in one before.
    consumed: usize,
    /// The deadline of [`RawClient::read_until`] and
    /// [`RawClient::read_to_end`].
    patience: Duration,
    /// Whether the connection ended in an error (a reset) rather than an
    /// orderly close.
    failed: bool,
}

impl RawClient {
    /// Connects to `port` on 127.0.0.1 from an address the kernel picks.
    ///
    /// # Panics
    /// If the connection cannot be made.
    pub async fn connect(port: u16) -> Self {
        Self::connect_from(port, None, None).await
    }

    /// Connects to `port` on 127.0.0.1, from `source` if given (any
    /// 127.0.0.0/8 address works on Linux without configuration, so tests
    /// can act as many clients), and with a receive buffer of
    /// `receive_buffer` bytes if given: a client that then reads nothing
    /// stalls the server's writes after a few hundred kilobytes instead of
    /// megabytes.
    ///
    /// # Panics
    /// If the socket cannot be set up or the connection cannot be made.
    pub async fn connect_from(
        port: u16,
        source: Option<Ipv4Addr>,
        receive_buffer: Option<u32>,
    ) -> Self {
        let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("cannot open a socket: {e}"));
        if let Some(size) = receive_buffer {
            socket
                .set_recv_buffer_size(size)
                .unwrap_or_else(|e| panic!("cannot set a receive buffer of {size} bytes: {e}"));
        }
        if let Some(source) = source {
            socket
                .bind(SocketAddr::from((source, 0)))
                .unwrap_or_else(|e| panic!("cannot bind to {source}: {e}"));
        }
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let socket = socket
            .connect(server)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {server}: {e}"));
        Self {
            socket,
            received: Vec::new(),
            consumed: 0,
            patience: PATIENCE,
            failed: false,
        }
    }

    /// Makes [`RawClient::read_until`] and [`RawClient::read_to_end`] wait
    /// up to `patience` instead of [`PATIENCE`].
    #[must_use]
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The socket, for what this client does not wrap: socket options,
    /// addresses, non-blocking probes, shutting down the sending side.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// Writes all of `bytes`.
    ///
    /// # Panics
    /// If the write fails; use [`RawClient::try_send`] where the server
    /// may rightly close first.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        if let Err(error) = self.try_send(bytes).await {
            panic!("cannot send: {error}; read so far: {:?}", self.quote());
        }
    }

    /// Writes all of `bytes`; an error means the server closed or reset
    /// the connection.
    pub async fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.socket.write_all(bytes.as_ref()).await
    }

    /// Reads once, whatever has arrived (waiting for something if nothing
    /// has). False when the server closed or reset the connection.
    pub async fn read_more(&mut self) -> bool {
        let mut buf = [0; READ_SIZE];
        match self.socket.read(&mut buf).await {
            Ok(0) => false,
            Ok(n) => {
                self.received.extend_from_slice(&buf[..n]);
                true
            }
            Err(_) => {
                self.failed = true;
                false
            }
        }
    }

    /// Reads until `needle` has arrived after the part already consumed
    /// (see [`RawClient::consume`]); returns everything read so far.
    ///
    /// # Panics
    /// If the connection ends first, or the needle takes longer than the
    /// client's patience.
    pub async fn read_until(&mut self, needle: &str) -> String {
        let needle = needle.as_bytes();
        let mut from = self.consumed;
        let found = tokio::time::timeout(self.patience, async {
            loop {
                if contains(&self.received[from..], needle) {
                    return true;
                }
                // What was searched cannot hold the needle, except its
                // last few bytes, which a read may complete.
                from = self.received.len().saturating_sub(needle.len()).max(from);
                if !self.read_more().await {
                    return false;
                }
            }
        })
        .await;
        let needle = String::from_utf8_lossy(needle);
        match found {
            Ok(true) => self.text(),
            Ok(false) => panic!(
                "connection closed before {needle:?}; got {:?}",
                self.quote()
            ),
            Err(_) => panic!(
                "no {needle:?} within {:?}; got {:?}",
                self.patience,
                self.quote()
            ),
        }
    }

    /// Reads until the server closes the connection (a reset counts, see
    /// [`RawClient::failed`]); returns everything read.
    ///
    /// # Panics
    /// If the server has not closed it within the client's patience.
    pub async fn read_to_end(&mut self) -> String {
        if self.closed_within(self.patience).await.is_none() {
            panic!(
                "the server did not close the connection within {:?}; got {:?}",
                self.patience,
                self.quote()
            );
        }
        self.text()
    }

    /// Waits up to `limit` for the server to end the connection (an orderly
    /// close or a reset), keeping what it wrote before (a 408, say).
    /// Returns how long that took, or `None` if the connection is still
    /// open.
    pub async fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        tokio::time::timeout(limit, async { while self.read_more().await {} })
            .await
            .ok()
            .map(|()| started.elapsed())
    }

    /// Whether a read failed, which on a connection means the server reset
    /// it rather than closing it in order.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Every byte read so far.
    pub fn received(&self) -> &[u8] {
        &self.received
    }

    /// Everything read so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }

    /// Whether `needle` is anywhere in what was read.
    pub fn contains(&self, needle: &str) -> bool {
        contains(&self.received, needle.as_bytes())
    }

    /// Where the part the test has not dealt with yet starts.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// Marks the first `end` bytes read as dealt with (a whole response,
    /// say): later [`RawClient::read_until`]s look only past them.
    ///
    /// # Panics
    /// If fewer than `end` bytes were read, or `end` is before what was
    /// consumed already.
    pub fn consume(&mut self, end: usize) {
        assert!(
            (self.consumed..=self.received.len()).contains(&end),
            "cannot consume up to byte {end}: {} consumed, {} read",
            self.consumed,
            self.received.len()
        );
        self.consumed = end;
    }

    /// The last `limit` bytes read, as text, for failure messages.
    pub fn last(&self, limit: usize) -> String {
        let start = self.received.len().saturating_sub(limit);
        String::from_utf8_lossy(&self.received[start..]).into_owned()
    }

    fn quote(&self) -> String {
        self.last(QUOTED)
    }
}

/// Whether `needle` occurs in `haystack`; an empty needle always does.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::net::TcpListener;

    /// A server on a free port that accepts one connection and hands it to
    /// `serve`.
    async fn serve_one<F, Fut>(serve: F) -> u16
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve(stream).await;
        });
        port
    }

    #[tokio::test]
    async fn reads_until_a_needle_then_to_the_close() {
        let port = serve_one(|mut stream| async move {
            let mut request = [0; 4];
            stream.read_exact(&mut request).await.unwrap();
            stream.write_all(b"one\r\n\r\ntwo\r\n\r\n").await.unwrap();
            stream.write_all(&request).await.unwrap();
        })
        .await;
        let mut client = RawClient::connect(port).await;
        client.send("ping").await;
        assert!(client.read_until("one\r\n\r\n").await.starts_with("one"));
        client.consume(7);
        client.read_until("\r\n\r\n").await;
        assert_eq!(client.read_to_end().await, "one\r\n\r\ntwo\r\n\r\nping");
        assert!(client.contains("two") && !client.failed());
        assert_eq!(client.last(4), "ping");
        assert_eq!(client.received().len(), 18);
    }

    #[tokio::test]
    async fn closed_within_tells_an_open_connection_from_a_closed_one() {
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let port = serve_one(|stream| async move {
            let _ = closed.await;
            drop(stream);
        })
        .await;
        let mut client = RawClient::connect_from(port, Some(Ipv4Addr::new(127, 0, 0, 2)), None)
            .await
            .with_patience(Duration::from_millis(100));
        assert_eq!(
            client.socket().local_addr().unwrap().ip(),
            Ipv4Addr::new(127, 0, 0, 2)
        );
        assert!(
            client
                .closed_within(Duration::from_millis(50))
                .await
                .is_none()
        );
        close.send(()).unwrap();
        assert!(client.closed_within(PATIENCE).await.is_some());
    }
}
