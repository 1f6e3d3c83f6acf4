//! `mint-token`: prints a token for a client, signed with a key the
//! services accept.
//!
//! ```text
//! event-stream mint-token --secret-env ES_TOKEN_SECRET \
//!     --publish 'chat.*' --subscribe 'chat.*' --ttl 3600 [--sub NAME] [--kid KID]
//! event-stream mint-token --algorithm ES256 --key-file private.pem --subscribe 'chat.*'
//! ```
//!
//! The HS256 secret is read from an environment variable, never from the
//! command line (which other users of the machine can see).

use std::time::{SystemTime, UNIX_EPOCH};

use access::{Algorithm, Audience, Claims, KeySource, Permissions, TopicPatterns};

use crate::error::SettingsError;

/// What `mint-token` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintArgs {
    pub algorithm: Algorithm,
    /// The environment variable holding the HS256 secret.
    pub secret_env: Option<String>,
    /// The PEM private key (RS256, ES256).
    pub key_file: Option<String>,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
    pub sub: Option<String>,
    pub kid: Option<String>,
    pub aud: Option<String>,
    pub iss: Option<String>,
}

/// Usage of `mint-token`, for `--help` and errors.
pub const USAGE: &str = "mint-token (--secret-env VAR | --algorithm RS256|ES256 --key-file PEM) \
[--publish PATTERN]... [--subscribe PATTERN]... [--ttl SECS] [--sub SUBJECT] [--kid KID] \
[--aud AUDIENCE] [--iss ISSUER]";

impl MintArgs {
    /// Parses the arguments after `mint-token`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, SettingsError> {
        let usage = |why: String| SettingsError::Usage(format!("{why}; usage: {USAGE}"));
        let mut parsed = MintArgs {
            algorithm: Algorithm::HS256,
            secret_env: None,
            key_file: None,
            publish: Vec::new(),
            subscribe: Vec::new(),
            ttl_secs: 3600,
            sub: None,
            kid: None,
            aud: None,
            iss: None,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| usage(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--algorithm" => {
                    parsed.algorithm = value()?.parse().map_err(usage)?;
                }
                "--secret-env" => parsed.secret_env = Some(value()?),
                "--key-file" => parsed.key_file = Some(value()?),
                "--publish" => parsed.publish.push(value()?),
                "--subscribe" => parsed.subscribe.push(value()?),
                "--ttl" => {
                    let ttl = value()?;
                    parsed.ttl_secs = ttl.parse().ok().filter(|ttl| *ttl > 0).ok_or_else(|| {
                        usage(format!("--ttl {ttl:?} is not a positive number of seconds"))
                    })?;
                }
                "--sub" => parsed.sub = Some(value()?),
                "--kid" => parsed.kid = Some(value()?),
                "--aud" => parsed.aud = Some(value()?),
                "--iss" => parsed.iss = Some(value()?),
                other => return Err(usage(format!("unknown argument {other:?}"))),
            }
        }
        match (parsed.algorithm, &parsed.secret_env, &parsed.key_file) {
            (Algorithm::HS256, Some(_), None) => Ok(parsed),
            (Algorithm::RS256 | Algorithm::ES256, None, Some(_)) => Ok(parsed),
            (Algorithm::HS256, _, _) => Err(usage(
                "HS256 needs --secret-env VAR and no --key-file".into(),
            )),
            _ => Err(usage(format!(
                "{} needs --key-file PEM and no --secret-env",
                parsed.algorithm
            ))),
        }
    }

    /// The token, signed as asked, valid from now for `ttl_secs`. `env`
    /// reads an environment variable (the process's own in the binary).
    pub fn mint(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        let key = match (&self.secret_env, &self.key_file) {
            (Some(var), _) => KeySource::Secret(
                env(var)
                    .filter(|secret| !secret.is_empty())
                    .ok_or_else(|| format!("the environment variable {var} is not set"))?
                    .into_bytes(),
            ),
            (None, Some(file)) => KeySource::Pem(
                std::fs::read_to_string(file)
                    .map_err(|error| format!("cannot read {file:?}: {error}"))?,
            ),
            (None, None) => return Err(format!("no key; usage: {USAGE}")),
        };
        let patterns = |list: &[String], flag: &str| {
            TopicPatterns::parse(list).map_err(|error| format!("{flag}: {error}"))
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut claims = Claims::new(now.saturating_add(self.ttl_secs));
        claims.iat = Some(now);
        claims.sub = self.sub.clone();
        claims.iss = self.iss.clone();
        claims.aud = self.aud.clone().map(Audience::One);
        claims.event_stream = Some(Permissions {
            publish: patterns(&self.publish, "--publish")?,
            subscribe: patterns(&self.subscribe, "--subscribe")?,
        });
        access::mint(&claims, &key, self.algorithm, self.kid.as_deref())
            .map_err(|error| error.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use access::{KeyConfig, Verifier, VerifierConfig};

    use super::*;

    const SECRET: &str = "a-secret-for-the-mint-token-test-0123456789";

    fn args(list: &[&str]) -> Result<MintArgs, SettingsError> {
        MintArgs::parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn a_minted_token_verifies_and_grants_what_was_asked() {
        let asked = args(&[
            "--secret-env",
            "SECRET",
            "--publish",
            "chat.*",
            "--subscribe",
            "chat.*",
            "--subscribe",
            "news",
            "--ttl",
            "60",
            "--sub",
            "reader-1",
        ])
        .unwrap();
        let token = asked
            .mint(|var| (var == "SECRET").then(|| SECRET.to_owned()))
            .unwrap();
        let verifier = Verifier::new(VerifierConfig::new(
            Algorithm::HS256,
            vec![KeyConfig {
                kid: None,
                key: KeySource::Secret(SECRET.as_bytes().to_vec()),
            }],
        ))
        .unwrap();
        let grant = verifier.verify(&token, SystemTime::now()).unwrap();
        assert!(grant.may_publish("chat.room-1"));
        assert!(!grant.may_publish("news"));
        assert!(grant.may_subscribe(&["chat.x", "news"]));
        assert_eq!(grant.subject.as_deref(), Some("reader-1"));
        let later = SystemTime::now() + Duration::from_secs(60 + 6);
        assert!(
            verifier.verify(&token, later).is_err(),
            "the ttl is the lifetime"
        );
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        for (list, says) in [
            (&[][..], "HS256 needs --secret-env"),
            (&["--secret-env"], "--secret-env needs a value"),
            (&["--secret-env", "S", "--ttl", "0"], "--ttl \"0\""),
            (
                &["--secret-env", "S", "--bogus"],
                "unknown argument \"--bogus\"",
            ),
            (
                &["--algorithm", "ES256", "--secret-env", "S"],
                "ES256 needs --key-file",
            ),
            (&["--algorithm", "none"], "must be HS256, RS256 or ES256"),
        ] {
            let error = args(list).unwrap_err().to_string();
            assert!(error.contains(says), "{list:?}: {error}");
        }
        let asked = args(&["--secret-env", "MISSING", "--publish", "bad topic"]).unwrap();
        assert!(
            asked
                .mint(|_| None)
                .unwrap_err()
                .contains("MISSING is not set")
        );
        let asked = args(&["--secret-env", "S", "--publish", "bad topic"]).unwrap();
        let error = asked.mint(|_| Some(SECRET.to_owned())).unwrap_err();
        assert!(error.starts_with("--publish:"), "{error}");
        let asked = args(&["--secret-env", "S"]).unwrap();
        let error = asked.mint(|_| Some("short".to_owned())).unwrap_err();
        assert!(
            error.contains("at least 32 bytes") && !error.contains("short"),
            "{error}"
        );
    }
}
