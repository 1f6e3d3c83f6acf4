//! Prometheus metrics: one registry per app, so tests that run several
//! apps in one process never mix their numbers. The registry holds the
//! request histogram; each part adds its own metrics to it
//! ([`Metrics::register`]), or its label of a family parts share
//! ([`Metrics::rate_limit_refusals`]); the bus's figures, and the log
//! writer's dropped lines ([`count_dropped_log_lines`]), are read at each
//! scrape.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// From [`connection::method_label`]'s fixed set, never the raw method.
    pub method: String,
    /// The matched route pattern, not the raw path, to bound cardinality;
    /// [`OTHER_ROUTE`] for every path no route matched.
    pub route: String,
    pub status: u16,
}

/// Which per-client limit refused a request: the one label of
/// `es_rate_limit_refusals_total`, from this fixed set.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Limit {
    /// `publish.rate_limit_per_sec` (ingest).
    Publish,
    /// `stream.max_streams_per_address` (the gateway).
    Streams,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Publish => "publish",
            Limit::Streams => "streams",
        }
    }
}

/// Reads the log writer's count of the lines it dropped; set once per
/// process, like the logger itself, by [`count_dropped_log_lines`].
type DroppedLogLines = Box<dyn Fn() -> u64 + Send + Sync>;

static DROPPED_LOG_LINES: OnceLock<DroppedLogLines> = OnceLock::new();

/// Shows `count` as `es_log_lines_dropped_total` on every registry's
/// `/metrics`: lines are dropped by the one logger of the process, not by
/// an app. The first call wins (a process installs one logger); until
/// then, and in processes that log elsewhere (tests), it shows 0.
pub fn count_dropped_log_lines(count: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = DROPPED_LOG_LINES.set(Box::new(count));
}

/// The route label of every request no route matched (a 404, whatever
/// the path): a client inventing paths cannot create label values.
pub const OTHER_ROUTE: &str = "other";

/// Labels of `es_auth_refusals_total`: both from fixed sets.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// [`Action::label`]: `publish` or `subscribe`.
    pub action: &'static str,
    /// The refusal's own label (`missing`, `not-covered`, or a token
    /// error's: `expired`, `bad-signature`, ...): a fixed set.
    pub reason: &'static str,
}

/// What a refused request wanted to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
}

impl Action {
    pub fn label(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
        }
    }
}

impl EncodeLabelValue for Limit {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.label())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: Limit,
}

/// Counts access refusals (`es_auth_refusals_total`). Cheap to clone: one
/// pointer, shared with the registry.
#[derive(Debug, Clone, Default)]
pub struct AuthRefusals(Family<RefusalLabels, Counter>);

impl AuthRefusals {
    /// One refusal of `action`, for `reason` (a refusal's fixed label).
    pub fn count(&self, action: Action, reason: &'static str) {
        self.0
            .get_or_create(&RefusalLabels {
                action: action.label(),
                reason,
            })
            .inc();
    }
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
    /// Registered by the first part that asks for it: ingest and the
    /// gateway share it in the standalone binary, and a name may be
    /// registered only once.
    rate_limit_refusals: OnceLock<Family<LimitLabels, Counter>>,
    auth_refusals: AuthRefusals,
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
        let auth_refusals = AuthRefusals::default();
        registry.register(
            "auth_refusals",
            "Requests refused access (401 or 403), by action and reason",
            auth_refusals.0.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                requests,
                rate_limit_refusals: OnceLock::new(),
                auth_refusals,
            }),
        }
    }

    /// Adds a part's metric, exposed as `es_<name>` from now on; `metric`
    /// is a handle sharing its value with the part's copy.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// The counter of `limit`'s refusals, `es_rate_limit_refusals_total
    /// {limit="..."}`, shown (at 0) from this call on.
    pub fn rate_limit_refusals(&self, limit: Limit) -> Counter {
        let family = self.inner.rate_limit_refusals.get_or_init(|| {
            let family = Family::default();
            self.register(
                "rate_limit_refusals",
                "Requests refused by a per-client-address limit",
                family.clone(),
            );
            family
        });
        family.get_or_create(&LimitLabels { limit }).clone()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while registering or encoding leaves the registry whole.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The counter of access refusals, for the parts that decide access.
    pub fn auth_refusals(&self) -> AuthRefusals {
        self.inner.auth_refusals.clone()
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
                "Fresh streams started from their gateway's own feed of the topic, without a Redis read of their own",
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
        let dropped = DROPPED_LOG_LINES.get().map_or(0, |count| count());
        out.push_str(&format!(
            "# HELP es_log_lines_dropped Log lines dropped because stdout took none \
             (log.buffered_lines were waiting).\n\
             # TYPE es_log_lines_dropped counter\nes_log_lines_dropped_total {dropped}\n"
        ));
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
        assert!(text.contains("es_log_lines_dropped_total 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn both_limits_share_one_refusal_family_with_a_label_each() {
        let metrics = Metrics::new();
        let bus = bus::Bus::memory(bus::MemoryConfig::default());
        assert!(!metrics.render(&bus).contains("es_rate_limit_refusals"));
        let publish = metrics.rate_limit_refusals(Limit::Publish);
        let streams = metrics.rate_limit_refusals(Limit::Streams);
        publish.inc_by(2);
        streams.inc();
        metrics.rate_limit_refusals(Limit::Publish).inc();

        let text = metrics.render(&bus);
        assert_eq!(
            text.matches("# TYPE es_rate_limit_refusals counter")
                .count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("es_rate_limit_refusals_total{limit=\"publish\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("es_rate_limit_refusals_total{limit=\"streams\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn auth_refusals_are_counted_by_action_and_reason() {
        let metrics = Metrics::new();
        let bus = bus::Bus::memory(bus::MemoryConfig::default());
        let refusals = metrics.auth_refusals();
        refusals.count(Action::Publish, "missing");
        refusals.count(Action::Publish, "missing");
        refusals.count(Action::Subscribe, "expired");
        let text = metrics.render(&bus);
        for line in [
            "# TYPE es_auth_refusals counter",
            r#"es_auth_refusals_total{action="publish",reason="missing"} 2"#,
            r#"es_auth_refusals_total{action="subscribe",reason="expired"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
