//! Prometheus metrics: one registry per app, so tests that run several
//! apps in one process never mix their numbers.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// From [`connection::method_label`]'s fixed set, never the raw method.
    pub method: String,
    /// The matched route pattern, not the raw path, to bound cardinality.
    pub route: String,
    pub status: u16,
}

/// Every metric a service updates. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    connections: Gauge,
    published: Counter,
    publish_failures: Counter,
    delivered: Counter,
    replayed: Counter,
    resets: Counter,
    slow_disconnects: Counter,
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("es");
        let connections = Gauge::default();
        let published = Counter::default();
        let publish_failures = Counter::default();
        let delivered = Counter::default();
        let replayed = Counter::default();
        let resets = Counter::default();
        let slow_disconnects = Counter::default();
        let requests = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "stream_connections",
            "Open SSE streams",
            connections.clone(),
        );
        registry.register(
            "events_published",
            "Events stored and broadcast by this process",
            published.clone(),
        );
        registry.register(
            "publish_failures",
            "Publishes refused because the bus failed",
            publish_failures.clone(),
        );
        registry.register(
            "events_delivered",
            "Events written to SSE streams (replayed included)",
            delivered.clone(),
        );
        registry.register(
            "events_replayed",
            "Events sent from history to resuming streams",
            replayed.clone(),
        );
        registry.register(
            "stream_resets",
            "Reset events sent because history no longer covered a cursor",
            resets.clone(),
        );
        registry.register(
            "slow_client_disconnects",
            "Streams closed because the client fell a whole queue behind or stopped reading",
            slow_disconnects.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to response head, by route",
            requests.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                connections,
                published,
                publish_failures,
                delivered,
                replayed,
                resets,
                slow_disconnects,
                requests,
            }),
        }
    }

    pub fn connections(&self) -> &Gauge {
        &self.inner.connections
    }
    pub fn published(&self) -> &Counter {
        &self.inner.published
    }
    pub fn publish_failures(&self) -> &Counter {
        &self.inner.publish_failures
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

    pub fn observe_request(&self, labels: RequestLabels, elapsed: Duration) {
        self.inner
            .requests
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition, plus the bus's own counters.
    pub fn render(&self, bus: &bus::Bus) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.inner.registry)
            .is_err()
        {
            out.clear();
        }
        let stats = bus.stats();
        let bus_counters = [
            (
                "es_bus_reconnects",
                "Times the bus subscription was re-established",
                stats.reconnects,
            ),
            (
                "es_bus_gaps_refilled",
                "Gaps in the live feed refilled from history",
                stats.gaps_refilled,
            ),
            (
                "es_bus_refilled_events",
                "Events recovered from history into the live feed",
                stats.refilled_events,
            ),
            (
                "es_bus_local_heads",
                "Fresh streams started from the live feed without reading Redis",
                stats.local_heads,
            ),
            (
                "es_bus_duplicates_dropped",
                "Duplicate live events dropped by the bus",
                stats.duplicates_dropped,
            ),
            (
                "es_bus_corrupt_messages",
                "Bus messages that could not be read",
                stats.corrupt_messages,
            ),
        ];
        for (name, help, value) in bus_counters {
            out.push_str(&format!(
                "# HELP {name} {help}.\n# TYPE {name} counter\n{name}_total {value}\n"
            ));
        }
        let topics = bus.topic_count();
        out.push_str(&format!(
            "# HELP es_bus_topics Topics this process holds (bus.max_topics at most).\n\
             # TYPE es_bus_topics gauge\nes_bus_topics {topics}\n"
        ));
        out.push_str("# EOF\n");
        out
    }
}

/// Requests the connection layer answers itself are recorded like those
/// actix-web's middleware sees.
impl connection::Observer for Metrics {
    fn request(
        &self,
        method: &'static str,
        route: &'static str,
        status: actix_http::StatusCode,
        elapsed: Duration,
    ) {
        let labels = RequestLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status: status.as_u16(),
        };
        self.observe_request(labels, elapsed);
    }
}
