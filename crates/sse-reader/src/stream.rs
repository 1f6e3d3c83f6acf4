//! Async adapter that reads SSE items from a `reqwest` response body.
//!
//! Tests talk to the hub over real HTTP; this wraps the response so they can
//! ask for "the next event" (with a deadline, so a missing event fails the
//! test instead of hanging it) while all framing decisions stay in
//! [`Parser`].

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::parser::{Event, Item, Parser};

/// Why reading from an [`SseStream`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The HTTP body could not be read (connection reset, bad chunked
    /// encoding, ...). The stream is finished after this.
    Http(reqwest::Error),
    /// Nothing arrived within the given deadline. The stream is still usable:
    /// no bytes are lost and a partially received event is completed by a
    /// later call.
    Timeout(Duration),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(e) => write!(f, "reading the event stream failed: {e}"),
            Self::Timeout(d) => write!(f, "timed out after {d:?} waiting for the event stream"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Http(e) => Some(e),
            Self::Timeout(_) => None,
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e)
    }
}

/// A `text/event-stream` response read item by item.
///
/// It does not check the status code or `Content-Type`; tests usually want to
/// assert those themselves, either before wrapping or via
/// [`SseStream::response`].
///
/// All `next_*` methods are cancel-safe: body bytes are handed to the parser
/// as soon as they are read and parsed items are queued, so dropping a pending
/// call (for example through a timeout or `select!`) loses nothing.
///
/// After the body ends or a transport error has been returned, every further
/// call returns `None` (`Ok(None)` for the timeout variants).
#[derive(Debug)]
pub struct SseStream {
    response: reqwest::Response,
    parser: Parser,
    /// Items parsed from already-read chunks but not yet handed out; one
    /// chunk can complete several items.
    pending: VecDeque<Item>,
    /// The body ended or failed, so `response` must not be polled again.
    finished: bool,
}

impl SseStream {
    /// Starts reading `response`'s body as an event stream.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            parser: Parser::new(),
            pending: VecDeque::new(),
            finished: false,
        }
    }

    /// The wrapped response, for asserting on status and headers.
    pub fn response(&self) -> &reqwest::Response {
        &self.response
    }

    /// The ID a browser would send as `Last-Event-ID` if it reconnected now;
    /// see [`Parser::last_event_id`].
    ///
    /// This reflects what has been parsed, which can be ahead of what has
    /// been returned: items from one chunk are parsed together.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// Returns the next event, comment or retry, waiting as long as needed.
    ///
    /// `None` means the server ended the body; an event that was not yet
    /// terminated by a blank line at that point is discarded, as in a
    /// browser.
    pub async fn next_item(&mut self) -> Option<Result<Item, Error>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            if self.finished {
                return None;
            }
            // The only await point; everything after it is synchronous, which
            // is what makes this method cancel-safe.
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.pending.extend(self.parser.feed(&bytes)),
                Ok(None) => self.finished = true,
                Err(e) => {
                    self.finished = true;
                    return Some(Err(Error::Http(e)));
                }
            }
        }
    }

    /// Returns the next event, skipping comments and retry fields.
    ///
    /// `None` means the server ended the body (see [`SseStream::next_item`]).
    pub async fn next_event(&mut self) -> Option<Result<Event, Error>> {
        loop {
            match self.next_item().await? {
                Ok(Item::Event(event)) => return Some(Ok(event)),
                Ok(Item::Comment(_) | Item::Retry(_)) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Like [`SseStream::next_item`], but gives up after `timeout`.
    ///
    /// * `Ok(Some(item))`: an item arrived in time.
    /// * `Ok(None)`: the server ended the body in time.
    /// * `Err(Error::Timeout(timeout))`: nothing completed in time; the stream
    ///   stays usable.
    /// * `Err(Error::Http(_))`: the body could not be read.
    pub async fn next_item_timeout(&mut self, timeout: Duration) -> Result<Option<Item>, Error> {
        match tokio::time::timeout(timeout, self.next_item()).await {
            Ok(next) => next.transpose(),
            Err(_elapsed) => Err(Error::Timeout(timeout)),
        }
    }

    /// Like [`SseStream::next_event`], but gives up after `timeout`.
    ///
    /// `timeout` bounds the whole wait for an event: comments and retry
    /// fields (such as keep-alives) arriving meanwhile are skipped and do
    /// not extend it, so a stream that only sends keep-alives still times out.
    ///
    /// * `Ok(Some(event))`: an event arrived in time.
    /// * `Ok(None)`: the server ended the body in time.
    /// * `Err(Error::Timeout(timeout))`: no event completed in time; the
    ///   stream stays usable.
    /// * `Err(Error::Http(_))`: the body could not be read.
    pub async fn next_event_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        match tokio::time::timeout(timeout, self.next_event()).await {
            Ok(next) => next.transpose(),
            Err(_elapsed) => Err(Error::Timeout(timeout)),
        }
    }
}

impl From<reqwest::Response> for SseStream {
    fn from(response: reqwest::Response) -> Self {
        Self::new(response)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    const SHORT: Duration = Duration::from_millis(100);
    const LONG: Duration = Duration::from_secs(10);

    /// A one-connection HTTP/1.1 server whose chunked SSE body is driven by
    /// the test: each message on the channel becomes one HTTP chunk, and
    /// dropping the sender ends the body. Lets tests control exactly where
    /// chunk boundaries fall and when data arrives.
    async fn serve() -> (SseStream, mpsc::UnboundedSender<&'static [u8]>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel::<&'static [u8]>();

        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            read_request_head(&mut sock).await;
            sock.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                  transfer-encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
            while let Some(data) = rx.recv().await {
                let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
                frame.extend_from_slice(data);
                frame.extend_from_slice(b"\r\n");
                sock.write_all(&frame).await.unwrap();
                sock.flush().await.unwrap();
            }
            sock.write_all(b"0\r\n\r\n").await.unwrap();
            sock.flush().await.unwrap();
        });

        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = client
            .get(format!("http://{addr}/events"))
            .send()
            .await
            .unwrap();
        (SseStream::new(response), tx)
    }

    async fn read_request_head(sock: &mut TcpStream) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed before sending a request");
            head.extend_from_slice(&buf[..n]);
        }
    }

    fn event(id: &str, event: &str, data: &str) -> Event {
        Event {
            id: id.to_owned(),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[tokio::test]
    async fn reads_items_split_across_chunks() {
        let (mut stream, tx) = serve().await;
        assert_eq!(stream.response().status(), reqwest::StatusCode::OK);

        for chunk in [
            &b": keep-alive\r"[..],
            b"\nretry: 250\nid: 1\nevent: up",
            b"date\ndata: caf\xC3",
            b"\xA9\n\ndata: tail-without-blank-line\n",
        ] {
            tx.send(chunk).unwrap();
        }
        drop(tx);

        assert_eq!(
            stream.next_item_timeout(LONG).await.unwrap(),
            Some(Item::Comment("keep-alive".to_owned()))
        );
        assert_eq!(
            stream.next_item_timeout(LONG).await.unwrap(),
            Some(Item::Retry(250))
        );
        assert_eq!(
            stream.next_item_timeout(LONG).await.unwrap(),
            Some(Item::Event(event("1", "update", "café")))
        );
        assert_eq!(stream.last_event_id(), "1");
        // The unterminated event is discarded when the body ends.
        assert!(stream.next_item().await.is_none());
        assert!(stream.next_item().await.is_none());
        assert_eq!(stream.next_event_timeout(LONG).await.unwrap(), None);
    }

    #[tokio::test]
    async fn next_event_skips_comments_and_retry() {
        let (mut stream, tx) = serve().await;
        tx.send(b": ping\n\nretry: 5\n: ping\ndata: x\n\n").unwrap();
        drop(tx);

        assert_eq!(
            stream.next_event().await.unwrap().unwrap(),
            event("", "message", "x")
        );
        assert!(stream.next_event().await.is_none());
    }

    #[tokio::test]
    async fn timeout_keeps_partial_event() {
        let (mut stream, tx) = serve().await;
        tx.send(b"data: a").unwrap();

        let err = stream.next_event_timeout(SHORT).await.unwrap_err();
        assert!(matches!(err, Error::Timeout(d) if d == SHORT), "{err:?}");

        // The half-received event survives the cancelled wait.
        tx.send(b"b\n\n").unwrap();
        assert_eq!(
            stream.next_event_timeout(LONG).await.unwrap(),
            Some(event("", "message", "ab"))
        );
    }

    #[tokio::test]
    async fn keep_alives_do_not_extend_event_timeout() {
        let (mut stream, tx) = serve().await;
        tx.send(b": ping\n").unwrap();

        // A keep-alive is an item...
        assert_eq!(
            stream.next_item_timeout(LONG).await.unwrap(),
            Some(Item::Comment("ping".to_owned()))
        );
        // ...but not an event.
        tx.send(b": ping\n").unwrap();
        assert!(matches!(
            stream.next_event_timeout(SHORT).await,
            Err(Error::Timeout(_))
        ));
        drop(tx);
    }
}
