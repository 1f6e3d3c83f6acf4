//! What an operator sees of a running service, the same on every binary:
//! liveness, readiness, metrics, and the orderly stop.
//!
//! Split from `service-kit` because it changes for other reasons: a new
//! metric or probe, not a new setting or a new way to compose a binary.
//! The services' own counters live in their crates and register into the
//! [`Metrics`] registry here when their part is built, so a binary shows
//! only the metrics of the parts it runs.
//!
//! # Layout
//! - [`shutdown`]: the token streams watch, the readiness flag, the signals.
//! - [`metrics`]: the registry, the request histogram every service has,
//!   the rate-limit refusals the services share, and the bus's own figures.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`, and the JSend 404 and
//!   405 fallbacks.

pub mod health;
pub mod metrics;
pub mod shutdown;

pub use metrics::Metrics;
pub use shutdown::Shutdown;

/// What every part of one process shares, and what the operational routes
/// (`/healthz`, `/readyz`, `/metrics`) answer from.
#[derive(Debug, Clone)]
pub struct Shared {
    pub bus: bus::Bus,
    pub shutdown: Shutdown,
    pub metrics: Metrics,
}

impl Shared {
    /// Fresh metrics and a fresh shutdown token over `bus`.
    pub fn new(bus: bus::Bus) -> Self {
        Self {
            bus,
            shutdown: Shutdown::new(),
            metrics: Metrics::new(),
        }
    }
}
