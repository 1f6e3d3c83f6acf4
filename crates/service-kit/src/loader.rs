//! Loading settings: the layers, and the strictness about keys.
//!
//! Layers, later wins: compiled-in defaults (the common sections', some
//! per binary like the port, and those of the [`Sections`] the binary
//! runs), then an optional TOML file given with `--config FILE`, then
//! environment variables `ES__<SECTION>__<KEY>` (for example
//! `ES__HTTP__PORT=8080`). `__` separates levels so keys may contain `_`.
//! A value that does not parse or breaks a rule stops the start with an
//! error naming the key, and so does a key no setting has (a misspelled
//! key would otherwise be ignored silently), with the nearest valid one.
//! A section of another service ([`SERVICE_SECTIONS`]) is left to the
//! binary that runs it.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use config::{Config, Environment, File, FileFormat};

use crate::auth;
use crate::error::SettingsError;
use crate::section::{SERVICE_SECTIONS, Sections};
use crate::settings::{self, BinaryDefaults, Common, Engine, Settings};

impl<S: Sections> Settings<S> {
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
            .add_source(File::from_str(settings::DEFAULTS, FileFormat::Toml))
            .add_source(File::from_str(auth::DEFAULTS, FileFormat::Toml))
            .add_source(File::from_str(&S::defaults(), FileFormat::Toml))
            .set_default("http.port", i64::from(defaults.port))?
            .set_default("bus.engine", engine)?;
        let known = leaf_keys(builder.build_cloned()?)?;
        if let Some(file) = file {
            quoted_mode(file)?;
            builder = builder.add_source(File::from(file).format(FileFormat::Toml).required(true));
        }
        let env = env.unwrap_or_else(|| std::env::vars().collect());
        // The lists: `ES__HTTP__CORS__ALLOWED_ORIGINS=https://a,https://b`.
        let environment = auth::LIST_KEYS.iter().fold(
            Environment::with_prefix("ES")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("http.cors.allowed_origins")
                .with_list_parse_key("http.trusted_proxies")
                .with_list_parse_key("redis.cluster_nodes"),
            |environment, key| environment.with_list_parse_key(key),
        );
        let environment = environment.source(Some(env.clone()));
        let config = builder.add_source(environment).build()?;
        let run = S::names();
        for key in leaf_keys(config.clone())? {
            let section = key.split('.').next().unwrap_or_default();
            let elsewhere = SERVICE_SECTIONS.contains(&section) && !run.contains(&section);
            if !known.contains(&key) && !elsewhere {
                return Err(unknown(key, &known, &env, file));
            }
        }
        let common: Common = config.clone().try_deserialize()?;
        common.check()?;
        let access = common.auth.access()?;
        // Read only by a binary that talks to Redis: the memory engine
        // never opens a connection.
        let redis_tls = match common.bus.engine {
            Engine::Redis => common.redis.tls()?,
            Engine::Memory => None,
        };
        let own = S::extract(&config)?;
        own.check()?;
        Ok(Settings {
            http: common.http,
            log: common.log,
            bus: common.bus,
            redis: common.redis,
            auth: common.auth,
            access,
            redis_tls,
            own,
        })
    }
}

/// Refuses a file whose `http.unix_socket_mode` is a TOML number: the
/// settings read it as text, so `0o660` would become "432", a mode that
/// lets other users connect. In the environment every value is text and
/// `660` means what it says.
fn quoted_mode(file: &Path) -> Result<(), SettingsError> {
    let alone = Config::builder()
        .add_source(File::from(file).format(FileFormat::Toml).required(true))
        .build()?;
    match alone.get::<config::Value>("http.unix_socket_mode") {
        Ok(value) if !matches!(value.kind, config::ValueKind::String(_)) => {
            Err(crate::section::rule(
                "http.unix_socket_mode",
                "in a settings file it is a quoted string of octal digits, e.g. \"660\" (a TOML \
             number such as 0o660 or 660 is refused: 0o660 would be read as 432)",
            ))
        }
        _ => Ok(()),
    }
}

/// An environment of exactly these variables, for [`Settings::load_from`]:
/// how tests configure a service without touching the process's own.
pub fn environment(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// Every leaf of a configuration tree as `section.key`.
fn leaf_keys(config: Config) -> Result<BTreeSet<String>, SettingsError> {
    fn walk(prefix: String, value: serde_json::Value, out: &mut BTreeSet<String>) {
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
    let mut out = BTreeSet::new();
    walk(String::new(), config.try_deserialize()?, &mut out);
    Ok(out)
}

/// The error for a key no setting has: where it came from and the nearest
/// valid key (by edit distance), else the keys of its section.
fn unknown(
    key: String,
    known: &BTreeSet<String>,
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
                let sections: BTreeSet<&str> =
                    known.iter().filter_map(|k| k.split('.').next()).collect();
                format!("; the sections are {}", Vec::from_iter(sections).join(", "))
            } else {
                format!("; the keys of [{section}] are {}", keys.join(", "))
            }
        }
    };
    SettingsError::Unknown { key, origin, hint }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::section::{Section, at_least_one};
    use crate::settings::{FILE_RESERVE, open_file_limit};

    const STANDALONE: BinaryDefaults = BinaryDefaults {
        name: "event-stream",
        port: 9990,
        engine: Engine::Memory,
    };

    /// A section standing in for a service's own (the real ones live in
    /// their crates, which this one cannot see): named `publish`, so
    /// `stream` is another service's section here.
    #[derive(Debug, Clone, Deserialize)]
    struct Own {
        limit_ms: u64,
        queue_capacity: usize,
    }

    impl Section for Own {
        const NAME: &'static str = "publish";
        const DEFAULTS: &'static str = "limit_ms = 15000\nqueue_capacity = 1024";

        fn check(&self) -> Result<(), SettingsError> {
            at_least_one(&[("publish.limit_ms", self.limit_ms)])
        }

        fn queue_capacity(&self) -> Option<usize> {
            Some(self.queue_capacity)
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(environment(pairs))
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Settings<Own>, SettingsError> {
        Settings::load_from(STANDALONE, None, env(pairs))
    }

    #[test]
    fn defaults_come_from_the_binary_the_built_in_table_and_the_section() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.http.port, 9990);
        assert_eq!(settings.bus.engine, Engine::Memory);
        assert_eq!(settings.log.level, "info");
        assert_eq!(settings.own.limit_ms, 15000);
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("es-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[http]\nport = 7000\nhost = \"127.0.0.1\"\n[publish]\nlimit_ms = 10\n",
        )
        .unwrap();
        let settings: Settings<Own> = Settings::load_from(
            STANDALONE,
            Some(&file),
            env(&[
                ("ES__HTTP__PORT", "7001"),
                ("ES__PUBLISH__QUEUE_CAPACITY", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.http.port, 7001, "env beats file");
        assert_eq!(settings.http.host, "127.0.0.1", "file beats default");
        assert_eq!(settings.own.limit_ms, 10);
        assert_eq!(
            settings.own.queue_capacity, 5,
            "keys with '_' are not split"
        );
    }

    #[test]
    fn a_section_can_size_the_bus_queues() {
        let settings = load(&[("ES__PUBLISH__QUEUE_CAPACITY", "5")]).unwrap();
        assert_eq!(settings.memory_config().queue_capacity, 5);
        assert_eq!(settings.redis_config().queue_capacity, 5);
        let common: Settings = Settings::load_from(STANDALONE, None, env(&[])).unwrap();
        assert_eq!(
            common.memory_config().queue_capacity,
            bus::MemoryConfig::default().queue_capacity,
            "without a section asking, the bus keeps its own"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (("ES__HTTP__PORT", "nope"), "http.port"),
            (("ES__HTTP__PORT", "70000"), "http.port"),
            (
                ("ES__HTTP__REQUEST_TIMEOUT_MS", "0"),
                "http.request_timeout_ms",
            ),
            (("ES__BUS__ENGINE", "kafka"), "bus.engine"),
            (("ES__LOG__FORMAT", "xml"), "log.format"),
            (("ES__REDIS__URL", "http://x"), "redis.url"),
            (("ES__PUBLISH__LIMIT_MS", "0"), "publish.limit_ms"),
            (("ES__PUBLISH__LIMIT_MS", "soon"), "publish.limit_ms"),
        ];
        for ((key, value), named) in cases {
            let error = load(&[(key, value)]).unwrap_err().to_string();
            assert!(
                error.contains(named),
                "{key}={value}: {error:?} should name {named}"
            );
        }
    }

    #[test]
    fn cluster_mode_takes_a_seed_list_and_refuses_each_bad_one() {
        let settings: Settings = Settings::load_from(
            STANDALONE,
            None,
            env(&[
                ("ES__REDIS__MODE", "cluster"),
                ("ES__REDIS__CLUSTER_NODES", "redis://a:1,redis://b:2"),
            ]),
        )
        .unwrap();
        let config = settings.redis_config();
        assert_eq!(config.mode, bus::RedisMode::Cluster);
        assert_eq!(config.cluster_nodes, ["redis://a:1", "redis://b:2"]);
        assert_eq!(config.cluster_ack_replicas, 1);
        let single: Settings = Settings::load_from(STANDALONE, None, env(&[])).unwrap();
        assert_eq!(single.redis_config().mode, bus::RedisMode::Single);

        let too_many = vec!["redis://n:1"; 33].join(",");
        let cases = [
            (
                vec![("ES__REDIS__MODE", "cluster")],
                "redis.cluster_nodes",
                "no seeds",
            ),
            (
                vec![
                    ("ES__REDIS__MODE", "cluster"),
                    ("ES__REDIS__CLUSTER_NODES", too_many.as_str()),
                ],
                "redis.cluster_nodes",
                "33 seeds",
            ),
            (
                vec![
                    ("ES__REDIS__MODE", "cluster"),
                    ("ES__REDIS__CLUSTER_NODES", "http://u:secret@n:1"),
                ],
                "redis.cluster_nodes",
                "another scheme",
            ),
            (
                vec![("ES__REDIS__MODE", "sentinel")],
                "redis.mode",
                "an unknown mode",
            ),
            (
                vec![("ES__REDIS__CLUSTER_ACK_REPLICAS", "9")],
                "redis.cluster_ack_replicas",
                "9 replicas",
            ),
        ];
        for (pairs, named, why) in cases {
            let error = load(&pairs).unwrap_err().to_string();
            assert!(
                error.contains(named),
                "{why}: {error:?} should name {named}"
            );
            assert!(
                !error.contains("secret"),
                "{why}: a password leaked: {error}"
            );
        }
    }

    #[test]
    fn tls_files_are_read_at_load_for_a_rediss_target_of_the_redis_engine() {
        let certificates = testkit::Certificates::generate();
        let ca = certificates.ca().to_string_lossy().into_owned();
        let cert = certificates.client_cert().to_string_lossy().into_owned();
        let key = certificates.client_key().to_string_lossy().into_owned();
        let settings = load(&[
            ("ES__BUS__ENGINE", "redis"),
            ("ES__REDIS__URL", "rediss://:secret@redis.example:6380"),
            ("ES__REDIS__TLS_CA_FILE", &ca),
            ("ES__REDIS__TLS_CLIENT_CERT_FILE", &cert),
            ("ES__REDIS__TLS_CLIENT_KEY_FILE", &key),
        ])
        .unwrap();
        let tls = settings.redis_config().tls.expect("TLS material");
        assert!(tls.has_ca_file() && tls.has_client_certificate());

        // Cluster seeds over TLS take the same material.
        let cluster = load(&[
            ("ES__BUS__ENGINE", "redis"),
            ("ES__REDIS__MODE", "cluster"),
            ("ES__REDIS__CLUSTER_NODES", "rediss://a:1,rediss://b:2"),
            ("ES__REDIS__TLS_CA_FILE", &ca),
        ])
        .unwrap();
        assert!(cluster.redis_config().tls.unwrap().has_ca_file());

        // Without a CA file: the system's roots (this machine has them).
        let system = load(&[
            ("ES__BUS__ENGINE", "redis"),
            ("ES__REDIS__URL", "rediss://redis.example:6380"),
        ])
        .unwrap();
        assert!(!system.redis_config().tls.unwrap().has_ca_file());

        // A plain target needs nothing; the memory engine reads nothing.
        let plain = load(&[("ES__BUS__ENGINE", "redis")]).unwrap();
        assert!(plain.redis_config().tls.is_none());
        let memory = load(&[
            ("ES__REDIS__URL", "rediss://redis.example:6380"),
            ("ES__REDIS__TLS_CA_FILE", "/nonexistent/ca.pem"),
        ])
        .unwrap();
        assert!(memory.redis_tls.is_none());
    }

    #[test]
    fn tls_settings_that_cannot_apply_stop_the_start_naming_the_key() {
        let certificates = testkit::Certificates::generate();
        let ca = certificates.ca().to_string_lossy().into_owned();
        let cert = certificates.client_cert().to_string_lossy().into_owned();
        let key = certificates.client_key().to_string_lossy().into_owned();
        let secret_key = certificates.dir().join("secret.key");
        std::fs::write(&secret_key, "-----BEGIN PRIVATE KEY-----\nhunter2hunter2\n").unwrap();
        let secret_key = secret_key.to_string_lossy().into_owned();
        let rediss = ("ES__REDIS__URL", "rediss://:hunter2@127.0.0.1:6380");
        let redis = ("ES__BUS__ENGINE", "redis");
        /// The variables set, the key the error must name, what it must say.
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![("ES__REDIS__TLS_CA_FILE", ca.as_str())],
                "redis.tls_ca_file",
                "redis.url is not rediss://",
            ),
            (
                vec![
                    ("ES__REDIS__MODE", "cluster"),
                    ("ES__REDIS__CLUSTER_NODES", "redis://a:1"),
                    ("ES__REDIS__TLS_CLIENT_CERT_FILE", cert.as_str()),
                    ("ES__REDIS__TLS_CLIENT_KEY_FILE", key.as_str()),
                ],
                "redis.tls_client_cert_file",
                "redis.cluster_nodes is not rediss://",
            ),
            (
                vec![rediss, ("ES__REDIS__TLS_CLIENT_CERT_FILE", cert.as_str())],
                "redis.tls_client_key_file",
                "must be set with",
            ),
            (
                vec![rediss, ("ES__REDIS__TLS_CLIENT_KEY_FILE", key.as_str())],
                "redis.tls_client_cert_file",
                "must be set with",
            ),
            (
                vec![(
                    "ES__REDIS__URL",
                    "rediss://:hunter2@127.0.0.1:6380/#insecure",
                )],
                "redis.url",
                "cannot be turned off",
            ),
            (
                vec![
                    ("ES__REDIS__MODE", "cluster"),
                    ("ES__REDIS__CLUSTER_NODES", "rediss://a:1,redis://b:2"),
                ],
                "redis.cluster_nodes",
                "all redis:// or all rediss://",
            ),
            (
                vec![
                    redis,
                    rediss,
                    ("ES__REDIS__TLS_CA_FILE", "/nonexistent/ca.pem"),
                ],
                "redis.tls_ca_file",
                "cannot read \"/nonexistent/ca.pem\"",
            ),
            (
                vec![redis, rediss, ("ES__REDIS__TLS_CA_FILE", key.as_str())],
                "redis.tls_ca_file",
                "holds no PEM certificate",
            ),
            (
                vec![
                    redis,
                    rediss,
                    ("ES__REDIS__TLS_CLIENT_CERT_FILE", cert.as_str()),
                    ("ES__REDIS__TLS_CLIENT_KEY_FILE", secret_key.as_str()),
                ],
                "redis.tls_client_key_file",
                "secret.key\" holds no PEM private key",
            ),
        ];
        for (pairs, named, says) in cases {
            let error = load(&pairs).unwrap_err().to_string();
            assert!(
                error.contains(named) && error.contains(says),
                "{pairs:?}: {error:?} should name {named} and say {says}"
            );
            assert!(!error.contains("hunter2"), "a secret leaked: {error}");
        }
    }

    #[test]
    fn unknown_keys_stop_the_start_naming_the_key_and_the_nearest_valid_one() {
        let error = load(&[("ES__HTTP__PROT", "1")]).unwrap_err().to_string();
        assert!(error.contains("http.prot"), "{error}");
        assert!(error.contains("env ES__HTTP__PROT"), "{error}");
        assert!(error.contains("did you mean http.port?"), "{error}");

        let error = load(&[("ES__PUBLISH__LIMIT", "1")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("did you mean publish.limit_ms?"),
            "a section the binary runs is as strict: {error}"
        );

        let dir = std::env::temp_dir().join(format!("es-unknown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[http]\nprot = 5\n[nonsense]\nx = 1\n").unwrap();
        let error = Settings::<Own>::load_from(STANDALONE, Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown key") && error.contains(&file.display().to_string()),
            "{error}"
        );
        assert!(
            error.contains("nonsense.x") || error.contains("http.prot"),
            "{error}"
        );

        let error = load(&[("ES__ZZZ__QQQQQQQQ", "1")]).unwrap_err().to_string();
        assert!(
            error.contains("the sections are auth, bus, http, log, publish, redis"),
            "{error}"
        );
    }

    #[test]
    fn another_services_section_is_left_to_it_even_when_wrong() {
        let settings = load(&[
            ("ES__STREAM__MAX_TOPICS", "999"),
            ("ES__STREAM__KEEPALIVE_MS", "soon"),
            ("ES__STREAM__NO_SUCH_KEY", "1"),
        ]);
        assert!(settings.is_ok(), "{:?}", settings.err());
        let dir = std::env::temp_dir().join(format!("es-other-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[stream]\nmax_topics = 999\n").unwrap();
        let settings = Settings::<Own>::load_from(STANDALONE, Some(&file), env(&[]));
        assert!(settings.is_ok(), "{:?}", settings.err());

        let error =
            Settings::<()>::load_from(STANDALONE, None, env(&[("ES__PUBLISH__LIMIT_MS", "0")]));
        assert!(error.is_ok(), "a binary not running publish ignores it");
    }

    fn origins(pairs: &[(&str, &str)]) -> Vec<String> {
        let settings = load(pairs).unwrap();
        settings.http.cors.origins().map(str::to_owned).collect()
    }

    #[test]
    fn cors_is_off_by_default_and_origins_come_as_a_comma_separated_list() {
        let settings = load(&[]).unwrap();
        assert!(settings.http.cors.allowed_origins.is_empty());
        assert!(!settings.http.cors.allow_credentials);
        assert_eq!(settings.http.cors.max_age_secs, 600);
        let key = "ES__HTTP__CORS__ALLOWED_ORIGINS";
        assert_eq!(
            origins(&[(key, "https://app.example.com, http://127.0.0.1:8080")]),
            ["https://app.example.com", "http://127.0.0.1:8080"]
        );
        assert_eq!(
            origins(&[(key, "http://[::1]:9990")]),
            ["http://[::1]:9990"]
        );
        assert_eq!(origins(&[(key, "*")]), ["*"]);
        assert!(origins(&[(key, "")]).is_empty(), "set to nothing: off");
        let settings = load(&[
            ("ES__HTTP__CORS__ALLOW_CREDENTIALS", "true"),
            ("ES__HTTP__CORS__MAX_AGE_SECS", "60"),
            (key, "https://a.example"),
        ])
        .unwrap();
        assert!(settings.http.cors.allow_credentials);
        assert_eq!(settings.http.cors.max_age_secs, 60);
    }

    #[test]
    fn cors_origins_come_from_a_file_as_a_toml_list() {
        let dir = std::env::temp_dir().join(format!("es-cors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[http.cors]\nallowed_origins = [\"https://a.example\", \"https://b.example:8443\"]\n",
        )
        .unwrap();
        let settings = Settings::<Own>::load_from(STANDALONE, Some(&file), env(&[])).unwrap();
        let origins: Vec<&str> = settings.http.cors.origins().collect();
        assert_eq!(origins, ["https://a.example", "https://b.example:8443"]);
    }

    #[test]
    fn cors_settings_that_cannot_work_stop_the_start_naming_the_key() {
        let origins = "ES__HTTP__CORS__ALLOWED_ORIGINS";
        /// The variables set, the key the error must name, and why.
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 10] = [
            (
                &[(origins, "https://a.example/")],
                "allowed_origins",
                "trailing slash",
            ),
            (
                &[(origins, "https://a.example/app")],
                "allowed_origins",
                "a path",
            ),
            (&[(origins, "a.example")], "allowed_origins", "no scheme"),
            (
                &[(origins, "https://A.example")],
                "allowed_origins",
                "uppercase",
            ),
            (
                &[(origins, "https://a.example:443")],
                "allowed_origins",
                "default port",
            ),
            (
                &[(origins, "ftp://a.example")],
                "allowed_origins",
                "not http(s)",
            ),
            (&[(origins, "null")], "allowed_origins", "the null origin"),
            (
                &[(origins, "https://a.example,*")],
                "allowed_origins",
                "* and more",
            ),
            (
                &[
                    (origins, "*"),
                    ("ES__HTTP__CORS__ALLOW_CREDENTIALS", "true"),
                ],
                "http.cors.allow_credentials",
                "* with credentials",
            ),
            (
                &[("ES__HTTP__CORS__MAX_AGE_SECS", "-1")],
                "max_age_secs",
                "a negative max-age",
            ),
        ];
        for (pairs, named, why) in cases {
            let error = load(pairs).unwrap_err().to_string();
            assert!(
                error.contains(named),
                "{why}: {error:?} should name {named}"
            );
        }
        let error = load(&[(origins, "https://a.example/")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ES__HTTP__CORS__ALLOWED_ORIGINS")
                && error.contains(r#"browsers send "https://a.example""#),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_inside_http_cors_are_named() {
        let error = load(&[("ES__HTTP__CORS__ALLOWED_ORIGIN", "https://a.example")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown key http.cors.allowed_origin ")
                && error.contains("did you mean http.cors.allowed_origins?"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let error = Settings::<Own>::load_from(
            STANDALONE,
            Some(Path::new("/nonexistent/es.toml")),
            env(&[]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("es.toml"), "{error}");
    }

    #[test]
    fn a_log_level_must_name_a_level() {
        for good in ["info", "warn,bus=debug", "DEBUG", "off"] {
            let settings =
                Settings::<()>::load_from(STANDALONE, None, env(&[("ES__LOG__LEVEL", good)]));
            assert!(settings.is_ok(), "{good}: {:?}", settings.err());
        }
        for bad in ["verbose", "info,bus", "bus=loud"] {
            let error =
                Settings::<()>::load_from(STANDALONE, None, env(&[("ES__LOG__LEVEL", bad)]))
                    .unwrap_err()
                    .to_string();
            assert!(error.contains("log.level"), "{bad}: {error}");
        }
    }

    #[test]
    fn max_connections_defaults_to_the_open_file_limit_shared_by_workers() {
        let settings = Settings::<()>::load_from(STANDALONE, None, env(&[])).unwrap();
        let limit = open_file_limit().unwrap();
        let per_worker = settings.http.max_connections_per_worker(4);
        assert_eq!(per_worker, (limit - FILE_RESERVE) / 4);
        assert!(
            per_worker * 4 < limit,
            "all workers together stay under {limit}"
        );
        let set =
            Settings::<()>::load_from(STANDALONE, None, env(&[("ES__HTTP__MAX_CONNECTIONS", "7")]))
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
    fn a_unix_socket_is_off_by_default_and_read_with_its_mode() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.http.unix_socket().unwrap(), None);
        assert_eq!(settings.http.unix_socket_mode().unwrap(), 0o660);
        let settings = load(&[
            ("ES__HTTP__UNIX_SOCKET", "/run/event-stream/ingest.sock"),
            ("ES__HTTP__UNIX_SOCKET_MODE", "600"),
        ])
        .unwrap();
        assert_eq!(
            settings.http.unix_socket().unwrap(),
            Some("/run/event-stream/ingest.sock".into())
        );
        assert_eq!(settings.http.unix_socket_mode().unwrap(), 0o600);
        // The environment's numbers are parsed as numbers first; a leading
        // zero must still mean octal.
        let settings = load(&[("ES__HTTP__UNIX_SOCKET_MODE", "0666")]).unwrap();
        assert_eq!(settings.http.unix_socket_mode().unwrap(), 0o666);
    }

    #[test]
    fn a_socket_mode_in_a_file_is_a_quoted_string_never_a_toml_number() {
        let dir = std::env::temp_dir().join(format!("es-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        let from_file = |mode: &str| {
            std::fs::write(&file, format!("[http]\nunix_socket_mode = {mode}\n")).unwrap();
            Settings::<Own>::load_from(STANDALONE, Some(&file), env(&[]))
        };
        let quoted = from_file("\"640\"").unwrap();
        assert_eq!(quoted.http.unix_socket_mode().unwrap(), 0o640);
        // 0o660 is the integer 432, which the settings would read as the
        // octal text "432": other users could connect.
        for number in ["0o660", "660"] {
            let error = from_file(number).unwrap_err().to_string();
            assert!(
                error.contains("http.unix_socket_mode") && error.contains("quoted"),
                "{number}: {error}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_buffered_lines_is_bounded_both_ways() {
        let most = crate::settings::MAX_BUFFERED_LINES.to_string();
        assert!(load(&[("ES__LOG__BUFFERED_LINES", most.as_str())]).is_ok());
        let over = (crate::settings::MAX_BUFFERED_LINES + 1).to_string();
        for value in ["0", over.as_str(), "1000000000000"] {
            let error = load(&[("ES__LOG__BUFFERED_LINES", value)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("log.buffered_lines"), "{value}: {error}");
        }
    }

    #[test]
    fn a_unix_socket_that_cannot_work_stops_the_start_naming_the_key() {
        let longest = format!("/{}", "s".repeat(106));
        assert!(
            load(&[("ES__HTTP__UNIX_SOCKET", longest.as_str())]).is_ok(),
            "107 bytes fit"
        );
        let too_long = format!("/{}", "s".repeat(107));
        let cases = [
            (
                ("ES__HTTP__UNIX_SOCKET", "run/ingest.sock"),
                "http.unix_socket",
                "absolute",
            ),
            (
                ("ES__HTTP__UNIX_SOCKET", too_long.as_str()),
                "http.unix_socket",
                "at most 107",
            ),
            (
                ("ES__HTTP__UNIX_SOCKET_MODE", "888"),
                "http.unix_socket_mode",
                "octal",
            ),
            (
                ("ES__HTTP__UNIX_SOCKET_MODE", "1777"),
                "http.unix_socket_mode",
                "777",
            ),
            (
                ("ES__HTTP__UNIX_SOCKET_MODE", "rw-rw----"),
                "http.unix_socket_mode",
                "octal",
            ),
            (
                ("ES__HTTP__UNIX_SOCKET_MODE", ""),
                "http.unix_socket_mode",
                "octal",
            ),
            (
                ("ES__HTTP__UNIX_SOCKET_MODE", "-1"),
                "http.unix_socket_mode",
                "octal",
            ),
            // Without the owner's write bit a leftover socket could not be
            // told from a live one at the next start.
            (
                ("ES__HTTP__UNIX_SOCKET_MODE", "440"),
                "http.unix_socket_mode",
                "owner's write bit",
            ),
            (
                ("ES__HTTP__UNIX_SOCKET_MODE", "0"),
                "http.unix_socket_mode",
                "owner's write bit",
            ),
        ];
        for ((key, value), named, why) in cases {
            let error = load(&[(key, value)]).unwrap_err().to_string();
            assert!(
                error.contains(named) && error.contains(why),
                "{key}={value}: {error:?} should name {named} and say {why:?}"
            );
        }
    }
}
