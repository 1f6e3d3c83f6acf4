//! What a resuming reader gets: the rules, shared by both engines.
//!
//! A reader's [`Position`] says which events of which epoch it has seen.
//! Offsets within an epoch are contiguous, so history covers the reader when
//! the first retained offset is at most one past its position. Anything
//! else means events it never saw are gone: it is told so with a reset,
//! never skipped past silently.

use std::sync::Arc;

use shared_types::{Epoch, Event, Position};

/// Why a reader's position could not be continued exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The topic's history was recreated (the store lost it, or it expired):
    /// the reader's epoch no longer exists.
    EpochChanged,
    /// Events after the reader's position were trimmed from history.
    HistoryTrimmed,
    /// The reader claims to be past the newest event of the current epoch.
    CursorAhead,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::EpochChanged => "epoch-changed",
            ResetReason::HistoryTrimmed => "history-trimmed",
            ResetReason::CursorAhead => "cursor-ahead",
        }
    }
}

/// The answer to a replay request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Set when the reader's position could not be continued; the events
    /// then start at the oldest retained one.
    pub reset: Option<ResetReason>,
    /// Where the reader stands before `events`: its own position, or after a
    /// reset the position just before the oldest retained event.
    pub start: Position,
    /// Retained events after `start`, oldest first, contiguous; at most
    /// one [`Slice`].
    pub events: Vec<Arc<Event>>,
    /// More retained events follow the last of `events` (or `start` when
    /// there are none): read the next slice from the reader's new position.
    pub more: bool,
}

/// How much one replay may return, so that a resuming reader holds one
/// slice of history at a time however much history there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// Most events.
    pub events: usize,
    /// Most bytes of encoded frames; the first event is always returned,
    /// however large, so a replay always makes progress.
    pub bytes: usize,
}

impl Slice {
    /// Everything retained in one answer: for callers that need it whole
    /// (the relay's refills, tests).
    pub const ALL: Slice = Slice {
        events: usize::MAX,
        bytes: usize::MAX,
    };

    /// How many of `events`, oldest first, fit this slice.
    pub fn fit<'a>(self, events: impl IntoIterator<Item = &'a Arc<Event>>) -> usize {
        let mut bytes = 0usize;
        let mut count = 0;
        for event in events {
            if count == self.events || (count > 0 && bytes + event.frame().len() > self.bytes) {
                break;
            }
            bytes += event.frame().len();
            count += 1;
        }
        count
    }
}

/// What a topic's history looks like right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryBounds {
    /// [`Epoch::NONE`] when the topic has no history at all.
    pub epoch: Epoch,
    /// Offset of the oldest retained event; `head + 1` when none is retained.
    pub oldest: u64,
    /// Offset of the newest event ever published in this epoch.
    pub head: u64,
}

impl HistoryBounds {
    /// A topic with no history at all: never published to, or forgotten.
    pub const EMPTY: HistoryBounds = HistoryBounds {
        epoch: Epoch::NONE,
        oldest: 1,
        head: 0,
    };
}

/// The decision of [`plan`]: where to read from, and whether to say reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub reset: Option<ResetReason>,
    pub start: Position,
    /// First offset to read from history (nothing to read when past `head`).
    pub from: u64,
}

/// Decides how a reader at `after` continues in a topic with `bounds`.
pub fn plan(after: Position, bounds: HistoryBounds) -> Plan {
    let oldest_start = Position::new(bounds.epoch, bounds.oldest.saturating_sub(1));
    let reset = |reason| Plan {
        reset: Some(reason),
        start: oldest_start,
        from: bounds.oldest,
    };
    if bounds.epoch.is_none() {
        // No history: a reader that saw something has lost it.
        return if after.offset == 0 {
            Plan {
                reset: None,
                start: Position::START,
                from: 1,
            }
        } else {
            Plan {
                reset: Some(ResetReason::EpochChanged),
                start: Position::START,
                from: 1,
            }
        };
    }
    if after.offset == 0 {
        // The reader saw nothing of this topic: it needs everything from 1.
        return if bounds.oldest > 1 {
            reset(ResetReason::HistoryTrimmed)
        } else {
            Plan {
                reset: None,
                start: Position::new(bounds.epoch, 0),
                from: 1,
            }
        };
    }
    if after.epoch != bounds.epoch {
        return reset(ResetReason::EpochChanged);
    }
    if after.offset > bounds.head {
        return reset(ResetReason::CursorAhead);
    }
    if after.offset + 1 < bounds.oldest {
        return reset(ResetReason::HistoryTrimmed);
    }
    Plan {
        reset: None,
        start: after,
        from: after.offset + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Epoch = Epoch(7);

    fn bounds(oldest: u64, head: u64) -> HistoryBounds {
        HistoryBounds {
            epoch: E,
            oldest,
            head,
        }
    }

    #[test]
    fn a_covered_position_continues_after_itself() {
        let plan = plan(Position::new(E, 5), bounds(3, 9));
        assert_eq!(
            plan,
            Plan {
                reset: None,
                start: Position::new(E, 5),
                from: 6
            }
        );
        assert_eq!(super::plan(Position::new(E, 2), bounds(3, 9)).reset, None);
    }

    #[test]
    fn a_trimmed_position_resets_to_the_oldest_event() {
        let plan = plan(Position::new(E, 1), bounds(3, 9));
        assert_eq!(
            plan,
            Plan {
                reset: Some(ResetReason::HistoryTrimmed),
                start: Position::new(E, 2),
                from: 3
            }
        );
    }

    #[test]
    fn another_epoch_or_a_future_offset_resets() {
        assert_eq!(
            plan(Position::new(Epoch(8), 5), bounds(1, 9)).reset,
            Some(ResetReason::EpochChanged)
        );
        assert_eq!(
            plan(Position::new(E, 10), bounds(1, 9)).reset,
            Some(ResetReason::CursorAhead)
        );
    }

    #[test]
    fn a_reader_that_saw_nothing_gets_everything_or_a_reset() {
        assert_eq!(plan(Position::START, bounds(1, 4)).reset, None);
        assert_eq!(plan(Position::START, bounds(1, 4)).from, 1);
        assert_eq!(
            plan(Position::START, bounds(2, 4)).reset,
            Some(ResetReason::HistoryTrimmed)
        );
    }

    #[test]
    fn a_lost_topic_resets_readers_that_saw_it() {
        let empty = HistoryBounds::EMPTY;
        assert_eq!(plan(Position::START, empty).reset, None);
        assert_eq!(
            plan(Position::new(E, 3), empty).reset,
            Some(ResetReason::EpochChanged)
        );
    }
}
