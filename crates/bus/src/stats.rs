//! Counters an engine keeps about its own health, for the services' metrics.
//!
//! The engine bumps plain atomics on its hot paths; [`BusStats`] is a copy
//! read on demand (a scrape), so exporting costs nothing between scrapes.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of an engine's counters. Every field only ever grows while the
/// process runs, so they map to Prometheus counters. The memory engine has
/// nothing to reconnect or refill and reports zeros.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Times the pub/sub connection was re-established after it broke.
    pub reconnects: u64,
    /// Live gaps (an offset jump, or a reconnect) that were refilled from
    /// the stored history before delivering further.
    pub gaps_refilled: u64,
    /// Events delivered to live subscribers out of stored history because
    /// pub/sub did not deliver them (the sum over all refills).
    pub refilled_events: u64,
    /// Events handed out by [`Bus::replay`](crate::Bus::replay) to resuming readers.
    pub replayed_events: u64,
    /// Live messages dropped because their offset was already delivered
    /// (after a refill got ahead of pub/sub).
    pub duplicates_dropped: u64,
    /// Live messages or history entries that could not be decoded.
    pub corrupt_messages: u64,
    /// Fresh subscribers whose starting position came from the topic's
    /// feed in this process (its last event, or the one head read its
    /// activation made for every subscriber joining it) rather than from a
    /// head read of their own in Redis.
    pub local_heads: u64,
    /// Cluster mode: topics subscribed again on a node outside a
    /// reconnect (a slot moved, a node came back), each followed by a
    /// refill.
    pub resubscriptions: u64,
}

/// The live counters behind [`BusStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) reconnects: AtomicU64,
    pub(crate) gaps_refilled: AtomicU64,
    pub(crate) refilled_events: AtomicU64,
    pub(crate) replayed_events: AtomicU64,
    pub(crate) duplicates_dropped: AtomicU64,
    pub(crate) corrupt_messages: AtomicU64,
    pub(crate) local_heads: AtomicU64,
    pub(crate) resubscriptions: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`. Relaxed: these are statistics, nothing is
    /// ordered by them.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BusStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BusStats {
            reconnects: read(&self.reconnects),
            gaps_refilled: read(&self.gaps_refilled),
            refilled_events: read(&self.refilled_events),
            replayed_events: read(&self.replayed_events),
            duplicates_dropped: read(&self.duplicates_dropped),
            corrupt_messages: read(&self.corrupt_messages),
            local_heads: read(&self.local_heads),
            resubscriptions: read(&self.resubscriptions),
        }
    }
}
