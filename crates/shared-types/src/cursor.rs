//! Positions in topics, and the SSE id that carries them.
//!
//! Every topic has an *epoch* (a random number chosen when its history is
//! created; a new one means the old history is gone) and a contiguous
//! *offset* counter (1 for its first event). A [`Position`] is "every event
//! of this epoch up to this offset has been seen".
//!
//! The SSE id of an event is the [`Cursor`] of its subscription: one
//! position per subscribed topic, in the subscription's sorted topic order,
//! joined by `,`. Each position is `<epoch in base 36>-<offset>`, so a
//! single-topic id looks like `k2j9x0a1b-42`. Epoch `0` means "the topic had
//! no history yet", which resumes from its first event. Ids hold only
//! `[0-9a-z,-]`: never CR, LF or NUL.

use std::fmt;

/// Most topics a cursor can hold; bounds the id length a client may send.
pub const MAX_CURSOR_TOPICS: usize = 32;
/// Longest accepted cursor text: 32 positions of at most 13 + 1 + 20 chars.
pub const MAX_CURSOR_LEN: usize = MAX_CURSOR_TOPICS * 35;

/// Identity of one incarnation of a topic's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch of a topic that has no history yet.
    pub const NONE: Epoch = Epoch(0);

    /// A fresh random epoch, never [`Epoch::NONE`].
    pub fn random() -> Self {
        Epoch(rand::random::<u64>().max(1))
    }

    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// Parses the base-36 text form.
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty()
            || text.len() > 13
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        {
            return None;
        }
        u64::from_str_radix(text, 36).ok().map(Epoch)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut n = self.0;
        let mut buf = [0u8; 13];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
            n /= 36;
            if n == 0 {
                break;
            }
        }
        // Only ASCII digits and letters were written.
        f.write_str(std::str::from_utf8(&buf[i..]).map_err(|_| fmt::Error)?)
    }
}

/// Where a reader stands in one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Position {
    pub epoch: Epoch,
    pub offset: u64,
}

impl Position {
    /// Before the first event of a topic that has no history.
    pub const START: Position = Position {
        epoch: Epoch::NONE,
        offset: 0,
    };

    pub fn new(epoch: Epoch, offset: u64) -> Self {
        Self { epoch, offset }
    }

    /// Where an event at `self` stands against `last`, the newest position
    /// a reader of the same topic has taken (`None`: nothing known about
    /// it yet). Offsets are contiguous within an epoch, so this is exact:
    ///
    /// | `last` | `self` | result |
    /// |---|---|---|
    /// | `None` | any | [`Sequence::Next`] |
    /// | `(e, n)` | `(e, n + 1)` | [`Sequence::Next`] |
    /// | `(e, n)` | `(e, m)`, `m <= n` | [`Sequence::Duplicate`] |
    /// | `(e, n)` | `(e, m)`, `m > n + 1` | [`Sequence::Gap`] |
    /// | `(e, 0)` | `(f, 1)`, `f != e` | [`Sequence::Next`] |
    /// | `(e, n)` | `(f, m)`, `f != e`, otherwise | [`Sequence::OtherEpoch`] |
    ///
    /// A reader at offset 0 has seen nothing (typically [`Position::START`],
    /// a topic without history), so the first event of any epoch follows
    /// it. What to do with [`Sequence::OtherEpoch`] is the caller's choice:
    /// whether events are missing depends on what the new history holds.
    pub fn sequence(self, last: Option<Position>) -> Sequence {
        let Some(last) = last else {
            return Sequence::Next;
        };
        if self.epoch != last.epoch {
            return if last.offset == 0 && self.offset == 1 {
                Sequence::Next
            } else {
                Sequence::OtherEpoch
            };
        }
        match self.offset.checked_sub(last.offset) {
            None | Some(0) => Sequence::Duplicate,
            Some(1) => Sequence::Next,
            Some(_) => Sequence::Gap,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let (epoch, offset) = text.split_once('-')?;
        if offset.is_empty() || offset.len() > 20 || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let position = Position::new(Epoch::parse(epoch)?, offset.parse().ok()?);
        // A topic without history has nothing to be past.
        (!position.epoch.is_none() || position.offset == 0).then_some(position)
    }
}

/// Where an event stands against the last one a reader took; see
/// [`Position::sequence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// Nothing lies between: take it.
    Next,
    /// Same epoch, at or before the last one: already taken.
    Duplicate,
    /// Same epoch, beyond the next offset: the events between are missing.
    Gap,
    /// Another epoch (and not the first event after nothing): the topic's
    /// history was recreated (it expired, or Redis lost it) since the last
    /// one, so offsets of the two cannot be compared.
    OtherEpoch,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.offset)
    }
}

/// Why a client's last event id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("last event id is longer than {MAX_CURSOR_LEN} characters")]
    TooLong,
    #[error("last event id is malformed")]
    Malformed,
    #[error("last event id has {found} positions but the subscription has {expected} topics")]
    TopicCountMismatch { found: usize, expected: usize },
}

/// One position per topic of a subscription, in sorted topic order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor(pub Vec<Position>);

impl Cursor {
    /// Parses a client's last event id for a subscription of `topics` topics.
    pub fn parse(text: &str, topics: usize) -> Result<Self, CursorError> {
        if text.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLong);
        }
        let positions = text
            .split(',')
            .map(Position::parse)
            .collect::<Option<Vec<_>>>()
            .ok_or(CursorError::Malformed)?;
        if positions.len() != topics {
            return Err(CursorError::TopicCountMismatch {
                found: positions.len(),
                expected: topics,
            });
        }
        Ok(Cursor(positions))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, position) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{position}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_classifies_every_case() {
        let at = |epoch, offset| Position::new(Epoch(epoch), offset);
        let cases = [
            (
                None,
                at(1, 9),
                Sequence::Next,
                "nothing known about the reader",
            ),
            (
                None,
                Position::START,
                Sequence::Next,
                "nothing known, no history",
            ),
            (Some(at(1, 4)), at(1, 5), Sequence::Next, "the next offset"),
            (
                Some(at(1, 0)),
                at(1, 1),
                Sequence::Next,
                "the first event of the same epoch",
            ),
            (
                Some(Position::START),
                at(7, 1),
                Sequence::Next,
                "the first event of a new history",
            ),
            (
                Some(at(1, 0)),
                at(2, 1),
                Sequence::Next,
                "the first event after nothing seen",
            ),
            (
                Some(at(1, 4)),
                at(1, 4),
                Sequence::Duplicate,
                "the same offset",
            ),
            (
                Some(at(1, 4)),
                at(1, 2),
                Sequence::Duplicate,
                "an older offset",
            ),
            (
                Some(at(1, 4)),
                at(1, 0),
                Sequence::Duplicate,
                "offset 0 of the same epoch",
            ),
            (Some(at(1, 4)), at(1, 6), Sequence::Gap, "one event missing"),
            (
                Some(at(1, 0)),
                at(1, 2),
                Sequence::Gap,
                "the first event missing",
            ),
            (
                Some(Position::START),
                at(7, 2),
                Sequence::OtherEpoch,
                "a new history past its first event",
            ),
            (
                Some(at(1, 4)),
                at(2, 1),
                Sequence::OtherEpoch,
                "a new history after events were seen",
            ),
            (
                Some(at(1, 4)),
                at(2, 5),
                Sequence::OtherEpoch,
                "another epoch at the next offset",
            ),
            (
                Some(at(1, 4)),
                at(2, 3),
                Sequence::OtherEpoch,
                "another epoch at an older offset",
            ),
            (
                Some(at(1, 4)),
                Position::START,
                Sequence::OtherEpoch,
                "back to no history",
            ),
        ];
        for (last, position, expected, why) in cases {
            assert_eq!(position.sequence(last), expected, "{why}");
        }
    }

    #[test]
    fn positions_round_trip_through_text() {
        let cursor = Cursor(vec![
            Position::new(Epoch(u64::MAX), u64::MAX),
            Position::START,
            Position::new(Epoch(36), 7),
        ]);
        let text = cursor.to_string();
        assert_eq!(text, "3w5e11264sgsf-18446744073709551615,0-0,10-7");
        assert_eq!(Cursor::parse(&text, 3).unwrap(), cursor);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "-",
            "abc",
            "a-",
            "-1",
            "A-1",
            "a-1x",
            "a-+1",
            "0-5",
            "a-1,",
            "a--1",
            "zzzzzzzzzzzzzz-1",
            "a-99999999999999999999",
        ] {
            assert_eq!(
                Cursor::parse(bad, 1),
                Err(CursorError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ids_must_match_the_topic_count_and_length_bound() {
        assert_eq!(
            Cursor::parse("a-1,b-2", 1),
            Err(CursorError::TopicCountMismatch {
                found: 2,
                expected: 1
            })
        );
        assert_eq!(
            Cursor::parse(&"1".repeat(MAX_CURSOR_LEN + 1), 1),
            Err(CursorError::TooLong)
        );
    }
}
