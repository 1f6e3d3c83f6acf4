//! The publish service: `POST /event-stream` → validate → bus.
//!
//! A 201 is sent only after the bus confirmed the event is stored and
//! broadcast; every other outcome is a JSend error and publishes nothing.
//!
//! # Layout
//! - [`extract`]: reads the request by its Content-Type (JSON, urlencoded,
//!   multipart, or the query string of a bodyless POST).
//! - [`error`]: every way a publish fails, each with its status and JSend body.
//! - [`settings`]: the `publish` settings section: its keys, defaults, rules.
//! - [`metrics`]: the publish counters, registered when the part is built.
//! - [`limit`]: publishes per second per client address (governor), and
//!   the pruning that bounds what it remembers.
//! - [`routes`]: the handler, its state, and [`routes::admit`], where every
//!   publish is admitted or refused before the bus is asked.
//! - [`startup`]: mounts the routes and builds the service.
//! - [`urlencoded`]: a strict form and query-string reader.

pub mod error;
pub mod extract;
pub mod limit;
pub mod metrics;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod urlencoded;

pub use routes::IngestState;
pub use settings::PublishSettings;
pub use startup::{build, part};

/// Response header carrying the id assigned to a published event.
pub const EVENT_ID_HEADER: &str = "x-event-id";
