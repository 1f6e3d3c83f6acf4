//! Redis Cluster mode: the one function that builds a cluster client (the
//! store's command connections and the relay's pub/sub connection both come
//! from it, so transport options such as TLS are added in one place), and
//! key slots.
//!
//! redis-rs (`cluster-async`) does the routing: every command goes to the
//! master owning its key's slot, `MOVED` and `ASK` are followed, the slot
//! map is refreshed when the layout changes, and sharded subscriptions are
//! tracked and sent again to a node that reconnects. What it does not do,
//! the relay does (see its module docs): notice a node whose subscriptions
//! stopped delivering, re-subscribe a channel a node dropped when its slot
//! moved, and refill every gap from the topic's stream.

use ::redis::ProtocolVersion;
use ::redis::aio::AsyncPushSender;
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};

use super::RedisConfig;
use crate::error::Error;

/// Slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16_384;

/// A cluster client for `config`'s seed nodes, with its timeouts. With a
/// `push` sender the connection speaks RESP3 and hands every push
/// (sharded messages, subscription confirmations and removals) to it: what
/// the relay needs. Connects nothing yet.
pub(crate) fn client(
    config: &RedisConfig,
    push: Option<impl AsyncPushSender>,
) -> Result<ClusterClient, Error> {
    if config.cluster_nodes.is_empty() {
        return Err(Error::Unavailable(
            "cluster mode needs at least one seed node".into(),
        ));
    }
    let mut builder = ClusterClientBuilder::new(config.cluster_nodes.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout)
        // Every operation has its own deadline above these; retries (a
        // MOVED, an ASK, a node being replaced) happen inside it.
        .min_retry_wait(20)
        .max_retry_wait(200);
    if let Some(tls) = &config.tls {
        builder = builder.certs(tls.certificates());
    }
    if let Some(push) = push {
        builder = builder
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(push);
    }
    builder.build().map_err(|e| {
        Error::Unavailable(format!(
            "invalid cluster seed nodes {}: {e}",
            config.target()
        ))
    })
}

/// The slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key
/// when it has none, modulo [`SLOTS`].
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS
}

/// A hash tag, `<base>.<n>` for the smallest `n`, whose slot lies in one
/// of `ranges` (inclusive): the same tag for as long as the ranges stay.
/// A master owns about a third of the slots in a 3-master cluster, so this
/// takes a few tries (asking for one exact slot would take ~16,000: that
/// cost, on every health check, once starved the relay's runtime). `None`
/// only for ranges that own no slot.
pub(crate) fn tag_in_ranges(base: &str, ranges: &[(u16, u16)]) -> Option<String> {
    let owned: u32 = ranges
        .iter()
        .map(|(start, end)| u32::from(end.saturating_sub(*start)) + 1)
        .sum();
    if owned == 0 {
        return None;
    }
    // Each try lands in the ranges with probability owned / SLOTS; past
    // this many tries (a miss chance far below 1e-9) give up.
    let tries = (u32::from(SLOTS) / owned + 1).saturating_mul(32);
    (0..tries).map(|n| format!("{base}.{n}")).find(|tag| {
        let slot = self::slot(tag.as_bytes());
        ranges
            .iter()
            .any(|(start, end)| (*start..=*end).contains(&slot))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag_like_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.0.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"es:{a.b}:meta"), slot(b"es:{a.b}:chan"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(
            slot(b"{}x"),
            crc16::State::<crc16::XMODEM>::calculate(b"{}x") % SLOTS
        );
        for ranges in [
            vec![(0, 5460)],
            vec![(5461, 10_922)],
            vec![(100, 100), (16_000, 16_383)],
            vec![(0, 0)],
        ] {
            let tag = tag_in_ranges("t", &ranges).unwrap();
            let slot = slot(tag.as_bytes());
            assert!(
                ranges.iter().any(|(s, e)| (*s..=*e).contains(&slot)),
                "{tag} is in slot {slot}, outside {ranges:?}"
            );
            // Stable: the same ranges give the same tag.
            assert_eq!(tag_in_ranges("t", &ranges).unwrap(), tag);
        }
    }
}
