//! What a verified token allows.

use crate::pattern::TopicPatterns;

/// The rights a verified token carries, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Topics the holder may publish to.
    pub publish: TopicPatterns,
    /// Topics the holder may read, private ones included.
    pub subscribe: TopicPatterns,
    /// The token's `exp`, seconds since the Unix epoch: a stream opened with
    /// this grant ends then.
    pub expires_at: u64,
    /// The token's `sub` (at most 256 bytes), for logs.
    pub subject: Option<String>,
}

impl Grant {
    /// True if the token allows publishing to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.covers(topic)
    }

    /// True if the token allows reading every one of `topics`.
    pub fn may_subscribe<T: AsRef<str>>(&self, topics: &[T]) -> bool {
        self.subscribe.covers_all(topics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_subscribe_rights_are_separate() {
        let grant = Grant {
            publish: TopicPatterns::parse(["chat.room-1"]).expect("valid"),
            subscribe: TopicPatterns::parse(["chat.*"]).expect("valid"),
            expires_at: 10,
            subject: None,
        };
        assert!(grant.may_publish("chat.room-1"));
        assert!(!grant.may_publish("chat.room-2"));
        assert!(grant.may_subscribe(&["chat.room-1", "chat.room-2"]));
        assert!(!grant.may_subscribe(&["chat.room-1", "news"]));
    }
}
