//! The access log: one line per request, and one when a stream opens and
//! one when it closes, at info under the target [`TARGET`].
//!
//! Every line names the request's id: lines written while a request is
//! served carry it from the request's span ([`span`]); a stream's close
//! line, written when the stream is dropped (outside any span), names it
//! as a field. In JSON (`log.format = json`) it is the top-level field
//! `request_id` either way (see [`crate::telemetry`]).
//!
//! The path is logged without its query string (tokens travel there) and
//! cut at [`MAX_LOGGED_PATH`] bytes, the method at [`MAX_LOGGED_METHOD`]:
//! a client cannot make one line long. Both are token and URI characters
//! only (the HTTP parser refuses anything else), so no line can be split.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use actix_web::HttpMessage as _;
use actix_web::http::{Method, StatusCode};

use crate::client::Client;

/// The target access lines are logged under: `RUST_LOG=access=off` (or
/// `log.level = "info,access=warn"`) silences them.
pub const TARGET: &str = "access";

/// Longest path logged, in bytes; a longer one ends in `...`.
pub const MAX_LOGGED_PATH: usize = 256;

/// Longest method logged, in bytes.
pub const MAX_LOGGED_METHOD: usize = 16;

/// Put in a response's extensions by a handler that wrote the request's
/// access line itself (a stream's open line): the middleware writes none.
#[derive(Debug, Clone, Copy)]
pub struct Logged;

/// The span a request is served in: every line logged meanwhile carries
/// its id.
pub fn span(client: &Client) -> tracing::Span {
    tracing::info_span!("request", request_id = %client.request_id)
}

/// The client address as logged: `-` when there is none (in-process tests).
#[derive(Debug, Clone, Copy)]
pub struct Address(pub Option<IpAddr>);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(address) => address.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// One answered request: its method, path (no query), status, time to
/// the response head, response body bytes when known, and client.
pub fn request(
    method: &Method,
    path: &str,
    status: StatusCode,
    elapsed: Duration,
    bytes: Option<u64>,
    client: &Client,
) {
    tracing::info!(
        target: TARGET,
        method = %bounded(method.as_str(), MAX_LOGGED_METHOD),
        path = %bounded(path, MAX_LOGGED_PATH),
        status = status.as_u16(),
        duration_ms = millis(elapsed),
        bytes,
        client = %Address(client.address),
        "request"
    );
}

/// A stream opened (status 200): the access line of its request.
pub fn stream_opened(path: &str, topics: usize, elapsed: Duration, client: &Client) {
    tracing::info!(
        target: TARGET,
        method = %"GET",
        path = %bounded(path, MAX_LOGGED_PATH),
        status = 200u16,
        duration_ms = millis(elapsed),
        topics,
        client = %Address(client.address),
        "stream opened"
    );
}

/// Milliseconds with microsecond precision, as log pipelines read them.
pub fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_micros() as f64) / 1000.0
}

/// The [`Client`] the request middleware resolved for `request`; a
/// request served without it (a handler under test) is its peer, with a
/// fresh id.
pub fn client_of(request: &actix_web::HttpRequest) -> Client {
    request
        .extensions()
        .get::<Client>()
        .cloned()
        .unwrap_or_else(|| Client {
            address: request.peer_addr().map(|peer| peer.ip()),
            request_id: crate::client::RequestId::new(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("/event-stream", MAX_LOGGED_PATH), "/event-stream");
        let long = format!("/{}", "é".repeat(200));
        let cut = bounded(&long, MAX_LOGGED_PATH);
        assert!(cut.len() <= MAX_LOGGED_PATH + 3, "{}", cut.len());
        assert!(cut.ends_with("..."));
    }
}
