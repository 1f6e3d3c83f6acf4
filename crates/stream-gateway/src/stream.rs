//! One client's SSE body.
//!
//! Order of work for a new stream: `retry:`, then per topic any `reset`
//! and the replayed history, then the live feed. A client whose last event
//! id cannot be read starts at each topic's head, after one `reset` per
//! topic (`cursor-invalid`) whose id is that head: resuming from it is exact. History is read one slice
//! at a time (at most [`MAX_BATCH`] events or about [`MAX_BATCH_BYTES`]),
//! and the next slice only once the last one is written: a resuming client
//! that reads slowly, or not at all, holds one slice, not its whole replay. Each topic keeps the
//! position of the last event written; a live event at or before it is a
//! duplicate from the replay/live seam and is skipped, one exactly after
//! it is written, and anything else (a jump, a new epoch) sends the stream
//! back to the bus's history to refill from its own position. So whatever
//! the engine does, a client never sees a gap it is not told about.
//!
//! A stream a token opened ends at the token's `exp`, the way a stream
//! ends on shutdown (after whatever whole events are pending), with one
//! last event, [`TOKEN_EXPIRED`], and no `id:`: the client keeps its last
//! event id, reconnects with a fresh token, and resumes from history with
//! nothing lost.
//!
//! Frames are the events' shared `Bytes` when the subscription has one
//! topic. With several topics the id names every topic's position, so only
//! the `id:` line is written per client, in front of the shared body.
//!
//! Each stream carries what its close line in the access log says
//! ([`StreamLog`]): its request id, client address, start, bytes and
//! events written, and why it ended; the line is written when the stream
//! is dropped, on either path that serves it.
//!
//! The body is polled by hand rather than written as an `async` loop: an
//! idle stream is then a couple of hundred bytes plus its timer and one
//! small pending receive per topic, instead of a state machine sized for
//! the rarest path (a refill from Redis), which would cost kilobytes on
//! every connection. That rare path is boxed only while it runs.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bus::{Bus, Recv, Replay, Slice, Subscription};
use bytes::{BufMut, Bytes, BytesMut};
use connection::per_address::Slot;
use futures_util::Stream;
use operations::Shutdown;
use service_kit::Client;
use service_kit::access_log;

use crate::metrics::StreamMetrics;
use shared_types::event::encode_body;
use shared_types::{Cursor, Event, Position, Sequence, sse_comment, sse_retry};

use crate::request::Resume;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// Most queued events gathered into one write when a client is behind.
const MAX_BATCH: usize = 64;
/// Stop gathering past this many bytes: a chunk is written whole before the
/// stream is polled again (and actix, when it serves the stream, checks its
/// write buffer before asking for more, not after), so one must stay small.
const MAX_BATCH_BYTES: usize = 64 * 1024;
/// One read of history: the same bounds as a batch of live events.
const REPLAY_SLICE: Slice = Slice {
    events: MAX_BATCH,
    bytes: MAX_BATCH_BYTES,
};

/// The type of the event that ends a stream at its token's `exp`; its data
/// is `{"reason":"token-expired"}`. Reserved: no publisher can send it.
pub const TOKEN_EXPIRED: &str = shared_types::publish::TOKEN_EXPIRED_EVENT;

/// How a stream behaves; from `stream.*` settings.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub keepalive: Duration,
    pub retry: Duration,
    /// Streams end at a random moment within this window after shutdown
    /// begins, so their clients do not all reconnect at the same instant.
    pub shutdown_spread: Duration,
}

/// A slot among the `stream.max_streams` a process may hold open, and the
/// client address's among its `stream.max_streams_per_address`; both
/// given back when the stream is dropped, however it ends.
#[derive(Debug)]
pub struct Permit {
    open: Arc<AtomicUsize>,
    /// Given back by its own drop; `None` when that limit is off.
    _address: Option<Slot>,
}

impl Permit {
    /// Takes a slot if fewer than `limit` are taken; with it, `address`.
    pub fn acquire(open: &Arc<AtomicUsize>, limit: usize, address: Option<Slot>) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Permit {
            open: open.clone(),
            _address: address,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a stream ended, as its close line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client closed the connection (or the stream was dropped
    /// without another reason: the connection is gone).
    ClientGone,
    /// Its token's `exp` came.
    TokenExpired,
    /// The client fell a whole queue behind.
    TooSlow,
    /// The client stopped reading; the kernel aborted the connection.
    WriteTimedOut,
    /// Another write error.
    Failed,
    /// The process is shutting down.
    Shutdown,
    /// The bus ended the subscription.
    BusClosed,
    /// A gap could not be refilled from history.
    RefillFailed,
}

impl Ending {
    /// A stable label for logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::ClientGone => "client-gone",
            Self::TokenExpired => "token-expired",
            Self::TooSlow => "too-slow",
            Self::WriteTimedOut => "write-timed-out",
            Self::Failed => "failed",
            Self::Shutdown => "shutdown",
            Self::BusClosed => "bus-closed",
            Self::RefillFailed => "refill-failed",
        }
    }
}

/// What a stream's close line says, gathered while it runs: 72 bytes in
/// the stream (and the id's 32 on the heap), for every open stream.
#[derive(Debug)]
pub struct StreamLog {
    /// The request's id as text: 16 bytes here, where the `RequestId`
    /// (a header value, 40 bytes) would add 24 to every idle stream.
    request_id: Box<str>,
    client: Option<std::net::IpAddr>,
    opened: Instant,
    /// Body bytes handed to the connection (chunk framing not counted).
    bytes: u64,
    /// Published events written, replayed ones included.
    events: u64,
    /// Set where the stream decides to end; `None` when it was dropped
    /// from outside.
    end: Option<Ending>,
}

impl StreamLog {
    /// The log of a stream opening now for `client`.
    pub fn new(client: &Client) -> Self {
        Self {
            request_id: client.request_id.as_str().into(),
            client: client.address,
            opened: Instant::now(),
            bytes: 0,
            events: 0,
            end: None,
        }
    }
}

/// One subscribed topic of a stream.
struct Feed {
    topic: Arc<str>,
    live: Subscription,
    /// The last event of this topic written to the client (or skipped by a
    /// reset); the client's cursor for this topic.
    position: Position,
    /// History after `position` is still to be read (a resume, or a refill
    /// that did not fit one slice); live events wait meanwhile.
    catching_up: bool,
}

type Refill = Pin<Box<dyn Future<Output = (usize, Result<Replay, bus::Error>)> + Send>>;

/// The state of one open stream; see the module docs.
pub struct EventStream {
    bus: Bus,
    feeds: Vec<Feed>,
    /// Frames ready to write, in order.
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    config: StreamConfig,
    last_sent: Instant,
    keepalive: Pin<Box<Sleep>>,
    /// Resolves when shutdown begins.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set once shutdown began: when this fires the stream ends.
    closing: Option<Pin<Box<Sleep>>>,
    /// The token's `exp`, for a stream a token opened: when this fires the
    /// stream ends with a `token-expired` event.
    expires: Option<Pin<Box<Sleep>>>,
    /// A history read (one slice) for one topic; live events wait meanwhile.
    refill: Option<Refill>,
    /// Which feed is polled first next time, so a busy topic cannot starve
    /// the others of a multi-topic stream.
    next_feed: usize,
    /// The stream ends once `pending` is written.
    finished: bool,
    metrics: StreamMetrics,
    /// Set when the stream ended because its client fell a queue behind or
    /// stopped reading (its writes timed out).
    too_slow: bool,
    _permit: Permit,
    /// Deliveries not yet added to the shared counter (saves an atomic
    /// operation per event per client).
    unreported: u64,
    log: StreamLog,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field(
                "topics",
                &self.feeds.iter().map(|f| &*f.topic).collect::<Vec<_>>(),
            )
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// What happened to one live event.
enum Accepted {
    /// Written (or skipped as already written).
    Done,
    /// Out of sequence: the topic must be refilled from history first.
    Refill,
}

impl EventStream {
    /// Subscribes to `topics`; a client resuming after a cursor is then
    /// replayed from it as the body is written, any other starts at each
    /// topic's head (one whose cursor was unreadable is told so first).
    /// `expires_at` (seconds since the Unix epoch) ends it, when given;
    /// `log` is written as its close line when it is dropped.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        bus: Bus,
        topics: &[String],
        resume: Resume,
        config: StreamConfig,
        shutdown: Shutdown,
        metrics: StreamMetrics,
        permit: Permit,
        expires_at: Option<u64>,
        log: StreamLog,
    ) -> Result<Self, bus::Error> {
        // Only a resuming client needs history; a fresh one starts where
        // its subscription does, which the bus reports with it.
        let invalid = resume == Resume::Invalid;
        let (resuming, positions): (bool, Vec<Option<Position>>) = match resume {
            Resume::After(cursor) => (true, cursor.0.into_iter().map(Some).collect()),
            Resume::Head | Resume::Invalid => (false, vec![None; topics.len()]),
        };
        let mut feeds = Vec::with_capacity(topics.len());
        for (topic, position) in topics.iter().zip(positions) {
            let (live, position) = match position {
                Some(position) => (bus.subscribe(topic).await?, position),
                None => bus.subscribe_at_head(topic).await?,
            };
            feeds.push(Feed {
                topic: Arc::from(topic.as_str()),
                live,
                position,
                catching_up: resuming,
            });
        }
        let now = Instant::now();
        let mut stream = Self {
            bus,
            feeds,
            pending: VecDeque::new(),
            pending_bytes: 0,
            keepalive: Box::pin(tokio::time::sleep_until(now + config.keepalive)),
            config,
            last_sent: now,
            shutdown: Box::pin(shutdown.token().clone().cancelled_owned()),
            closing: None,
            expires: None,
            refill: None,
            next_feed: 0,
            finished: false,
            metrics,
            too_slow: false,
            _permit: permit,
            unreported: 0,
            log,
        };
        stream.push(sse_retry(stream.config.retry.as_millis() as u64));
        if invalid {
            // Every position is known now: each reset names the whole head.
            for index in 0..stream.feeds.len() {
                stream.push_reset(index, "cursor-invalid");
            }
        }
        match expires_at.map(time_left) {
            // Already past (a token inside the verifier's leeway): the
            // stream says so and ends before reading anything.
            Some(Duration::ZERO) => {
                stream.push(token_expired_frame());
                stream.end(Ending::TokenExpired);
            }
            Some(left) => {
                stream.expires = Some(Box::pin(tokio::time::sleep_until(now + left)));
            }
            None => {}
        }
        stream.metrics.connections().inc();
        Ok(stream)
    }

    /// A `reset` for topic `index`, with the stream's current cursor as its
    /// id: the client resumes from there.
    fn push_reset(&mut self, index: usize, reason: &str) {
        let data = serde_json::json!({
            "topic": &*self.feeds[index].topic,
            "reason": reason,
        })
        .to_string();
        let mut frame = BytesMut::new();
        frame.put_slice(format!("id: {}\n", self.cursor()).as_bytes());
        encode_body(&mut frame, "reset", &data);
        self.push(frame.freeze());
        self.metrics.resets().inc();
    }

    fn push(&mut self, frame: Bytes) {
        self.pending_bytes += frame.len();
        self.pending.push_back(frame);
    }

    /// Pops everything pending as one write.
    fn take_pending(&mut self) -> Option<Bytes> {
        let first = self.pending.pop_front()?;
        let total = std::mem::take(&mut self.pending_bytes);
        if self.pending.is_empty() {
            return Some(first);
        }
        let mut merged = BytesMut::with_capacity(total);
        merged.put(first);
        while let Some(next) = self.pending.pop_front() {
            merged.put(next);
        }
        Some(merged.freeze())
    }

    /// Gathers queued live events into `pending`, up to one batch. Returns
    /// Ready when something changed (events, a refill, the end), Pending
    /// when every feed is empty and will wake this task.
    fn poll_live(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let count = self.feeds.len();
        let mut changed = false;
        let mut gathered = 0;
        for step in 0..count {
            let index = (self.next_feed + step) % count;
            while gathered < MAX_BATCH && self.pending_bytes < MAX_BATCH_BYTES {
                match self.feeds[index].live.poll_recv(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Recv::Event(event)) => {
                        changed = true;
                        gathered += 1;
                        if let Accepted::Refill = self.accept(index, &event) {
                            self.start_refill(index);
                            return Poll::Ready(());
                        }
                    }
                    Poll::Ready(Recv::Lagged) => {
                        // Everything pending is whole frames: the client
                        // gets them, then the end, and resumes from history.
                        tracing::debug!(request_id = %self.log.request_id, "client too slow; closing its stream");
                        self.too_slow = true;
                        self.end(Ending::TooSlow);
                        return Poll::Ready(());
                    }
                    Poll::Ready(Recv::Closed) => {
                        self.end(Ending::BusClosed);
                        return Poll::Ready(());
                    }
                }
            }
        }
        self.next_feed = (self.next_feed + 1) % count;
        if changed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Writes a live event if it is the next one for its topic, skips it
    /// if already written, and asks for a refill otherwise.
    ///
    /// Unlike the Redis relay, another epoch is a refill here: this stream
    /// is one client's cursor, and only its replay knows whether the new
    /// history still covers it or the client must be sent a `reset`.
    fn accept(&mut self, index: usize, event: &Event) -> Accepted {
        match event.position.sequence(Some(self.feeds[index].position)) {
            Sequence::Duplicate => Accepted::Done,
            Sequence::Next => {
                self.emit(index, event);
                Accepted::Done
            }
            Sequence::Gap | Sequence::OtherEpoch => Accepted::Refill,
        }
    }

    /// Reads the next slice of `index`'s history after its position.
    fn start_refill(&mut self, index: usize) {
        let bus = self.bus.clone();
        let topic = self.feeds[index].topic.clone();
        let after = self.feeds[index].position;
        self.refill = Some(Box::pin(async move {
            (index, bus.replay_slice(&topic, after, REPLAY_SLICE).await)
        }));
    }

    fn apply_replay(&mut self, index: usize, replay: Replay) {
        self.feeds[index].catching_up = replay.more;
        if let Some(reason) = replay.reset {
            self.feeds[index].position = replay.start;
            self.push_reset(index, reason.as_str());
        }
        let mut replayed = 0;
        for event in replay.events {
            if let Accepted::Done = self.accept(index, &event) {
                replayed += 1;
            }
        }
        self.metrics.replayed().inc_by(replayed);
    }

    fn emit(&mut self, index: usize, event: &Event) {
        self.feeds[index].position = event.position;
        if self.feeds.len() == 1 {
            self.push(event.frame().clone());
        } else {
            let id = self.cursor().to_string();
            let body = event.body();
            let mut frame = BytesMut::with_capacity(id.len() + 5 + body.len());
            frame.put_slice(b"id: ");
            frame.put_slice(id.as_bytes());
            frame.put_u8(b'\n');
            frame.put(body);
            self.push(frame.freeze());
        }
        self.log.events += 1;
        self.unreported += 1;
        if self.unreported >= 256 {
            self.metrics.delivered().inc_by(self.unreported);
            self.unreported = 0;
        }
    }

    /// How many topics the stream follows.
    pub fn topics(&self) -> usize {
        self.feeds.len()
    }

    /// The client stopped reading and the connection was aborted: counted
    /// in `es_slow_client_disconnects_total` when the stream is dropped.
    pub fn client_stopped_reading(&mut self) {
        self.too_slow = true;
        self.log.end = Some(Ending::WriteTimedOut);
    }

    /// The connection failed for another reason than the client leaving
    /// or not reading: said so in the close line.
    pub fn connection_failed(&mut self) {
        self.log.end.get_or_insert(Ending::Failed);
    }

    /// The stream ends once what is pending is written, for `why`.
    fn end(&mut self, why: Ending) {
        self.finished = true;
        self.log.end.get_or_insert(why);
    }

    fn cursor(&self) -> Cursor {
        Cursor(self.feeds.iter().map(|feed| feed.position).collect())
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // The token's time is up: the whole events already pending, the
            // last one, then the end; not one more event is read, from
            // history or live.
            if let Some(expires) = this.expires.as_mut()
                && expires.as_mut().poll(cx).is_ready()
            {
                this.expires = None;
                this.refill = None;
                this.push(token_expired_frame());
                this.end(Ending::TokenExpired);
            }
            // A refill runs alone: live events wait in the ring until it is
            // written, then those already covered are skipped.
            if let Some(refill) = this.refill.as_mut() {
                let (index, result) = std::task::ready!(refill.as_mut().poll(cx));
                this.refill = None;
                match result {
                    Ok(replay) => this.apply_replay(index, replay),
                    Err(error) => {
                        tracing::warn!(%error, topic = %this.feeds[index].topic, request_id = %this.log.request_id, "cannot refill a gap; closing the stream");
                        this.end(Ending::RefillFailed);
                    }
                }
            }
            if let Some(chunk) = this.take_pending() {
                this.last_sent = Instant::now();
                this.log.bytes += chunk.len() as u64;
                return Poll::Ready(Some(Ok(chunk)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match this.closing.as_mut() {
                // Shutdown began earlier and this stream's moment to end came.
                Some(closing) => {
                    if closing.as_mut().poll(cx).is_ready() {
                        this.log.end.get_or_insert(Ending::Shutdown);
                        return Poll::Ready(None);
                    }
                }
                // Shutdown begins: pick this stream's moment to end.
                None => {
                    if this.shutdown.as_mut().poll(cx).is_ready() {
                        let spread = this.config.shutdown_spread.as_millis() as u64;
                        let delay = if spread == 0 {
                            0
                        } else {
                            rand::random_range(0..spread)
                        };
                        this.closing =
                            Some(Box::pin(tokio::time::sleep(Duration::from_millis(delay))));
                        continue;
                    }
                }
            }
            // History before live events: the next slice of the first
            // topic still catching up, now that the last one is written.
            if let Some(index) = this.feeds.iter().position(|feed| feed.catching_up) {
                this.start_refill(index);
                continue;
            }
            if this.poll_live(cx).is_ready() {
                continue;
            }
            // Nothing to send: maybe time for a keep-alive comment.
            if this.keepalive.as_mut().poll(cx).is_ready() {
                let due = this.last_sent + this.config.keepalive;
                let now = Instant::now();
                if now >= due {
                    this.keepalive.as_mut().reset(now + this.config.keepalive);
                    this.push(sse_comment("keep-alive"));
                } else {
                    // Something was sent since the timer was set: wait out
                    // the rest of the silence instead.
                    this.keepalive.as_mut().reset(due);
                }
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// The time until `exp` (seconds since the Unix epoch); zero once past.
fn time_left(exp: u64) -> Duration {
    (std::time::UNIX_EPOCH + Duration::from_secs(exp))
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

/// `event: token-expired` with its reason, and no `id:`.
fn token_expired_frame() -> Bytes {
    let mut frame = BytesMut::new();
    encode_body(&mut frame, TOKEN_EXPIRED, r#"{"reason":"token-expired"}"#);
    frame.freeze()
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // A stream dropped while lagging was ended from outside: the kernel
        // aborted a connection whose client stopped reading entirely.
        if self.too_slow
            || self
                .feeds
                .iter_mut()
                .any(|feed| matches!(feed.live.try_recv(), Some(Recv::Lagged)))
        {
            self.metrics.slow_disconnects().inc();
        }
        self.metrics.delivered().inc_by(self.unreported);
        self.metrics.connections().dec();
        let log = &self.log;
        tracing::info!(
            target: access_log::TARGET,
            request_id = %log.request_id,
            client = %access_log::Address(log.client),
            topics = self.feeds.len(),
            duration_ms = access_log::millis(log.opened.elapsed()),
            bytes = log.bytes,
            events = log.events,
            end = %log.end.unwrap_or(Ending::ClientGone).label(),
            "stream closed"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    /// Every idle connection holds one of these: keep it small (the async
    /// version was 7.8 KB).
    #[test]
    fn an_idle_stream_stays_small() {
        let size = std::mem::size_of::<super::EventStream>();
        assert!(size <= 512, "EventStream is {size} bytes");
        // Its close line's share: see StreamLog.
        let log = std::mem::size_of::<StreamLog>();
        assert!(log <= 72, "StreamLog is {log} bytes");
    }

    #[tokio::test]
    async fn a_resume_is_written_one_slice_at_a_time() {
        let bus = Bus::memory(bus::MemoryConfig::default());
        let topics: Vec<String> = (0..16).map(|i| format!("t{i:02}")).collect();
        let message = "x".repeat(100);
        for topic in &topics {
            for _ in 0..1000 {
                bus.publish(topic, "message", &message).await.unwrap();
            }
        }
        let cursor = Cursor::parse(&vec!["0-0"; 16].join(","), 16).unwrap();
        let config = StreamConfig {
            keepalive: Duration::from_secs(60),
            retry: Duration::from_secs(3),
            shutdown_spread: Duration::ZERO,
        };
        let open = Arc::new(AtomicUsize::new(0));
        let mut stream = EventStream::open(
            bus,
            &topics,
            Resume::After(cursor),
            config,
            Shutdown::new(),
            StreamMetrics::register(&operations::Metrics::new()),
            Permit::acquire(&open, 1, None).unwrap(),
            None,
            StreamLog::new(&Client {
                address: None,
                request_id: service_kit::RequestId::new(),
            }),
        )
        .await
        .unwrap();
        // The whole replay is ~2.3 MB; no write, and nothing held for one,
        // may come near that.
        let frame = 200;
        let mut events = 0;
        while events < 16_000 {
            let chunk = stream.next().await.unwrap().unwrap();
            assert!(
                chunk.len() <= MAX_BATCH_BYTES + frame,
                "a chunk of {} bytes",
                chunk.len()
            );
            assert!(stream.pending_bytes <= MAX_BATCH_BYTES + frame);
            events += chunk.windows(6).filter(|w| w == b"data: ").count();
        }
        assert_eq!(events, 16_000);
    }
}
