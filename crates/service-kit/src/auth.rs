//! The `auth` section, and the one access decision both services make with
//! it: may this request publish to this topic, may it read these topics.
//!
//! Publishing is open or needs a token (`auth.publish`); reading a topic is
//! open unless the topic matches `auth.private_topics`. Tokens are the
//! `access` crate's: verified by one [`Verifier`] built at start, so a bad
//! key, file or pattern stops the start naming its key. Key material never
//! reaches a log line or an error: [`Secrets`] prints its length only, and
//! an error about a secret names its entry's position.
//!
//! A key entry may name its `kid`: `KID=SECRET` in `auth.hs256_secrets`,
//! `KID=PATH` in `auth.public_key_files` (split at the first `=`; a secret
//! containing `=` must therefore be given a kid). Tokens naming a kid use
//! that key; tokens without one try the keys without one, in turn.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

pub use access::Grant;
use access::{
    Algorithm, KeyConfig, KeySource, TokenError, TokenSources, TopicPatterns, Verifier,
    VerifierConfig,
};
use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use serde::Deserialize;

use crate::error::SettingsError;
use crate::section::rule;

/// Who may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Anyone who reaches the service (the standalone default: the
    /// tutorial's curl works as written).
    Open,
    /// Only a request with a token whose publish claim covers the topic.
    Token,
}

/// A list of secrets that never prints them.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secrets(pub Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} entries)", self.0.len())
    }
}

/// `[auth]` in a file, `ES__AUTH__<KEY>` in the environment; lists from the
/// environment are comma-separated.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// `open` or `token`.
    pub publish: PublishMode,
    /// Topic patterns (`chat.room-1`, `chat.*`, `*`) that only a token's
    /// subscribe claim opens; every other topic is public.
    pub private_topics: Vec<String>,
    /// The one algorithm tokens are signed with: `HS256`, `RS256`, `ES256`.
    pub algorithm: Algorithm,
    /// HS256 secrets (at least 32 bytes each), `SECRET` or `KID=SECRET`.
    pub hs256_secrets: Secrets,
    /// RS256/ES256 public keys as PEM files, `PATH` or `KID=PATH`.
    pub public_key_files: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// When not empty, a token's `aud` must name it.
    pub audience: String,
    /// When not empty, a token's `iss` must equal it.
    pub issuer: String,
    /// The cookie a browser's `EventSource` (`withCredentials`) carries the
    /// token in.
    pub cookie_name: String,
    /// Longer tokens are refused before any parsing.
    pub max_token_bytes: usize,
}

/// Built-in defaults of `[auth]`; the README's table of keys mirrors them.
pub(crate) const DEFAULTS: &str = r#"
[auth]
publish = "open"
private_topics = []
algorithm = "HS256"
hs256_secrets = []
public_key_files = []
leeway_secs = 5
audience = ""
issuer = ""
cookie_name = "es_token"
max_token_bytes = 4096
"#;

/// The `auth` keys read from the environment as comma-separated lists.
pub(crate) const LIST_KEYS: [&str; 3] = [
    "auth.private_topics",
    "auth.hs256_secrets",
    "auth.public_key_files",
];

/// A list's entries, trimmed, empty ones dropped (so `a, b` and a variable
/// set to nothing both work from the environment).
fn entries(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter().map(|e| e.trim()).filter(|e| !e.is_empty())
}

/// `KID=VALUE` or `VALUE`.
fn split_kid(entry: &str) -> (Option<&str>, &str) {
    match entry.split_once('=') {
        Some((kid, value)) => (Some(kid.trim()), value.trim()),
        None => (None, entry),
    }
}

impl AuthSettings {
    /// Checks every rule and builds the access decision: keys read and
    /// checked, patterns parsed. The error names the key, a file by its
    /// path, a secret by its position only.
    pub fn access(&self) -> Result<Access, SettingsError> {
        let private = TopicPatterns::parse(entries(&self.private_topics))
            .map_err(|error| rule("auth.private_topics", error.to_string()))?;
        if self.cookie_name.trim().is_empty()
            || !self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(rule(
                "auth.cookie_name",
                "must be 1 or more of A-Z, a-z, 0-9, '_', '-', '.'",
            ));
        }
        let secrets: Vec<&str> = entries(&self.hs256_secrets.0).collect();
        let files: Vec<&str> = entries(&self.public_key_files).collect();
        let (keys, names) = match self.algorithm {
            Algorithm::HS256 => {
                if !files.is_empty() {
                    return Err(rule(
                        "auth.public_key_files",
                        "is for RS256 and ES256; HS256 verifies with auth.hs256_secrets",
                    ));
                }
                secret_keys(&secrets)?
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                if !secrets.is_empty() {
                    return Err(rule(
                        "auth.hs256_secrets",
                        format!(
                            "is for HS256; {} verifies with auth.public_key_files",
                            self.algorithm
                        ),
                    ));
                }
                pem_keys(&files)?
            }
        };
        let needs_keys = self.publish == PublishMode::Token || !private.is_empty();
        let key_name = match self.algorithm {
            Algorithm::HS256 => "auth.hs256_secrets",
            _ => "auth.public_key_files",
        };
        if keys.is_empty() {
            if needs_keys {
                return Err(rule(
                    key_name,
                    "is empty, but auth.publish = \"token\" or auth.private_topics needs \
                     at least one key to verify tokens with",
                ));
            }
            return Ok(Access::open());
        }
        let config = VerifierConfig {
            algorithm: self.algorithm,
            keys,
            leeway_secs: self.leeway_secs,
            audience: Some(self.audience.trim().to_owned()).filter(|a| !a.is_empty()),
            issuer: Some(self.issuer.trim().to_owned()).filter(|i| !i.is_empty()),
            max_token_bytes: self.max_token_bytes,
        };
        let verifier = Verifier::new(config).map_err(|error| {
            let mut why = error.to_string();
            for (index, name) in names.iter().enumerate() {
                why = why.replace(&format!("keys[{index}]"), name);
            }
            let key = match error {
                access::ConfigError::Leeway(_) => "auth.leeway_secs",
                access::ConfigError::MaxTokenBytes(_) => "auth.max_token_bytes",
                _ => key_name,
            };
            rule(key, why)
        })?;
        Ok(Access {
            publish_needs_token: self.publish == PublishMode::Token,
            private: Arc::new(private),
            verifier: Some(Arc::new(verifier)),
            sources: TokenSources::new(self.cookie_name.trim(), self.max_token_bytes),
        })
    }
}

/// The HS256 keys, and how an error names each: by position, never by value.
fn secret_keys(secrets: &[&str]) -> Result<(Vec<KeyConfig>, Vec<String>), SettingsError> {
    let mut keys = Vec::new();
    let mut names = Vec::new();
    for (index, entry) in secrets.iter().enumerate() {
        let (kid, secret) = split_kid(entry);
        let name = format!("entry {}", index + 1);
        if secret.is_empty() || kid.is_some_and(str::is_empty) {
            return Err(rule(
                "auth.hs256_secrets",
                format!(
                    "{name} is KID=SECRET with an empty part; a secret containing '=' \
                     needs a kid in front (KID=SECRET)"
                ),
            ));
        }
        keys.push(KeyConfig {
            kid: kid.map(str::to_owned),
            key: KeySource::Secret(secret.as_bytes().to_vec()),
        });
        names.push(name);
    }
    Ok((keys, names))
}

/// The PEM keys, read from their files; an error names the file.
fn pem_keys(files: &[&str]) -> Result<(Vec<KeyConfig>, Vec<String>), SettingsError> {
    let mut keys = Vec::new();
    let mut names = Vec::new();
    for entry in files {
        let (kid, path) = split_kid(entry);
        if path.is_empty() || kid.is_some_and(str::is_empty) {
            return Err(rule(
                "auth.public_key_files",
                format!("{entry:?} is KID=PATH with an empty part"),
            ));
        }
        let pem = std::fs::read_to_string(path).map_err(|error| {
            rule(
                "auth.public_key_files",
                format!("cannot read {path:?}: {error}"),
            )
        })?;
        keys.push(KeyConfig {
            kid: kid.map(str::to_owned),
            key: KeySource::Pem(pem),
        });
        names.push(format!("{path:?}"));
    }
    Ok((keys, names))
}

/// Why a request was refused access. Every one is permanent: the same
/// request is refused again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no token where one is needed.
    Missing,
    /// 401: the token was refused; says why.
    Invalid(TokenError),
    /// 403: a valid token that does not cover the topics.
    NotCovered,
}

impl Refusal {
    /// 401 for a missing or refused token, 403 for one that does not cover.
    pub fn status(self) -> StatusCode {
        match self {
            Self::NotCovered => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// A JSend `fail` with `message`, its status, and for a 401 the
    /// `WWW-Authenticate` challenge (RFC 6750 §3): `Bearer`, with
    /// `error="invalid_token"` when a token was sent and refused.
    pub fn answer(self, message: &str) -> HttpResponse {
        let mut response = shared_types::jsend::fail(self.status(), message);
        let challenge = match self {
            Self::Missing => Some("Bearer"),
            Self::Invalid(_) => Some(r#"Bearer error="invalid_token""#),
            Self::NotCovered => None,
        };
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }

    /// A stable label for logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid(error) => error.label(),
            Self::NotCovered => "not-covered",
        }
    }
}

/// The access decision, built once from `[auth]`; cheap to clone.
#[derive(Clone)]
pub struct Access {
    publish_needs_token: bool,
    private: Arc<TopicPatterns>,
    /// `None` when no key is configured: everything is open.
    verifier: Option<Arc<Verifier>>,
    sources: TokenSources,
}

impl fmt::Debug for Access {
    /// Without the verifier: its keys' debug form holds key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("publish_needs_token", &self.publish_needs_token)
            .field("private", &self.private)
            .field(
                "algorithm",
                &self.verifier.as_ref().map(|verifier| verifier.algorithm()),
            )
            .field("sources", &self.sources)
            .finish()
    }
}

impl Access {
    /// Everything open: no token is ever asked for.
    pub fn open() -> Self {
        Self {
            publish_needs_token: false,
            private: Arc::new(TopicPatterns::none()),
            verifier: None,
            sources: TokenSources::new("es_token", access::DEFAULT_MAX_TOKEN_BYTES),
        }
    }

    /// The grant of a publish request's token, `None` when publishing is
    /// open; the caller checks the topic with [`Grant::may_publish`] once
    /// the body is read (a request without a valid token hears 401 before
    /// anything about its body). Only the `Authorization: Bearer` header
    /// carries a publish token: a cookie would let any page a signed-in
    /// browser visits publish with it (a cross-site form sends cookies),
    /// and a query string ends up in logs.
    pub fn publish_grant(&self, headers: &HeaderMap) -> Result<Option<Grant>, Refusal> {
        if !self.publish_needs_token {
            return Ok(None);
        }
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(access::bearer)
            .ok_or(Refusal::Missing)?;
        self.verify(token).map(Some)
    }

    /// May this request read `topics`? Only if none is private, or its
    /// token (header, cookie or `access_token` query parameter) covers
    /// every private one. Returns the token's expiry (seconds since the
    /// epoch) when a token opened a private topic: the stream ends then.
    /// A subscription of public topics only ignores any token it carries.
    pub fn may_subscribe(
        &self,
        headers: &HeaderMap,
        query: &str,
        topics: &[String],
    ) -> Result<Option<u64>, Refusal> {
        let private: Vec<&String> = topics
            .iter()
            .filter(|topic| self.private.covers(topic))
            .collect();
        if private.is_empty() {
            return Ok(None);
        }
        let authorization = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let cookies = headers
            .get_all(COOKIE)
            .filter_map(|value| value.to_str().ok());
        let found = self
            .sources
            .find(authorization, cookies, Some(query))
            .ok_or(Refusal::Missing)?;
        let grant = self.verify(&found.token)?;
        if grant.may_subscribe(&private) {
            Ok(Some(grant.expires_at))
        } else {
            Err(Refusal::NotCovered)
        }
    }

    fn verify(&self, token: &str) -> Result<Grant, Refusal> {
        let verifier = self.verifier.as_ref().ok_or(Refusal::Missing)?;
        verifier
            .verify(token, SystemTime::now())
            .map_err(Refusal::Invalid)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;
    use crate::Settings;
    use crate::loader::environment;
    use crate::settings::{BinaryDefaults, Engine};

    const DEFAULTS: BinaryDefaults = BinaryDefaults {
        name: "event-stream",
        port: 9990,
        engine: Engine::Memory,
    };
    const SECRET: &str = "a-secret-of-the-auth-settings-tests-0123";

    /// Environment variables, as pairs.
    type Env<'a> = &'a [(&'a str, &'a str)];

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::load_from(DEFAULTS, None, Some(environment(pairs)))
    }

    fn load_error(pairs: &[(&str, &str)]) -> String {
        load(pairs).unwrap_err().to_string()
    }

    /// A directory of this test's own.
    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("es-auth-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// An EC P-256 key pair made by `openssl`: (private PEM, public PEM).
    fn ec_pair() -> (String, String) {
        let private = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .output()
            .expect("openssl runs (Debian: apt-get install openssl)");
        let private = String::from_utf8(private.stdout).unwrap();
        let dir = dir("pair");
        let file = dir.join("private.pem");
        std::fs::write(&file, &private).unwrap();
        let public = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&file)
            .output()
            .unwrap();
        (private, String::from_utf8(public.stdout).unwrap())
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    fn mint(key: &KeySource, algorithm: Algorithm, publish: &[&str], subscribe: &[&str]) -> String {
        let mut claims = access::Claims::new(4_102_444_800);
        claims.event_stream = Some(access::Permissions {
            publish: TopicPatterns::parse(publish).unwrap(),
            subscribe: TopicPatterns::parse(subscribe).unwrap(),
        });
        access::mint(&claims, key, algorithm, None).unwrap()
    }

    #[test]
    fn everything_is_open_by_default() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.auth.publish, PublishMode::Open);
        assert_eq!(settings.auth.cookie_name, "es_token");
        assert_eq!(settings.auth.leeway_secs, 5);
        assert_eq!(settings.auth.max_token_bytes, 4096);
        let access = settings.access;
        assert!(access.publish_grant(&HeaderMap::new()).unwrap().is_none());
        assert_eq!(
            access.may_subscribe(&HeaderMap::new(), "", &["chat.x".into()]),
            Ok(None)
        );
    }

    #[test]
    fn token_mode_and_private_topics_come_from_the_environment_and_decide() {
        let settings = load(&[
            ("ES__AUTH__PUBLISH", "token"),
            ("ES__AUTH__PRIVATE_TOPICS", "chat.*, staff"),
            (
                "ES__AUTH__HS256_SECRETS",
                &format!("old=x{SECRET}, {SECRET}"),
            ),
        ])
        .unwrap();
        assert_eq!(
            entries(&settings.auth.private_topics).collect::<Vec<_>>(),
            ["chat.*", "staff"]
        );
        let access = settings.access;
        let key = KeySource::Secret(SECRET.as_bytes().to_vec());
        let token = mint(&key, Algorithm::HS256, &["news"], &["chat.*"]);
        assert_eq!(
            access.publish_grant(&HeaderMap::new()).unwrap_err(),
            Refusal::Missing
        );
        let grant = access.publish_grant(&bearer(&token)).unwrap().unwrap();
        assert!(grant.may_publish("news") && !grant.may_publish("chat.x"));
        assert_eq!(
            access.publish_grant(&bearer("a.b.c")).unwrap_err(),
            Refusal::Invalid(TokenError::Malformed)
        );
        let topics = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            access.may_subscribe(&HeaderMap::new(), "", &topics(&["news"])),
            Ok(None),
            "a public topic needs no token"
        );
        assert_eq!(
            access.may_subscribe(&HeaderMap::new(), "", &topics(&["news", "chat.x"])),
            Err(Refusal::Missing)
        );
        assert_eq!(
            access.may_subscribe(
                &HeaderMap::new(),
                &format!("topic=chat.x&access_token={token}"),
                &topics(&["news", "chat.x"])
            ),
            Ok(Some(4_102_444_800))
        );
        assert_eq!(
            access.may_subscribe(&bearer(&token), "", &topics(&["chat.x", "staff"])),
            Err(Refusal::NotCovered)
        );
        let mut cookie = HeaderMap::new();
        cookie.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=1; es_token={token}")).unwrap(),
        );
        assert_eq!(
            access.may_subscribe(&cookie, "", &topics(&["chat.x"])),
            Ok(Some(4_102_444_800))
        );
        // The kid names the first secret.
        let kid_token = access::mint(
            &access::Claims {
                event_stream: Some(access::Permissions {
                    publish: TopicPatterns::parse(["news"]).unwrap(),
                    subscribe: TopicPatterns::none(),
                }),
                ..access::Claims::new(4_102_444_800)
            },
            &KeySource::Secret(format!("x{SECRET}").into_bytes()),
            Algorithm::HS256,
            Some("old"),
        )
        .unwrap();
        assert!(access.publish_grant(&bearer(&kid_token)).unwrap().is_some());
    }

    #[test]
    fn each_rule_stops_the_start_naming_its_key_and_never_the_secret() {
        let short = "short-secret-0123456789";
        let cases: [(Env, &str, &str); 9] = [
            (
                &[("ES__AUTH__PUBLISH", "token")],
                "auth.hs256_secrets",
                "needs at least one key",
            ),
            (
                &[("ES__AUTH__PRIVATE_TOPICS", "chat.*")],
                "auth.hs256_secrets",
                "needs at least one key",
            ),
            (
                &[
                    ("ES__AUTH__ALGORITHM", "ES256"),
                    ("ES__AUTH__PRIVATE_TOPICS", "a"),
                ],
                "auth.public_key_files",
                "needs at least one key",
            ),
            (
                &[("ES__AUTH__PRIVATE_TOPICS", "chat room")],
                "auth.private_topics",
                "a topic pattern is",
            ),
            (
                &[("ES__AUTH__PRIVATE_TOPICS", "a*b")],
                "auth.private_topics",
                "a topic pattern is",
            ),
            (
                &[("ES__AUTH__HS256_SECRETS", short)],
                "auth.hs256_secrets",
                "entry 1: an HS256 secret must be at least 32 bytes",
            ),
            (&[("ES__AUTH__PUBLISH", "sometimes")], "auth.publish", ""),
            (&[("ES__AUTH__ALGORITHM", "none")], "auth.algorithm", ""),
            (&[("ES__AUTH__COOKIE_NAME", "a b")], "auth.cookie_name", ""),
        ];
        for (pairs, key, says) in cases {
            let error = load_error(pairs);
            assert!(
                error.contains(key) && error.contains(says),
                "{pairs:?}: {error}"
            );
            assert!(!error.contains(short), "{error}");
        }
        let error = load_error(&[
            ("ES__AUTH__HS256_SECRETS", SECRET),
            ("ES__AUTH__LEEWAY_SECS", "3600"),
        ]);
        assert!(error.contains("auth.leeway_secs"), "{error}");
        let error = load_error(&[("ES__AUTH__HS256_SECRETS", "kid=")]);
        assert!(
            error.contains("entry 1 is KID=SECRET with an empty part"),
            "{error}"
        );
        let error = load_error(&[("ES__AUTH__PUBLIC_KEY_FILES", "/x.pem")]);
        assert!(
            error.contains("auth.public_key_files") && error.contains("HS256"),
            "{error}"
        );
        let error = load_error(&[("ES__AUTH__UNKNOWN", "1")]);
        assert!(error.contains("unknown key auth.unknown"), "{error}");
    }

    #[test]
    fn public_key_files_are_read_and_checked_naming_the_file_never_the_key() {
        let (private, public) = ec_pair();
        let dir = dir("pem");
        let good = dir.join("public.pem");
        std::fs::write(&good, &public).unwrap();
        let private_file = dir.join("private.pem");
        std::fs::write(&private_file, &private).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        let missing = dir.join("missing.pem");
        let es256 = |files: &str| {
            load(&[
                ("ES__AUTH__ALGORITHM", "ES256"),
                ("ES__AUTH__PRIVATE_TOPICS", "chat.*"),
                ("ES__AUTH__PUBLIC_KEY_FILES", files),
            ])
        };
        let access = es256(&format!("k1={}", good.display())).unwrap().access;
        let token = access::mint(
            &access::Claims {
                event_stream: Some(access::Permissions {
                    publish: TopicPatterns::none(),
                    subscribe: TopicPatterns::parse(["chat.*"]).unwrap(),
                }),
                ..access::Claims::new(4_102_444_800)
            },
            &KeySource::Pem(private.clone()),
            Algorithm::ES256,
            Some("k1"),
        )
        .unwrap();
        assert_eq!(
            access.may_subscribe(&bearer(&token), "", &["chat.a".to_owned()]),
            Ok(Some(4_102_444_800))
        );
        for (file, says) in [
            (&missing, "cannot read"),
            (&garbage, "is not a PEM public key"),
            (&private_file, "is a private key"),
        ] {
            let error = es256(&file.display().to_string()).unwrap_err().to_string();
            assert!(
                error.contains("auth.public_key_files")
                    && error.contains(&file.display().to_string())
                    && error.contains(says),
                "{error}"
            );
            assert!(
                !error.contains("BEGIN") && !error.contains(&private[40..80]),
                "{error}"
            );
        }
        let error = load(&[
            ("ES__AUTH__ALGORITHM", "RS256"),
            ("ES__AUTH__PUBLISH", "token"),
            ("ES__AUTH__PUBLIC_KEY_FILES", &good.display().to_string()),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("is an EC key, which RS256 cannot use"),
            "{error}"
        );
    }

    #[test]
    fn settings_never_print_a_secret() {
        let settings = load(&[("ES__AUTH__HS256_SECRETS", SECRET)]).unwrap();
        let printed = format!("{settings:?}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(printed.contains("Secrets(1 entries)"), "{printed}");
        let bytes = format!("{:?}", SECRET.as_bytes());
        assert!(!printed.contains(&bytes[1..40]), "{printed}");
    }
}
