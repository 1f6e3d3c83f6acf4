//! The fan-out service: `GET /event-stream` → Server-Sent Events.
//!
//! Each stream subscribes to the bus for its topics, replays what the
//! client missed, then follows the live feed, closing the seam between the
//! two with per-topic offsets so nothing is lost or repeated.
//!
//! # Layout
//! - [`settings`]: the `stream` settings section: its keys, defaults, rules.
//! - [`metrics`]: stream and delivery metrics, registered when the part is built.
//! - [`request`]: topics and the resume cursor, from the query and `Last-Event-ID`.
//! - [`stream`]: one client's SSE body: replay, live events, keep-alives,
//!   the slow-client cut-off and the graceful end.
//! - [`error`]: refusals before a stream starts, rendered as JSend.
//! - [`routes`]: the handler on both paths, its state, and [`routes::admit`],
//!   where every stream is admitted or refused.
//! - [`page`]: the live page at `/`, embedded: follow topics, publish.
//! - [`startup`]: mounts the routes and builds the service.

pub mod error;
pub mod metrics;
pub mod page;
pub mod request;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod stream;

pub use routes::GatewayState;
pub use settings::StreamSettings;
pub use startup::{build, part};
