//! Prometheus metrics: one registry per app, so tests that run several
//! apps in one process never mix their numbers. The registry holds the
//! request histogram; each part adds its own metrics to it
//! ([`Metrics::register`]); the bus's figures are read at each scrape.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// From [`connection::method_label`]'s fixed set, never the raw method.
    pub method: String,
    /// The matched route pattern, not the raw path, to bound cardinality.
    pub route: String,
    pub status: u16,
}

/// The registry every part of one process registers its metrics into, and
/// the metrics every service has: request latency by route. Cheap to clone.
///
/// A part registers its own counters when it is built (ingest: publishes;
/// the gateway: streams and deliveries), so `/metrics` shows exactly the
/// metrics of the parts a binary runs.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Locked only to register (at build) and to render (per scrape);
    /// updates go to the metrics themselves, which are atomics.
    registry: Mutex<Registry>,
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
        let requests = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to response head, by route",
            requests.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                requests,
            }),
        }
    }

    /// Adds a part's metric, exposed as `es_<name>` from now on; `metric`
    /// is a handle sharing its value with the part's copy.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while registering or encoding leaves the registry whole.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry()).is_err() {
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
                "es_bus_resubscriptions",
                "Cluster mode: topics subscribed again after a slot moved or a node came back",
                stats.resubscriptions,
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

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn a_registered_metric_is_rendered_with_its_value_and_only_then() {
        let metrics = Metrics::new();
        let bus = bus::Bus::memory(bus::MemoryConfig::default());
        assert!(!metrics.render(&bus).contains("es_parts_total"));

        let counter = Counter::<u64>::default();
        metrics.register("parts", "Parts built", counter.clone());
        counter.inc_by(3);

        let text = metrics.render(&bus);
        assert!(text.contains("# TYPE es_parts counter"), "{text}");
        assert!(text.contains("es_parts_total 3"), "{text}");
        assert!(text.contains("es_bus_topics 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
