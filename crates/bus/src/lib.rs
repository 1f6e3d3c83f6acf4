//! The bus: the one seam between publishing and fan-out.
//!
//! Publishers call [`Bus::publish`]; gateways call [`Bus::head`],
//! [`Bus::subscribe`] and [`Bus::replay`] to build gap-free streams. Two
//! engines sit behind the same handle, picked by configuration: an
//! in-memory one for a single process, and Redis for many replicas.
//!
//! # Layout
//! - [`memory`]: per-topic ring buffer of history plus a broadcast channel.
//! - [`replay`]: the rules that decide what a resuming reader gets, and when
//!   it must be told that history was lost (shared by both engines).
//! - [`subscription`]: a live feed of one topic's events, bounded per reader.
//! - [`error`]: what can go wrong talking to an engine.

pub mod error;
pub mod memory;
pub mod replay;
pub mod subscription;

use std::sync::Arc;

pub use error::Error;
pub use memory::{MemoryConfig, MemoryEngine};
pub use replay::{Replay, ResetReason};
use shared_types::Position;
pub use subscription::{Recv, Subscription};

/// A cheap, cloneable handle to the configured engine.
#[derive(Debug, Clone)]
pub enum Bus {
    Memory(Arc<MemoryEngine>),
}

impl Bus {
    /// An in-memory bus: history and fan-out inside this process only.
    pub fn memory(config: MemoryConfig) -> Self {
        Bus::Memory(MemoryEngine::new(config))
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
            Bus::Memory(engine) => Ok(engine.publish(topic, event_type, data)),
        }
    }

    /// The position of the newest event of `topic`, or [`Position::START`].
    pub async fn head(&self, topic: &str) -> Result<Position, Error> {
        match self {
            Bus::Memory(engine) => Ok(engine.head(topic)),
        }
    }

    /// A live feed of `topic`: every event published after this returns.
    /// Subscribe before [`Bus::replay`] so that nothing falls between the two.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, Error> {
        match self {
            Bus::Memory(engine) => Ok(engine.subscribe(topic)),
        }
    }

    /// The retained events of `topic` after `after`, or the oldest ones with
    /// a [`ResetReason`] when `after` is no longer covered by history.
    pub async fn replay(&self, topic: &str, after: Position) -> Result<Replay, Error> {
        match self {
            Bus::Memory(engine) => Ok(engine.replay(topic, after)),
        }
    }

    /// Whether the engine can currently publish and deliver.
    pub async fn is_ready(&self) -> bool {
        match self {
            Bus::Memory(_) => true,
        }
    }

    /// Which engine this is, for logs and metrics.
    pub fn engine_name(&self) -> &'static str {
        match self {
            Bus::Memory(_) => "memory",
        }
    }
}
