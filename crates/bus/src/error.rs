//! What can go wrong talking to an engine.

use std::time::Duration;

/// A bus operation that did not happen. In every case nothing was
/// published, so the caller may retry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be reached or refused the command.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// The engine did not answer within the configured bound.
    #[error("event bus did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// This process already holds its maximum of topics (`bus.max_topics`):
    /// a new topic is refused until others expire or lose their readers.
    #[error("too many topics in use (at most {0}); retry later")]
    TooManyTopics(usize),
    /// The engine answered with data this version cannot read.
    #[error("event bus returned unreadable data: {0}")]
    Corrupt(String),
}

impl Error {
    /// What a client is told, in its terms: never the engine's own text
    /// (a Redis error names hosts, commands and internals), which goes to
    /// the log instead.
    pub fn public_message(&self) -> &'static str {
        match self {
            Error::Unavailable(_) => "event bus unavailable; retry later",
            Error::Timeout(_) => "event bus did not answer in time; retry later",
            Error::TooManyTopics(_) => "too many topics in use; retry later",
            Error::Corrupt(_) => "event bus returned data this version cannot read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_messages_carry_none_of_the_engines_text() {
        let secret = "redis://user:hunter2@10.0.0.7:6379 ERR unknown command";
        for error in [
            Error::Unavailable(secret.to_owned()),
            Error::Timeout(Duration::from_millis(500)),
            Error::TooManyTopics(10_000),
            Error::Corrupt(secret.to_owned()),
        ] {
            let public = error.public_message();
            assert!(
                !public.contains("hunter2") && !public.contains("10.0.0.7"),
                "{public}"
            );
            assert!(!error.to_string().is_empty());
        }
    }
}
