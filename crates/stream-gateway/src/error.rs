//! Why a stream was refused before it started, and how each client hears it.
//!
//! A refusal is *permanent* when asking again cannot help (a bad topic, too
//! many topics in one subscription: JSend `fail`, 400; a private topic
//! without a token that opens it: JSend `fail`, 401 or 403). Every other one is
//! *transient* (this replica is stopping or full, the bus refused, the
//! client's address holds its most streams) and is written in one of two
//! [`Form`]s. An EventSource treats any answer but a
//! `200 text/event-stream` as the end, for good (WHATWG HTML, "fail the
//! connection"), and ignores `Retry-After`; a `200` stream that ends makes
//! it reconnect after its `retry:` time with its `Last-Event-ID`. So a
//! client that asks for `text/event-stream` hears a transient refusal as a
//! short stream: `retry:` with a jittered delay, a comment saying why, the
//! end, and no `id:` (its own last id stays). Everyone else (curl, scripts,
//! and nginx, which must see a 503 to try another replica) gets a JSend 503
//! with `Retry-After`; but a client over its own address's cap gets a 429
//! JSend `fail`: the limit is the client's doing, and nginx must not route
//! around it to another replica.

use std::time::Duration;

use actix_web::http::header::{ACCEPT, HeaderMap, HeaderValue, RETRY_AFTER};
use actix_web::http::{StatusCode, Version};
use actix_web::{HttpResponse, ResponseError};
use service_kit::Refusal;
use shared_types::jsend;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// 400, JSend `fail`: bad topics, or too many of them; says which.
    /// Permanent: the same request is refused again.
    #[error("request validation error: {0}")]
    Invalid(String),
    /// 401 (no token, or a refused one: says why, with `WWW-Authenticate`)
    /// or 403 (a valid token that does not cover every private topic
    /// named), JSend `fail`. Permanent: an EventSource stops for good, and
    /// its page must open a new one with a fresh token.
    #[error("{}", access_message(*.0))]
    Access(Refusal),
    /// Transient: the bus could not subscribe or replay, or this process
    /// already holds `bus.max_topics` topics.
    /// The client hears [`bus::Error::public_message`]; the engine's own
    /// text goes only to the log.
    #[error("{}", .0.public_message())]
    Bus(#[from] bus::Error),
    /// Transient: this replica is stopping; another one serves.
    #[error("shutting down")]
    ShuttingDown,
    /// Transient: this replica already holds `stream.max_streams` streams;
    /// refusing is better than letting the process run out of file
    /// descriptors and leave clients hanging.
    #[error("too many open streams on this server; retry later")]
    Full,
    /// Transient, but 429 JSend `fail`: the client's address already holds
    /// `stream.max_streams_per_address` streams here. `refusals` in a row
    /// (this one included) grow the delay it is told to wait.
    #[error("too many open streams from this address; retry later")]
    AddressFull { refusals: u32, retry: Duration },
}

impl StreamError {
    /// Whether asking again later may succeed; see the module docs.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StreamError::Invalid(_) | StreamError::Access(_))
    }

    /// Why, in a subscriber's words, for the SSE form's comment.
    fn reason(&self) -> &'static str {
        match self {
            StreamError::Invalid(_) => "bad request",
            StreamError::Access(_) => "access refused",
            StreamError::Bus(bus::Error::TooManyTopics(_)) => "too many topics in use",
            StreamError::Bus(_) => "the event bus is not reachable",
            StreamError::ShuttingDown => "this server is restarting",
            StreamError::Full => "too many open streams",
            StreamError::AddressFull { .. } => "too many open streams from this address",
        }
    }

    /// The answer to a request whose headers are `headers`: a permanent
    /// refusal as JSend, a transient one in the request's [`Form`]. `retry`
    /// is `stream.retry_ms`.
    pub fn answer(&self, headers: &HeaderMap, version: Version, retry: Duration) -> HttpResponse {
        if let StreamError::Bus(error) = self {
            tracing::warn!(%error, "stream refused by the bus");
        }
        let refusals = match self {
            StreamError::AddressFull { refusals, .. } => *refusals,
            _ => 1,
        };
        match (self.is_transient(), Form::for_request(headers)) {
            (true, Form::Sse) => sse_refusal(
                version,
                retry_after_refusals(retry, refusals),
                self.reason(),
            ),
            _ => self.error_response(),
        }
    }
}

impl ResponseError for StreamError {
    fn status_code(&self) -> StatusCode {
        if let StreamError::Access(refusal) = self {
            return refusal.status();
        }
        if let StreamError::AddressFull { .. } = self {
            return StatusCode::TOO_MANY_REQUESTS;
        }
        if self.is_transient() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_REQUEST
        }
    }

    /// The JSend form: `fail` for a permanent refusal, `error` with
    /// `Retry-After` for a transient one; `fail` with `Retry-After` (the
    /// refusal's delay before jitter, in whole seconds) over the address's
    /// cap.
    fn error_response(&self) -> HttpResponse {
        if let StreamError::Access(refusal) = self {
            return refusal.answer(&self.to_string());
        }
        if let StreamError::AddressFull { refusals, retry } = self {
            let delay = backoff(*retry, *refusals);
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            let mut response = jsend::fail(self.status_code(), self.to_string());
            response
                .headers_mut()
                .insert(RETRY_AFTER, seconds.max(1).into());
            return response;
        }
        if !self.is_transient() {
            return jsend::fail(self.status_code(), self.to_string());
        }
        let mut response = jsend::error(self.status_code(), self.to_string());
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

/// What a subscriber refused access is told.
fn access_message(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Missing => "a token is required to read a private topic",
        Refusal::Invalid(error) => error.message(),
        Refusal::NotCovered => "the token does not allow reading every topic asked for",
    }
}

/// How a transient refusal is written for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `200 text/event-stream`: `retry:`, a comment saying why, the end.
    Sse,
    /// `503` JSend `error` with `Retry-After`.
    JSend,
}

/// The request header nginx (deploy/nginx) sets on every request it
/// proxies: transient refusals are then answered 503 whatever the client
/// accepts, so that nginx tries another replica, and nginx itself answers
/// the client when none can serve. A client that forges it only gets a 503.
pub const PROXY_HEADER: &str = "x-event-stream-proxy";

impl Form {
    /// [`Form::Sse`] for a request whose `Accept` names
    /// `text/event-stream` (EventSource always sends exactly that, as SSE
    /// libraries do), unless it came through nginx ([`PROXY_HEADER`]);
    /// [`Form::JSend`] otherwise (`*/*`, no `Accept`, or a `q=0` for it).
    pub fn for_request(headers: &HeaderMap) -> Form {
        if headers.contains_key(PROXY_HEADER) {
            return Form::JSend;
        }
        let asks_for_sse = headers
            .get_all(ACCEPT)
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|range| {
                let mut parts = range.split(';').map(str::trim);
                parts
                    .next()
                    .is_some_and(|media| media.eq_ignore_ascii_case("text/event-stream"))
                    && !parts.any(|param| {
                        param.split_once('=').is_some_and(|(name, q)| {
                            name.trim().eq_ignore_ascii_case("q")
                                && q.trim().parse::<f32>() == Ok(0.0)
                        })
                    })
            });
        if asks_for_sse { Form::Sse } else { Form::JSend }
    }
}

/// The most a delay grows with repeated refusals: 8 × `stream.retry_ms`
/// (before jitter; up to 16 × with it).
const MAX_GROWTH: u32 = 8;

/// The `retry:` for the `refusals`-th refusal in a row of one client (1 for
/// the first, which is all a gateway can know: it keeps nothing about a
/// client between connections): uniform in `[d, 2d]` with
/// `d = retry × 2^(refusals - 1)`, `d` at most [`MAX_GROWTH`] × `retry`.
/// The jitter spreads a crowd refused at once over the window instead of
/// bringing it back at one instant.
pub fn retry_after_refusals(retry: Duration, refusals: u32) -> u64 {
    let base = backoff(retry, refusals).as_millis() as u64;
    rand::random_range(base..=base.saturating_mul(2))
}

/// `d` of [`retry_after_refusals`], before the jitter.
fn backoff(retry: Duration, refusals: u32) -> Duration {
    let growth = 1u32
        .checked_shl(refusals.saturating_sub(1))
        .unwrap_or(MAX_GROWTH)
        .min(MAX_GROWTH);
    retry.saturating_mul(growth)
}

/// The SSE form of a transient refusal: the stream's status and headers,
/// then `retry: <retry_ms>`, `: unavailable: <reason>, retrying`, the end.
/// Whole, with a length: the connection may serve another request after it.
pub fn sse_refusal(version: Version, retry_ms: u64, reason: &str) -> HttpResponse {
    crate::routes::response_head(version).body(format!(
        "retry: {retry_ms}\n: unavailable: {reason}, retrying\n\n"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn form(accept: &[&str], proxied: bool) -> Form {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        if proxied {
            headers.insert(
                actix_web::http::header::HeaderName::from_static(PROXY_HEADER),
                HeaderValue::from_static("1"),
            );
        }
        Form::for_request(&headers)
    }

    #[test]
    fn only_a_client_asking_for_an_event_stream_gets_the_sse_form() {
        for accept in [
            &["text/event-stream"][..],
            &["Text/Event-Stream"],
            &["application/json, text/event-stream;q=0.5"],
            &["application/json", "text/event-stream"],
        ] {
            assert_eq!(form(accept, false), Form::Sse, "{accept:?}");
        }
        for accept in [
            &[][..],
            &["*/*"],
            &["text/*"],
            &["application/json"],
            &["text/event-stream;q=0"],
            &["text/event-streams"],
        ] {
            assert_eq!(form(accept, false), Form::JSend, "{accept:?}");
        }
        assert_eq!(form(&["text/event-stream"], true), Form::JSend, "via nginx");
    }

    #[test]
    fn retry_is_jittered_within_its_window_and_grows_to_a_bound() {
        let retry = Duration::from_millis(1000);
        for (refusals, low) in [
            (0, 1000),
            (1, 1000),
            (2, 2000),
            (3, 4000),
            (4, 8000),
            (40, 8000),
        ] {
            let delays: Vec<u64> = (0..200)
                .map(|_| retry_after_refusals(retry, refusals))
                .collect();
            assert!(
                delays.iter().all(|d| (low..=2 * low).contains(d)),
                "refusal {refusals}: {delays:?}"
            );
            assert!(
                delays.iter().any(|d| *d != delays[0]),
                "refusal {refusals}: no jitter"
            );
        }
    }
}
