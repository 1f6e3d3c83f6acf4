//! The `publish` settings section: what a publish may carry, and how
//! often one client address may publish.

use serde::Deserialize;
use service_kit::SettingsError;
use service_kit::section::{Section, at_least_one, rule};

/// The most `publish.rate_limit_per_sec` and `publish.rate_limit_burst`
/// may be: far above any one client's honest need, and within what
/// governor's nanosecond arithmetic represents exactly.
pub const MAX_RATE_LIMIT: u32 = 1_000_000;

/// `[publish]` in a file, `ES__PUBLISH__<KEY>` in the environment.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishSettings {
    /// Most characters (Unicode scalar values) in a message.
    pub max_message_chars: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Publishes per second one client address may sustain (IPv6: one
    /// /64); past it a `429` with `Retry-After`. 0 (the default): no limit.
    pub rate_limit_per_sec: u32,
    /// Publishes one client address may send at once before the rate
    /// applies: the bucket's size. 0 exactly when the rate is 0.
    pub rate_limit_burst: u32,
    /// How long an idempotency key is honoured after its first publish; at
    /// most `bus.history_ttl_secs` applies (keys live beside the history).
    pub idempotency_window_secs: u64,
    /// Most idempotency keys one topic remembers; past it the oldest is
    /// forgotten first. Bounds what a publisher inventing keys can cost.
    pub idempotency_max_keys_per_topic: usize,
}

impl Section for PublishSettings {
    const NAME: &'static str = "publish";
    const DEFAULTS: &'static str = "max_message_chars = 100
max_body_bytes = 65536
rate_limit_per_sec = 0
rate_limit_burst = 0
idempotency_window_secs = 86400
idempotency_max_keys_per_topic = 1000";

    fn check(&self) -> Result<(), SettingsError> {
        at_least_one(&[
            ("publish.max_message_chars", self.max_message_chars as u64),
            ("publish.max_body_bytes", self.max_body_bytes as u64),
            (
                "publish.idempotency_window_secs",
                self.idempotency_window_secs,
            ),
            (
                "publish.idempotency_max_keys_per_topic",
                self.idempotency_max_keys_per_topic as u64,
            ),
        ])?;
        for (key, value) in [
            ("publish.rate_limit_per_sec", self.rate_limit_per_sec),
            ("publish.rate_limit_burst", self.rate_limit_burst),
        ] {
            if value > MAX_RATE_LIMIT {
                return Err(rule(key, format!("must be at most {MAX_RATE_LIMIT}")));
            }
        }
        match (self.rate_limit_per_sec, self.rate_limit_burst) {
            (0, 0) => Ok(()),
            (_, 0) => Err(rule(
                "publish.rate_limit_burst",
                "must be at least 1 when publish.rate_limit_per_sec is set",
            )),
            (0, _) => Err(rule(
                "publish.rate_limit_per_sec",
                "must be at least 1 when publish.rate_limit_burst is set \
                 (both 0 turn the limit off)",
            )),
            _ => Ok(()),
        }
    }
}

impl PublishSettings {
    pub fn limits(&self) -> shared_types::Limits {
        shared_types::Limits {
            max_message_chars: self.max_message_chars,
        }
    }

    pub fn idempotency(&self) -> bus::IdempotencyPolicy {
        bus::IdempotencyPolicy {
            window: std::time::Duration::from_secs(self.idempotency_window_secs),
            max_keys: self.idempotency_max_keys_per_topic,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use service_kit::Settings;
    use service_kit::loader::environment;
    use service_kit::settings::{BinaryDefaults, Engine};

    use super::*;

    const INGEST: BinaryDefaults = BinaryDefaults {
        name: "ingest",
        port: 8081,
        engine: Engine::Redis,
    };

    fn load(pairs: &[(&str, &str)]) -> Result<Settings<PublishSettings>, SettingsError> {
        Settings::load_from(INGEST, None, Some(environment(pairs)))
    }

    #[test]
    fn defaults_and_rules_are_the_sections() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.own.max_message_chars, 100);
        assert_eq!(settings.own.max_body_bytes, 65536);
        assert_eq!(settings.own.idempotency_window_secs, 86400);
        assert_eq!(settings.own.idempotency_max_keys_per_topic, 1000);
        for key in [
            "MAX_MESSAGE_CHARS",
            "MAX_BODY_BYTES",
            "IDEMPOTENCY_WINDOW_SECS",
            "IDEMPOTENCY_MAX_KEYS_PER_TOPIC",
        ] {
            let error = load(&[(&format!("ES__PUBLISH__{key}"), "0")])
                .unwrap_err()
                .to_string();
            let named = format!("publish.{}", key.to_lowercase());
            assert!(error.contains(&named), "{error} should name {named}");
        }
    }

    #[test]
    fn the_publish_rate_limit_is_off_by_default_and_checked_when_set() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.own.rate_limit_per_sec, 0, "off by default");
        assert_eq!(settings.own.rate_limit_burst, 0);
        let on = load(&[
            ("ES__PUBLISH__RATE_LIMIT_PER_SEC", "5"),
            ("ES__PUBLISH__RATE_LIMIT_BURST", "10"),
        ])
        .unwrap();
        assert_eq!(
            (on.own.rate_limit_per_sec, on.own.rate_limit_burst),
            (5, 10)
        );
        let cases: [(&[(&str, &str)], &str); 6] = [
            (
                &[("ES__PUBLISH__RATE_LIMIT_PER_SEC", "5")],
                "publish.rate_limit_burst",
            ),
            (
                &[("ES__PUBLISH__RATE_LIMIT_BURST", "5")],
                "publish.rate_limit_per_sec",
            ),
            (
                &[
                    ("ES__PUBLISH__RATE_LIMIT_PER_SEC", "1000001"),
                    ("ES__PUBLISH__RATE_LIMIT_BURST", "1"),
                ],
                "publish.rate_limit_per_sec",
            ),
            (
                &[
                    ("ES__PUBLISH__RATE_LIMIT_PER_SEC", "1"),
                    ("ES__PUBLISH__RATE_LIMIT_BURST", "1000001"),
                ],
                "publish.rate_limit_burst",
            ),
            (
                &[("ES__PUBLISH__RATE_LIMIT_PER_SEC", "-1")],
                "publish.rate_limit_per_sec",
            ),
            (
                &[("ES__PUBLISH__RATE_LIMIT_BURST", "lots")],
                "publish.rate_limit_burst",
            ),
        ];
        for (env, named) in cases {
            let error = load(env).unwrap_err().to_string();
            assert!(
                error.contains(named),
                "{env:?}: {error} should name {named}"
            );
        }
    }

    #[test]
    fn a_gateway_rule_cannot_stop_ingest() {
        // 999 topics per subscription breaks a gateway rule; ingest does not
        // run streams, so it starts, and leaves the check to the gateway.
        let settings = load(&[
            ("ES__STREAM__MAX_TOPICS", "999"),
            ("ES__STREAM__KEEPALIVE_MS", "0"),
        ]);
        assert!(settings.is_ok(), "{:?}", settings.err());
    }

    #[test]
    fn an_unknown_publish_key_stops_ingest_naming_the_nearest() {
        let error = load(&[("ES__PUBLISH__MAX_MESSAGE_CHAR", "5")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown key publish.max_message_char")
                && error.contains("did you mean publish.max_message_chars?"),
            "{error}"
        );
    }
}
