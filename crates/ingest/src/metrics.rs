//! The publish service's own metrics, registered into the process's
//! registry when its part is built.

use std::sync::Arc;

use operations::Metrics;
use operations::metrics::AuthRefusals;
use prometheus_client::metrics::counter::Counter;

/// Counters of publishes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PublishMetrics {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    published: Counter,
    publish_failures: Counter,
    /// The process's `es_auth_refusals_total`, shared with the gateway part.
    auth_refusals: AuthRefusals,
}

impl PublishMetrics {
    /// Registers the counters in `metrics` as `es_events_published_total`
    /// and `es_publish_failures_total`.
    pub fn register(metrics: &Metrics) -> Self {
        let counters = Counters {
            auth_refusals: metrics.auth_refusals(),
            ..Counters::default()
        };
        let named = [
            (
                "events_published",
                "Events stored and broadcast by this process",
                &counters.published,
            ),
            (
                "publish_failures",
                "Publishes refused because the bus failed",
                &counters.publish_failures,
            ),
        ];
        for (name, help, counter) in named {
            metrics.register(name, help, counter.clone());
        }
        Self {
            inner: Arc::new(counters),
        }
    }

    pub fn published(&self) -> &Counter {
        &self.inner.published
    }

    pub fn publish_failures(&self) -> &Counter {
        &self.inner.publish_failures
    }

    pub fn auth_refusals(&self) -> &AuthRefusals {
        &self.inner.auth_refusals
    }
}
