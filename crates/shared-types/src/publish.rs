//! The publish request: the tutorial's `message`, plus an optional `topic`,
//! SSE `event` type and idempotency key, and the rules each must follow.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use validator::{Validate, ValidateArgs, ValidationError, ValidationErrors};

/// Topic used when a request names none, so the tutorial's commands work unchanged.
pub const DEFAULT_TOPIC: &str = "default";
/// SSE event type used when a request names none, as in the tutorial.
pub const DEFAULT_EVENT_TYPE: &str = "message";
/// Longest topic name, in bytes (the character set is ASCII).
pub const MAX_TOPIC_LEN: usize = 128;
/// Longest event type, in bytes (the character set is ASCII).
pub const MAX_EVENT_TYPE_LEN: usize = 64;
/// Longest idempotency key, in bytes (the character set is ASCII).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// The header that carries an idempotency key (the body's field is
/// `idempotency_key`).
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// Event types a publisher may not use, in any case. Browsers hand `error`
/// and `open` to an EventSource's `onerror` and `onopen`, and `reset` is the
/// server's own "you may have missed events" (the only type a gateway writes
/// besides the publishers'). Refused whatever their case: browsers match
/// types exactly, but other clients do not all do so, and `Reset` next to
/// the server's `reset` would mislead a reader of the stream anyway.
pub const RESERVED_EVENT_TYPES: [&str; 4] = ["error", "open", "reset", TOKEN_EXPIRED_EVENT];

/// The event that ends a stream at its token's `exp`.
pub const TOKEN_EXPIRED_EVENT: &str = "token-expired";

/// Limits that come from configuration rather than from the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most Unicode scalar values a message may have (the tutorial's 100 by default).
    pub max_message_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_chars: 100,
        }
    }
}

/// A publish request as it arrives, from JSON, a form or the query string.
/// Every field is optional here so a missing one gets our own clear message
/// rather than a deserialiser's.
#[derive(Debug, Clone, Default, Validate)]
#[validate(context = Limits)]
pub struct PublishRequest {
    #[validate(custom(function = "check_message", use_context))]
    pub message: Option<String>,
    #[validate(custom(function = "check_topic"))]
    pub topic: Option<String>,
    #[validate(custom(function = "check_event_type"))]
    pub event: Option<String>,
    /// The body's `idempotency_key` field.
    #[validate(custom(function = "check_idempotency_key"))]
    pub idempotency_key: Option<String>,
    /// The `Idempotency-Key` header's value, set by the service that read
    /// the request (never from the body); see
    /// [`PublishRequest::with_idempotency_header`].
    pub idempotency_header: Option<String>,
}

/// Only a map (a JSON object) is a publish request: a derived impl would
/// also read `["hello", null, null]` as its fields in order. Unknown keys are
/// ignored, as the tutorial ignores them; a repeated key is an error rather
/// than a silent choice between two values.
impl<'de> Deserialize<'de> for PublishRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RequestVisitor;

        impl<'de> Visitor<'de> for RequestVisitor {
            type Value = PublishRequest;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with a \"message\" string")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PublishRequest, A::Error> {
                let mut request = PublishRequest::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "message" => &mut request.message,
                        "topic" => &mut request.topic,
                        "event" => &mut request.event,
                        "idempotency_key" => &mut request.idempotency_key,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    let value = map.next_value::<Option<String>>()?;
                    if slot.is_some() {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    *slot = value;
                }
                Ok(request)
            }
        }

        deserializer.deserialize_map(RequestVisitor)
    }
}

/// A request that passed validation, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPublish {
    pub message: String,
    pub topic: String,
    pub event_type: String,
    /// From the header or the body field; `None`: an ordinary publish.
    pub idempotency_key: Option<String>,
}

impl PublishRequest {
    /// The request with the `Idempotency-Key` header's value beside the
    /// body's field: either may carry the key, both only if they agree.
    pub fn with_idempotency_header(mut self, header: Option<String>) -> Self {
        self.idempotency_header = header;
        self
    }

    /// Checks every rule and names the first broken one per field, in a
    /// stable order (message, topic, event, idempotency_key, then the
    /// header) so clients can rely on the text.
    pub fn validate_into(self, limits: &Limits) -> Result<ValidPublish, String> {
        if self.message.is_none() {
            return Err("message is required".to_owned());
        }
        let mut errors = match self.validate_with_args(limits) {
            Ok(()) => Vec::new(),
            Err(errors) => describe(errors),
        };
        if let Some(header) = &self.idempotency_header
            && let Err(error) = check_idempotency_key(header)
        {
            let why = error.message.as_deref().unwrap_or("is invalid");
            errors.push(format!("{IDEMPOTENCY_KEY_HEADER} header {why}"));
        }
        if errors.is_empty()
            && let (Some(header), Some(field)) = (&self.idempotency_header, &self.idempotency_key)
            && header != field
        {
            // Either could be the one meant: refusing is the only safe answer.
            errors.push(format!(
                "idempotency_key differs from the {IDEMPOTENCY_KEY_HEADER} header; send one, \
                 or the same key in both"
            ));
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(ValidPublish {
            message: self.message.unwrap_or_default(),
            topic: self.topic.unwrap_or_else(|| DEFAULT_TOPIC.to_owned()),
            event_type: self.event.unwrap_or_else(|| DEFAULT_EVENT_TYPE.to_owned()),
            idempotency_key: self.idempotency_header.or(self.idempotency_key),
        })
    }
}

/// Joins the field errors into one sentence. The rejected value is never
/// echoed: it may be huge or hostile.
fn describe(errors: ValidationErrors) -> Vec<String> {
    let fields = errors.field_errors();
    ["message", "topic", "event", "idempotency_key"]
        .iter()
        .filter_map(|name| {
            let first = fields.get(*name)?.first()?;
            let why = first.message.as_deref().unwrap_or("is invalid");
            Some(format!("{name} {why}"))
        })
        .collect()
}

fn rule(code: &'static str, message: String) -> ValidationError {
    ValidationError::new(code).with_message(message.into())
}

fn check_message(message: &str, limits: &Limits) -> Result<(), ValidationError> {
    let max = limits.max_message_chars;
    match message.chars().take(max + 1).count() {
        0 => Err(rule("empty", "must not be empty".to_owned())),
        n if n > max => Err(rule(
            "too_long",
            format!("must be at most {max} characters"),
        )),
        _ => Ok(()),
    }
}

/// True for the characters allowed in topics and event types: ASCII letters,
/// digits and `_ . : -`. No space, CR, LF or NUL can reach an SSE line.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

fn check_name(value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > max {
        return Err(rule("length", format!("must be 1 to {max} characters")));
    }
    if !value.chars().all(is_name_char) {
        return Err(rule(
            "charset",
            "may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'".to_owned(),
        ));
    }
    Ok(())
}

/// Validates a topic name, as used by both publishers and subscribers.
pub fn check_topic(topic: &str) -> Result<(), ValidationError> {
    check_name(topic, MAX_TOPIC_LEN)
}

fn check_event_type(event: &str) -> Result<(), ValidationError> {
    check_name(event, MAX_EVENT_TYPE_LEN)?;
    if RESERVED_EVENT_TYPES
        .iter()
        .any(|reserved| event.eq_ignore_ascii_case(reserved))
    {
        // Echoing the value is safe here: it passed the character set and
        // the length above.
        return Err(rule(
            "reserved",
            format!(
                "\"{event}\" is reserved (reserved: {})",
                RESERVED_EVENT_TYPES.join(", ")
            ),
        ));
    }
    Ok(())
}

/// An idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII
/// characters (`!` to `~`), so a UUID, a hash or a client's own scheme
/// fits, and no space, control character or non-ASCII byte is ever stored.
fn check_idempotency_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(rule(
            "length",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"),
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(rule(
            "charset",
            "may only contain visible ASCII characters ('!' to '~')".to_owned(),
        ));
    }
    Ok(())
}

/// The reason a topic name is refused, as a sentence fragment.
pub fn topic_error(topic: &str) -> Option<String> {
    check_topic(topic)
        .err()
        .map(|e| e.message.map(|m| m.into_owned()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(message: Option<&str>, topic: Option<&str>, event: Option<&str>) -> PublishRequest {
        PublishRequest {
            message: message.map(str::to_owned),
            topic: topic.map(str::to_owned),
            event: event.map(str::to_owned),
            ..PublishRequest::default()
        }
    }

    fn keyed(body: Option<&str>, header: Option<&str>) -> Result<ValidPublish, String> {
        PublishRequest {
            idempotency_key: body.map(str::to_owned),
            ..request(Some("hi"), None, None)
        }
        .with_idempotency_header(header.map(str::to_owned))
        .validate_into(&Limits::default())
    }

    #[test]
    fn an_idempotency_key_comes_from_the_header_or_the_body_or_both_if_they_agree() {
        let key = |body, header| keyed(body, header).unwrap().idempotency_key;
        assert_eq!(key(None, None), None);
        assert_eq!(key(Some("a"), None).as_deref(), Some("a"));
        assert_eq!(key(None, Some("b")).as_deref(), Some("b"));
        assert_eq!(key(Some("c"), Some("c")).as_deref(), Some("c"));
        assert_eq!(
            keyed(Some("a"), Some("b")).unwrap_err(),
            "idempotency_key differs from the Idempotency-Key header; send one, or the same key in both"
        );
    }

    #[test]
    fn idempotency_keys_are_1_to_255_visible_ascii_characters() {
        let longest = "~".repeat(255);
        for good in [
            "a",
            "!",
            longest.as_str(),
            "8e03978e-40d5-43e8-bc93-6894a57f9324",
        ] {
            assert!(keyed(Some(good), None).is_ok(), "{good}");
            assert!(keyed(None, Some(good)).is_ok(), "{good}");
        }
        let too_long = "k".repeat(256);
        let cases = [
            ("", "must be 1 to 255 characters"),
            (too_long.as_str(), "must be 1 to 255 characters"),
            (
                "a b",
                "may only contain visible ASCII characters ('!' to '~')",
            ),
            (
                "a\tb",
                "may only contain visible ASCII characters ('!' to '~')",
            ),
            (
                "clé",
                "may only contain visible ASCII characters ('!' to '~')",
            ),
            (
                "a\u{7f}",
                "may only contain visible ASCII characters ('!' to '~')",
            ),
        ];
        for (bad, why) in cases {
            assert_eq!(
                keyed(Some(bad), None).unwrap_err(),
                format!("idempotency_key {why}")
            );
            assert_eq!(
                keyed(None, Some(bad)).unwrap_err(),
                format!("Idempotency-Key header {why}")
            );
        }
    }

    #[test]
    fn defaults_fill_topic_and_event_type() {
        let valid = request(Some("hi"), None, None)
            .validate_into(&Limits::default())
            .unwrap();
        assert_eq!(valid.topic, DEFAULT_TOPIC);
        assert_eq!(valid.event_type, DEFAULT_EVENT_TYPE);
    }

    #[test]
    fn message_length_counts_characters_not_bytes() {
        let limits = Limits::default();
        assert!(
            request(Some(&"é".repeat(100)), None, None)
                .validate_into(&limits)
                .is_ok()
        );
        let err = request(Some(&"é".repeat(101)), None, None)
            .validate_into(&limits)
            .unwrap_err();
        assert_eq!(err, "message must be at most 100 characters");
    }

    #[test]
    fn every_broken_field_is_named_without_echoing_values() {
        let err = request(Some(""), Some("a b"), Some("x\ny"))
            .validate_into(&Limits::default())
            .unwrap_err();
        assert_eq!(
            err,
            "message must not be empty; topic may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'; \
             event may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'"
        );
    }

    #[test]
    fn only_objects_deserialize_and_keys_may_not_repeat() {
        let ok: PublishRequest =
            serde_json::from_str(r#"{"message":"m","other":[1,{"a":2}]}"#).unwrap();
        assert_eq!(ok.message.as_deref(), Some("m"));
        let array = serde_json::from_str::<PublishRequest>(r#"["hello", null, null]"#).unwrap_err();
        assert!(
            array
                .to_string()
                .starts_with("invalid type: sequence, expected an object"),
            "{array}"
        );
        let twice =
            serde_json::from_str::<PublishRequest>(r#"{"message":"a","message":"b"}"#).unwrap_err();
        assert!(
            twice.to_string().starts_with("duplicate field `message`"),
            "{twice}"
        );
        let number = serde_json::from_str::<PublishRequest>(r#"{"message":7}"#).unwrap_err();
        assert!(
            number
                .to_string()
                .starts_with("invalid type: integer `7`, expected a string"),
            "{number}"
        );
    }

    #[test]
    fn reserved_event_types_are_refused_in_any_case_and_message_is_not() {
        for event in [
            "error",
            "open",
            "reset",
            "Error",
            "OPEN",
            "rEsEt",
            "token-expired",
            "Token-Expired",
        ] {
            let err = request(Some("hi"), None, Some(event))
                .validate_into(&Limits::default())
                .unwrap_err();
            assert_eq!(
                err,
                format!(
                    "event \"{event}\" is reserved (reserved: error, open, reset, token-expired)"
                )
            );
        }
        for event in ["message", "errors", "opened", "reset-done", "x.error"] {
            assert!(
                request(Some("hi"), None, Some(event))
                    .validate_into(&Limits::default())
                    .is_ok(),
                "{event}"
            );
        }
    }

    #[test]
    fn missing_message_is_required() {
        let err = request(None, None, None)
            .validate_into(&Limits::default())
            .unwrap_err();
        assert_eq!(err, "message is required");
    }
}
