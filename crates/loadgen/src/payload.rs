//! What a published message carries, so any subscriber can tell which
//! message it got and how long it took.
//!
//! `lg <phase> <publisher> <seq> <sent µs since the Unix epoch> xxxx...`:
//! ASCII only (safe in JSON, forms and raw bodies, one character per byte,
//! no line breaks), padded with `x` to the requested size. The send time is
//! wall-clock time, which every process on the machine shares, so worker
//! processes can measure latency of messages another process sent.

use std::time::{SystemTime, UNIX_EPOCH};

/// Identifies one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub phase: u32,
    pub publisher: u32,
    pub seq: u64,
    pub sent_micros: u64,
}

/// Microseconds since the Unix epoch, by the wall clock.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Writes the message for `stamp`, padded with `x` to at least `size` bytes.
pub fn encode(stamp: Stamp, size: usize, out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    let _ = write!(
        out,
        "lg {} {} {} {}",
        stamp.phase, stamp.publisher, stamp.seq, stamp.sent_micros
    );
    if out.len() < size {
        out.push(' ');
        while out.len() < size {
            out.push('x');
        }
    }
}

/// Reads a message written by [`encode`]; `None` for anything else (another
/// publisher's traffic on the same topic, a `reset` notice).
pub fn decode(data: &str) -> Option<Stamp> {
    let mut fields = data.strip_prefix("lg ")?.split(' ');
    let mut next = || -> Option<u64> {
        let field = fields.next()?;
        if field.is_empty() || field.len() > 20 || !field.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        field.parse().ok()
    };
    Some(Stamp {
        phase: u32::try_from(next()?).ok()?,
        publisher: u32::try_from(next()?).ok()?,
        seq: next()?,
        sent_micros: next()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_padding() {
        let stamp = Stamp {
            phase: 3,
            publisher: 15,
            seq: 123_456,
            sent_micros: 1_764_138_600_123_456,
        };
        let mut message = String::new();
        encode(stamp, 64, &mut message);
        assert_eq!(message.len(), 64);
        assert_eq!(decode(&message), Some(stamp));
        encode(stamp, 0, &mut message);
        assert_eq!(message, "lg 3 15 123456 1764138600123456");
        assert_eq!(decode(&message), Some(stamp));
    }

    #[test]
    fn foreign_messages_are_not_stamps() {
        for data in ["hello", "lg", "lg 1 2 3", "lg 1 2 x 4", "lg -1 2 3 4", ""] {
            assert_eq!(decode(data), None, "{data:?}");
        }
    }
}
