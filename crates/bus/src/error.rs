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
    /// The engine answered with data this version cannot read.
    #[error("event bus returned unreadable data: {0}")]
    Corrupt(String),
}
