//! Per-subscriber bookkeeping: which messages arrived, twice, or out of
//! order.
//!
//! Order is only defined per publisher connection (each sends one request
//! at a time, so its n+1th message was sent after the server acknowledged
//! the nth); messages of different publishers may interleave in any order.
//! So a subscriber keeps, per publisher, the length of the prefix of
//! sequence numbers it has seen without a gap, and the few numbers seen
//! beyond a gap. In a healthy run every message extends the prefix, so the
//! hot path touches one counter and allocates nothing, while loss,
//! duplicates and reordering are still counted exactly.

use std::collections::BTreeSet;

use crate::protocol::Acked;

#[derive(Debug, Default, Clone)]
struct PublisherTrack {
    /// Every sequence number below this was seen.
    prefix: u64,
    /// Numbers seen above `prefix` (after a gap).
    beyond: BTreeSet<u64>,
    highest: Option<u64>,
}

impl PublisherTrack {
    fn seen(&self, seq: u64) -> bool {
        seq < self.prefix || self.beyond.contains(&seq)
    }

    /// How many numbers of `[start, end)` were seen.
    fn seen_in(&self, start: u64, end: u64) -> u64 {
        let below = self.prefix.clamp(start, end) - start;
        let from = start.max(self.prefix);
        let above = if from < end {
            self.beyond.range(from..end).count() as u64
        } else {
            0
        };
        below + above
    }

    fn count(&self) -> u64 {
        self.prefix + self.beyond.len() as u64
    }
}

/// What one subscriber got in the current phase.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    publishers: Vec<PublisherTrack>,
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// Outcome of recording one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
    OutOfOrder,
}

impl Tracker {
    pub fn reset(&mut self) {
        for track in &mut self.publishers {
            *track = PublisherTrack::default();
        }
        self.duplicates = 0;
        self.out_of_order = 0;
    }

    pub fn record(&mut self, publisher: u32, seq: u64) -> Seen {
        let publisher = publisher as usize;
        // Stamps come from our own publishers, but a bogus one must not make
        // this allocate without bound.
        if publisher > 1 << 16 {
            self.out_of_order += 1;
            return Seen::OutOfOrder;
        }
        if self.publishers.len() <= publisher {
            self.publishers
                .resize_with(publisher + 1, PublisherTrack::default);
        }
        let track = &mut self.publishers[publisher];
        if track.seen(seq) {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        if seq == track.prefix {
            track.prefix += 1;
            // A gap just closed: fold what was seen beyond it back in.
            while track.beyond.first() == Some(&track.prefix) {
                track.beyond.pop_first();
                track.prefix += 1;
            }
        } else {
            track.beyond.insert(seq);
        }
        let in_order = track.highest.is_none_or(|highest| seq > highest);
        if in_order {
            track.highest = Some(seq);
            Seen::New
        } else {
            self.out_of_order += 1;
            Seen::OutOfOrder
        }
    }

    /// Acknowledged messages of `acked` not received.
    pub fn missing(&self, acked: &Acked) -> u64 {
        let track = self.publishers.get(acked.publisher as usize);
        acked
            .ranges
            .iter()
            .map(|&(start, end)| end - start - track.map_or(0, |t| t.seen_in(start, end)))
            .sum()
    }

    /// The first acknowledged message of `acked` not received, if any.
    pub fn first_missing(&self, acked: &Acked) -> Option<u64> {
        let track = self.publishers.get(acked.publisher as usize);
        for &(start, end) in &acked.ranges {
            let mut seq = track.map_or(start, |t| start.max(t.prefix));
            while seq < end {
                if !track.is_some_and(|t| t.seen(seq)) {
                    return Some(seq);
                }
                seq += 1;
            }
        }
        None
    }

    /// Received messages that no publisher had acknowledged.
    pub fn unacknowledged(&self, acked: &[Acked]) -> u64 {
        let mut total = 0;
        for (publisher, track) in self.publishers.iter().enumerate() {
            let covered: u64 = acked
                .iter()
                .filter(|a| a.publisher as usize == publisher)
                .flat_map(|a| a.ranges.iter())
                .map(|&(start, end)| track.seen_in(start, end))
                .sum();
            total += track.count() - covered;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(publisher: u32, ranges: &[(u64, u64)]) -> Acked {
        Acked {
            publisher,
            topic: 0,
            ranges: ranges.to_vec(),
        }
    }

    #[test]
    fn duplicates_gaps_and_reordering_are_told_apart() {
        let mut tracker = Tracker::default();
        assert_eq!(tracker.record(0, 0), Seen::New);
        assert_eq!(tracker.record(0, 2), Seen::New);
        assert_eq!(tracker.record(0, 1), Seen::OutOfOrder);
        assert_eq!(tracker.record(0, 2), Seen::Duplicate);
        assert_eq!(tracker.record(0, 0), Seen::Duplicate);
        assert_eq!(
            tracker.record(1, 0),
            Seen::New,
            "publishers are independent"
        );
        assert_eq!(
            tracker.missing(&acked(0, &[(0, 5)])),
            2,
            "3 and 4 never came"
        );
        assert_eq!(
            tracker.missing(&acked(2, &[(0, 3)])),
            3,
            "an unknown publisher"
        );
        assert_eq!(
            tracker.unacknowledged(&[acked(0, &[(0, 5)]), acked(1, &[])]),
            1,
            "publisher 1's message 0 was never acknowledged"
        );
        assert_eq!((tracker.duplicates, tracker.out_of_order), (2, 1));
        tracker.reset();
        assert_eq!(tracker.record(0, 0), Seen::New);
        assert_eq!(tracker.duplicates, 0);
    }

    #[test]
    fn gaps_are_counted_exactly_across_ranges() {
        let mut tracker = Tracker::default();
        for seq in [0, 1, 2, 5, 6, 9] {
            tracker.record(0, seq);
        }
        // Acknowledged 0..4 and 5..10: missing 3, 7, 8 (4 was never acked).
        let a = acked(0, &[(0, 4), (5, 10)]);
        assert_eq!(tracker.missing(&a), 3);
        assert_eq!(tracker.first_missing(&a), Some(3));
        assert_eq!(tracker.unacknowledged(&[a]), 0);
        for seq in [3, 4, 7, 8] {
            tracker.record(0, seq);
        }
        assert_eq!(tracker.missing(&acked(0, &[(0, 10)])), 0);
        assert_eq!(tracker.publishers[0].prefix, 10, "gaps folded back in");
        assert!(tracker.publishers[0].beyond.is_empty());
    }
}
