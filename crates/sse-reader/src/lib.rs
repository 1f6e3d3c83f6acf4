//! Browser-accurate Server-Sent Events reading for tests and load generation.
//!
//! The hub's correctness is defined by what a browser's `EventSource` sees, so
//! the tests need a client that interprets the wire format exactly as the
//! WHATWG HTML spec ("Interpreting an event stream") prescribes rather than a
//! lenient approximation that could hide framing bugs.
//!
//! * [`Parser`] is the dependency-free, incremental, sans-IO parser; it
//!   returns owned [`Item`]s or lends [`ItemRef`]s to a callback.
//! * [`SseStream`] wraps a [`reqwest::Response`] and feeds its body through a
//!   [`Parser`], with timeout helpers so a missing event fails a test instead
//!   of hanging it.

mod parser;
mod stream;

pub use parser::{Event, EventRef, Item, ItemRef, Parser};
pub use stream::{Error, SseStream};
