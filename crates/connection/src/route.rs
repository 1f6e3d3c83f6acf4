//! What a service plugs into the connection layer: its stream route, and a
//! hook that records each request the fast path answers.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use actix_http::body::BoxBody;
use actix_http::{Method, RequestHead, Response, StatusCode};
use bytes::Bytes;
use futures_core::Stream;

/// A `GET` route whose responses are long-lived streams, served on the
/// connection itself instead of by actix-http (see the crate docs).
pub trait StreamRoute: Clone + Send + 'static {
    /// The response body: shared frames, written as they come, on the
    /// stream runtime's threads (hence `Send`).
    type Body: Stream<Item = Result<Bytes, Infallible>> + Unpin + Send + 'static;

    /// The exact path (without query) this route serves.
    fn path(&self) -> &'static str;

    /// Opens a stream for a bodiless `GET` of [`StreamRoute::path`]: the
    /// response head (its body is ignored) and the body, or a whole
    /// response refusing it. `head.peer_addr` is the TCP peer's address.
    ///
    /// A head with `no_chunking` set (what HTTP/1.0 requests need) gets a
    /// close-delimited body: frames written bare, then the connection
    /// closes.
    fn open(
        &self,
        head: &RequestHead,
    ) -> impl Future<Output = Result<(Response<BoxBody>, Self::Body), Response<BoxBody>>>;

    /// The answer to a bodiless `GET` of [`StreamRoute::path`] from an
    /// address over the per-address limit, instead of the layer's own
    /// JSend `503`; `None` keeps that one. `refusals` counts this address's
    /// refusals in a row (1 for the first; kept while it holds connections,
    /// back to 0 once one is admitted). The body must be whole (not a
    /// stream); the connection closes after it either way.
    fn over_address_limit(&self, head: &RequestHead, refusals: u32) -> Option<Response<BoxBody>> {
        let _ = (head, refusals);
        None
    }

    /// Called once the fast path is done with a stream, with the body and
    /// how it ended. The default drops the body.
    fn ended(&self, body: Self::Body, end: StreamEnd) {
        let _ = (body, end);
    }
}

/// How a stream served on the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ended and was written whole.
    Finished,
    /// The client closed its side or reset the connection.
    ClientGone,
    /// A write timed out: the client stopped reading and the kernel gave up
    /// on it (`ETIMEDOUT`, from `TCP_USER_TIMEOUT`).
    WriteTimedOut,
    /// Any other failure: another write error, or the client sent more
    /// than it may while its stream is open.
    Failed,
}

/// For services without a stream route: every connection goes to actix.
#[derive(Debug, Clone, Copy)]
pub enum NoStreamRoute {}

/// The body [`NoStreamRoute`] never produces.
#[derive(Debug)]
pub struct NoBody;

impl Stream for NoBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(None)
    }
}

impl StreamRoute for NoStreamRoute {
    type Body = NoBody;

    fn path(&self) -> &'static str {
        match *self {}
    }

    async fn open(
        &self,
        _: &RequestHead,
    ) -> Result<(Response<BoxBody>, NoBody), Response<BoxBody>> {
        match *self {}
    }
}

/// Records the requests the fast path answers, as the service's own
/// middleware records those actix serves.
pub trait Observer: Clone + Send + 'static {
    /// One answered request: `method` comes from [`method_label`], `route`
    /// is the stream route's path; `elapsed` runs to the response head.
    fn request(
        &self,
        method: &'static str,
        route: &'static str,
        status: StatusCode,
        elapsed: Duration,
    );
}

/// Records nothing.
impl Observer for () {
    fn request(&self, _: &'static str, _: &'static str, _: StatusCode, _: Duration) {}
}

/// A metric label for `method`: the standard methods by name, anything
/// else `other`, so a client inventing methods cannot create label values.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        for (method, label) in [
            ("GET", "GET"),
            ("PATCH", "PATCH"),
            ("FOOA", "other"),
            ("get", "other"),
        ] {
            let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
            assert_eq!(method_label(&method), label);
        }
    }
}
