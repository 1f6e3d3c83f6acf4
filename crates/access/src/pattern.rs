//! Topic patterns: an exact topic name, or a prefix ending in `*`.
//!
//! `chat.room-1` covers that topic only; `chat.*` covers every topic that
//! starts with `chat.`; `*` alone covers every topic. Nothing else parses:
//! no `*` inside a pattern, no empty pattern, nothing longer than a topic
//! name. The character rule is the topic rule itself
//! ([`shared_types::publish::check_topic`]), so it is written once.
//!
//! Matching is a byte comparison (`==` or `starts_with`): O(length of the
//! topic) per pattern, no backtracking, no allocation. A list holds at most
//! [`MAX_PATTERNS`], so checking a topic against a list costs at most
//! 64 × 128 byte comparisons.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use shared_types::publish::{MAX_TOPIC_LEN, topic_error};

/// Most patterns one list may hold (one claim, one setting). A token is
/// bounded in size anyway; this bounds the work per check.
pub const MAX_PATTERNS: usize = 64;

/// The rule every pattern follows, named in every parse error.
const RULE: &str = "a topic pattern is a topic name ([A-Za-z0-9_.:-], 1 to 128 characters), \
                    or a prefix of one followed by a single trailing '*', or '*' alone";

/// A pattern that did not parse, or a list that is too long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; {RULE}")]
pub struct PatternError {
    reason: String,
}

impl PatternError {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// One topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicPattern {
    /// Covers this topic only.
    Exact(String),
    /// Covers every topic starting with this prefix (`chat.` for `chat.*`;
    /// empty for `*`, which covers every topic).
    Prefix(String),
}

impl TopicPattern {
    /// Parses one pattern; the error names the rule.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        match pattern.find('*') {
            None => match topic_error(pattern) {
                None => Ok(Self::Exact(pattern.to_owned())),
                Some(reason) => Err(PatternError::new(format!("a topic name {reason}"))),
            },
            Some(at) if at + 1 != pattern.len() => {
                Err(PatternError::new("'*' may only end a pattern"))
            }
            Some(_) if pattern.len() > MAX_TOPIC_LEN => Err(PatternError::new(format!(
                "a pattern must be at most {MAX_TOPIC_LEN} characters"
            ))),
            Some(at) => {
                let prefix = &pattern[..at];
                match (prefix.is_empty(), topic_error(prefix)) {
                    (true, _) | (false, None) => Ok(Self::Prefix(prefix.to_owned())),
                    (false, Some(reason)) => {
                        Err(PatternError::new(format!("the prefix before '*' {reason}")))
                    }
                }
            }
        }
    }

    /// True if this pattern covers `topic`. O(`topic.len()`).
    pub fn covers(&self, topic: &str) -> bool {
        match self {
            Self::Exact(name) => name == topic,
            Self::Prefix(prefix) => topic.starts_with(prefix.as_str()),
        }
    }
}

impl FromStr for TopicPattern {
    type Err = PatternError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        Self::parse(pattern)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// A list of at most [`MAX_PATTERNS`] patterns; the empty list covers nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct TopicPatterns {
    patterns: Vec<TopicPattern>,
}

impl TopicPatterns {
    /// Parses every pattern; the first bad one (or a list over
    /// [`MAX_PATTERNS`]) refuses the whole list.
    pub fn parse<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed = Vec::new();
        for pattern in patterns {
            if parsed.len() == MAX_PATTERNS {
                return Err(PatternError::new(format!(
                    "a list holds at most {MAX_PATTERNS} patterns"
                )));
            }
            parsed.push(TopicPattern::parse(pattern.as_ref())?);
        }
        Ok(Self { patterns: parsed })
    }

    /// The list that covers nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// True if some pattern covers `topic`.
    pub fn covers(&self, topic: &str) -> bool {
        self.patterns.iter().any(|pattern| pattern.covers(topic))
    }

    /// True if every topic is covered (vacuously true for no topics: callers
    /// fill in the default topic before asking).
    pub fn covers_all<T: AsRef<str>>(&self, topics: &[T]) -> bool {
        topics.iter().all(|topic| self.covers(topic.as_ref()))
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[TopicPattern] {
        &self.patterns
    }

    /// True when the list covers nothing.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

impl TryFrom<Vec<String>> for TopicPatterns {
    type Error = PatternError;

    fn try_from(patterns: Vec<String>) -> Result<Self, Self::Error> {
        Self::parse(patterns)
    }
}

impl From<TopicPatterns> for Vec<String> {
    fn from(patterns: TopicPatterns) -> Self {
        patterns.patterns.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_accepted_form_parses_to_its_kind() {
        assert_eq!(
            TopicPattern::parse("chat.room-1"),
            Ok(TopicPattern::Exact("chat.room-1".into()))
        );
        assert_eq!(
            TopicPattern::parse("chat.*"),
            Ok(TopicPattern::Prefix("chat.".into()))
        );
        assert_eq!(
            TopicPattern::parse("*"),
            Ok(TopicPattern::Prefix("".into()))
        );
        let longest = "a".repeat(MAX_TOPIC_LEN);
        assert!(TopicPattern::parse(&longest).is_ok());
        let longest_prefix = format!("{}*", "a".repeat(MAX_TOPIC_LEN - 1));
        assert!(TopicPattern::parse(&longest_prefix).is_ok());
    }

    #[test]
    fn each_refused_form_gets_an_error_naming_the_rule() {
        let cases = [
            ("", "empty"),
            ("**", "two stars"),
            ("chat*room", "star in the middle"),
            ("*chat", "star first"),
            ("chat.**", "star twice at the end"),
            ("chat room", "space"),
            ("chat\n", "line feed"),
            ("chat/room", "slash"),
            ("été", "non-ASCII"),
        ];
        for (pattern, why) in cases {
            let error = TopicPattern::parse(pattern).expect_err(why);
            assert!(
                error
                    .to_string()
                    .contains("a topic pattern is a topic name"),
                "{why}: {error}"
            );
        }
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        let error = TopicPattern::parse(&too_long).expect_err("129 characters");
        assert!(error.to_string().contains("1 to 128"), "{error}");
        let too_long_prefix = format!("{}*", "a".repeat(MAX_TOPIC_LEN));
        let error = TopicPattern::parse(&too_long_prefix).expect_err("129 with the star");
        assert!(error.to_string().contains("at most 128"), "{error}");
    }

    #[test]
    fn a_list_holds_at_most_64_patterns() {
        let names: Vec<String> = (0..MAX_PATTERNS).map(|i| format!("t{i}")).collect();
        let list = TopicPatterns::parse(&names).expect("64 patterns");
        assert_eq!(list.patterns().len(), MAX_PATTERNS);
        let mut one_more = names;
        one_more.push("t64".into());
        let error = TopicPatterns::parse(&one_more).expect_err("65 patterns");
        assert!(error.to_string().contains("at most 64"), "{error}");
    }

    #[test]
    fn one_bad_pattern_refuses_the_whole_list() {
        assert!(TopicPatterns::parse(["chat.*", "bad pattern"]).is_err());
    }

    #[test]
    fn a_list_covers_a_topic_any_pattern_covers() {
        let list = TopicPatterns::parse(["news", "chat.*"]).expect("valid");
        assert!(list.covers("news"));
        assert!(list.covers("chat.room-1"));
        assert!(list.covers("chat."));
        assert!(!list.covers("news.eu"));
        assert!(!list.covers("chat"));
        assert!(list.covers_all(&["news", "chat.a"]));
        assert!(!list.covers_all(&["news", "sports"]));
        assert!(TopicPatterns::none().is_empty());
        assert!(!TopicPatterns::none().covers("news"));
    }

    #[test]
    fn a_list_reads_and_writes_as_a_json_array_of_strings() {
        let list: TopicPatterns = serde_json::from_str(r#"["a", "b.*", "*"]"#).expect("valid");
        assert_eq!(
            serde_json::to_string(&list).expect("serializes"),
            r#"["a","b.*","*"]"#
        );
        assert!(serde_json::from_str::<TopicPatterns>(r#"["a*b"]"#).is_err());
        assert!(serde_json::from_str::<TopicPatterns>(r#""a""#).is_err());
    }

    fn topic() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:-]{1,128}"
    }

    proptest! {
        #[test]
        fn an_exact_pattern_covers_exactly_its_topic(name in topic(), other in topic()) {
            let pattern = TopicPattern::parse(&name).expect("a topic is a pattern");
            prop_assert!(pattern.covers(&name));
            prop_assert_eq!(pattern.covers(&other), other == name);
        }

        #[test]
        fn a_prefix_pattern_covers_a_topic_iff_it_starts_with_the_prefix(
            prefix in "[A-Za-z0-9_.:-]{1,127}",
            other in topic(),
        ) {
            let pattern = TopicPattern::parse(&format!("{prefix}*")).expect("valid prefix");
            prop_assert_eq!(pattern.covers(&other), other.starts_with(&prefix));
            let extended = format!("{prefix}{other}");
            prop_assert!(pattern.covers(&extended));
        }

        #[test]
        fn star_alone_covers_every_valid_topic(name in topic()) {
            prop_assert!(TopicPattern::parse("*").expect("star").covers(&name));
        }

        #[test]
        fn no_input_panics_the_parser_and_what_parses_prints_back(input in any::<String>()) {
            if let Ok(pattern) = TopicPattern::parse(&input) {
                prop_assert_eq!(pattern.to_string(), input);
            }
        }

        #[test]
        fn near_patterns_parse_only_when_they_follow_the_rule(
            input in "[A-Za-z0-9_.:* -]{0,130}",
        ) {
            let star = input.find('*');
            let body = input.trim_end_matches('*');
            let follows = match star {
                None => topic_error(&input).is_none(),
                Some(at) => at + 1 == input.len()
                    && input.len() <= MAX_TOPIC_LEN
                    && (body.is_empty() || topic_error(body).is_none()),
            };
            prop_assert_eq!(TopicPattern::parse(&input).is_ok(), follows, "{:?}", input);
        }
    }
}
