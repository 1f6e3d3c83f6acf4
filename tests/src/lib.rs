//! Harness for end-to-end tests: the real `ingest`, `stream-gateway` and
//! `event-stream` binaries as child processes, a private `redis-server`,
//! and subscribers that behave like browsers' EventSource.
//!
//! # Layout
//! - [`process`]: builds and starts the binaries on free ports; stops them
//!   with signals.
//! - [`cluster`]: Redis + one ingest + N gateways, wired together.
//! - [`metrics`]: what a service's `/metrics` says.
//! - [`nginx`]: Debian's nginx with the repository's front-door config.
//! - [`other_origin`]: a static page on another origin that subscribes and
//!   publishes, for what browsers allow across origins.
//! - [`reply_loss`]: a relay in front of Redis that can lose its replies
//!   while commands still run.
//! - [`subscriber`]: an EventSource-like client that reconnects with
//!   `Last-Event-ID`, rotating over a list of addresses, and records
//!   everything it saw.
//! - [`check`]: the delivery assertion every scenario ends with.
//! - [`k8s`]: the Kubernetes manifests rendered, validated against the
//!   schemas offline, and held to our own invariants.

pub mod check;
pub mod cluster;
pub mod k8s;
pub mod metrics;
pub mod nginx;
pub mod other_origin;
pub mod process;
pub mod reply_loss;
pub mod subscriber;

use std::time::Duration;

/// Long enough for a loaded CI machine; only a hang ever reaches it.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub use testkit::{RedisServer, unique_prefix, wait_until};
