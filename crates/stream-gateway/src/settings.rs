//! The `stream` settings section: how streams behave and how many a
//! process holds.

use serde::Deserialize;
use service_kit::SettingsError;
use service_kit::section::{Section, at_least_one, rule};
use service_kit::settings::{FILE_RESERVE, open_file_limit};
use shared_types::cursor::MAX_CURSOR_TOPICS;

/// `[stream]` in a file, `ES__STREAM__<KEY>` in the environment.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamSettings {
    /// A comment is sent after this much silence.
    pub keepalive_ms: u64,
    /// Reconnection delay advertised to clients with `retry:`.
    pub retry_ms: u64,
    /// Events a client may fall behind before its stream is closed; sizes
    /// the bus's per-topic queue (see [`Section::queue_capacity`]).
    pub queue_capacity: usize,
    /// Most topics in one subscription.
    pub max_topics: usize,
    /// Most streams one process holds open; past it new ones get a 503
    /// with `Retry-After`. 0: derived from the open-file limit, keeping a
    /// reserve for publishes, Redis and logs.
    pub max_streams: usize,
    /// Most streams one client address (IPv6: one /64) holds open here;
    /// past it a transient refusal (`429`, or the SSE retry). Unlike
    /// `http.max_connections_per_address` it counts the client a trusted
    /// proxy names, not the proxy. 0 (the default): no limit.
    pub max_streams_per_address: usize,
}

impl Section for StreamSettings {
    const NAME: &'static str = "stream";
    const DEFAULTS: &'static str = "keepalive_ms = 15000
retry_ms = 3000
queue_capacity = 1024
max_topics = 16
max_streams = 0
max_streams_per_address = 0";

    fn check(&self) -> Result<(), SettingsError> {
        at_least_one(&[
            ("stream.keepalive_ms", self.keepalive_ms),
            ("stream.queue_capacity", self.queue_capacity as u64),
            ("stream.max_topics", self.max_topics as u64),
        ])?;
        if self.max_topics > MAX_CURSOR_TOPICS {
            return Err(rule(
                "stream.max_topics",
                format!("must be at most {MAX_CURSOR_TOPICS}"),
            ));
        }
        Ok(())
    }

    fn queue_capacity(&self) -> Option<usize> {
        Some(self.queue_capacity)
    }
}

impl StreamSettings {
    /// `max_streams`, or when 0, the open-file limit less a reserve.
    pub fn max_streams(&self) -> usize {
        match self.max_streams {
            0 => {
                open_file_limit().map_or(10_000, |limit| limit.saturating_sub(FILE_RESERVE).max(64))
            }
            n => n,
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

    const GATEWAY: BinaryDefaults = BinaryDefaults {
        name: "stream-gateway",
        port: 8082,
        engine: Engine::Redis,
    };

    fn load(pairs: &[(&str, &str)]) -> Result<Settings<StreamSettings>, SettingsError> {
        Settings::load_from(GATEWAY, None, Some(environment(pairs)))
    }

    #[test]
    fn max_streams_defaults_below_the_open_file_limit() {
        let settings = load(&[]).unwrap();
        let limit = open_file_limit().unwrap();
        assert!(
            settings.own.max_streams() < limit,
            "{} vs {limit}",
            settings.own.max_streams()
        );
        let set = load(&[("ES__STREAM__MAX_STREAMS", "7")]).unwrap();
        assert_eq!(set.own.max_streams(), 7);
    }

    #[test]
    fn streams_per_address_are_unlimited_by_default() {
        assert_eq!(load(&[]).unwrap().own.max_streams_per_address, 0);
        let set = load(&[("ES__STREAM__MAX_STREAMS_PER_ADDRESS", "3")]).unwrap();
        assert_eq!(set.own.max_streams_per_address, 3);
    }

    #[test]
    fn the_sections_rules_stop_the_gateway_naming_the_key() {
        let cases = [
            ("ES__STREAM__KEEPALIVE_MS", "0", "stream.keepalive_ms"),
            ("ES__STREAM__QUEUE_CAPACITY", "0", "stream.queue_capacity"),
            ("ES__STREAM__MAX_TOPICS", "0", "stream.max_topics"),
            ("ES__STREAM__MAX_TOPICS", "999", "stream.max_topics"),
            ("ES__STREAM__RETRY_MS", "soon", "stream.retry_ms"),
            (
                "ES__STREAM__MAX_STREAMS_PER_ADDRESS",
                "-1",
                "stream.max_streams_per_address",
            ),
        ];
        for (key, value, named) in cases {
            let error = load(&[(key, value)]).unwrap_err().to_string();
            assert!(error.contains(named), "{key}={value}: {error}");
        }
    }

    #[test]
    fn an_ingest_rule_cannot_stop_the_gateway() {
        let settings = load(&[("ES__PUBLISH__MAX_BODY_BYTES", "0")]);
        assert!(settings.is_ok(), "{:?}", settings.err());
    }

    #[test]
    fn the_stream_queue_sizes_the_bus() {
        let settings = load(&[("ES__STREAM__QUEUE_CAPACITY", "5")]).unwrap();
        assert_eq!(settings.redis_config().queue_capacity, 5);
        assert_eq!(settings.memory_config().queue_capacity, 5);
    }
}
