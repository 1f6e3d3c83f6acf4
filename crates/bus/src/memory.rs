//! The in-memory engine: every topic's history and live feed in this process.
//!
//! Each topic is one mutex around its counter, its history ring and its
//! broadcast sender. Publishing takes the lock once, so offsets are handed
//! out, stored and broadcast in the same order; a subscriber takes the same
//! lock to join, so it sees exactly the events published after it joined.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use shared_types::{Epoch, Event, Position};
use tokio::sync::broadcast;

use crate::replay::{self, HistoryBounds, Replay};
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
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            history_size: 1000,
            history_ttl: Duration::from_secs(86_400),
            queue_capacity: 1024,
        }
    }
}

struct Topic {
    name: Arc<str>,
    /// [`Epoch::NONE`] until the first publish, as in the Redis engine.
    epoch: Epoch,
    head: u64,
    history: VecDeque<Arc<Event>>,
    sender: broadcast::Sender<Arc<Event>>,
    last_used: Instant,
    /// Set by the sweeper when it drops the topic from the map; anyone who
    /// still holds it looks the topic up again rather than use a dead one.
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
}

type TopicRef = Arc<Mutex<Topic>>;

/// History and fan-out for one process. See the module docs.
pub struct MemoryEngine {
    topics: RwLock<HashMap<Arc<str>, TopicRef>>,
    config: MemoryConfig,
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
        let engine = Arc::new(Self {
            topics: RwLock::new(HashMap::new()),
            config,
        });
        if !engine.config.history_ttl.is_zero() && tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&engine)));
        }
        engine
    }

    fn topic(&self, name: &str) -> TopicRef {
        if let Some(topic) = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return topic.clone();
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(Arc::from(name))
            .or_insert_with_key(|name| {
                let (sender, _) = broadcast::channel(self.config.queue_capacity.max(1));
                Arc::new(Mutex::new(Topic {
                    name: name.clone(),
                    epoch: Epoch::NONE,
                    head: 0,
                    history: VecDeque::new(),
                    sender,
                    last_used: Instant::now(),
                    removed: false,
                }))
            })
            .clone()
    }

    /// Runs `f` on the live topic named `name`, creating it if needed.
    fn with_topic<T>(&self, name: &str, mut f: impl FnMut(&mut Topic) -> T) -> T {
        loop {
            let topic = self.topic(name);
            let mut topic = lock(&topic);
            if !topic.removed {
                topic.last_used = Instant::now();
                return f(&mut topic);
            }
        }
    }

    pub fn publish(&self, topic: &str, event_type: &str, data: &str) -> Position {
        let history_size = self.config.history_size;
        self.with_topic(topic, |topic| {
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
            let _ = topic.sender.send(event);
            position
        })
    }

    pub fn head(&self, topic: &str) -> Position {
        self.with_topic(topic, |topic| topic.head_position())
    }

    pub fn subscribe(&self, topic: &str) -> Subscription {
        self.with_topic(topic, |topic| {
            Subscription::new(topic.sender.subscribe(), None)
        })
    }

    /// A live feed of `topic` and the head it starts after, read together.
    pub fn subscribe_at_head(&self, topic: &str) -> (Subscription, Position) {
        self.with_topic(topic, |topic| {
            (
                Subscription::new(topic.sender.subscribe(), None),
                topic.head_position(),
            )
        })
    }

    pub fn replay(&self, topic: &str, after: Position) -> Replay {
        self.with_topic(topic, |topic| {
            let plan = replay::plan(after, topic.bounds());
            let events = topic
                .history
                .iter()
                .filter(|event| event.position.offset >= plan.from)
                .cloned()
                .collect();
            Replay {
                reset: plan.reset,
                start: plan.start,
                events,
            }
        })
    }

    /// Forgets topics with no reader that nobody used for the TTL.
    fn sweep_once(&self) {
        let ttl = self.config.history_ttl;
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        topics.retain(|_, topic| {
            let mut topic = lock(topic);
            let idle = topic.sender.receiver_count() == 0 && topic.last_used.elapsed() >= ttl;
            topic.removed = idle;
            !idle
        });
    }

    /// Number of topics currently held, for metrics and tests.
    pub fn topic_count(&self) -> usize {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).len()
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

    #[test]
    fn offsets_are_contiguous_per_topic_in_one_epoch() {
        let bus = engine(10);
        let a1 = bus.publish("a", "message", "1");
        let b1 = bus.publish("b", "message", "1");
        let a2 = bus.publish("a", "message", "2");
        assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
        assert_eq!(a1.epoch, a2.epoch);
        assert_ne!(a1.epoch, b1.epoch);
        assert_eq!(bus.head("a"), a2);
        assert_eq!(bus.head("never"), Position::START);
    }

    #[test]
    fn trimmed_history_is_reported_as_a_reset() {
        let bus = engine(3);
        let first = bus.publish("t", "message", "1");
        for i in 2..=5 {
            bus.publish("t", "message", &i.to_string());
        }
        let replay = bus.replay("t", first);
        assert_eq!(replay.reset, Some(ResetReason::HistoryTrimmed));
        let offsets: Vec<u64> = replay.events.iter().map(|e| e.position.offset).collect();
        assert_eq!(offsets, [3, 4, 5]);
        assert_eq!(replay.start.offset, 2);
    }

    #[tokio::test]
    async fn subscribers_see_only_events_published_after_joining() {
        let bus = engine(10);
        bus.publish("t", "message", "before");
        let mut sub = bus.subscribe("t");
        bus.publish("t", "message", "after");
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
        let old = bus.publish("t", "message", "x");
        std::thread::sleep(Duration::from_millis(5));
        bus.sweep_once();
        assert_eq!(bus.topic_count(), 0);
        assert_eq!(bus.replay("t", old).reset, Some(ResetReason::EpochChanged));
    }
}
