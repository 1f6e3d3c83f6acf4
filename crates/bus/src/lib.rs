//! The bus: the one seam between publishing and fan-out.
//!
//! Publishers call [`Bus::publish`]; gateways call [`Bus::head`],
//! [`Bus::subscribe`] and [`Bus::replay`] to build gap-free streams. Two
//! engines sit behind the same handle, picked by configuration: an
//! in-memory one for a single process, and Redis for many replicas.
//!
//! # Layout
//! - [`memory`]: per-topic ring buffer of history plus a broadcast channel.
//! - [`redis`](mod@crate::redis): history in Redis streams, fan-out through
//!   one supervised pub/sub connection per process, gaps refilled from history.
//! - [`replay`]: the rules that decide what a resuming reader gets, and when
//!   it must be told that history was lost (shared by both engines).
//! - [`subscription`]: a live feed of one topic's events, bounded per reader.
//! - [`idempotency`]: keys that make a retried publish a replay, and what
//!   a publish with a key did.
//! - [`error`]: what can go wrong talking to an engine.
//! - [`stats`]: counters an engine keeps about itself, for metrics.

pub mod error;
pub mod idempotency;
pub mod memory;
pub mod redis;
pub mod replay;
pub mod stats;
pub mod subscription;

use std::sync::Arc;

pub use error::Error;
pub use idempotency::{IdempotencyPolicy, Published};
pub use memory::{MemoryConfig, MemoryEngine};
pub use replay::{Replay, ResetReason, Slice};
use shared_types::Position;
pub use stats::BusStats;
pub use subscription::{Recv, Subscription};

pub use crate::redis::tls::{TlsError, TlsFile, TlsFiles};
pub use crate::redis::{RedisConfig, RedisEngine, RedisMode, RedisTls, Role};

/// A cheap, cloneable handle to the configured engine.
#[derive(Debug, Clone)]
pub enum Bus {
    Memory(Arc<MemoryEngine>),
    Redis(Arc<RedisEngine>),
}

impl Bus {
    /// An in-memory bus: history and fan-out inside this process only.
    pub fn memory(config: MemoryConfig) -> Self {
        Bus::Memory(MemoryEngine::new(config))
    }

    /// A Redis bus, created without waiting for Redis: a Redis not reachable
    /// yet is retried in the background with backoff, as is any later
    /// outage, and until it answers [`Bus::is_ready`] is false and publish
    /// and subscribe fail with [`Error::Unavailable`]. Use
    /// [`Bus::wait_ready`] (with a timeout) to wait for it. A
    /// [`Role::Subscriber`] also starts the pub/sub relay, so this must be
    /// called inside a Tokio runtime. Fails only on a URL that cannot be
    /// used, or TLS settings that do not fit it (the error shows the URL
    /// with the password masked).
    pub fn redis(config: RedisConfig, role: Role) -> Result<Self, Error> {
        Ok(Bus::Redis(RedisEngine::new(config, role)?))
    }

    /// Stores the event in the topic's history and sends it to every live
    /// subscriber; returns its position. Ok means both happened.
    pub async fn publish(
        &self,
        topic: &str,
        event_type: &str,
        data: &str,
    ) -> Result<Position, Error> {
        match self {
            Bus::Memory(engine) => engine.publish(topic, event_type, data),
            // Boxed: a caller's future holds this one, and the Redis
            // engine's is kilobytes; the memory engine's path needs none.
            Bus::Redis(engine) => Box::pin(engine.publish(topic, event_type, data)).await,
        }
    }

    /// As [`Bus::publish`], once per `key`: within the policy's window, a
    /// publish with a key already used on `topic` stores and sends nothing,
    /// and answers [`Published::Replayed`] with the first publish's
    /// position when the type and data are the same, or
    /// [`Published::KeyReused`] when they differ. The check and the publish
    /// are one atomic step, so concurrent publishes with one key store one
    /// event. An error means the bus did not confirm the event; whether or
    /// not it was stored, publishing again with the same key stores it at
    /// most once.
    pub async fn publish_idempotent(
        &self,
        topic: &str,
        event_type: &str,
        data: &str,
        key: &str,
        policy: &IdempotencyPolicy,
    ) -> Result<Published, Error> {
        match self {
            Bus::Memory(engine) => engine.publish_idempotent(topic, event_type, data, key, policy),
            // Boxed, as in `publish`.
            Bus::Redis(engine) => {
                Box::pin(engine.publish_idempotent(topic, event_type, data, key, policy)).await
            }
        }
    }

    /// The position of the newest event of `topic`, or [`Position::START`].
    pub async fn head(&self, topic: &str) -> Result<Position, Error> {
        match self {
            Bus::Memory(engine) => Ok(engine.head(topic)),
            Bus::Redis(engine) => engine.head(topic).await,
        }
    }

    /// A live feed of `topic`: every event published after this returns.
    /// Subscribe before [`Bus::replay`] so that nothing falls between the two.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, Error> {
        match self {
            Bus::Memory(engine) => engine.subscribe(topic),
            Bus::Redis(engine) => engine.subscribe(topic).await,
        }
    }

    /// A live feed of `topic` for a reader with no cursor, and the position
    /// it starts after: every event after that position arrives on the
    /// feed, so no replay is needed (events at or below it may arrive too,
    /// and are to be skipped). The Redis engine answers from the topic's
    /// feed in this process: the last event it carried, or before any, the
    /// head it read once on starting to follow the topic, shared by every
    /// reader joining it. So a crowd arriving at a topic, quiet or busy,
    /// costs Redis one head read per process, not one per reader.
    pub async fn subscribe_at_head(&self, topic: &str) -> Result<(Subscription, Position), Error> {
        match self {
            Bus::Memory(engine) => engine.subscribe_at_head(topic),
            Bus::Redis(engine) => engine.subscribe_at_head(topic).await,
        }
    }

    /// The retained events of `topic` after `after`, or the oldest ones with
    /// a [`ResetReason`] when `after` is no longer covered by history; all
    /// of them at once (see [`Bus::replay_slice`] for readers that may be
    /// far behind).
    pub async fn replay(&self, topic: &str, after: Position) -> Result<Replay, Error> {
        self.replay_slice(topic, after, Slice::ALL).await
    }

    /// As [`Bus::replay`], at most one `slice` of events; [`Replay::more`]
    /// says whether to ask again from the last one. A reader that replays a
    /// whole history this way holds one slice of it at a time.
    pub async fn replay_slice(
        &self,
        topic: &str,
        after: Position,
        slice: Slice,
    ) -> Result<Replay, Error> {
        match self {
            Bus::Memory(engine) => Ok(engine.replay(topic, after, slice)),
            Bus::Redis(engine) => engine.replay(topic, after, slice).await,
        }
    }

    /// Topics this process holds state for: every topic of the memory
    /// engine; the topics the Redis engine follows for local subscribers.
    pub fn topic_count(&self) -> usize {
        match self {
            Bus::Memory(engine) => engine.topic_count(),
            Bus::Redis(engine) => engine.topic_count(),
        }
    }

    /// Whether the engine can currently publish and deliver.
    pub async fn is_ready(&self) -> bool {
        match self {
            Bus::Memory(_) => true,
            Bus::Redis(engine) => engine.is_ready().await,
        }
    }

    /// Resolves once the engine is ready (at once for memory); a Redis bus
    /// fails after its [`RedisConfig::startup_timeout`] (zero: waits for
    /// ever) with an error naming the URL, password masked, or when it is
    /// shut down first.
    pub async fn wait_ready(&self) -> Result<(), Error> {
        match self {
            Bus::Memory(_) => Ok(()),
            Bus::Redis(engine) => engine.wait_ready().await,
        }
    }

    /// Which engine this is, for logs and metrics.
    pub fn engine_name(&self) -> &'static str {
        match self {
            Bus::Memory(_) => "memory",
            Bus::Redis(_) => "redis",
        }
    }

    /// The engine's counters (reconnects, refills, replayed events), for
    /// metrics. The memory engine has none of these events: all zeros.
    pub fn stats(&self) -> BusStats {
        match self {
            Bus::Memory(_) => BusStats::default(),
            Bus::Redis(engine) => engine.stats(),
        }
    }

    /// Stops background work (the Redis relay; live subscriptions then end
    /// with [`Recv::Closed`]). Dropping the last handle does the same.
    pub fn shutdown(&self) {
        match self {
            Bus::Memory(_) => {}
            Bus::Redis(engine) => engine.shutdown(),
        }
    }
}
