//! The responses the connection layer writes itself, encoded by
//! actix-http's codec so they look exactly like actix's own.

use actix_codec::Encoder as _;
use actix_http::body::{BodySize, BoxBody};
use actix_http::h1::{Codec, Message};
use actix_http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use actix_http::{ConnectionType, Response, ServiceConfig, StatusCode};
use bytes::{Bytes, BytesMut};

/// `408 Request Timeout`: a request head (or, on actix's path, a whole
/// request) did not arrive in time; the connection closes after it. The
/// same bytes actix-http sends for a late first request.
pub(crate) fn request_timeout(config: &ServiceConfig) -> Bytes {
    encode(
        Codec::new(config.clone()),
        StatusCode::REQUEST_TIMEOUT,
        &[],
        Bytes::new(),
        None,
    )
}

/// The answer to a client over `http.max_connections_per_address`: a 503
/// with a JSend error, `Retry-After: 1`, closing; unless the request is
/// for the stream route and the route answers it itself
/// ([`crate::StreamRoute::over_address_limit`], then [`closing`]).
/// `codec` is the one that parsed the request (for its HTTP version), or a
/// fresh one.
pub(crate) fn too_many_connections(codec: Codec) -> Bytes {
    encode(
        codec,
        StatusCode::SERVICE_UNAVAILABLE,
        &[(CONTENT_TYPE, "application/json"), (RETRY_AFTER, "1")],
        Bytes::from_static(
            br#"{"status":"error","message":"too many connections from this address"}"#,
        ),
        Some(ConnectionType::Close),
    )
}

/// A route's whole `response`, with `Connection: close`, encoded by `codec`
/// (the one that parsed the request); empty (the connection just closes)
/// if its body cannot be read.
pub(crate) async fn closing(codec: Codec, response: Response<BoxBody>) -> Bytes {
    let (mut head, body) = response.into_parts();
    let Ok(body) = actix_http::body::to_bytes(body).await else {
        return Bytes::new();
    };
    head.head_mut().set_connection_type(ConnectionType::Close);
    whole(codec, head, &body)
}

fn encode(
    codec: Codec,
    status: StatusCode,
    headers: &[(actix_http::header::HeaderName, &'static str)],
    body: Bytes,
    connection: Option<ConnectionType>,
) -> Bytes {
    let mut response = Response::with_body(status, ());
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name.clone(), HeaderValue::from_static(value));
    }
    if let Some(connection) = connection {
        response.head_mut().set_connection_type(connection);
    }
    whole(codec, response, &body)
}

/// `head` with a length, then `body`, as one write.
fn whole(mut codec: Codec, head: Response<()>, body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    // Encoding into memory fails only on a broken header: an empty answer
    // then just closes the connection.
    if codec
        .encode(
            Message::Item((head, BodySize::Sized(body.len() as u64))),
            &mut out,
        )
        .is_err()
    {
        return Bytes::new();
    }
    out.extend_from_slice(body);
    out.freeze()
}
