//! The fan-out service's own metrics, registered into the process's
//! registry when its part is built.

use std::sync::Arc;

use operations::Metrics;
use operations::metrics::AuthRefusals;
use operations::metrics::Limit;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// Streams and what they delivered. Cheap to clone: every open stream
/// holds one, so it is one pointer.
#[derive(Debug, Clone)]
pub struct StreamMetrics {
    inner: Arc<Values>,
}

#[derive(Debug)]
struct Values {
    connections: Gauge,
    delivered: Counter,
    replayed: Counter,
    resets: Counter,
    slow_disconnects: Counter,
    /// `es_rate_limit_refusals_total{limit="streams"}`.
    rate_limited: Counter,
    /// The process's `es_auth_refusals_total`, shared with the publish part.
    auth_refusals: AuthRefusals,
}

impl StreamMetrics {
    /// Registers the stream metrics in `metrics` under their `es_` names.
    pub fn register(metrics: &Metrics) -> Self {
        let values = Values {
            connections: Gauge::default(),
            delivered: Counter::default(),
            replayed: Counter::default(),
            resets: Counter::default(),
            slow_disconnects: Counter::default(),
            rate_limited: metrics.rate_limit_refusals(Limit::Streams),
            auth_refusals: metrics.auth_refusals(),
        };
        metrics.register(
            "stream_connections",
            "Open SSE streams",
            values.connections.clone(),
        );
        let counters = [
            (
                "events_delivered",
                "Events written to SSE streams (replayed included)",
                &values.delivered,
            ),
            (
                "events_replayed",
                "Events sent from history to resuming streams",
                &values.replayed,
            ),
            (
                "stream_resets",
                "Reset events sent because history no longer covered a cursor",
                &values.resets,
            ),
            (
                "slow_client_disconnects",
                "Streams closed because the client fell a whole queue behind or stopped reading",
                &values.slow_disconnects,
            ),
        ];
        for (name, help, counter) in counters {
            metrics.register(name, help, counter.clone());
        }
        Self {
            inner: Arc::new(values),
        }
    }

    pub fn connections(&self) -> &Gauge {
        &self.inner.connections
    }
    pub fn delivered(&self) -> &Counter {
        &self.inner.delivered
    }
    pub fn replayed(&self) -> &Counter {
        &self.inner.replayed
    }
    pub fn resets(&self) -> &Counter {
        &self.inner.resets
    }
    pub fn slow_disconnects(&self) -> &Counter {
        &self.inner.slow_disconnects
    }
    pub fn rate_limited(&self) -> &Counter {
        &self.inner.rate_limited
    }
    pub fn auth_refusals(&self) -> &AuthRefusals {
        &self.inner.auth_refusals
    }
}
