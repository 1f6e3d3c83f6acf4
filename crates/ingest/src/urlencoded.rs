//! A strict reader of `application/x-www-form-urlencoded` publish requests.
//!
//! The usual decoders are lenient: they keep a malformed `%zz` as text and
//! replace bytes that are not UTF-8 with U+FFFD, so a publisher would get a
//! 201 for a message that is not the one it sent. Here both are errors, as
//! is a repeated field (the JSON reader refuses those too).

use shared_types::PublishRequest;

/// Reads the publish fields from a form body or query string; other fields
/// are ignored. The error says what is wrong without quoting the input.
pub fn parse(input: &[u8]) -> Result<PublishRequest, String> {
    let mut request = PublishRequest::default();
    for pair in input.split(|&b| b == b'&').filter(|pair| !pair.is_empty()) {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        let key = decode(key)?;
        let slot = match key.as_str() {
            "message" => &mut request.message,
            "topic" => &mut request.topic,
            "event" => &mut request.event,
            "idempotency_key" => &mut request.idempotency_key,
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!("duplicate field `{key}`"));
        }
        *slot = Some(decode(value)?);
    }
    Ok(request)
}

/// Percent-decodes one key or value (`+` is a space) into UTF-8 text.
fn decode(raw: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => out.push(b' '),
            b'%' => match rest {
                [high, low, tail @ ..] if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                    out.push(hex(*high) << 4 | hex(*low));
                    rest = tail;
                }
                _ => {
                    return Err(
                        "malformed percent-encoding (a '%' not followed by two hex digits)"
                            .to_owned(),
                    );
                }
            },
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| "text is not valid UTF-8".to_owned())
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_fields_and_ignores_others() {
        let request = parse(b"message=a+b%20c%0A%F0%9F%98%80&x=1&topic=t&&event=").unwrap();
        assert_eq!(request.message.as_deref(), Some("a b c\n😀"));
        assert_eq!(request.topic.as_deref(), Some("t"));
        assert_eq!(request.event.as_deref(), Some(""));
        assert_eq!(parse(b"message").unwrap().message.as_deref(), Some(""));
    }

    #[test]
    fn refuses_what_lenient_decoders_would_alter() {
        for bad in [
            &b"message=%zz"[..],
            b"message=100%",
            b"message=%4",
            b"message=%+1",
            b"message=%FF%FE",
            b"message=\xff",
            b"message=a&message=b",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
