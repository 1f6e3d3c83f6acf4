//! The `publish` settings section: what a publish may carry.

use serde::Deserialize;
use service_kit::SettingsError;
use service_kit::section::{Section, at_least_one};

/// `[publish]` in a file, `ES__PUBLISH__<KEY>` in the environment.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishSettings {
    /// Most characters (Unicode scalar values) in a message.
    pub max_message_chars: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Section for PublishSettings {
    const NAME: &'static str = "publish";
    const DEFAULTS: &'static str = "max_message_chars = 100\nmax_body_bytes = 65536";

    fn check(&self) -> Result<(), SettingsError> {
        at_least_one(&[
            ("publish.max_message_chars", self.max_message_chars as u64),
            ("publish.max_body_bytes", self.max_body_bytes as u64),
        ])
    }
}

impl PublishSettings {
    pub fn limits(&self) -> shared_types::Limits {
        shared_types::Limits {
            max_message_chars: self.max_message_chars,
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
        for key in ["MAX_MESSAGE_CHARS", "MAX_BODY_BYTES"] {
            let error = load(&[(&format!("ES__PUBLISH__{key}"), "0")])
                .unwrap_err()
                .to_string();
            let named = format!("publish.{}", key.to_lowercase());
            assert!(error.contains(&named), "{error} should name {named}");
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
