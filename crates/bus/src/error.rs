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
