//! The JSend envelope: `success` with data, `fail` for the caller's mistakes,
//! `error` for ours.
//!
//! With the `actix` feature, [`respond`], [`fail`] and [`error`] turn it into
//! an HTTP response. They live beside the envelope, not in a service crate,
//! because they change for the same reason it does: the shape of an answer
//! on the wire, which every service, and every fallback, must give alike.

use serde::{Deserialize, Serialize};

/// One JSend answer. Serialises with `status` first, so a success is byte for
/// byte `{"status":"success","data":"<message>"}` like the tutorial's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum JSend<T = String> {
    /// The request did what it asked.
    Success { data: T },
    /// The request was wrong; `data` says how.
    Fail { data: T },
    /// The server could not do it; `message` says why, without internals.
    Error { message: String },
}

impl JSend<String> {
    pub fn success(data: impl Into<String>) -> Self {
        Self::Success { data: data.into() }
    }

    pub fn fail(data: impl Into<String>) -> Self {
        Self::Fail { data: data.into() }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }
}

impl<T: Serialize> JSend<T> {
    /// The JSON body; serialising strings and plain enums cannot fail.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"status":"error","message":"unserialisable response"}"#.to_owned()
        })
    }
}

/// A JSON response with the given status and JSend body.
#[cfg(feature = "actix")]
pub fn respond(status: actix_web::http::StatusCode, body: &JSend) -> actix_web::HttpResponse {
    actix_web::HttpResponse::build(status)
        .insert_header(actix_web::http::header::ContentType::json())
        .body(body.to_json())
}

/// `fail` with a status, for the caller's mistakes.
#[cfg(feature = "actix")]
pub fn fail(
    status: actix_web::http::StatusCode,
    data: impl Into<String>,
) -> actix_web::HttpResponse {
    respond(status, &JSend::fail(data))
}

/// `error` with a status, for ours.
#[cfg(feature = "actix")]
pub fn error(
    status: actix_web::http::StatusCode,
    message: impl Into<String>,
) -> actix_web::HttpResponse {
    respond(status, &JSend::error(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_byte_compatible_with_the_tutorial() {
        assert_eq!(
            JSend::success("hi \"you\"").to_json(),
            r#"{"status":"success","data":"hi \"you\""}"#
        );
    }

    #[test]
    fn fail_and_error_have_their_jsend_shapes() {
        assert_eq!(
            JSend::fail("x").to_json(),
            r#"{"status":"fail","data":"x"}"#
        );
        assert_eq!(
            JSend::error("down").to_json(),
            r#"{"status":"error","message":"down"}"#
        );
    }
}
