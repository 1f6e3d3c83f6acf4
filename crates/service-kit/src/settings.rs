//! The configuration tree every binary shares.
//!
//! Layers, later wins: compiled-in defaults (some per binary, like the
//! port), then an optional TOML file given with `--config FILE`, then
//! environment variables `ES__<SECTION>__<KEY>` (for example
//! `ES__HTTP__PORT=8080`). `__` separates levels so keys may contain `_`.
//! A value that does not parse or breaks a rule stops the start with an
//! error naming the key, and so does a key no setting has (a misspelled
//! key would otherwise be ignored silently), with the nearest valid one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

/// Defaults that differ between binaries.
#[derive(Debug, Clone, Copy)]
pub struct BinaryDefaults {
    /// Name used in logs and `--help`.
    pub name: &'static str,
    pub port: u16,
    pub engine: Engine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub log: LogSettings,
    pub bus: BusSettings,
    pub redis: RedisSettings,
    pub publish: PublishSettings,
    pub stream: StreamSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    /// 0 picks a free port (tests do this).
    pub port: u16,
    /// Worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// How long a stopping service waits for streams and requests to end.
    pub shutdown_grace_ms: u64,
    /// Most simultaneous connections per worker; past it, new ones wait in
    /// the accept queue instead of exhausting file descriptors. 0: derived
    /// from the open-file limit (less a reserve), divided over the workers.
    pub max_connections: usize,
    /// Most simultaneous connections from one client address (IPv6: one
    /// /64) across all workers, so one client cannot take them all; past
    /// it a client gets a 503. 0: no limit.
    pub max_connections_per_address: usize,
    /// The longest a request head may take to arrive from its first byte
    /// (a connection's first request: from accept), on every request; on
    /// requests actix serves, until the response starts, body included.
    pub request_timeout_ms: u64,
    /// A connection whose peer accepts no data for this long is aborted by
    /// the kernel (TCP_USER_TIMEOUT): a stream client that stopped reading
    /// entirely never polls its stream again, so only the kernel can end it.
    pub send_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,bus=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BusSettings {
    pub engine: Engine,
    /// Events retained per topic for resuming clients.
    pub history_size: usize,
    /// A topic left unused this long loses its history.
    pub history_ttl_secs: u64,
    /// Most topics one process holds (memory engine: every topic with
    /// history or a subscriber; Redis gateway: every topic it follows).
    /// Each costs a broadcast ring while subscribed and its history while
    /// it has one, so this bounds what naming topics can cost.
    pub max_topics: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub url: String,
    /// Prefix of every key and channel, so deployments can share a Redis.
    pub key_prefix: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    /// At start, how long to wait for Redis before exiting with an error;
    /// 0 waits (and retries) for ever.
    pub startup_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PublishSettings {
    /// Most characters (Unicode scalar values) in a message.
    pub max_message_chars: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamSettings {
    /// A comment is sent after this much silence.
    pub keepalive_ms: u64,
    /// Reconnection delay advertised to clients with `retry:`.
    pub retry_ms: u64,
    /// Events a client may fall behind before its stream is closed.
    pub queue_capacity: usize,
    /// Most topics in one subscription.
    pub max_topics: usize,
    /// Most streams one process holds open; past it new ones get a 503
    /// with `Retry-After`. 0: derived from the open-file limit, keeping a
    /// reserve for publishes, Redis and logs.
    pub max_streams: usize,
}

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

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run { config_file: Option<PathBuf> },
    Help,
    Version,
}

/// Parses `--config FILE`, `--config=FILE`, `--help` and `--version`.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, SettingsError> {
    let mut config_file = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--config" | "-c" => {
                let file = args
                    .next()
                    .ok_or_else(|| SettingsError::Usage("--config needs a file".into()))?;
                config_file = Some(PathBuf::from(file));
            }
            other => match other.strip_prefix("--config=") {
                Some(file) => config_file = Some(PathBuf::from(file)),
                None => {
                    return Err(SettingsError::Usage(format!(
                        "unknown argument {other:?}; try --help"
                    )));
                }
            },
        }
    }
    Ok(Command::Run { config_file })
}

impl Settings {
    /// Defaults → `file` → the process environment.
    pub fn load(defaults: BinaryDefaults, file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(defaults, file, None)
    }

    /// As [`Settings::load`], with `env` standing in for the process
    /// environment when given (tests cannot safely set real variables).
    pub fn load_from(
        defaults: BinaryDefaults,
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, SettingsError> {
        let engine = match defaults.engine {
            Engine::Memory => "memory",
            Engine::Redis => "redis",
        };
        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .set_default("http.port", i64::from(defaults.port))?
            .set_default("bus.engine", engine)?;
        let known = leaf_keys(builder.build_cloned()?)?;
        if let Some(file) = file {
            builder = builder.add_source(File::from(file).format(FileFormat::Toml).required(true));
        }
        let env = env.unwrap_or_else(|| std::env::vars().collect());
        let environment = Environment::with_prefix("ES")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env.clone()));
        let config = builder.add_source(environment).build()?;
        for key in leaf_keys(config.clone())? {
            if !known.contains(&key) {
                return Err(unknown(key, &known, &env, file));
            }
        }
        let settings: Settings = config.try_deserialize()?;
        settings.check()?;
        Ok(settings)
    }

    /// Rules serde cannot express.
    fn check(&self) -> Result<(), SettingsError> {
        let positive: [(&'static str, u64); 12] = [
            ("bus.max_topics", self.bus.max_topics as u64),
            ("http.send_timeout_ms", self.http.send_timeout_ms),
            ("http.request_timeout_ms", self.http.request_timeout_ms),
            ("stream.keepalive_ms", self.stream.keepalive_ms),
            ("stream.queue_capacity", self.stream.queue_capacity as u64),
            ("stream.max_topics", self.stream.max_topics as u64),
            (
                "publish.max_message_chars",
                self.publish.max_message_chars as u64,
            ),
            ("publish.max_body_bytes", self.publish.max_body_bytes as u64),
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms),
            ("redis.response_timeout_ms", self.redis.response_timeout_ms),
            ("redis.ping_interval_ms", self.redis.ping_interval_ms),
            ("redis.ping_timeout_ms", self.redis.ping_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(rule(key, "must be at least 1".into()));
            }
        }
        if self.stream.max_topics > shared_types::cursor::MAX_CURSOR_TOPICS {
            return Err(rule(
                "stream.max_topics",
                format!(
                    "must be at most {}",
                    shared_types::cursor::MAX_CURSOR_TOPICS
                ),
            ));
        }
        if self.http.host.trim().is_empty() {
            return Err(rule("http.host", "must not be empty".into()));
        }
        if !self.redis.url.starts_with("redis://")
            && !self.redis.url.starts_with("rediss://")
            && !self.redis.url.starts_with("unix://")
        {
            return Err(rule(
                "redis.url",
                "must start with redis://, rediss:// or unix://".into(),
            ));
        }
        if self.redis.key_prefix.is_empty()
            || !self
                .redis
                .key_prefix
                .chars()
                .all(shared_types::publish::is_name_char)
        {
            return Err(rule(
                "redis.key_prefix",
                "must be 1 or more of A-Z, a-z, 0-9, '_', '.', ':', '-'".into(),
            ));
        }
        if let Err(why) = check_log_level(&self.log.level) {
            return Err(rule("log.level", why));
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.http.shutdown_grace_ms)
    }

    /// The in-memory engine's sizes.
    pub fn memory_config(&self) -> bus::MemoryConfig {
        bus::MemoryConfig {
            history_size: self.bus.history_size,
            history_ttl: Duration::from_secs(self.bus.history_ttl_secs),
            queue_capacity: self.stream.queue_capacity,
            max_topics: self.bus.max_topics,
        }
    }

    /// The Redis engine's settings.
    pub fn redis_config(&self) -> bus::RedisConfig {
        let ms = Duration::from_millis;
        bus::RedisConfig {
            url: self.redis.url.clone(),
            key_prefix: self.redis.key_prefix.clone(),
            connect_timeout: ms(self.redis.connect_timeout_ms),
            response_timeout: ms(self.redis.response_timeout_ms),
            history_size: self.bus.history_size,
            history_ttl: Duration::from_secs(self.bus.history_ttl_secs),
            queue_capacity: self.stream.queue_capacity,
            max_topics: self.bus.max_topics,
            ping_interval: ms(self.redis.ping_interval_ms),
            ping_timeout: ms(self.redis.ping_timeout_ms),
            startup_timeout: ms(self.redis.startup_timeout_ms),
            ..bus::RedisConfig::default()
        }
    }

    /// `stream.max_streams`, or when 0, the open-file limit less a reserve.
    pub fn max_streams(&self) -> usize {
        match self.stream.max_streams {
            0 => {
                open_file_limit().map_or(10_000, |limit| limit.saturating_sub(FILE_RESERVE).max(64))
            }
            n => n,
        }
    }

    pub fn publish_limits(&self) -> shared_types::Limits {
        shared_types::Limits {
            max_message_chars: self.publish.max_message_chars,
        }
    }
}

impl HttpSettings {
    /// `workers`, or when 0, one per CPU core.
    pub fn workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// `max_connections`, or when 0, the open-file limit less a reserve
    /// (listeners, Redis, logs) shared out over `workers`.
    pub fn max_connections_per_worker(&self, workers: usize) -> usize {
        match self.max_connections {
            0 => open_file_limit().map_or(25_000, |limit| {
                (limit.saturating_sub(FILE_RESERVE) / workers.max(1)).max(1)
            }),
            n => n,
        }
    }
}

/// Open files kept back from connections and streams for everything else.
const FILE_RESERVE: usize = 256;

/// The soft limit on open files, from `/proc/self/limits` (Linux).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Every leaf of a configuration tree as `section.key`.
fn leaf_keys(config: Config) -> Result<std::collections::BTreeSet<String>, SettingsError> {
    fn walk(
        prefix: String,
        value: serde_json::Value,
        out: &mut std::collections::BTreeSet<String>,
    ) {
        match value {
            serde_json::Value::Object(table) => {
                for (key, value) in table {
                    walk(format!("{prefix}{key}."), value, out);
                }
            }
            _ => {
                out.insert(prefix.trim_end_matches('.').to_owned());
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(String::new(), config.try_deserialize()?, &mut out);
    Ok(out)
}

/// The error for a key no setting has: where it came from and the nearest
/// valid key (by edit distance), else the keys of its section.
fn unknown(
    key: String,
    known: &std::collections::BTreeSet<String>,
    env: &HashMap<String, String>,
    file: Option<&Path>,
) -> SettingsError {
    let variable = format!("ES__{}", key.replace('.', "__").to_uppercase());
    let origin = if env.keys().any(|name| name.eq_ignore_ascii_case(&variable)) {
        format!("env {variable}")
    } else {
        match file {
            Some(file) => format!("in {}", file.display()),
            None => "not set by any source".to_owned(),
        }
    };
    let nearest = known
        .iter()
        .map(|candidate| (strsim::levenshtein(&key, candidate), candidate))
        .min();
    let hint = match nearest {
        Some((distance, candidate)) if distance <= 3.max(key.len() / 4) => {
            format!("; did you mean {candidate}?")
        }
        _ => {
            let section = key.split('.').next().unwrap_or_default();
            let keys: Vec<&str> = known
                .iter()
                .filter(|k| k.split('.').next() == Some(section))
                .map(String::as_str)
                .collect();
            if keys.is_empty() {
                let sections: std::collections::BTreeSet<&str> =
                    known.iter().filter_map(|k| k.split('.').next()).collect();
                format!("; the sections are {}", Vec::from_iter(sections).join(", "))
            } else {
                format!("; the keys of [{section}] are {}", keys.join(", "))
            }
        }
    };
    SettingsError::Unknown { key, origin, hint }
}

/// A tracing filter whose every directive names a level: `info`, or
/// `target=level`. A bare word is a valid tracing directive (a target at
/// every level), so `verbose` would silently log nothing but `verbose`'s
/// spans; here it is an error instead.
fn check_log_level(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in filter.split(',').map(str::trim) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{directive:?} names no level; use one of {} or target=level (e.g. info,bus=debug)",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|error| format!("is not a valid filter: {error}"))
}

fn rule(key: &'static str, why: String) -> SettingsError {
    SettingsError::Rule {
        key,
        env: key.replace('.', "__").to_uppercase(),
        why,
    }
}

/// Built-in defaults; `http.port` and `bus.engine` come from the binary.
/// The README's table of keys mirrors this.
pub const DEFAULTS: &str = r#"
[http]
host = "0.0.0.0"
workers = 0
shutdown_grace_ms = 10000
max_connections = 0
max_connections_per_address = 1000
request_timeout_ms = 5000
send_timeout_ms = 30000

[log]
format = "text"
level = "info"

[bus]
history_size = 1000
history_ttl_secs = 86400
max_topics = 10000

[redis]
url = "redis://127.0.0.1:6379"
key_prefix = "es"
connect_timeout_ms = 500
response_timeout_ms = 500
ping_interval_ms = 1000
ping_timeout_ms = 1000
startup_timeout_ms = 0

[publish]
max_message_chars = 100
max_body_bytes = 65536

[stream]
keepalive_ms = 15000
retry_ms = 3000
queue_capacity = 1024
max_topics = 16
max_streams = 0
"#;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const STANDALONE: BinaryDefaults = BinaryDefaults {
        name: "event-stream",
        port: 9990,
        engine: Engine::Memory,
    };

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_come_from_the_binary_and_the_built_in_table() {
        let settings = Settings::load_from(STANDALONE, None, env(&[])).unwrap();
        assert_eq!(settings.http.port, 9990);
        assert_eq!(settings.bus.engine, Engine::Memory);
        assert_eq!(settings.publish.max_message_chars, 100);
        assert_eq!(settings.stream.keepalive_ms, 15000);
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("es-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[http]\nport = 7000\nhost = \"127.0.0.1\"\n[stream]\nretry_ms = 10\n",
        )
        .unwrap();
        let settings = Settings::load_from(
            STANDALONE,
            Some(&file),
            env(&[
                ("ES__HTTP__PORT", "7001"),
                ("ES__STREAM__QUEUE_CAPACITY", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.http.port, 7001, "env beats file");
        assert_eq!(settings.http.host, "127.0.0.1", "file beats default");
        assert_eq!(settings.stream.retry_ms, 10);
        assert_eq!(
            settings.stream.queue_capacity, 5,
            "keys with '_' are not split"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (("ES__HTTP__PORT", "nope"), "http.port"),
            (("ES__HTTP__PORT", "70000"), "http.port"),
            (("ES__STREAM__KEEPALIVE_MS", "0"), "stream.keepalive_ms"),
            (
                ("ES__HTTP__REQUEST_TIMEOUT_MS", "0"),
                "http.request_timeout_ms",
            ),
            (("ES__BUS__ENGINE", "kafka"), "bus.engine"),
            (("ES__LOG__FORMAT", "xml"), "log.format"),
            (("ES__REDIS__URL", "http://x"), "redis.url"),
        ];
        for ((key, value), named) in cases {
            let error = Settings::load_from(STANDALONE, None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(named),
                "{key}={value}: {error:?} should name {named}"
            );
        }
    }

    #[test]
    fn unknown_keys_stop_the_start_naming_the_key_and_the_nearest_valid_one() {
        let error = Settings::load_from(STANDALONE, None, env(&[("ES__HTTP__PROT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("http.prot"), "{error}");
        assert!(error.contains("env ES__HTTP__PROT"), "{error}");
        assert!(error.contains("did you mean http.port?"), "{error}");

        let dir = std::env::temp_dir().join(format!("es-unknown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[stream]\nkeepalive = 5\n[nonsense]\nx = 1\n").unwrap();
        let error = Settings::load_from(STANDALONE, Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown key") && error.contains(&file.display().to_string()),
            "{error}"
        );
        assert!(
            error.contains("nonsense.x") || error.contains("stream.keepalive"),
            "{error}"
        );

        let error = Settings::load_from(STANDALONE, None, env(&[("ES__ZZZ__QQQQQQQQ", "1")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("the sections are bus, http, log"), "{error}");
    }

    #[test]
    fn a_log_level_must_name_a_level() {
        for good in ["info", "warn,bus=debug", "DEBUG", "off"] {
            let settings = Settings::load_from(STANDALONE, None, env(&[("ES__LOG__LEVEL", good)]));
            assert!(settings.is_ok(), "{good}: {:?}", settings.err());
        }
        for bad in ["verbose", "info,bus", "bus=loud"] {
            let error = Settings::load_from(STANDALONE, None, env(&[("ES__LOG__LEVEL", bad)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains("log.level"), "{bad}: {error}");
        }
    }

    #[test]
    fn max_streams_defaults_below_the_open_file_limit() {
        let settings = Settings::load_from(STANDALONE, None, env(&[])).unwrap();
        let limit = open_file_limit().unwrap();
        assert!(
            settings.max_streams() < limit,
            "{} vs {limit}",
            settings.max_streams()
        );
        let set = Settings::load_from(STANDALONE, None, env(&[("ES__STREAM__MAX_STREAMS", "7")]))
            .unwrap();
        assert_eq!(set.max_streams(), 7);
    }

    #[test]
    fn max_connections_defaults_to_the_open_file_limit_shared_by_workers() {
        let settings = Settings::load_from(STANDALONE, None, env(&[])).unwrap();
        let limit = open_file_limit().unwrap();
        let per_worker = settings.http.max_connections_per_worker(4);
        assert_eq!(per_worker, (limit - FILE_RESERVE) / 4);
        assert!(
            per_worker * 4 < limit,
            "all workers together stay under {limit}"
        );
        let set = Settings::load_from(STANDALONE, None, env(&[("ES__HTTP__MAX_CONNECTIONS", "7")]))
            .unwrap();
        assert_eq!(
            set.http.max_connections_per_worker(4),
            7,
            "explicit values are kept"
        );
        assert_eq!(settings.http.max_connections_per_address, 1000);
        assert_eq!(settings.http.request_timeout_ms, 5000);
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let error = Settings::load_from(
            STANDALONE,
            Some(Path::new("/nonexistent/es.toml")),
            env(&[]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("es.toml"), "{error}");
    }

    #[test]
    fn arguments_give_the_config_file() {
        let args = |a: &[&str]| parse_args(a.iter().map(|s| s.to_string()));
        assert_eq!(args(&[]).unwrap(), Command::Run { config_file: None });
        assert_eq!(
            args(&["--config", "a.toml"]).unwrap(),
            Command::Run {
                config_file: Some("a.toml".into())
            }
        );
        assert_eq!(
            args(&["--config=b.toml"]).unwrap(),
            Command::Run {
                config_file: Some("b.toml".into())
            }
        );
        assert_eq!(args(&["--help"]).unwrap(), Command::Help);
        assert_eq!(args(&["--version"]).unwrap(), Command::Version);
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--config"]).is_err());
    }
}
