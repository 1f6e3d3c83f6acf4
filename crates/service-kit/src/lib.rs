//! What every event-stream service shares: configuration, logs, HTTP
//! serving with graceful shutdown, health and metrics.
//!
//! # Layout
//! - [`settings`]: the one configuration tree, layered defaults → file → `ES__` env.
//! - [`telemetry`]: tracing subscriber, text or JSON.
//! - [`compose`]: one composition path for every binary: its parts over
//!   what they share, bound on one port.
//! - [`server`]: builds the actix-web app, serves it through the `connection` crate,
//!   shuts down on a signal within a grace period.
//! - [`shutdown`]: the token streams watch and the readiness flag.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics` and JSend fallbacks.
//! - [`metrics`]: the Prometheus registry and the counters services update.
//! - [`jsend`]: turning a JSend value into an HTTP response.

pub mod binary;
pub mod compose;
pub mod health;
pub mod jsend;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use compose::{EVENT_STREAM_PATH, Part, Shared};
pub use metrics::Metrics;
pub use server::App;
pub use settings::{BinaryDefaults, Settings};
pub use shutdown::Shutdown;
