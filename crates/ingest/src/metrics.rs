//! The publish service's own metrics, registered into the process's
//! registry when its part is built.

use std::sync::Arc;

use operations::Metrics;
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
    replayed: Counter,
}

impl PublishMetrics {
    /// Registers the counters in `metrics` as `es_events_published_total`,
    /// `es_publish_failures_total` and `es_publishes_replayed_total`.
    pub fn register(metrics: &Metrics) -> Self {
        let counters = Counters::default();
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
            (
                "publishes_replayed",
                "Publishes answered from an idempotency key, storing nothing",
                &counters.replayed,
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

    pub fn replayed(&self) -> &Counter {
        &self.inner.replayed
    }
}
