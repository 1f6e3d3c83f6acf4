//! The claims a token carries: the registered ones (RFC 7519) and ours.
//!
//! `exp` is required; `nbf`, `iat`, `aud`, `iss` and `sub` are optional;
//! `event_stream` holds the two pattern lists, each optional (absent = none).
//! Times are integer seconds since the Unix epoch. Claims we do not know are
//! ignored. A claim we know that does not parse (a pattern breaking the rule,
//! `exp` as a string, ...) refuses the whole token: nothing is half-granted.

use serde::{Deserialize, Serialize};

use crate::pattern::TopicPatterns;

/// Longest `sub` kept from a token, in bytes; a longer one refuses the token
/// (it ends up in log lines).
pub const MAX_SUBJECT_LEN: usize = 256;

/// The claims of a token, as minted and as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch. Required: a token that never expires
    /// cannot be taken back.
    pub exp: u64,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch (read, not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience; checked only when the verifier is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issuer; checked only when the verifier is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject: who the token was given to, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// What the token allows on event-stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_stream: Option<Permissions>,
}

impl Claims {
    /// Claims that expire at `exp` and allow nothing yet.
    pub fn new(exp: u64) -> Self {
        Self {
            exp,
            nbf: None,
            iat: None,
            aud: None,
            iss: None,
            sub: None,
            event_stream: None,
        }
    }

    /// Reads the claims of a verified token. Only a JSON object is a claim
    /// set: serde would also read an array as the fields in order.
    pub(crate) fn read(value: serde_json::Value) -> Option<Self> {
        match value {
            serde_json::Value::Object(_) => serde_json::from_value(value).ok(),
            _ => None,
        }
    }
}

/// The `aud` claim: one audience or several (both forms are in RFC 7519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "event-stream"`
    One(String),
    /// `"aud": ["event-stream", "other"]`
    Many(Vec<String>),
}

/// The `event_stream` claim: topic patterns this token may publish to and
/// subscribe to. Read from a JSON object only: serde would also read an
/// array as the fields in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct Permissions {
    /// Topics the holder may publish to.
    pub publish: TopicPatterns,
    /// Topics the holder may read, private ones included.
    pub subscribe: TopicPatterns,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for Permissions {
    type Error = serde_json::Error;

    fn try_from(object: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        #[derive(Deserialize)]
        struct Lists {
            #[serde(default)]
            publish: TopicPatterns,
            #[serde(default)]
            subscribe: TopicPatterns,
        }
        let lists: Lists = serde_json::from_value(serde_json::Value::Object(object))?;
        Ok(Self {
            publish: lists.publish,
            subscribe: lists.subscribe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_claims_are_ignored_and_absent_lists_are_empty() {
        let claims: Claims = serde_json::from_str(
            r#"{"exp": 10, "scope": "x", "event_stream": {"subscribe": ["a.*"], "later": 1}}"#,
        )
        .expect("valid claims");
        let permissions = claims.event_stream.expect("present");
        assert!(permissions.publish.is_empty());
        assert!(permissions.subscribe.covers("a.b"));
    }

    #[test]
    fn each_malformed_claim_refuses_the_whole_set() {
        let cases = [
            (r#"{}"#, "no exp"),
            (r#"{"exp": "10"}"#, "exp as a string"),
            (r#"{"exp": -1}"#, "negative exp"),
            (r#"{"exp": 10, "nbf": "now"}"#, "nbf as a string"),
            (r#"{"exp": 10, "sub": 7}"#, "sub as a number"),
            (r#"{"exp": 10, "aud": 7}"#, "aud as a number"),
            (
                r#"{"exp": 10, "event_stream": []}"#,
                "event_stream as a list",
            ),
            (
                r#"{"exp": 10, "event_stream": {"publish": "chat.*"}}"#,
                "publish as a string",
            ),
            (
                r#"{"exp": 10, "event_stream": {"publish": ["ok", "a*b"]}}"#,
                "one bad pattern",
            ),
        ];
        for (json, why) in cases {
            assert!(
                serde_json::from_str::<Claims>(json).is_err(),
                "expected a refusal for {why}"
            );
        }
    }

    #[test]
    fn only_an_object_is_a_claim_set() {
        assert!(Claims::read(serde_json::json!({"exp": 10})).is_some());
        assert!(Claims::read(serde_json::json!([10])).is_none());
        assert!(Claims::read(serde_json::json!(10)).is_none());
    }

    #[test]
    fn claims_write_only_what_is_set() {
        let claims = Claims {
            sub: Some("reader".into()),
            ..Claims::new(4102444800)
        };
        assert_eq!(
            serde_json::to_string(&claims).expect("serializes"),
            r#"{"exp":4102444800,"sub":"reader"}"#
        );
    }
}
