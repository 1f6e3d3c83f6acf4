//! The wire contract of event-stream: what clients send, what they get back.
//!
//! No I/O lives here (the `actix` feature only builds responses), so every
//! service and every test shares one definition.
//!
//! # Layout
//! - [`jsend`]: the JSend envelope every HTTP answer uses, and (feature
//!   `actix`) that envelope as an actix-web response.
//! - [`publish`]: the publish request and its validation rules.
//! - [`event`]: an event as stored and fanned out, with its SSE frame encoded once.
//! - [`cursor`]: positions in a topic and the SSE id that carries them across reconnects.

pub mod cursor;
pub mod event;
pub mod jsend;
pub mod publish;

pub use cursor::{Cursor, CursorError, Epoch, Position, Sequence};
pub use event::{Event, sse_comment, sse_retry};
pub use jsend::JSend;
pub use publish::{
    DEFAULT_EVENT_TYPE, DEFAULT_TOPIC, IDEMPOTENCY_KEY_HEADER, Limits, PublishRequest, ValidPublish,
};
