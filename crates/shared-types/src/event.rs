//! An event as the bus stores it and the gateway sends it.
//!
//! The SSE frame is encoded once, when the event enters a process, and
//! shared by reference with every subscriber; per client the cost is a
//! reference count and a write.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::cursor::Position;

/// One published event. Cheap to share behind an [`Arc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub topic: Arc<str>,
    pub position: Position,
    pub event_type: String,
    pub data: String,
    /// `id:` line, `event:` line, `data:` lines and the blank line.
    frame: Bytes,
    /// Length of the `id: ...\n` line at the start of `frame`.
    id_len: usize,
}

impl Event {
    pub fn new(topic: Arc<str>, position: Position, event_type: String, data: String) -> Self {
        let id_line = format!("id: {position}\n");
        let mut frame = BytesMut::with_capacity(id_line.len() + event_type.len() + data.len() + 32);
        frame.put_slice(id_line.as_bytes());
        encode_body(&mut frame, &event_type, &data);
        Self {
            topic,
            position,
            event_type,
            data,
            frame: frame.freeze(),
            id_len: id_line.len(),
        }
    }

    /// The whole frame, with this event's own position as its id: what a
    /// single-topic subscriber receives.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The frame without its `id:` line, for subscriptions whose id covers
    /// several topics and so is written per client.
    pub fn body(&self) -> Bytes {
        self.frame.slice(self.id_len..)
    }
}

/// Writes `event:` and `data:` lines and the terminating blank line.
///
/// The data is split on CRLF, CR and LF alike: every EventSource parser
/// treats a lone CR as a line end, so leaving one inside a `data:` line would
/// let a publisher forge fields. Each line is written after `data: ` with one
/// space, which parsers strip, so a leading space in the message survives.
pub fn encode_body(out: &mut BytesMut, event_type: &str, data: &str) {
    out.put_slice(b"event: ");
    out.put_slice(event_type.as_bytes());
    out.put_u8(b'\n');
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest.as_bytes()[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.put_u8(b'\n');
}

/// A comment line, for keep-alives: ignored by parsers, seen by proxies.
pub fn sse_comment(text: &str) -> Bytes {
    debug_assert!(!text.contains(['\r', '\n']));
    Bytes::from(format!(": {text}\n\n"))
}

/// The reconnection delay hint sent first on every stream.
pub fn sse_retry(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Epoch;

    fn frame(data: &str) -> String {
        let event = Event::new(
            "t".into(),
            Position::new(Epoch(35), 3),
            "message".into(),
            data.into(),
        );
        String::from_utf8(event.frame().to_vec()).unwrap()
    }

    #[test]
    fn frame_has_id_event_and_one_data_line_per_line() {
        assert_eq!(
            frame("a\r\nb\rc\nd"),
            "id: z-3\nevent: message\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn injected_fields_stay_inside_data_lines() {
        assert_eq!(
            frame("x\n\nevent: evil\rid: 9"),
            "id: z-3\nevent: message\ndata: x\ndata: \ndata: event: evil\ndata: id: 9\n\n"
        );
    }

    #[test]
    fn leading_space_and_trailing_newline_are_kept() {
        assert_eq!(
            frame(" hi\n"),
            "id: z-3\nevent: message\ndata:  hi\ndata: \n\n"
        );
    }

    #[test]
    fn body_is_the_frame_without_its_id_line() {
        let event = Event::new(
            "t".into(),
            Position::new(Epoch(1), 1),
            "e".into(),
            "d".into(),
        );
        assert_eq!(&event.body()[..], b"event: e\ndata: d\n\n");
    }
}
