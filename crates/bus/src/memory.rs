//! The in-memory engine: every topic's history and live feed in this process.
//!
//! Each topic is one mutex around its counter, its history ring and its
//! broadcast sender. Publishing takes the lock once, so offsets are handed
//! out, stored and broadcast in the same order; a subscriber takes the same
//! lock to join, so it sees exactly the events published after it joined.
//!
//! What a topic costs, and what bounds it (README, "Memory budget"):
//! - the broadcast ring (`queue_capacity` slots, allocated whole) exists
//!   only while the topic has a subscriber, and goes with the last one;
//! - a topic that never had an event exists only while subscribed: looking
//!   at it (`head`, `replay`) creates nothing, and the last subscriber's
//!   departure removes it;
//! - a topic with events keeps at most `history_size` of them until it is
//!   unused for `history_ttl`;
//! - at most `max_topics` topics exist; a new one past that is refused with
//!   [`Error::TooManyTopics`];
//! - idempotency keys exist only on topics published to with one: at most
//!   the policy's `max_keys`, each forgotten once its window has passed
//!   (by the next keyed publish, or the sweeper), all of them with the
//!   topic.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use shared_types::{Epoch, Event, Position};
use tokio::sync::broadcast;

use crate::error::Error;
use crate::idempotency::{IdempotencyPolicy, Published, request_digest};
use crate::replay::{self, HistoryBounds, Replay, Slice};
use crate::subscription::Subscription;

/// Sizes of the in-memory engine.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Events kept per topic for resuming readers.
    pub history_size: usize,
    /// A topic nobody reads or writes for this long is forgotten, so a
    /// stream of one-off topic names cannot grow memory without bound.
    /// Zero keeps topics forever, as in the Redis engine.
    pub history_ttl: Duration,
    /// Events a reader may fall behind before it counts as lagging.
    pub queue_capacity: usize,
    /// Most topics held at once; a new topic past it is refused.
    pub max_topics: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            history_size: 1000,
            history_ttl: Duration::from_secs(86_400),
            queue_capacity: 1024,
            max_topics: 10_000,
        }
    }
}

struct Topic {
    name: Arc<str>,
    /// [`Epoch::NONE`] until the first publish, as in the Redis engine.
    epoch: Epoch,
    head: u64,
    history: VecDeque<Arc<Event>>,
    /// The live feed's ring; only while someone subscribes (it is
    /// `queue_capacity` slots, allocated whole, ~32 KiB by default).
    sender: Option<broadcast::Sender<Arc<Event>>>,
    last_used: Instant,
    /// Idempotency keys, only once a publish carried one: a topic
    /// published to without keys pays one pointer for them.
    keys: Option<Box<KeyStore>>,
    /// Set when the topic is dropped from the map; anyone who still holds
    /// it looks the topic up again rather than use a dead one.
    removed: bool,
}

impl Topic {
    fn bounds(&self) -> HistoryBounds {
        HistoryBounds {
            epoch: self.epoch,
            oldest: self
                .history
                .front()
                .map_or(self.head + 1, |e| e.position.offset),
            head: self.head,
        }
    }

    /// The newest event's position, or [`Position::START`] before the first.
    fn head_position(&self) -> Position {
        if self.epoch.is_none() {
            Position::START
        } else {
            Position::new(self.epoch, self.head)
        }
    }

    fn subscribers(&self) -> usize {
        self.sender.as_ref().map_or(0, |s| s.receiver_count())
    }
}

type TopicRef = Arc<Mutex<Topic>>;

/// One topic's idempotency keys, as the Redis engine keeps them in a hash
/// and a sorted set: each key's record, and the keys oldest first.
#[derive(Default)]
struct KeyStore {
    records: HashMap<Arc<str>, KeyRecord>,
    /// Every key of `records` once, in the order they were first used,
    /// which is also the order their windows end: eviction by count and by
    /// age both pop from the front.
    order: VecDeque<(Instant, Arc<str>)>,
    /// The window of the last keyed publish, for the sweeper.
    window: Duration,
}

struct KeyRecord {
    position: Position,
    /// [`request_digest`] of the first publish's type and data.
    digest: String,
}

impl KeyStore {
    /// Drops the keys whose window has passed.
    fn forget_expired(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            self.records.remove(&key);
        }
    }
}

/// History and fan-out for one process. See the module docs.
pub struct MemoryEngine {
    topics: RwLock<HashMap<Arc<str>, TopicRef>>,
    config: MemoryConfig,
    /// For the release callbacks of subscriptions.
    this: Weak<MemoryEngine>,
}

impl std::fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Locks ignoring poison: every critical section leaves the topic consistent
/// (counters move before anything that could panic), so a panic elsewhere
/// must not take the whole bus down with it.
fn lock(topic: &TopicRef) -> std::sync::MutexGuard<'_, Topic> {
    topic
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryEngine {
    /// Creates the engine; inside a Tokio runtime it also starts the sweeper
    /// that forgets idle topics.
    pub fn new(config: MemoryConfig) -> Arc<Self> {
        let engine = Arc::new_cyclic(|this| Self {
            topics: RwLock::new(HashMap::new()),
            config,
            this: this.clone(),
        });
        if !engine.config.history_ttl.is_zero() && tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&engine)));
        }
        engine
    }

    /// The topic if it exists.
    fn find(&self, name: &str) -> Option<TopicRef> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The topic, created if needed and the cap allows.
    fn find_or_create(&self, name: &str) -> Result<TopicRef, Error> {
        if let Some(topic) = self.find(name) {
            return Ok(topic);
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(topic) = topics.get(name) {
            return Ok(topic.clone());
        }
        if topics.len() >= self.config.max_topics {
            return Err(Error::TooManyTopics(self.config.max_topics));
        }
        let name: Arc<str> = Arc::from(name);
        let topic = Arc::new(Mutex::new(Topic {
            name: name.clone(),
            epoch: Epoch::NONE,
            head: 0,
            history: VecDeque::new(),
            sender: None,
            last_used: Instant::now(),
            keys: None,
            removed: false,
        }));
        topics.insert(name, topic.clone());
        Ok(topic)
    }

    /// Runs `f` on the live topic named `name`, creating it if needed.
    fn with_topic<T>(
        &self,
        name: &str,
        mut f: impl FnMut(&mut Topic, &TopicRef) -> T,
    ) -> Result<T, Error> {
        loop {
            let handle = self.find_or_create(name)?;
            let mut topic = lock(&handle);
            if !topic.removed {
                topic.last_used = Instant::now();
                return Ok(f(&mut topic, &handle));
            }
        }
    }

    /// Runs `f` on the topic named `name` if it exists, without creating it.
    fn peek<T>(&self, name: &str, f: impl FnOnce(&Topic) -> T) -> Option<T> {
        let handle = self.find(name)?;
        let topic = lock(&handle);
        // A removed topic is as good as absent.
        (!topic.removed).then(|| f(&topic))
    }

    pub fn publish(&self, topic: &str, event_type: &str, data: &str) -> Result<Position, Error> {
        let history_size = self.config.history_size;
        self.with_topic(topic, |topic, _| {
            append(topic, history_size, event_type, data)
        })
    }

    /// Publishes unless `key` was used on this topic within the window, all
    /// under the topic's lock, so two publishes with one key store one
    /// event whatever their timing. See [`crate::idempotency`].
    pub fn publish_idempotent(
        &self,
        topic: &str,
        event_type: &str,
        data: &str,
        key: &str,
        policy: &IdempotencyPolicy,
    ) -> Result<Published, Error> {
        let history_size = self.config.history_size;
        let window = policy.window_within(self.config.history_ttl);
        let digest = request_digest(event_type, data);
        self.with_topic(topic, |topic, _| {
            let now = Instant::now();
            let keys = topic.keys.get_or_insert_with(Box::default);
            keys.window = window;
            keys.forget_expired(now);
            if let Some(record) = keys.records.get(key) {
                return if record.digest == digest {
                    Published::Replayed(record.position)
                } else {
                    Published::KeyReused
                };
            }
            let position = append(topic, history_size, event_type, data);
            let keys = topic.keys.get_or_insert_with(Box::default);
            let key: Arc<str> = Arc::from(key);
            if let Entry::Vacant(slot) = keys.records.entry(key.clone()) {
                slot.insert(KeyRecord {
                    position,
                    digest: digest.clone(),
                });
                keys.order.push_back((now, key));
            }
            while keys.records.len() > policy.max_keys.max(1) {
                keys.pop_oldest();
            }
            Published::Stored(position)
        })
    }

    pub fn head(&self, topic: &str) -> Position {
        self.peek(topic, Topic::head_position)
            .unwrap_or(Position::START)
    }

    pub fn subscribe(&self, topic: &str) -> Result<Subscription, Error> {
        Ok(self.subscribe_at_head(topic)?.0)
    }

    /// A live feed of `topic` and the head it starts after, read together.
    pub fn subscribe_at_head(&self, topic: &str) -> Result<(Subscription, Position), Error> {
        self.with_topic(topic, |topic, handle| {
            let capacity = self.config.queue_capacity.max(1);
            let receiver = topic
                .sender
                .get_or_insert_with(|| broadcast::channel(capacity).0)
                .subscribe();
            let engine = self.this.clone();
            let handle = handle.clone();
            let release = Box::new(move || release(&engine, &handle));
            (
                Subscription::new(receiver, Some(release)),
                topic.head_position(),
            )
        })
    }

    /// Retained events after `after`, at most one `slice` of them.
    pub fn replay(&self, topic: &str, after: Position, slice: Slice) -> Replay {
        let read = |topic: &Topic| {
            let plan = replay::plan(after, topic.bounds());
            let skip = topic
                .history
                .iter()
                .take_while(|event| event.position.offset < plan.from)
                .count();
            let take = slice.fit(topic.history.range(skip..));
            let events: Vec<_> = topic.history.range(skip..skip + take).cloned().collect();
            Replay {
                reset: plan.reset,
                start: plan.start,
                more: skip + take < topic.history.len(),
                events,
            }
        };
        self.peek(topic, read).unwrap_or_else(|| {
            let plan = replay::plan(after, HistoryBounds::EMPTY);
            Replay {
                reset: plan.reset,
                start: plan.start,
                events: Vec::new(),
                more: false,
            }
        })
    }

    /// Forgets topics with no reader that nobody used for the TTL.
    fn sweep_once(&self) {
        let ttl = self.config.history_ttl;
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        topics.retain(|_, topic| {
            let mut topic = lock(topic);
            // Keys of a topic no longer published to with keys go once
            // their window has passed, not only with the topic.
            if let Some(keys) = &mut topic.keys {
                keys.forget_expired(now);
                if keys.records.is_empty() {
                    topic.keys = None;
                }
            }
            let idle = topic.subscribers() == 0 && topic.last_used.elapsed() >= ttl;
            topic.removed = idle;
            !idle
        });
    }

    /// Number of topics currently held, for metrics and tests.
    pub fn topic_count(&self) -> usize {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Stores one event in `topic`'s history and sends it to its live
/// subscribers, under the topic's lock; returns its position.
fn append(topic: &mut Topic, history_size: usize, event_type: &str, data: &str) -> Position {
    if topic.epoch.is_none() {
        topic.epoch = Epoch::random();
    }
    topic.head += 1;
    let position = Position::new(topic.epoch, topic.head);
    let event = Arc::new(Event::new(
        topic.name.clone(),
        position,
        event_type.to_owned(),
        data.to_owned(),
    ));
    if history_size > 0 {
        if topic.history.len() >= history_size {
            topic.history.pop_front();
        }
        topic.history.push_back(event.clone());
    }
    // No receiver is fine: the event is in history for later readers.
    if let Some(sender) = &topic.sender {
        let _ = sender.send(event);
    }
    position
}

/// Run as a subscription drops (its receiver already gone): the last
/// subscriber takes the ring with it, and a topic that never had an event
/// goes too, so naming topics costs nothing once the stream is gone.
fn release(engine: &Weak<MemoryEngine>, handle: &TopicRef) {
    {
        let mut topic = lock(handle);
        if topic.removed || topic.subscribers() > 0 {
            return;
        }
        topic.sender = None;
        if !topic.epoch.is_none() {
            return;
        }
    }
    let Some(engine) = engine.upgrade() else {
        return;
    };
    // Map before topic, as everywhere else; check again under both locks.
    let mut topics = engine.topics.write().unwrap_or_else(|p| p.into_inner());
    let mut topic = lock(handle);
    if !topic.removed && topic.subscribers() == 0 && topic.epoch.is_none() {
        topic.removed = true;
        topics.remove(&topic.name);
    }
}

async fn sweep(engine: Weak<MemoryEngine>) {
    let period = match engine.upgrade() {
        Some(engine) => (engine.config.history_ttl / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(60)),
        None => return,
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match engine.upgrade() {
            Some(engine) => engine.sweep_once(),
            None => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Recv;
    use crate::replay::ResetReason;

    fn engine(history_size: usize) -> Arc<MemoryEngine> {
        MemoryEngine::new(MemoryConfig {
            history_size,
            ..MemoryConfig::default()
        })
    }

    fn publish(bus: &MemoryEngine, topic: &str, data: &str) -> Position {
        bus.publish(topic, "message", data).unwrap()
    }

    #[test]
    fn offsets_are_contiguous_per_topic_in_one_epoch() {
        let bus = engine(10);
        let a1 = publish(&bus, "a", "1");
        let b1 = publish(&bus, "b", "1");
        let a2 = publish(&bus, "a", "2");
        assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
        assert_eq!(a1.epoch, a2.epoch);
        assert_ne!(a1.epoch, b1.epoch);
        assert_eq!(bus.head("a"), a2);
        assert_eq!(bus.head("never"), Position::START);
    }

    #[test]
    fn trimmed_history_is_reported_as_a_reset() {
        let bus = engine(3);
        let first = publish(&bus, "t", "1");
        for i in 2..=5 {
            publish(&bus, "t", &i.to_string());
        }
        let replay = bus.replay("t", first, Slice::ALL);
        assert_eq!(replay.reset, Some(ResetReason::HistoryTrimmed));
        let offsets: Vec<u64> = replay.events.iter().map(|e| e.position.offset).collect();
        assert_eq!(offsets, [3, 4, 5]);
        assert_eq!(replay.start.offset, 2);
        assert!(!replay.more);
    }

    #[test]
    fn a_replay_comes_in_slices_that_end_where_the_next_begins() {
        let bus = engine(100);
        for i in 1..=10 {
            publish(&bus, "t", &format!("event {i}"));
        }
        let by_count = Slice {
            events: 4,
            bytes: usize::MAX,
        };
        let mut after = Position::START;
        let mut seen = Vec::new();
        loop {
            let replay = bus.replay("t", after, by_count);
            assert!(replay.events.len() <= 4);
            seen.extend(replay.events.iter().map(|e| e.position.offset));
            if let Some(last) = replay.events.last() {
                after = last.position;
            }
            if !replay.more {
                break;
            }
        }
        assert_eq!(seen, (1..=10).collect::<Vec<u64>>());

        let frame = bus.replay("t", Position::START, Slice::ALL).events[0]
            .frame()
            .len();
        let by_bytes = Slice {
            events: usize::MAX,
            bytes: frame * 3,
        };
        let replay = bus.replay("t", Position::START, by_bytes);
        assert_eq!(replay.events.len(), 3);
        assert!(replay.more);
        // One event always comes, however small the byte budget.
        let tiny = Slice {
            events: usize::MAX,
            bytes: 1,
        };
        assert_eq!(bus.replay("t", Position::START, tiny).events.len(), 1);
    }

    #[tokio::test]
    async fn subscribers_see_only_events_published_after_joining() {
        let bus = engine(10);
        publish(&bus, "t", "before");
        let mut sub = bus.subscribe("t").unwrap();
        publish(&bus, "t", "after");
        match sub.recv().await {
            Recv::Event(event) => assert_eq!(event.data, "after"),
            other => panic!("expected an event, got {other:?}"),
        }
        assert!(sub.try_recv().is_none());
    }

    #[tokio::test]
    async fn idle_topics_are_forgotten_and_come_back_in_a_new_epoch() {
        let bus = MemoryEngine::new(MemoryConfig {
            history_ttl: Duration::from_millis(1),
            ..MemoryConfig::default()
        });
        let old = publish(&bus, "t", "x");
        std::thread::sleep(Duration::from_millis(5));
        bus.sweep_once();
        assert_eq!(bus.topic_count(), 0);
        assert_eq!(
            bus.replay("t", old, Slice::ALL).reset,
            Some(ResetReason::EpochChanged)
        );
    }

    #[test]
    fn looking_at_a_topic_creates_nothing() {
        let bus = engine(10);
        assert_eq!(bus.head("a"), Position::START);
        let replay = bus.replay("b", Position::START, Slice::ALL);
        assert_eq!((replay.reset, replay.events.len()), (None, 0));
        assert_eq!(bus.topic_count(), 0);
    }

    #[test]
    fn a_topic_without_events_lasts_only_while_subscribed() {
        let bus = engine(10);
        let first = bus.subscribe("quiet").unwrap();
        let second = bus.subscribe("quiet").unwrap();
        assert_eq!(bus.topic_count(), 1);
        drop(first);
        assert_eq!(bus.topic_count(), 1, "one subscriber is left");
        drop(second);
        assert_eq!(bus.topic_count(), 0);
    }

    #[test]
    fn the_ring_lives_only_while_subscribed_and_history_stays() {
        let bus = engine(10);
        let sub = bus.subscribe("t").unwrap();
        publish(&bus, "t", "kept");
        let has_ring = |bus: &MemoryEngine| lock(&bus.find("t").unwrap()).sender.is_some();
        assert!(has_ring(&bus));
        drop(sub);
        assert!(!has_ring(&bus), "the last subscriber takes the ring");
        assert_eq!(bus.topic_count(), 1, "a topic with events stays");
        let replay = bus.replay("t", Position::START, Slice::ALL);
        assert_eq!(replay.events.len(), 1);
        // Publishing without a ring still stores, and a new subscriber
        // gets a new ring.
        publish(&bus, "t", "stored");
        let mut again = bus.subscribe("t").unwrap();
        publish(&bus, "t", "live");
        assert!(matches!(again.try_recv(), Some(Recv::Event(e)) if e.data == "live"));
    }

    #[test]
    fn new_topics_past_the_cap_are_refused_and_old_ones_still_work() {
        let bus = MemoryEngine::new(MemoryConfig {
            max_topics: 3,
            ..MemoryConfig::default()
        });
        for topic in ["a", "b", "c"] {
            publish(&bus, topic, "x");
        }
        assert!(matches!(
            bus.publish("d", "message", "x"),
            Err(Error::TooManyTopics(3))
        ));
        assert!(matches!(bus.subscribe("d"), Err(Error::TooManyTopics(3))));
        assert_eq!(bus.topic_count(), 3);
        assert_eq!(publish(&bus, "a", "y").offset, 2);
        let _sub = bus.subscribe("b").unwrap();
    }

    #[test]
    fn concurrent_subscribers_leave_no_topic_behind() {
        let bus = engine(10);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..2_000 {
                        drop(bus.subscribe("churn").unwrap());
                    }
                });
            }
        });
        assert_eq!(bus.topic_count(), 0);
    }
}
