//! One client's SSE body.
//!
//! Order of work for a new stream: `retry:`, then per topic any `reset`
//! and the replayed history, then the live feed. Each topic keeps the
//! position of the last event written; a live event at or before it is a
//! duplicate from the replay/live seam and is skipped, one exactly after
//! it is written, and anything else (a jump, a new epoch) sends the stream
//! back to the bus's history to refill from its own position. So whatever
//! the engine does, a client never sees a gap it is not told about.
//!
//! Frames are the events' shared `Bytes` when the subscription has one
//! topic. With several topics the id names every topic's position, so only
//! the `id:` line is written per client, in front of the shared body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bus::{Bus, Recv, Replay, Subscription};
use bytes::{BufMut, Bytes, BytesMut};
use service_kit::{Metrics, Shutdown};
use shared_types::event::encode_body;
use shared_types::{Cursor, Event, Position, sse_comment, sse_retry};
use tokio::time::{Instant, Sleep};

/// Most queued events gathered into one write when a client is behind.
const MAX_BATCH: usize = 64;
/// Stop gathering past this many bytes: actix checks its write buffer
/// before asking for more, not after, so one chunk must stay small.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// How a stream behaves; from `stream.*` settings.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub keepalive: Duration,
    pub retry: Duration,
    /// Streams end at a random moment within this window after shutdown
    /// begins, so their clients do not all reconnect at the same instant.
    pub shutdown_spread: Duration,
}

/// A slot among the `stream.max_streams` a process may hold open; given
/// back when the stream is dropped, however it ends.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Permit {
    /// Takes a slot if fewer than `limit` are taken.
    pub fn acquire(open: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Permit(open.clone()))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One subscribed topic of a stream.
struct Feed {
    topic: Arc<str>,
    live: Subscription,
    /// The last event of this topic written to the client (or skipped by a
    /// reset); the client's cursor for this topic.
    position: Position,
}

/// The state of one open stream; see the module docs.
pub struct EventStream {
    bus: Bus,
    feeds: Vec<Feed>,
    /// Frames ready to write, in order.
    pending: VecDeque<Bytes>,
    config: StreamConfig,
    last_sent: Instant,
    keepalive: Pin<Box<Sleep>>,
    shutdown: Shutdown,
    /// Set once shutdown began: when this fires the stream ends.
    closing: Option<Pin<Box<Sleep>>>,
    metrics: Metrics,
    /// Set when the stream ended because its client fell a queue behind.
    too_slow: bool,
    _permit: Permit,
    /// Deliveries not yet added to the shared counter (saves an atomic
    /// operation per event per client).
    unreported: u64,
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

/// What woke a waiting stream.
enum Wake {
    Live(usize, Recv),
    KeepAliveTimer,
    ShutdownBegan,
    CloseNow,
}

impl EventStream {
    /// Subscribes to `topics` and prepares the replay from `cursor` (or,
    /// for a fresh client, from each topic's head when it connected).
    pub async fn open(
        bus: Bus,
        topics: &[String],
        cursor: Option<Cursor>,
        config: StreamConfig,
        shutdown: Shutdown,
        metrics: Metrics,
        permit: Permit,
    ) -> Result<Self, bus::Error> {
        let positions = match cursor {
            Some(cursor) => cursor.0,
            None => {
                // Read heads before subscribing: the replay after them then
                // covers any event published in between.
                let mut heads = Vec::with_capacity(topics.len());
                for topic in topics {
                    heads.push(bus.head(topic).await?);
                }
                heads
            }
        };
        let mut feeds = Vec::with_capacity(topics.len());
        for (topic, position) in topics.iter().zip(positions) {
            feeds.push(Feed {
                topic: Arc::from(topic.as_str()),
                live: bus.subscribe(topic).await?,
                position,
            });
        }
        let now = Instant::now();
        let mut stream = Self {
            bus,
            feeds,
            pending: VecDeque::new(),
            keepalive: Box::pin(tokio::time::sleep_until(now + config.keepalive)),
            config,
            last_sent: now,
            shutdown,
            closing: None,
            metrics,
            too_slow: false,
            _permit: permit,
            unreported: 0,
        };
        stream
            .pending
            .push_back(sse_retry(stream.config.retry.as_millis() as u64));
        for index in 0..stream.feeds.len() {
            let replay = stream
                .bus
                .replay(&stream.feeds[index].topic, stream.feeds[index].position)
                .await?;
            stream.apply_replay(index, replay);
        }
        stream.metrics.connections().inc();
        Ok(stream)
    }

    /// The next bytes to write, or `None` to end the stream.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.take_pending() {
                self.last_sent = Instant::now();
                return Some(chunk);
            }
            match self.wait().await {
                Wake::Live(index, Recv::Event(event)) => {
                    if !self.accept(index, event).await {
                        return None;
                    }
                    // Gather what is already queued into the same write.
                    if self.feeds.len() == 1 {
                        for _ in 1..MAX_BATCH {
                            if self.pending.iter().map(Bytes::len).sum::<usize>() >= MAX_BATCH_BYTES
                            {
                                break;
                            }
                            match self.feeds[0].live.try_recv() {
                                Some(Recv::Event(event)) => {
                                    if !self.accept(0, event).await {
                                        return None;
                                    }
                                }
                                Some(other) => {
                                    if !self.on_end(other) {
                                        break;
                                    }
                                }
                                None => break,
                            }
                        }
                    }
                }
                Wake::Live(_, other) => {
                    if !self.on_end(other) {
                        return None;
                    }
                }
                Wake::KeepAliveTimer => {
                    let due = self.last_sent + self.config.keepalive;
                    if Instant::now() >= due {
                        self.keepalive
                            .as_mut()
                            .reset(Instant::now() + self.config.keepalive);
                        self.pending.push_back(sse_comment("keep-alive"));
                    } else {
                        // Something was sent since the timer was set: wait
                        // out the rest of the silence instead.
                        self.keepalive.as_mut().reset(due);
                    }
                }
                Wake::ShutdownBegan => {
                    let spread = self.config.shutdown_spread.as_millis() as u64;
                    let delay = Duration::from_millis(if spread == 0 {
                        0
                    } else {
                        rand::random_range(0..spread)
                    });
                    self.closing = Some(Box::pin(tokio::time::sleep(delay)));
                }
                Wake::CloseNow => return None,
            }
        }
    }

    /// Pops the next pending frame, merging consecutive ones into one write.
    fn take_pending(&mut self) -> Option<Bytes> {
        let first = self.pending.pop_front()?;
        if self.pending.is_empty() {
            return Some(first);
        }
        let size = first.len() + self.pending.iter().map(Bytes::len).sum::<usize>();
        let mut merged = BytesMut::with_capacity(size);
        merged.put(first);
        while let Some(next) = self.pending.pop_front() {
            merged.put(next);
        }
        Some(merged.freeze())
    }

    async fn wait(&mut self) -> Wake {
        let feeds = &mut self.feeds;
        let closing = self.closing.as_mut();
        let shutdown = &self.shutdown;
        let draining = closing.is_some();
        tokio::select! {
            biased;
            // Shutdown began earlier and this stream's moment to end came.
            _ = async { if let Some(closing) = closing { closing.await } }, if draining => Wake::CloseNow,
            // Shutdown begins: pick this stream's moment to end.
            _ = shutdown.started(), if !draining => Wake::ShutdownBegan,
            // An event, or the end of a topic's feed.
            (index, recv) = recv_any(feeds) => Wake::Live(index, recv),
            // Silence for a while: maybe time for a keep-alive comment.
            _ = self.keepalive.as_mut() => Wake::KeepAliveTimer,
        }
    }

    /// Handles a lagging or closed feed; false ends the stream.
    fn on_end(&mut self, recv: Recv) -> bool {
        match recv {
            Recv::Event(_) => true,
            Recv::Lagged => {
                // Whole frames only were handed out, so the client ends on
                // an event boundary and resumes from history.
                self.too_slow = true;
                tracing::debug!("client too slow; closing its stream");
                false
            }
            Recv::Closed => false,
        }
    }

    /// Writes a live event if it is the next one for its topic, skips it
    /// if already written, refills from history otherwise. False ends the
    /// stream (history could not be read; the client reconnects).
    async fn accept(&mut self, index: usize, event: Arc<Event>) -> bool {
        let have = self.feeds[index].position;
        let got = event.position;
        if got.epoch == have.epoch && got.offset <= have.offset {
            return true;
        }
        let next = got.offset == have.offset + 1 && (got.epoch == have.epoch || have.offset == 0);
        if next {
            self.emit(index, &event);
            return true;
        }
        match self.bus.replay(&self.feeds[index].topic, have).await {
            Ok(replay) => {
                self.apply_replay(index, replay);
                true
            }
            Err(error) => {
                tracing::warn!(%error, topic = %self.feeds[index].topic, "cannot refill a gap; closing the stream");
                false
            }
        }
    }

    fn apply_replay(&mut self, index: usize, replay: Replay) {
        if let Some(reason) = replay.reset {
            self.feeds[index].position = replay.start;
            let data = serde_json::json!({
                "topic": &*self.feeds[index].topic,
                "reason": reason.as_str(),
            })
            .to_string();
            let mut frame = BytesMut::new();
            frame.put_slice(format!("id: {}\n", self.cursor()).as_bytes());
            encode_body(&mut frame, "reset", &data);
            self.pending.push_back(frame.freeze());
            self.metrics.resets().inc();
        }
        let mut replayed = 0;
        for event in replay.events {
            let position = self.feeds[index].position;
            let contiguous = event.position.epoch == position.epoch || position.offset == 0;
            if contiguous && event.position.offset == position.offset + 1 {
                self.emit(index, &event);
                replayed += 1;
            }
        }
        self.metrics.replayed().inc_by(replayed);
    }

    fn emit(&mut self, index: usize, event: &Event) {
        self.feeds[index].position = event.position;
        if self.feeds.len() == 1 {
            self.pending.push_back(event.frame().clone());
        } else {
            let id = self.cursor().to_string();
            let body = event.body();
            let mut frame = BytesMut::with_capacity(id.len() + 5 + body.len());
            frame.put_slice(b"id: ");
            frame.put_slice(id.as_bytes());
            frame.put_u8(b'\n');
            frame.put(body);
            self.pending.push_back(frame.freeze());
        }
        self.unreported += 1;
        if self.unreported >= 256 {
            self.metrics.delivered().inc_by(self.unreported);
            self.unreported = 0;
        }
    }

    fn cursor(&self) -> Cursor {
        Cursor(self.feeds.iter().map(|feed| feed.position).collect())
    }
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
    }
}

/// The next item of whichever feed has one first.
async fn recv_any(feeds: &mut [Feed]) -> (usize, Recv) {
    match feeds {
        [feed] => (0, feed.live.recv().await),
        feeds => {
            let (recv, index, _) = futures_util::future::select_all(
                feeds.iter_mut().map(|feed| Box::pin(feed.live.recv())),
            )
            .await;
            (index, recv)
        }
    }
}

/// The stream as a response body.
pub fn into_body(
    stream: EventStream,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok(chunk), stream))
    })
}
