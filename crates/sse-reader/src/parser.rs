//! Incremental, sans-IO parser for `text/event-stream` bodies.
//!
//! Follows the WHATWG HTML "Interpreting an event stream" algorithm step by
//! step so that tests observe exactly what a browser's `EventSource` would.
//! It deliberately has no dependencies and does no IO, so the same code can be
//! driven by the async test helper, a load generator, or plain byte slices in
//! unit tests.
//!
//! Two ways to read what it finds: [`Parser::feed_with`] lends each item,
//! borrowed from the parser's own buffers, to a callback, and copies nothing
//! it does not have to (the load generator parses a million events a second
//! this way); [`Parser::feed`] and [`Parser::feed_into`] return owned
//! [`Item`]s, built from the same borrowed ones.

/// The UTF-8 encoding of U+FEFF; the spec's UTF-8 decode drops it once at the
/// very start of the stream.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One event as a browser would hand it to a `message` (or custom) listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `lastEventId` a browser would expose: the last event ID string at
    /// dispatch time, which persists across events until an `id` field
    /// changes it. Empty if the stream never set one.
    pub id: String,
    /// The event type; `"message"` when the event had no (or an empty)
    /// `event` field, matching the browser default.
    pub event: String,
    /// The `data` lines joined with `"\n"` (one trailing newline removed).
    pub data: String,
}

/// Everything the parser reports, in stream order.
///
/// Comments and `retry` are not visible to browser scripts, but tests need
/// them to check keep-alives and reconnection hints, so they are surfaced
/// alongside events rather than silently dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event.
    Event(Event),
    /// A comment line (`:` prefix): the text after the colon with at most one
    /// leading space removed, so `": ping"` yields `"ping"`.
    Comment(String),
    /// A valid `retry` field: the reconnection time in milliseconds. Values
    /// too large for `u64` saturate to `u64::MAX` (the spec puts no bound on
    /// the integer, so this is the closest representable value).
    Retry(u64),
}

/// An [`Event`] borrowed from the parser: valid until the callback of
/// [`Parser::feed_with`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// See [`Event::id`].
    pub id: &'a str,
    /// See [`Event::event`].
    pub event: &'a str,
    /// See [`Event::data`].
    pub data: &'a str,
}

/// An [`Item`] borrowed from the parser or from the bytes being fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemRef<'a> {
    /// See [`Item::Event`].
    Event(EventRef<'a>),
    /// See [`Item::Comment`].
    Comment(&'a str),
    /// See [`Item::Retry`].
    Retry(u64),
}

impl From<EventRef<'_>> for Event {
    fn from(event: EventRef<'_>) -> Self {
        Self {
            id: event.id.to_owned(),
            event: event.event.to_owned(),
            data: event.data.to_owned(),
        }
    }
}

impl From<ItemRef<'_>> for Item {
    fn from(item: ItemRef<'_>) -> Self {
        match item {
            ItemRef::Event(event) => Item::Event(event.into()),
            ItemRef::Comment(text) => Item::Comment(text.to_owned()),
            ItemRef::Retry(ms) => Item::Retry(ms),
        }
    }
}

/// Incremental `text/event-stream` parser.
///
/// Feed it body bytes as they arrive; chunk boundaries may fall anywhere,
/// including inside a UTF-8 sequence, inside the BOM, or between the CR and
/// LF of a CRLF. Per the spec, a trailing incomplete line or an event not
/// terminated by a blank line is never dispatched: when the stream ends the
/// caller simply stops feeding and that pending state is discarded.
///
/// # Line endings and latency
///
/// A CR is handled as a line end immediately and a directly following LF
/// (possibly in the next chunk) is then swallowed. This is equivalent to
/// waiting to see whether the LF follows, but an event terminated by CRs at
/// the end of a chunk is dispatched without waiting for more bytes, which is
/// how browsers behave too.
///
/// # Bytes, then text
///
/// Lines are taken apart as bytes and only the values that are handed out
/// are decoded, which is what decoding the whole stream first would give:
/// CR, LF, `:` and space are ASCII, so they are never part of a multibyte
/// sequence, a decoder always ends an incomplete sequence before them, and
/// replacing invalid bytes never produces them. The `data` lines of an event
/// are kept as bytes and decoded once, at dispatch; valid UTF-8 (the usual
/// case) is lent as it is, without a copy.
#[derive(Debug, Clone, Default)]
pub struct Parser {
    /// Bytes of the current, not yet terminated line. Kept as bytes so a
    /// multibyte character split across chunks decodes correctly.
    line: Vec<u8>,
    /// The previous byte was a CR that already ended a line, so an LF right
    /// after it belongs to the same CRLF terminator.
    after_cr: bool,
    /// The BOM check is over (either stripped or known to be absent).
    bom_done: bool,
    /// How many BOM bytes have been matched so far while the check is open;
    /// needed because the BOM itself can be split across chunks.
    bom_matched: usize,
    /// The spec's "data buffer", undecoded: each `data` value and an LF.
    data: Vec<u8>,
    /// The spec's "event type buffer".
    event_type: String,
    /// The spec's "last event ID buffer", set by `id` fields.
    id_buffer: String,
    /// The spec's per-source "last event ID string", copied from the buffer
    /// at each dispatch.
    last_event_id: String,
    /// Where text with invalid UTF-8 is decoded (U+FFFD for each bad
    /// sequence) before it is lent out; unused while the input is valid.
    replaced: String,
}

impl Parser {
    /// Creates a parser positioned at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `chunk` and returns the items it completed.
    ///
    /// Convenience wrapper around [`Parser::feed_into`] for callers that do
    /// not want to manage a buffer.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Item> {
        let mut out = Vec::new();
        self.feed_into(chunk, &mut out);
        out
    }

    /// Parses `chunk` and appends the items it completed to `out`, as owned
    /// copies of what [`Parser::feed_with`] lends.
    pub fn feed_into(&mut self, chunk: &[u8], out: &mut Vec<Item>) {
        self.feed_with(chunk, |item| out.push(item.into()));
    }

    /// Parses `chunk` and calls `on_item` with each item it completes, in
    /// stream order.
    ///
    /// What `on_item` gets borrows the parser's buffers (or `chunk`), so the
    /// hot loop of a client allocates nothing per event: copy what must
    /// outlive the call.
    pub fn feed_with(&mut self, chunk: &[u8], mut on_item: impl FnMut(ItemRef<'_>)) {
        let mut rest = self.strip_bom(chunk);

        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }

            match find_line_end(rest) {
                Some(end) => {
                    self.after_cr = rest[end] == b'\r';
                    if self.line.is_empty() {
                        // Whole line inside this chunk: skip the copy.
                        self.process_line(&rest[..end], &mut on_item);
                    } else {
                        self.line.extend_from_slice(&rest[..end]);
                        let line = std::mem::take(&mut self.line);
                        self.process_line(&line, &mut on_item);
                        // Hand the allocation back for the next line.
                        self.line = line;
                        self.line.clear();
                    }
                    rest = &rest[end + 1..];
                }
                None => {
                    self.line.extend_from_slice(rest);
                    break;
                }
            }
        }
    }

    /// The last event ID string, i.e. what a browser would send as the
    /// `Last-Event-ID` header when reconnecting.
    ///
    /// As in the spec this is only updated when an event is dispatched (a
    /// blank line is seen, even if no event results because the data buffer
    /// was empty), not as soon as an `id` field is parsed.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Consumes a leading BOM (possibly split across chunks) and returns the
    /// remaining input.
    fn strip_bom<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        if self.bom_done {
            return chunk;
        }
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            if b == BOM[self.bom_matched] {
                self.bom_matched += 1;
                rest = tail;
                if self.bom_matched == BOM.len() {
                    self.bom_done = true;
                    return rest;
                }
            } else {
                // Not a BOM after all: the bytes held back are ordinary line
                // content (none of them is CR or LF, so they can go straight
                // into the line buffer).
                self.bom_done = true;
                self.line.extend_from_slice(&BOM[..self.bom_matched]);
                return rest;
            }
        }
        // The whole chunk was a BOM prefix; decide once more bytes arrive.
        rest
    }

    /// Interprets one complete line (without its terminator).
    fn process_line(&mut self, line: &[u8], on_item: &mut impl FnMut(ItemRef<'_>)) {
        if line.is_empty() {
            self.dispatch(on_item);
            return;
        }

        if let Some(comment) = line.strip_prefix(b":") {
            on_item(ItemRef::Comment(decode(
                strip_one_space(comment),
                &mut self.replaced,
            )));
            return;
        }

        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], strip_one_space(&line[colon + 1..])),
            None => (line, &b""[..]),
        };
        self.process_field(name, value, on_item);
    }

    /// Applies one field; names are case-sensitive and unknown ones ignored,
    /// as in the spec.
    fn process_field(&mut self, name: &[u8], value: &[u8], on_item: &mut impl FnMut(ItemRef<'_>)) {
        match name {
            b"event" => {
                let value = decode(value, &mut self.replaced);
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            // A NUL would make the header unsendable on reconnect, so the
            // spec ignores the whole field.
            b"id" if !value.contains(&0) => {
                let value = decode(value, &mut self.replaced);
                self.id_buffer.clear();
                self.id_buffer.push_str(value);
            }
            // The spec only accepts "only ASCII digits"; an empty value has no
            // integer to interpret, so it is ignored too.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                on_item(ItemRef::Retry(parse_saturating(value)));
            }
            _ => {}
        }
    }

    /// The spec's "dispatch the event" steps, run on every blank line.
    fn dispatch(&mut self, on_item: &mut impl FnMut(ItemRef<'_>)) {
        // Step 1 happens even when nothing is dispatched, so `id: x` followed
        // by a blank line updates the reconnection ID on its own.
        self.last_event_id.clone_from(&self.id_buffer);

        if !self.data.is_empty() {
            // Every data line ended with an LF: drop the last one.
            let data = decode(&self.data[..self.data.len() - 1], &mut self.replaced);
            let event = match self.event_type.as_str() {
                "" => "message",
                event => event,
            };
            on_item(ItemRef::Event(EventRef {
                id: &self.last_event_id,
                event,
                data,
            }));
        }
        self.data.clear();
        self.event_type.clear();
    }
}

/// Position of the first CR or LF in `bytes`.
///
/// Eight bytes at a time: in a stream of ~100-byte events this search is
/// most of the parser's work, and a byte-by-byte loop costs several times
/// as much.
fn find_line_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LF: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const CR: u64 = u64::from_ne_bytes([b'\r'; 8]);
    // Flags the high bit of each zero byte of `word`; bytes above the
    // lowest zero byte may be flagged wrongly, the lowest never is.
    fn zero_bytes(word: u64) -> u64 {
        word.wrapping_sub(ONES) & !word & HIGHS
    }

    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in words.by_ref() {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let found = zero_bytes(word ^ LF) | zero_bytes(word ^ CR);
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map(|i| offset + i)
}

/// `bytes` as text, each invalid sequence replaced by U+FFFD exactly as the
/// WHATWG UTF-8 decoder does; copied into `replaced` only when invalid.
fn decode<'a>(bytes: &'a [u8], replaced: &'a mut String) -> &'a str {
    match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) => {
            replaced.clear();
            for chunk in bytes.utf8_chunks() {
                replaced.push_str(chunk.valid());
                if !chunk.invalid().is_empty() {
                    replaced.push(char::REPLACEMENT_CHARACTER);
                }
            }
            replaced
        }
    }
}

/// Removes at most one leading U+0020, as the spec requires for field values
/// (and as we do for comments so `": ping"` reads naturally).
fn strip_one_space(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b" ").unwrap_or(bytes)
}

/// Parses a non-empty string of ASCII digits, saturating instead of failing
/// on overflow.
fn parse_saturating(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ev(id: &str, event: &str, data: &str) -> Item {
        Item::Event(Event {
            id: id.to_owned(),
            event: event.to_owned(),
            data: data.to_owned(),
        })
    }

    fn parse(input: &[u8]) -> Vec<Item> {
        Parser::new().feed(input)
    }

    /// Feeds `input` split at every possible position (and byte by byte) and
    /// checks the result never depends on chunking.
    fn assert_chunking_invariant(input: &[u8], expected: &[Item]) {
        assert_eq!(parse(input), expected, "single chunk");
        for split in 0..=input.len() {
            let mut p = Parser::new();
            let mut out = p.feed(&input[..split]);
            out.extend(p.feed(&input[split..]));
            assert_eq!(out, expected, "split at {split}");
        }
        let mut p = Parser::new();
        let mut out = Vec::new();
        for b in input {
            p.feed_into(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, expected, "byte by byte");
    }

    #[test]
    fn lf_line_endings() {
        assert_chunking_invariant(
            b"event: a\ndata: 1\n\ndata: 2\n\n",
            &[ev("", "a", "1"), ev("", "message", "2")],
        );
    }

    #[test]
    fn crlf_line_endings() {
        assert_chunking_invariant(
            b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n",
            &[ev("", "a", "1"), ev("", "message", "2")],
        );
    }

    #[test]
    fn cr_line_endings() {
        assert_chunking_invariant(
            b"event: a\rdata: 1\r\rdata: 2\r\r",
            &[ev("", "a", "1"), ev("", "message", "2")],
        );
    }

    #[test]
    fn mixed_line_endings() {
        assert_chunking_invariant(
            b"data: a\rdata: b\ndata: c\r\n\n\r\r\n\ndata: d\r\r",
            &[ev("", "message", "a\nb\nc"), ev("", "message", "d")],
        );
    }

    #[test]
    fn crlf_split_between_cr_and_lf_is_one_line_end() {
        let mut p = Parser::new();
        assert_eq!(p.feed(b"data: a\r"), vec![]);
        // If the LF were a second line end this would dispatch "a" here.
        assert_eq!(p.feed(b"\ndata: b\r"), vec![]);
        assert_eq!(p.feed(b"\n\r"), vec![ev("", "message", "a\nb")]);
        assert_eq!(p.feed(b"\n"), vec![]);
        assert_eq!(p.feed(b"data: c\n\n"), vec![ev("", "message", "c")]);
    }

    #[test]
    fn trailing_cr_dispatches_without_waiting() {
        let mut p = Parser::new();
        assert_eq!(p.feed(b"data: a\r\r"), vec![ev("", "message", "a")]);
    }

    #[test]
    fn cr_cr_is_two_line_ends_across_chunks() {
        let mut p = Parser::new();
        assert_eq!(p.feed(b"data: a\r"), vec![]);
        assert_eq!(p.feed(b"\r"), vec![ev("", "message", "a")]);
    }

    #[test]
    fn multibyte_char_split_across_chunks() {
        // "é" is C3 A9, "€" is E2 82 AC, "😀" is F0 9F 98 80.
        let input = "data: é€😀\n\n".as_bytes();
        assert_chunking_invariant(input, &[ev("", "message", "é€😀")]);

        let mut p = Parser::new();
        assert_eq!(p.feed(b"data: \xF0\x9F"), vec![]);
        assert_eq!(p.feed(b"\x98\x80\n\n"), vec![ev("", "message", "😀")]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_chunking_invariant(
            b"data: a\xFFb\xE2\x82\n\n",
            &[ev("", "message", "a\u{FFFD}b\u{FFFD}")],
        );
    }

    #[test]
    fn leading_bom_is_stripped() {
        assert_chunking_invariant(b"\xEF\xBB\xBFdata: x\n\n", &[ev("", "message", "x")]);
        // Without stripping, the field name would be "\u{FEFF}data" and
        // nothing would be dispatched.
        assert_chunking_invariant(b"\xEF\xBB\xBFdata\n\n", &[ev("", "message", "")]);
    }

    #[test]
    fn only_one_bom_is_stripped() {
        // The second BOM becomes part of the field name, so the line is an
        // unknown field and nothing is dispatched.
        assert_chunking_invariant(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n", &[]);
    }

    #[test]
    fn bom_not_at_start_is_kept() {
        assert_chunking_invariant(
            b"data: \xEF\xBB\xBFx\n\n",
            &[ev("", "message", "\u{FEFF}x")],
        );
    }

    #[test]
    fn partial_bom_prefix_is_content() {
        // EF BB followed by something else is not a BOM; the bytes must be
        // kept (and decoded lossily) rather than dropped.
        assert_chunking_invariant(b"\xEF\xBB:c\n", &[]);
        let mut p = Parser::new();
        assert_eq!(p.feed(b"\xEF"), vec![]);
        assert_eq!(p.feed(b"\n:c\n"), vec![Item::Comment("c".to_owned())]);
        assert_chunking_invariant(b"\xEF\n:c\n", &[Item::Comment("c".to_owned())]);
    }

    #[test]
    fn comments_are_reported() {
        assert_chunking_invariant(
            b":\n: ping\n:  two\n:no-space\ndata: x\n: mid\n\n",
            &[
                Item::Comment(String::new()),
                Item::Comment("ping".to_owned()),
                Item::Comment(" two".to_owned()),
                Item::Comment("no-space".to_owned()),
                Item::Comment("mid".to_owned()),
                ev("", "message", "x"),
            ],
        );
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        assert_eq!(parse(b"data:  x\n\n"), vec![ev("", "message", " x")]);
        assert_eq!(parse(b"data:x\n\n"), vec![ev("", "message", "x")]);
        assert_eq!(parse(b"data: x \n\n"), vec![ev("", "message", "x ")]);
        // Tabs are not spaces.
        assert_eq!(parse(b"data:\tx\n\n"), vec![ev("", "message", "\tx")]);
        assert_eq!(parse(b"event:  e\ndata: x\n\n"), vec![ev("", " e", "x")]);
    }

    #[test]
    fn only_first_colon_splits() {
        assert_eq!(
            parse(b"data: a: b:c\n\n"),
            vec![ev("", "message", "a: b:c")]
        );
    }

    #[test]
    fn multiple_data_lines_join_with_newline() {
        assert_eq!(
            parse(b"data: a\ndata: b\ndata\ndata: c\n\n"),
            vec![ev("", "message", "a\nb\n\nc")]
        );
        // Only one trailing newline is removed.
        assert_eq!(parse(b"data: a\ndata\n\n"), vec![ev("", "message", "a\n")]);
        // A lone empty data line is a real event with empty data.
        assert_eq!(parse(b"data\ndata\n\n"), vec![ev("", "message", "\n")]);
        assert_eq!(parse(b"data:\n\n"), vec![ev("", "message", "")]);
    }

    #[test]
    fn empty_data_dispatches_nothing_and_resets_event_type() {
        assert_eq!(parse(b"\n\n\n"), vec![]);
        assert_eq!(parse(b"event: x\n\n"), vec![]);
        // The event type from the undispatched block must not leak.
        assert_eq!(
            parse(b"event: x\n\ndata: d\n\n"),
            vec![ev("", "message", "d")]
        );
    }

    #[test]
    fn empty_event_field_means_message() {
        assert_eq!(
            parse(b"event: x\nevent:\ndata: d\n\n"),
            vec![ev("", "message", "d")]
        );
        // Event type does not carry over to the next event.
        assert_eq!(
            parse(b"event: x\ndata: 1\n\ndata: 2\n\n"),
            vec![ev("", "x", "1"), ev("", "message", "2")]
        );
    }

    #[test]
    fn id_with_nul_is_ignored() {
        assert_eq!(
            parse(b"id: 1\n\nid: a\0b\ndata: x\n\n"),
            vec![ev("1", "message", "x")]
        );
        let mut p = Parser::new();
        p.feed(b"id: 7\0\n\n");
        assert_eq!(p.last_event_id(), "");
    }

    #[test]
    fn id_persists_across_events() {
        let mut p = Parser::new();
        assert_eq!(
            p.feed(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n"),
            vec![
                ev("1", "message", "a"),
                ev("1", "message", "b"),
                ev("2", "message", "c"),
            ]
        );
        assert_eq!(p.last_event_id(), "2");
        // An empty id resets it.
        assert_eq!(p.feed(b"id\ndata: d\n\n"), vec![ev("", "message", "d")]);
        assert_eq!(p.last_event_id(), "");
    }

    #[test]
    fn last_event_id_updates_on_blank_line_even_without_event() {
        let mut p = Parser::new();
        assert_eq!(p.feed(b"id: 5\n"), vec![]);
        // Per spec the reconnection ID only changes at dispatch time.
        assert_eq!(p.last_event_id(), "");
        assert_eq!(p.feed(b"\n"), vec![]);
        assert_eq!(p.last_event_id(), "5");
        assert_eq!(p.feed(b"data: x\n\n"), vec![ev("5", "message", "x")]);
    }

    #[test]
    fn id_after_data_in_same_block_applies() {
        assert_eq!(parse(b"data: x\nid: 9\n\n"), vec![ev("9", "message", "x")]);
    }

    #[test]
    fn retry_only_accepts_ascii_digits() {
        assert_eq!(
            parse(
                b"retry: 1000\nretry: 10a\nretry: -1\nretry: 1.5\nretry:  5\n\
                  retry\nretry:\nretry: \xD9\xA3\nretry:0\n"
            ),
            vec![Item::Retry(1000), Item::Retry(0)]
        );
        assert_eq!(
            parse(b"retry: 99999999999999999999999\n"),
            vec![Item::Retry(u64::MAX)]
        );
    }

    #[test]
    fn retry_does_not_create_event() {
        assert_eq!(parse(b"retry: 5\n\n"), vec![Item::Retry(5)]);
    }

    #[test]
    fn field_without_colon_uses_whole_line_as_name() {
        assert_eq!(parse(b"data\n\n"), vec![ev("", "message", "")]);
        assert_eq!(parse(b"event\ndata: x\n\n"), vec![ev("", "message", "x")]);
        // "data " (with a space) is not "data".
        assert_eq!(parse(b"data \n\n"), vec![]);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            parse(b"foo: bar\nDATA: no\nData: no\n data: no\ndata: yes\nbar\n\n"),
            vec![ev("", "message", "yes")]
        );
    }

    #[test]
    fn unterminated_event_at_end_of_stream_is_not_dispatched() {
        let mut p = Parser::new();
        assert_eq!(
            p.feed(b"data: a\n\ndata: b\n"),
            vec![ev("", "message", "a")]
        );
        // Stream ends here: "b" is discarded, as is an unterminated line.
        let mut p = Parser::new();
        assert_eq!(p.feed(b"data: a\n\ndata: b"), vec![ev("", "message", "a")]);
    }

    #[test]
    fn nul_in_data_is_kept() {
        assert_eq!(parse(b"data: a\0b\n\n"), vec![ev("", "message", "a\0b")]);
    }

    #[test]
    fn items_keep_stream_order() {
        assert_chunking_invariant(
            b": hi\r\nretry: 10\r\nid: 3\r\nevent: e\r\ndata: d\r\n\r\n: bye\r\n",
            &[
                Item::Comment("hi".to_owned()),
                Item::Retry(10),
                ev("3", "e", "d"),
                Item::Comment("bye".to_owned()),
            ],
        );
    }

    /// The spec's algorithm over a whole stream at once, written as plainly
    /// as possible: decode everything, drop one leading U+FEFF, split lines
    /// at CRLF, CR and LF, interpret each. No chunks and no bytes: an
    /// independent statement of what the incremental parser must produce.
    /// Also returns the last event ID string at the end.
    fn reference(input: &[u8]) -> (Vec<Item>, String) {
        let decoded = String::from_utf8_lossy(input);
        let text = decoded.strip_prefix('\u{FEFF}').unwrap_or(&decoded);
        let mut lines = Vec::new();
        let mut current = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' => {
                    chars.next_if_eq(&'\n');
                    lines.push(std::mem::take(&mut current));
                }
                '\n' => lines.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        // What is left in `current` never ended: it is never interpreted.
        let mut items = Vec::new();
        let (mut data, mut event_type) = (String::new(), String::new());
        let (mut id_buffer, mut last_id) = (String::new(), String::new());
        for line in &lines {
            if line.is_empty() {
                last_id.clone_from(&id_buffer);
                if !data.is_empty() {
                    data.pop();
                    let event = match event_type.as_str() {
                        "" => "message",
                        other => other,
                    };
                    items.push(ev(&last_id, event, &data));
                }
                data.clear();
                event_type.clear();
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                let comment = comment.strip_prefix(' ').unwrap_or(comment);
                items.push(Item::Comment(comment.to_owned()));
                continue;
            }
            let (name, value) = match line.split_once(':') {
                Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_str(), ""),
            };
            match name {
                "event" => value.clone_into(&mut event_type),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "id" if !value.contains('\0') => value.clone_into(&mut id_buffer),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    items.push(Item::Retry(value.parse().unwrap_or(u64::MAX)));
                }
                _ => {}
            }
        }
        (items, last_id)
    }

    /// Streams made of the pieces the parser has to tell apart: field names
    /// right and wrong, colons, spaces, every line ending, BOMs and their
    /// prefixes, multibyte characters, invalid and truncated UTF-8, NULs and
    /// big numbers. Deterministic (xorshift), so a failure reproduces.
    fn random_streams(count: usize) -> Vec<Vec<u8>> {
        const PIECES: &[&[u8]] = &[
            b"data",
            b"data:",
            b"data: ",
            b"data:  ",
            b"event:",
            b"event: ",
            b"message",
            b"id:",
            b"id: ",
            b"retry:",
            b"retry: ",
            b"\nretry: 3000\n",
            b"\rretry:7\r",
            b"DATA:",
            b"dat",
            b":",
            b": ",
            b" ",
            b"\n",
            b"\n",
            b"\n\n",
            b"\r",
            b"\r\n",
            b"\r\n\r\n",
            b"x",
            b"lg 1 2 3 4",
            b"12",
            b"99999999999999999999999",
            b"\0",
            "é€😀".as_bytes(),
            b"\xEF\xBB\xBF",
            b"\xEF\xBB",
            b"\xEF",
            b"\xFF",
            b"\xE2\x82",
            b"\xF0\x9F",
            b"\x98\x80",
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        (0..count)
            .map(|_| {
                let mut stream = Vec::new();
                if next(4) == 0 {
                    stream.extend_from_slice(b"\xEF\xBB\xBF");
                }
                for _ in 0..next(40) + 1 {
                    stream.extend_from_slice(PIECES[next(PIECES.len())]);
                }
                stream
            })
            .collect()
    }

    /// Runs `input` through [`Parser::feed_with`] in the given pieces.
    fn parse_borrowed(pieces: &[&[u8]]) -> (Vec<Item>, String) {
        let mut parser = Parser::new();
        let mut items = Vec::new();
        for piece in pieces {
            parser.feed_with(piece, |item| items.push(Item::from(item)));
        }
        (items, parser.last_event_id().to_owned())
    }

    #[test]
    fn random_streams_parse_as_the_reference_says_however_they_are_split() {
        let mut totals = [0usize; 3];
        for input in random_streams(400) {
            let expected = reference(&input);
            for item in &expected.0 {
                let kind = match item {
                    Item::Event(_) => 0,
                    Item::Comment(_) => 1,
                    Item::Retry(_) => 2,
                };
                totals[kind] += 1;
            }
            let shown = String::from_utf8_lossy(&input);
            assert_eq!(parse_borrowed(&[&input]), expected, "{shown:?}");
            for split in 0..=input.len() {
                let (head, tail) = input.split_at(split);
                assert_eq!(
                    parse_borrowed(&[head, tail]),
                    expected,
                    "{shown:?} split at {split}"
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(parse_borrowed(&bytes), expected, "{shown:?} byte by byte");
            let mut owned = Parser::new();
            let mut items = Vec::new();
            for piece in input.chunks(3) {
                owned.feed_into(piece, &mut items);
            }
            assert_eq!(
                (items, owned.last_event_id().to_owned()),
                expected,
                "{shown:?} through feed_into, 3 bytes at a time"
            );
        }
        // The streams must exercise every kind of item, or the comparison
        // proves little.
        assert!(
            totals.iter().all(|&n| n >= 50),
            "events, comments, retries: {totals:?}"
        );
    }

    #[test]
    fn feed_with_lends_what_feed_returns() {
        let input = b"retry: 5\n: hi\nid: 7\nevent: e\ndata: a\ndata: \xFF\n\ndata: b\n\n";
        let mut borrowed = Vec::new();
        Parser::new().feed_with(input, |item| match item {
            ItemRef::Event(event) => {
                borrowed.push(format!("{}|{}|{}", event.id, event.event, event.data))
            }
            ItemRef::Comment(text) => borrowed.push(format!("comment {text}")),
            ItemRef::Retry(ms) => borrowed.push(format!("retry {ms}")),
        });
        assert_eq!(
            borrowed,
            ["retry 5", "comment hi", "7|e|a\n\u{FFFD}", "7|message|b"]
        );
    }
}
