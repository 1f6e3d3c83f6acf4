//! Reads a publish request the way its Content-Type says.
//!
//! `web::Either<Json, Form>` would report the JSON error for every failure,
//! so this dispatches on the media type itself. Multipart goes to actix's
//! extractor, whose configured limits and error handler apply; JSON is read
//! here under the same limit and with the errors actix's `Json` extractor
//! would give (see `json`); forms and query strings go to the strict
//! [`urlencoded`] reader, since the usual one silently alters malformed or
//! non-UTF-8 text:
//!
//! | Content-Type                        | read from                    |
//! |-------------------------------------|------------------------------|
//! | `application/json`                  | the body, as a JSON object   |
//! | `application/x-www-form-urlencoded` | the body, as a form          |
//! | `multipart/form-data`               | the body's text parts        |
//! | none, and no body                   | the query string             |
//! | anything else                       | nothing: 415                 |

use actix_multipart::MultipartError;
use actix_multipart::form::text::Text;
use actix_multipart::form::{MultipartForm, MultipartFormConfig};
use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use shared_types::PublishRequest;

use crate::error::PublishError;
use crate::urlencoded;

/// The publish request, from whichever part of the request carried it.
#[derive(Debug)]
pub struct PublishBody(pub PublishRequest);

/// The multipart shape of a publish request; other parts are ignored, as
/// the tutorial's form binding ignores them.
#[derive(Debug, MultipartForm)]
#[multipart(duplicate_field = "deny")]
struct MultipartPublish {
    message: Option<Text<String>>,
    topic: Option<Text<String>>,
    event: Option<Text<String>>,
    idempotency_key: Option<Text<String>>,
}

/// Mounts the body extractors' configuration on the publish resource:
/// limits of `max_body_bytes`, and every error turned into a [`PublishError`].
pub fn with_body_limits(
    resource: actix_web::Resource,
    max_body_bytes: usize,
) -> actix_web::Resource {
    resource
        .app_data(BodyLimit(max_body_bytes))
        .app_data(
            MultipartFormConfig::default()
                .total_limit(max_body_bytes)
                .memory_limit(max_body_bytes)
                .error_handler(move |error, _| multipart_error(error, max_body_bytes).into()),
        )
        .app_data(web::PayloadConfig::new(max_body_bytes))
}

/// A limit carried into the extractor from app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl FromRequest for PublishBody {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<BodyLimit>()
            .map_or(usize::MAX, |limit| limit.0);
        let length = content_length(req);
        if length.is_some_and(|length| length > limit) {
            return Box::pin(async move { Err(PublishError::TooLarge(limit).into()) });
        }
        let mime = match req.headers().get(header::CONTENT_TYPE) {
            None => None,
            Some(value) => match value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<mime::Mime>().ok())
            {
                Some(mime) => Some(mime),
                None => {
                    let shown = clip(&String::from_utf8_lossy(value.as_bytes()));
                    return ready(Err(PublishError::UnsupportedMediaType(format!(
                        "{shown:?}"
                    ))));
                }
            },
        };
        let Some(mime) = mime else {
            if has_body(req) {
                return ready(Err(PublishError::UnsupportedMediaType("(none)".to_owned())));
            }
            let parsed = urlencoded::parse(req.query_string().as_bytes())
                .map(PublishBody)
                .map_err(|why| PublishError::Invalid(format!("malformed query string: {why}")));
            return ready(parsed);
        };
        match mime.essence_str().to_ascii_lowercase().as_str() {
            "application/json" => json(length, payload.take(), limit),
            "application/x-www-form-urlencoded" => {
                if let Some(charset) = mime.get_param(mime::CHARSET)
                    && !charset.as_str().eq_ignore_ascii_case("utf-8")
                {
                    let charset = clip(charset.as_str());
                    return ready(Err(PublishError::UnsupportedMediaType(format!(
                        "with charset {charset:?} (only UTF-8)"
                    ))));
                }
                let body = web::Bytes::from_request(req, payload);
                Box::pin(async move {
                    let body = body.await.map_err(|error| payload_error(&error, limit))?;
                    let request = urlencoded::parse(&body).map_err(|why| {
                        PublishError::Invalid(format!("malformed form body: {why}"))
                    })?;
                    // `curl -d '{"message":...}'` sends JSON labelled as a
                    // form: say so rather than only "message is required".
                    if request.message.is_none() && looks_like_json(&body) {
                        return Err(PublishError::Invalid(
                            "message is required; the body looks like JSON but was sent as a \
                             form: send it with Content-Type: application/json"
                                .to_owned(),
                        )
                        .into());
                    }
                    Ok(PublishBody(request))
                })
            }
            "multipart/form-data" => {
                if mime
                    .get_param(mime::BOUNDARY)
                    .is_none_or(|b| b.as_str().is_empty())
                {
                    return ready(Err(PublishError::Invalid(
                        "malformed multipart body: the Content-Type has no boundary".to_owned(),
                    )));
                }
                let form = MultipartForm::<MultipartPublish>::from_request(req, payload);
                Box::pin(async move {
                    let form = form.await?.0;
                    Ok(PublishBody(PublishRequest {
                        message: form.message.map(|t| t.0),
                        topic: form.topic.map(|t| t.0),
                        event: form.event.map(|t| t.0),
                        idempotency_key: form.idempotency_key.map(|t| t.0),
                        idempotency_header: None,
                    }))
                })
            }
            other => ready(Err(PublishError::UnsupportedMediaType(format!(
                "{:?}",
                clip(other)
            )))),
        }
    }
}

/// Reads a JSON body as actix's `Json` extractor would, with the same
/// limit and the same errors (given to [`json_error`] as the extractor's
/// configured handler gets them), into a buffer of the announced length:
/// the extractor starts every body with 8 KiB, a request large enough to
/// make glibc consolidate its free lists on every publish
/// (docs/PERFORMANCE.md). A length over the limit was refused before this.
fn json(
    length: Option<usize>,
    mut payload: Payload,
    limit: usize,
) -> LocalBoxFuture<'static, Result<PublishBody, actix_web::Error>> {
    Box::pin(async move {
        let mut body = web::BytesMut::with_capacity(length.unwrap_or(0).min(limit));
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|error| json_error(JsonPayloadError::Payload(error), limit))?;
            if body.len() + chunk.len() > limit {
                return Err(json_error(JsonPayloadError::Overflow { limit }, limit).into());
            }
            body.extend_from_slice(&chunk);
        }
        let request = serde_json::from_slice::<PublishRequest>(&body)
            .map_err(|error| json_error(JsonPayloadError::Deserialize(error), limit))?;
        Ok(PublishBody(request))
    })
}

/// The `Idempotency-Key` header's value, if any. The IETF draft sends it
/// as a structured-field string (`"abc"`), Stripe's clients bare (`abc`):
/// both mean the key `abc`. The key's own rules are checked with the rest
/// of the request; here only what the header adds: it may come once.
pub fn idempotency_header(
    headers: &actix_web::http::header::HeaderMap,
) -> Result<Option<String>, PublishError> {
    let mut values = headers.get_all(shared_types::IDEMPOTENCY_KEY_HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(PublishError::Invalid(
            "Idempotency-Key header must be sent once".to_owned(),
        ));
    }
    // Bytes outside visible ASCII fail the key's character rule later.
    let text = String::from_utf8_lossy(value.as_bytes());
    let unquoted = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .filter(|inner| !inner.contains(['"', '\\']));
    Ok(Some(unquoted.unwrap_or(&text).to_owned()))
}

/// An already decided extraction.
fn ready(
    result: Result<PublishBody, PublishError>,
) -> LocalBoxFuture<'static, Result<PublishBody, actix_web::Error>> {
    Box::pin(async move { result.map_err(Into::into) })
}

/// Maps a failure to read the raw body: over the limit is 413.
fn payload_error(error: &actix_web::Error, limit: usize) -> actix_web::Error {
    match error.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => PublishError::TooLarge(limit).into(),
        _ => PublishError::Invalid(format!("unreadable body: {}", clip(&error.to_string()))).into(),
    }
}

/// A body whose first visible byte opens a JSON object or array.
fn looks_like_json(body: &[u8]) -> bool {
    matches!(
        body.iter().find(|byte| !byte.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

fn content_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A body is coming when its length is announced as non-zero or it is chunked.
fn has_body(req: &HttpRequest) -> bool {
    content_length(req).is_some_and(|n| n > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
}

/// Bounds an error text that may quote the client's input, and keeps it on
/// one line.
fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

fn json_error(error: JsonPayloadError, limit: usize) -> PublishError {
    match error {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            PublishError::TooLarge(limit)
        }
        JsonPayloadError::Payload(PayloadError::Overflow) => PublishError::TooLarge(limit),
        JsonPayloadError::ContentType => {
            PublishError::UnsupportedMediaType("(not JSON)".to_owned())
        }
        JsonPayloadError::Deserialize(error) if error.is_data() => {
            PublishError::Invalid(format!("wrong JSON types: {}", clip(&error.to_string())))
        }
        JsonPayloadError::Deserialize(error) => {
            PublishError::Invalid(format!("malformed JSON: {}", clip(&error.to_string())))
        }
        other => PublishError::Invalid(format!("unreadable body: {}", clip(&other.to_string()))),
    }
}

fn multipart_error(error: MultipartError, limit: usize) -> PublishError {
    match error {
        MultipartError::Payload(PayloadError::Overflow) => PublishError::TooLarge(limit),
        MultipartError::Field { name, source } => PublishError::Invalid(format!(
            "malformed multipart field {:?}: {}",
            clip(&name),
            clip(&source.to_string())
        )),
        other => PublishError::Invalid(format!(
            "malformed multipart body: {}",
            clip(&other.to_string())
        )),
    }
}
