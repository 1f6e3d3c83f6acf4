//! The publish service's own metrics, registered into the process's
//! registry when its part is built.

use std::sync::Arc;

use operations::Metrics;
use operations::metrics::AuthRefusals;
use operations::metrics::Limit;
use prometheus_client::metrics::counter::Counter;

use crate::limit::PublishLimit;

/// Counters of publishes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PublishMetrics {
    inner: Arc<Counters>,
}

#[derive(Debug)]
struct Counters {
    published: Counter,
    publish_failures: Counter,
    /// `es_rate_limit_refusals_total{limit="publish"}`.
    rate_limited: Counter,
    /// The process's `es_auth_refusals_total`, shared with the gateway part.
    auth_refusals: AuthRefusals,
    /// `es_publishes_replayed_total`: idempotent retries answered with the
    /// first publish's event.
    replayed: Counter,
}

impl PublishMetrics {
    /// Registers the counters in `metrics` as `es_events_published_total`,
    /// `es_publish_failures_total`, `es_publishes_replayed_total` and
    /// `es_rate_limit_refusals_total
    /// {limit="publish"}`, and with a `limit`, the gauge
    /// `es_publish_limit_addresses`; `es_auth_refusals_total` is shared.
    pub fn register(metrics: &Metrics, limit: Option<&PublishLimit>) -> Self {
        let counters = Counters {
            published: Counter::default(),
            publish_failures: Counter::default(),
            replayed: Counter::default(),
            rate_limited: metrics.rate_limit_refusals(Limit::Publish),
            auth_refusals: metrics.auth_refusals(),
        };
        if let Some(limit) = limit {
            metrics.register(
                "publish_limit_addresses",
                "Client addresses the publish rate limit holds a bucket for",
                limit.addresses_gauge(),
            );
        }
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

    pub fn rate_limited(&self) -> &Counter {
        &self.inner.rate_limited
    }

    pub fn auth_refusals(&self) -> &AuthRefusals {
        &self.inner.auth_refusals
    }

    pub fn replayed(&self) -> &Counter {
        &self.inner.replayed
    }
}
