//! What every event-stream binary is made of: its settings, its logs, its
//! `main`, and the one way its parts are composed and served.
//!
//! Operations (health, metrics, shutdown) are the `operations` crate; JSend
//! responses live beside the JSend type in `shared-types`; each service's
//! own settings section is a [`Section`] in its crate.
//!
//! # Layout
//! - [`args`]: the command line: `--config FILE`, `mint-token`, `--help`, `--version`.
//! - [`auth`]: the `auth` section and the one access decision: who may
//!   publish, who may read a private topic.
//! - [`settings`]: the common sections (`http`, `log`, `bus`, `redis`), their
//!   rules, and the [`Settings`] tree they form with a binary's own sections.
//! - [`section`]: the [`Section`] a service defines for its keys, and the
//!   [`Sections`] a binary runs.
//! - [`loader`]: layered defaults → file → `ES__` env, strict about keys.
//! - [`mint_token`]: the `mint-token` command: a signed token for a client.
//! - [`error`]: why a configuration cannot be used, naming the key.
//! - [`telemetry`]: tracing subscriber, text or JSON, written to stdout by
//!   a thread of its own that drops lines rather than stall the service.
//! - [`binary`]: the shared `main`: arguments, settings, logs, bus, serve.
//! - [`compose`]: one composition path for every binary: its parts over
//!   what they share, bound on one port.
//! - [`server`]: builds the actix-web app, serves it through the `connection` crate,
//!   shuts down on a signal within a grace period.
//! - [`access_log`]: the access log's lines: per request, per stream open
//!   and close, each naming the request's id.
//! - [`client`]: who a request is from (trusted proxies' forwarding
//!   headers) and its request id.
//! - [`cors`]: cross-origin requests: one decision for actix-cors and the
//!   fast path, and the same-origin test for publishes.

pub mod access_log;
pub mod args;
pub mod auth;
pub mod binary;
pub mod client;
pub mod compose;
pub mod cors;
pub mod error;
pub mod loader;
pub mod mint_token;
pub mod section;
pub mod server;
pub mod settings;
pub mod telemetry;

pub use auth::{Access, Refusal};
pub use client::{Client, RequestId, TrustedProxies};
pub use compose::{EVENT_STREAM_PATH, Part};
pub use error::SettingsError;
pub use section::{Section, Sections};
pub use server::App;
pub use settings::{BinaryDefaults, Settings};
