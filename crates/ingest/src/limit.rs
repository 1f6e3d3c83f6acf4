//! Publishes per second per client address: `publish.rate_limit_per_sec`
//! with a bucket of `publish.rate_limit_burst`.
//!
//! governor's keyed GCRA limiter holds one 8-byte timestamp per address
//! (IPv6 grouped by /64, as every per-address limit is:
//! [`connection::per_address::group`]); a check is one atomic update in a
//! sharded map, and a refusal spends nothing. Its map only grows, so
//! [`PublishLimit::spawn_pruner`] drops, every [`PRUNE_EVERY`], the
//! addresses whose bucket is full again: an address stays at most
//! `(burst + 1) / rate` seconds after its last publish, plus one pruning
//! period. An entry is 32 bytes (a 17-byte address padded, the timestamp)
//! in a hash table kept at most 8/7 full between a shrink and the next
//! doubling: under 80 bytes per address held.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;

/// How often addresses whose bucket refilled are forgotten.
pub const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// The keyed limiter; cheap to clone.
#[derive(Debug, Clone)]
pub struct PublishLimit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// The most addresses held since the map was last shrunk: its capacity,
    /// roughly. Pruning empties entries; only shrinking gives the memory
    /// back, and shrinking every time would rebuild the table each second.
    peak: Mutex<usize>,
}

impl PublishLimit {
    /// `per_sec` publishes a second with bursts of `burst`; `None` (no
    /// limit) when either is 0.
    pub fn new(per_sec: u32, burst: u32) -> Option<Self> {
        let quota =
            Quota::per_second(NonZeroU32::new(per_sec)?).allow_burst(NonZeroU32::new(burst)?);
        Some(Self {
            inner: Arc::new(Inner {
                limiter: DefaultKeyedRateLimiter::keyed(quota),
                peak: Mutex::new(0),
            }),
        })
    }

    /// Takes one publish from `address`'s bucket, or says how long until
    /// one is there: whole seconds, at least 1, as `Retry-After` needs.
    pub fn check(&self, address: IpAddr) -> Result<(), u64> {
        let limiter = &self.inner.limiter;
        limiter
            .check_key(&connection::per_address::group(address))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(limiter.clock().now());
                let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                whole.max(1)
            })
    }

    /// Addresses held right now.
    pub fn addresses(&self) -> usize {
        self.inner.limiter.len()
    }

    /// Forgets the addresses whose bucket is full again (they are
    /// indistinguishable from new ones), and gives the memory back once
    /// the map is down to a quarter of its peak.
    pub fn prune(&self) {
        let limiter = &self.inner.limiter;
        let mut peak = self
            .inner
            .peak
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *peak = (*peak).max(limiter.len());
        limiter.retain_recent();
        let left = limiter.len();
        if left <= *peak / 4 {
            limiter.shrink_to_fit();
            *peak = left;
        }
    }

    /// A gauge of [`PublishLimit::addresses`], read at each scrape; it
    /// does not keep the limit alive.
    pub fn addresses_gauge(&self) -> AddressesGauge {
        AddressesGauge(Arc::downgrade(&self.inner))
    }

    /// Prunes every [`PRUNE_EVERY`] for as long as any clone of this limit
    /// lives; must be called within a Tokio runtime.
    pub fn spawn_pruner(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                PublishLimit { inner }.prune();
            }
        });
    }
}

/// `es_publish_limit_addresses`: the addresses the limit holds now.
#[derive(Debug)]
pub struct AddressesGauge(Weak<Inner>);

impl EncodeMetric for AddressesGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let held = self.0.upgrade().map_or(0, |inner| inner.limiter.len());
        encoder.encode_gauge(&i64::try_from(held).unwrap_or(i64::MAX))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(PublishLimit::new(0, 0).is_none());
        assert!(PublishLimit::new(1, 0).is_none());
        assert!(PublishLimit::new(0, 1).is_none());
    }

    #[test]
    fn a_burst_passes_then_the_next_waits_at_least_a_second() {
        let limit = PublishLimit::new(1, 3).unwrap();
        let a = ip("203.0.113.7");
        for n in 0..3 {
            assert_eq!(limit.check(a), Ok(()), "publish {n} of the burst");
        }
        assert_eq!(
            limit.check(a),
            Err(1),
            "1/s: the next token within a second"
        );
        assert_eq!(limit.check(ip("203.0.113.8")), Ok(()), "another address");
        let slow = PublishLimit::new(1, 1).unwrap();
        slow.check(a).unwrap();
        assert!(slow.check(a).is_err());
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket() {
        let limit = PublishLimit::new(1, 1).unwrap();
        assert_eq!(limit.check(ip("2001:db8:1:2::1")), Ok(()));
        assert!(limit.check(ip("2001:db8:1:2::ffff")).is_err());
        assert_eq!(limit.check(ip("2001:db8:1:3::1")), Ok(()));
        assert!(
            limit.check(ip("::ffff:203.0.113.7")).is_ok()
                && limit.check(ip("203.0.113.7")).is_err(),
            "a v4-mapped address is its IPv4 address"
        );
    }

    #[test]
    fn pruning_forgets_addresses_whose_bucket_refilled_and_keeps_the_others() {
        // 1000/s with a bucket of 1: a bucket refills within 1 ms.
        let limit = PublishLimit::new(1000, 1).unwrap();
        for i in 0..2000u32 {
            limit
                .check(IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
                .unwrap();
        }
        assert_eq!(limit.addresses(), 2000);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while limit.addresses() > 0 && std::time::Instant::now() < deadline {
            limit.prune();
        }
        assert_eq!(limit.addresses(), 0, "every bucket refilled within 2 ms");

        // 1/s with a bucket of 1000: one publish keeps an address for ~1 s.
        let held = PublishLimit::new(1, 1000).unwrap();
        held.check(ip("203.0.113.7")).unwrap();
        held.prune();
        assert_eq!(held.addresses(), 1, "a bucket still refilling is kept");
    }
}
