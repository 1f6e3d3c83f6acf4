//! The sections every binary reads (`http`, `log`, `bus`, `redis`), and
//! the tree they form with the sections of the parts a binary runs.
//!
//! How they are loaded is [`crate::loader`]'s job; the services' own
//! sections are [`crate::section::Section`]s in their crates.

use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Access, AuthSettings};
use crate::client::TrustedProxies;
use crate::error::SettingsError;
use crate::section::{Sections, at_least_one, rule};

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

/// One binary's settings: the common sections, and `own`, the sections of
/// the parts it runs (ingest: `publish`; a gateway: `stream`; the
/// standalone binary: both).
#[derive(Debug, Clone)]
pub struct Settings<S = ()> {
    pub http: HttpSettings,
    pub log: LogSettings,
    pub bus: BusSettings,
    pub redis: RedisSettings,
    /// `[auth]` as read; [`Settings::access`] is what it decides.
    pub auth: AuthSettings,
    /// The access decision `auth` builds, keys read and checked at load.
    pub access: Access,
    /// What `redis` says about TLS, files read and checked at load: for a
    /// `rediss://` target of the Redis engine; `None` otherwise.
    pub redis_tls: Option<bus::RedisTls>,
    pub own: S,
}

/// The common sections as they are read; other sections are ignored here.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Common {
    pub(crate) http: HttpSettings,
    pub(crate) log: LogSettings,
    pub(crate) bus: BusSettings,
    pub(crate) redis: RedisSettings,
    pub(crate) auth: AuthSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    /// 0 picks a free port (tests do this).
    pub port: u16,
    /// Worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Threads writing streams, shared by all workers; 0 means as many as
    /// `workers`. See docs/DESIGN.md, "Streams are written on a shared
    /// runtime".
    pub stream_threads: usize,
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
    /// A unix socket to listen on as well as `host:port`, for a proxy on
    /// the same host; empty: none. Its peers count as `127.0.0.1`. Read
    /// through [`HttpSettings::unix_socket`].
    pub unix_socket: String,
    /// The socket file's mode, in octal (`660`): whoever may open the
    /// file reaches the service. Read through
    /// [`HttpSettings::unix_socket_mode`].
    pub unix_socket_mode: String,
    /// Which other origins' pages may use the API (see [`crate::cors`]).
    pub cors: CorsSettings,
    /// Proxies (addresses or networks) whose `X-Forwarded-For`,
    /// `X-Real-IP` and `X-Request-Id` are believed; see [`crate::client`].
    /// Read through [`HttpSettings::trusted_proxies`].
    pub trusted_proxies: Vec<String>,
}

/// Cross-origin requests (CORS): which pages on other origins may read
/// answers and publish. Same-origin pages need none of it.
#[derive(Debug, Clone, Deserialize)]
pub struct CorsSettings {
    /// Exact origins as browsers send them (`https://app.example.com`,
    /// `http://127.0.0.1:8080`), or the single entry `*` for any origin.
    /// Empty: CORS is off, and a publish from another origin's page is
    /// refused. Read through [`CorsSettings::origins`].
    pub allowed_origins: Vec<String>,
    /// Whether pages may send cookies or HTTP auth along
    /// (`withCredentials`); needs a list of origins, never `*`.
    pub allow_credentials: bool,
    /// How long a browser may reuse a preflight's answer.
    pub max_age_secs: u64,
}

impl CorsSettings {
    /// The allowed origins, trimmed, empty entries dropped (`a, b` and a
    /// variable set to nothing both work from the environment).
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.allowed_origins
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
    }

    fn check(&self) -> Result<(), SettingsError> {
        const KEY: &str = "http.cors.allowed_origins";
        let origins: Vec<&str> = self.origins().collect();
        if origins.contains(&"*") {
            if origins.len() > 1 {
                return Err(rule(KEY, "\"*\" must be the only entry"));
            }
            if self.allow_credentials {
                return Err(rule(
                    "http.cors.allow_credentials",
                    "cannot be true with allowed_origins \"*\": the Fetch standard \
                     forbids credentials with a wildcard; list the origins instead",
                ));
            }
            return Ok(());
        }
        for origin in origins {
            check_origin(origin).map_err(|why| rule(KEY, why))?;
        }
        Ok(())
    }
}

/// An origin exactly as a browser sends it in `Origin`: `http` or `https`,
/// lowercase host, a port only when not the scheme's default, nothing
/// after. Anything else could never match a request, so it is an error.
fn check_origin(origin: &str) -> Result<(), String> {
    let shape = "an origin is scheme://host[:port], no path and no trailing slash";
    let url = url::Url::parse(origin).map_err(|error| format!("{origin:?}: {error}; {shape}"))?;
    let canonical = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https") {
        Err(format!("{origin:?}: only http and https origins"))
    } else if canonical == origin {
        Ok(())
    } else {
        Err(format!(
            "{origin:?} is not an origin ({shape}); browsers send {canonical:?}"
        ))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,bus=debug`.
    pub level: String,
    /// Lines waiting for stdout. Lines are written by a thread of their
    /// own; while stdout takes nothing (a stalled or stopped log reader)
    /// up to this many wait, then new ones are dropped and counted
    /// (`es_log_lines_dropped_total`) instead of stalling the service.
    pub buffered_lines: usize,
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

/// `redis.mode`: one Redis, or a Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    Single,
    Cluster,
}

/// Most seeds `redis.cluster_nodes` may list: a few reachable nodes are
/// enough to learn the whole layout.
pub const MAX_CLUSTER_NODES: usize = 32;

/// Most replicas `redis.cluster_ack_replicas` may ask for.
pub const MAX_ACK_REPLICAS: u32 = 8;

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// `single` (default): `url` names the Redis. `cluster`:
    /// `cluster_nodes` are seeds of a Redis Cluster.
    pub mode: RedisMode,
    pub url: String,
    /// Cluster mode: `redis://host:port` of some nodes (1 to 32); all
    /// `rediss://` for a cluster over TLS.
    pub cluster_nodes: Vec<String>,
    /// Cluster mode: replicas that must hold a publish before it is
    /// answered 201 and broadcast (0 to 8).
    pub cluster_ack_replicas: u32,
    /// Prefix of every key and channel, so deployments can share a Redis.
    pub key_prefix: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    /// At start, how long to wait for Redis before exiting with an error;
    /// 0 waits (and retries) for ever.
    pub startup_timeout_ms: u64,
    /// `rediss://` only: a PEM CA bundle, then the only roots trusted;
    /// empty trusts the system's CA certificates.
    pub tls_ca_file: String,
    /// `rediss://` only: a PEM client certificate, for servers that ask
    /// for one; set together with `tls_client_key_file`, or neither.
    pub tls_client_cert_file: String,
    /// The PEM private key of `tls_client_cert_file`.
    pub tls_client_key_file: String,
}

impl RedisSettings {
    /// Whether the URL in use (single mode) or the seeds (cluster mode)
    /// are `rediss://`.
    pub fn uses_tls(&self) -> bool {
        match self.mode {
            RedisMode::Single => self.url.starts_with("rediss://"),
            RedisMode::Cluster => self
                .cluster_nodes
                .iter()
                .any(|node| node.starts_with("rediss://")),
        }
    }

    /// The TLS rules: the keys go with a `rediss://` target only (with a
    /// plain one they would be ignored), a client certificate with its
    /// key, and certificate checks stay on.
    fn check_tls(&self) -> Result<(), SettingsError> {
        let set = |value: &str| !value.trim().is_empty();
        let (target_key, target) = match self.mode {
            RedisMode::Single => ("redis.url", vec![self.url.as_str()]),
            RedisMode::Cluster => (
                "redis.cluster_nodes",
                self.cluster_nodes.iter().map(String::as_str).collect(),
            ),
        };
        if target
            .iter()
            .any(|url| url.starts_with("rediss://") && url.contains("#insecure"))
        {
            return Err(rule(
                target_key,
                "certificate checks cannot be turned off (#insecure); set redis.tls_ca_file \
                 to the CA that signed the server's certificate",
            ));
        }
        if !self.uses_tls() {
            for (key, value) in [
                ("redis.tls_ca_file", &self.tls_ca_file),
                ("redis.tls_client_cert_file", &self.tls_client_cert_file),
                ("redis.tls_client_key_file", &self.tls_client_key_file),
            ] {
                if set(value) {
                    return Err(rule(
                        key,
                        format!(
                            "is set, but {target_key} is not rediss:// and would not use it; \
                             use rediss:// for TLS, or unset it"
                        ),
                    ));
                }
            }
        }
        match (
            set(&self.tls_client_cert_file),
            set(&self.tls_client_key_file),
        ) {
            (true, false) => Err(rule(
                "redis.tls_client_key_file",
                "must be set with redis.tls_client_cert_file: a client certificate needs its key",
            )),
            (false, true) => Err(rule(
                "redis.tls_client_cert_file",
                "must be set with redis.tls_client_key_file: a key needs its certificate",
            )),
            _ => Ok(()),
        }
    }

    /// For a `rediss://` target, the TLS material read from the files
    /// (or the system's roots), checked; `None` for a plain one. Errors
    /// name the key and the file, never a key's content.
    pub(crate) fn tls(&self) -> Result<Option<bus::RedisTls>, SettingsError> {
        if !self.uses_tls() {
            return Ok(None);
        }
        let path = |value: &str| {
            Some(value.trim())
                .filter(|value| !value.is_empty())
                .map(std::path::PathBuf::from)
        };
        let files = bus::TlsFiles {
            ca_file: path(&self.tls_ca_file),
            client_cert: path(&self.tls_client_cert_file).zip(path(&self.tls_client_key_file)),
        };
        bus::RedisTls::load(&files).map(Some).map_err(|error| {
            let key = match error.file() {
                bus::TlsFile::Ca => "redis.tls_ca_file",
                bus::TlsFile::ClientCert => "redis.tls_client_cert_file",
                bus::TlsFile::ClientKey => "redis.tls_client_key_file",
            };
            rule(key, error.to_string())
        })
    }
}

/// Most `log.buffered_lines`: the queue's slots are allocated when the
/// logger starts (32 bytes each, 32 MiB here), whatever the lines hold.
pub const MAX_BUFFERED_LINES: usize = 1 << 20;

impl Common {
    /// Rules serde cannot express.
    pub(crate) fn check(&self) -> Result<(), SettingsError> {
        at_least_one(&[
            ("bus.max_topics", self.bus.max_topics as u64),
            ("log.buffered_lines", self.log.buffered_lines as u64),
            ("http.send_timeout_ms", self.http.send_timeout_ms),
            ("http.request_timeout_ms", self.http.request_timeout_ms),
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms),
            ("redis.response_timeout_ms", self.redis.response_timeout_ms),
            ("redis.ping_interval_ms", self.redis.ping_interval_ms),
            ("redis.ping_timeout_ms", self.redis.ping_timeout_ms),
        ])?;
        if self.log.buffered_lines > MAX_BUFFERED_LINES {
            return Err(rule(
                "log.buffered_lines",
                format!("must be at most {MAX_BUFFERED_LINES} (its slots are allocated at start)"),
            ));
        }
        if self.http.host.trim().is_empty() {
            return Err(rule("http.host", "must not be empty"));
        }
        if !self.redis.url.starts_with("redis://")
            && !self.redis.url.starts_with("rediss://")
            && !self.redis.url.starts_with("unix://")
        {
            return Err(rule(
                "redis.url",
                "must start with redis://, rediss:// or unix://",
            ));
        }
        if self.redis.mode == RedisMode::Cluster {
            let nodes = &self.redis.cluster_nodes;
            if nodes.is_empty() || nodes.len() > MAX_CLUSTER_NODES {
                return Err(rule(
                    "redis.cluster_nodes",
                    "must list 1 to 32 nodes in cluster mode",
                ));
            }
            if let Some(node) = nodes
                .iter()
                .find(|node| !node.starts_with("redis://") && !node.starts_with("rediss://"))
            {
                let node = bus::RedisConfig::redacted(node);
                return Err(rule(
                    "redis.cluster_nodes",
                    format!("each node must start with redis:// or rediss:// ({node} does not)"),
                ));
            }
            let tls = nodes
                .iter()
                .filter(|node| node.starts_with("rediss://"))
                .count();
            if tls != 0 && tls != nodes.len() {
                return Err(rule(
                    "redis.cluster_nodes",
                    "must be all redis:// or all rediss://: a cluster is reached one way",
                ));
            }
        }
        self.redis.check_tls()?;
        if self.redis.cluster_ack_replicas > MAX_ACK_REPLICAS {
            return Err(rule("redis.cluster_ack_replicas", "must be 0 to 8"));
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
                "must be 1 or more of A-Z, a-z, 0-9, '_', '.', ':', '-'",
            ));
        }
        if let Err(why) = check_log_level(&self.log.level) {
            return Err(rule("log.level", why));
        }
        self.http.trusted_proxies()?;
        self.http.unix_socket()?;
        self.http.unix_socket_mode()?;
        self.http.cors.check()
    }
}

impl<S: Sections> Settings<S> {
    /// The in-memory engine's sizes.
    pub fn memory_config(&self) -> bus::MemoryConfig {
        bus::MemoryConfig {
            history_size: self.bus.history_size,
            history_ttl: Duration::from_secs(self.bus.history_ttl_secs),
            queue_capacity: self
                .own
                .queue_capacity()
                .unwrap_or(bus::MemoryConfig::default().queue_capacity),
            max_topics: self.bus.max_topics,
        }
    }

    /// The Redis engine's settings.
    pub fn redis_config(&self) -> bus::RedisConfig {
        let ms = Duration::from_millis;
        bus::RedisConfig {
            url: self.redis.url.clone(),
            mode: match self.redis.mode {
                RedisMode::Single => bus::RedisMode::Single,
                RedisMode::Cluster => bus::RedisMode::Cluster,
            },
            cluster_nodes: self.redis.cluster_nodes.clone(),
            cluster_ack_replicas: self.redis.cluster_ack_replicas,
            key_prefix: self.redis.key_prefix.clone(),
            connect_timeout: ms(self.redis.connect_timeout_ms),
            response_timeout: ms(self.redis.response_timeout_ms),
            history_size: self.bus.history_size,
            history_ttl: Duration::from_secs(self.bus.history_ttl_secs),
            queue_capacity: self
                .own
                .queue_capacity()
                .unwrap_or(bus::RedisConfig::default().queue_capacity),
            max_topics: self.bus.max_topics,
            ping_interval: ms(self.redis.ping_interval_ms),
            ping_timeout: ms(self.redis.ping_timeout_ms),
            startup_timeout: ms(self.redis.startup_timeout_ms),
            tls: self.redis_tls.clone(),
            ..bus::RedisConfig::default()
        }
    }
}

impl HttpSettings {
    /// `trusted_proxies`, parsed (checked when the settings load).
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, SettingsError> {
        TrustedProxies::parse(&self.trusted_proxies)
    }

    /// `unix_socket`, checked: `None` when empty, else an absolute path
    /// that fits a socket address (`sun_path`: 108 bytes with the NUL).
    pub fn unix_socket(&self) -> Result<Option<std::path::PathBuf>, SettingsError> {
        const KEY: &str = "http.unix_socket";
        let path = self.unix_socket.trim();
        if path.is_empty() {
            return Ok(None);
        }
        if !path.starts_with('/') {
            return Err(rule(
                KEY,
                format!(
                    "{path:?} must be an absolute path (a relative one depends on where the service starts)"
                ),
            ));
        }
        if path.len() > MAX_UNIX_SOCKET_PATH {
            return Err(rule(
                KEY,
                format!(
                    "{path:?} is {} bytes; a unix socket path is at most {MAX_UNIX_SOCKET_PATH}",
                    path.len()
                ),
            ));
        }
        Ok(Some(path.into()))
    }

    /// `unix_socket_mode`, checked: octal digits, at most `777`, with the
    /// owner's write bit (without it the service could not tell a socket
    /// it left behind from a live one at its next start: connecting is
    /// refused for want of permission).
    pub fn unix_socket_mode(&self) -> Result<u32, SettingsError> {
        let mode = self.unix_socket_mode.trim();
        u32::from_str_radix(mode, 8)
            .ok()
            .filter(|&bits| bits <= 0o777 && bits & 0o200 != 0 && !mode.starts_with('+'))
            .ok_or_else(|| {
                rule(
                    "http.unix_socket_mode",
                    format!(
                        "{mode:?} is not a socket mode: octal digits from 200 to 777 with the \
                         owner's write bit, e.g. 660"
                    ),
                )
            })
    }

    /// `workers`, or when 0, one per CPU core.
    pub fn workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// `stream_threads`, or when 0, as many as [`HttpSettings::workers`].
    pub fn stream_threads(&self) -> usize {
        match self.stream_threads {
            0 => self.workers(),
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

/// The longest unix socket path: Linux's `sun_path` holds 108 bytes, the
/// last a NUL.
pub const MAX_UNIX_SOCKET_PATH: usize = 107;

/// Open files kept back from connections and streams for everything else.
pub const FILE_RESERVE: usize = 256;

/// The soft limit on open files, from `/proc/self/limits` (Linux).
pub fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
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

/// Built-in defaults of the common sections; `http.port` and `bus.engine`
/// come from the binary, the services' sections from their crates.
/// The README's table of keys mirrors this.
pub const DEFAULTS: &str = r#"
[http]
host = "0.0.0.0"
workers = 0
stream_threads = 0
shutdown_grace_ms = 10000
max_connections = 0
max_connections_per_address = 1000
request_timeout_ms = 5000
send_timeout_ms = 30000
unix_socket = ""
unix_socket_mode = "660"
trusted_proxies = []

[http.cors]
allowed_origins = []
allow_credentials = false
max_age_secs = 600

[log]
format = "text"
level = "info"
buffered_lines = 65536

[bus]
history_size = 1000
history_ttl_secs = 86400
max_topics = 10000

[redis]
mode = "single"
url = "redis://127.0.0.1:6379"
cluster_nodes = []
cluster_ack_replicas = 1
key_prefix = "es"
connect_timeout_ms = 500
response_timeout_ms = 500
ping_interval_ms = 1000
ping_timeout_ms = 1000
startup_timeout_ms = 0
tls_ca_file = ""
tls_client_cert_file = ""
tls_client_key_file = ""
"#;
