//! Connections counted per client address, across all workers.
//!
//! One client holding thousands of connections would starve everyone
//! else of the per-worker limit and of file descriptors. Addresses are
//! counted as IPv4 addresses and IPv6 /64 networks (one host usually owns
//! a whole /64); an entry is removed when its count returns to zero, so
//! the map only ever holds addresses with open connections.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// The shared counters; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct PerAddress {
    limit: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection; dropping it gives its place back.
#[derive(Debug)]
pub(crate) struct Slot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
}

impl PerAddress {
    /// `limit` connections per address; 0 turns the limit off.
    pub(crate) fn new(limit: usize) -> Option<Self> {
        (limit > 0).then(|| PerAddress {
            limit,
            counts: Arc::default(),
        })
    }

    /// Counts a connection from `peer`, or `None` if it has too many.
    pub(crate) fn admit(&self, peer: IpAddr) -> Option<Slot> {
        let key = group(peer);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.counts.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The key an address is counted under.
fn group(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_returns_its_place_and_empty_entries_go() {
        let Some(limits) = PerAddress::new(2) else {
            panic!("limit 2 is on");
        };
        let a: IpAddr = [10, 0, 0, 1].into();
        let first = limits.admit(a);
        let second = limits.admit(a);
        assert!(first.is_some() && second.is_some());
        assert!(limits.admit(a).is_none(), "third is over the limit");
        assert!(limits.admit([10, 0, 0, 2].into()).is_some_and(|s| {
            drop(s);
            true
        }));
        drop(first);
        assert!(limits.admit(a).is_some_and(|s| {
            drop(s);
            true
        }));
        drop(second);
        assert!(
            limits
                .counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        );
        assert!(PerAddress::new(0).is_none(), "0 is off");
    }

    #[test]
    fn ipv6_addresses_of_one_64_count_together() {
        let one: IpAddr = "2001:db8:1:2::1"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        let two: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        let other: IpAddr = "2001:db8:1:3::1"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        assert_eq!(group(one), group(two));
        assert_ne!(group(one), group(other));
        let mapped: IpAddr = "::ffff:127.0.0.2"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        assert_eq!(group(mapped), IpAddr::V4([127, 0, 0, 2].into()));
    }
}
