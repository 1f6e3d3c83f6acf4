//! Why a configuration cannot be used: every error names the key.

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {key} (env ES__{env}): {why}")]
    Rule {
        key: &'static str,
        env: String,
        why: String,
    },
    #[error("invalid configuration: unknown key {key} ({origin}){hint}")]
    Unknown {
        key: String,
        /// Where it came from: the env variable or the file.
        origin: String,
        /// `; did you mean ...?` or a list of the section's keys.
        hint: String,
    },
    #[error("{0}")]
    Usage(String),
}
