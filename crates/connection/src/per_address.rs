//! Things held per client address: connections here, across all workers,
//! and anything else a service caps per client (the gateway's streams).
//!
//! One client holding thousands of connections would starve everyone
//! else of the per-worker limit and of file descriptors. Addresses are
//! counted as IPv4 addresses and IPv6 /64 networks ([`group`]: one host
//! usually owns a whole /64); an entry is removed when its count returns
//! to zero, so the map only ever holds addresses that hold something
//! (under 100 bytes each). An entry also counts its refusals in a row,
//! which a stream route turns into a growing reconnection delay.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

type Counts = Arc<Mutex<HashMap<IpAddr, Count>>>;

/// The shared counters; cheap to clone.
#[derive(Debug, Clone)]
pub struct PerAddress {
    limit: usize,
    counts: Counts,
}

/// One address's entry.
#[derive(Debug, Default)]
struct Count {
    open: usize,
    /// Connections refused since the last one admitted.
    refused: u32,
}

/// One counted thing; dropping it gives its place back.
#[derive(Debug)]
pub struct Slot {
    counts: Counts,
    key: IpAddr,
}

impl PerAddress {
    /// `limit` per address; 0 turns the limit off.
    pub fn new(limit: usize) -> Option<Self> {
        (limit > 0).then(|| PerAddress {
            limit,
            counts: Arc::default(),
        })
    }

    /// Counts one more for `peer`, or refuses it with the number of this
    /// address's refusals in a row, this one included.
    pub fn admit(&self, peer: IpAddr) -> Result<Slot, u32> {
        let key = group(peer);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_default();
        if count.open >= self.limit {
            count.refused = count.refused.saturating_add(1);
            return Err(count.refused);
        }
        count.open += 1;
        count.refused = 0;
        Ok(Slot {
            counts: self.counts.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            count.open -= 1;
            if count.open == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The key an address is counted under, by this map and by any other
/// per-address limit: an IPv4 address (an IPv4-mapped IPv6 one too), or an
/// IPv6 address's /64.
pub fn group(peer: IpAddr) -> IpAddr {
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
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(limits.admit(a).err(), Some(1), "third is over the limit");
        assert_eq!(limits.admit(a).err(), Some(2), "refusals in a row count");
        assert!(limits.admit([10, 0, 0, 2].into()).is_ok_and(|s| {
            drop(s);
            true
        }));
        drop(first);
        assert!(limits.admit(a).is_ok_and(|s| {
            drop(s);
            true
        }));
        let third = limits.admit(a);
        assert_eq!(
            limits.admit(a).err(),
            Some(1),
            "an admitted connection starts the count again"
        );
        drop(third);
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
