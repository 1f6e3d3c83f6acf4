//! Idempotent publishing: a key that makes a retried publish a replay.
//!
//! A publisher that got no answer (a timeout, a 503 from a proxy) cannot
//! tell whether its event was stored. Publishing again with the same key
//! stores nothing the second time: within the window, the engine answers
//! with the position the key's first publish got. Keys are scoped to their
//! topic and remembered with a digest of the request (event type and data),
//! so the same key with a different request is refused rather than
//! replayed. Both engines keep them beside the topic's history, checked and
//! written in the same atomic step as the publish itself (the Redis script;
//! the topic's lock in memory), so two concurrent publishes with one key
//! store one event.

use std::time::Duration;

use sha2::{Digest, Sha256};
use shared_types::Position;

/// How long keys are honoured and how many a topic keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyPolicy {
    /// A key is honoured this long after its first publish; later, the same
    /// key publishes again. Engines cap it at their history TTL (when that
    /// is not zero): keys live beside the history and go with it.
    pub window: Duration,
    /// Most keys one topic remembers; past it, the oldest is forgotten
    /// first. Bounds what a publisher inventing keys can cost.
    pub max_keys: usize,
}

impl Default for IdempotencyPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(86_400),
            max_keys: 1000,
        }
    }
}

impl IdempotencyPolicy {
    /// The window an engine applies: at most its `history_ttl` (zero keeps
    /// history forever, so then the window stands), and at least 1 ms.
    pub(crate) fn window_within(&self, history_ttl: Duration) -> Duration {
        let window = if history_ttl.is_zero() {
            self.window
        } else {
            self.window.min(history_ttl)
        };
        window.max(Duration::from_millis(1))
    }
}

/// What a publish with a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The key was new (or its window had passed): the event was stored
    /// and broadcast at this position.
    Stored(Position),
    /// The key's first publish, with the same request, got this position
    /// within the window: nothing was stored or broadcast now.
    Replayed(Position),
    /// The key was used within the window for a different request (another
    /// event type or data): nothing was stored.
    KeyReused,
}

impl Published {
    /// The event's position, unless the key was refused.
    pub fn position(self) -> Option<Position> {
        match self {
            Published::Stored(position) | Published::Replayed(position) => Some(position),
            Published::KeyReused => None,
        }
    }
}

/// A fixed-size fingerprint of a request, so a key costs the same whatever
/// the size of the event: SHA-256 over the type's length, the type and the
/// data (the length makes the split unambiguous), as lowercase hex.
pub(crate) fn request_digest(event_type: &str, data: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update((event_type.len() as u64).to_le_bytes());
    hasher.update(event_type.as_bytes());
    hasher.update(data.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_tells_type_and_data_apart() {
        let digest = request_digest("ab", "c");
        assert_eq!(digest.len(), 64);
        assert_eq!(digest, request_digest("ab", "c"));
        assert_ne!(digest, request_digest("a", "bc"));
        assert_ne!(digest, request_digest("ab", "d"));
    }

    #[test]
    fn the_window_is_capped_by_the_history_ttl_unless_history_is_kept_forever() {
        let policy = IdempotencyPolicy {
            window: Duration::from_secs(100),
            max_keys: 1,
        };
        let secs = Duration::from_secs;
        assert_eq!(policy.window_within(secs(10)), secs(10));
        assert_eq!(policy.window_within(secs(1000)), secs(100));
        assert_eq!(policy.window_within(Duration::ZERO), secs(100));
    }
}
