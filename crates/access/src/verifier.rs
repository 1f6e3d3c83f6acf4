//! Verifies a token into a [`Grant`].
//!
//! The order of the checks is the order of their cost, and each refusal has
//! its own [`TokenError`]:
//! 1. size, before anything is parsed (`too-long`);
//! 2. shape: three dot-separated parts, a base64url JSON header (`malformed`);
//! 3. the header's `alg` equals the pinned algorithm (`wrong-algorithm`):
//!    `none` and algorithm confusion end here, before any key is touched;
//! 4. the key: the one the header's `kid` names (`unknown-key`), or, without
//!    a `kid`, each key configured without one in turn (rotation; at most
//!    [`MAX_KEYS`] tries), and the signature (`bad-signature`);
//! 5. the payload is base64url JSON (`malformed`) and its claims parse as a
//!    whole (`claims-malformed`);
//! 6. `aud` and `iss` when configured (`wrong-audience`, `wrong-issuer`);
//! 7. `exp` and `nbf` against `now`, with the leeway (`expired`, `not-yet-valid`).
//!
//! `jsonwebtoken` checks the signature (`crypto::verify`) and reads the
//! keys. The claims are checked here: its `decode` reads the clock itself,
//! where ours is a parameter, and reports a claim of the wrong type in a way
//! that cannot be told from a payload that is not JSON.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use crate::claims::{Audience, Claims, MAX_SUBJECT_LEN};
use crate::grant::Grant;
use crate::key::{Algorithm, KeyConfig, KeySource, MIN_SECRET_BYTES, PemKind, pem_label};

/// Most keys one verifier holds. It bounds the signature checks a token
/// without `kid` costs.
pub const MAX_KEYS: usize = 16;
/// Clock skew tolerated on `exp` and `nbf`, in seconds, unless configured.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
/// Most leeway that may be configured: past this a revoked-by-expiry token
/// lives on noticeably.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Longest token accepted, in bytes, unless configured. A token with 64
/// patterns in each list fits.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 4096;
/// Bounds on `max_token_bytes`: below, no real token fits; above, a header
/// or a query string that big is refused earlier anyway.
pub const TOKEN_BYTES_RANGE: std::ops::RangeInclusive<usize> = 256..=65536;

/// How a verifier is built: plain data, so settings can fill it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// The one algorithm tokens must be signed with.
    pub algorithm: Algorithm,
    /// The accepted keys, 1 to [`MAX_KEYS`], all for `algorithm`.
    pub keys: Vec<KeyConfig>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// When set, a token's `aud` must name it.
    pub audience: Option<String>,
    /// When set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// Longer tokens are refused before any parsing.
    pub max_token_bytes: usize,
}

impl VerifierConfig {
    /// A config with the default leeway and size, and no `aud`/`iss` check.
    pub fn new(algorithm: Algorithm, keys: Vec<KeyConfig>) -> Self {
        Self {
            algorithm,
            keys,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            audience: None,
            issuer: None,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

/// Why a config cannot build a verifier; each names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An empty key list would refuse every token.
    #[error("no keys: at least one key is required")]
    NoKeys,
    /// Bounds the tries for a token without `kid`.
    #[error("{0} keys: at most {MAX_KEYS} are accepted")]
    TooManyKeys(usize),
    /// Two keys answer to one `kid`.
    #[error("kid {0:?} names two keys")]
    DuplicateKid(String),
    /// A secret too short to resist guessing.
    #[error(
        "keys[{index}]: an HS256 secret must be at least {MIN_SECRET_BYTES} bytes, this one has {len}"
    )]
    ShortSecret {
        /// Position in the key list.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A key of another algorithm family than the pinned one.
    #[error("keys[{index}] is {found}, which {algorithm} cannot use")]
    WrongFamily {
        /// Position in the key list.
        index: usize,
        /// What the key is (`a secret`, `an RSA key`, ...).
        found: &'static str,
        /// The pinned algorithm.
        algorithm: Algorithm,
    },
    /// A private key where the public one belongs.
    #[error(
        "keys[{index}] is a private key: verifying needs the public key (openssl pkey -pubout)"
    )]
    PrivateKey {
        /// Position in the key list.
        index: usize,
    },
    /// Not a PEM public key at all.
    #[error("keys[{index}] is not a PEM public key")]
    BadPem {
        /// Position in the key list.
        index: usize,
    },
    /// A key of the right family the algorithm still cannot use (for ES256,
    /// a curve other than P-256).
    #[error("keys[{index}] cannot verify {algorithm} signatures (ES256 needs a P-256 key)")]
    Unusable {
        /// Position in the key list.
        index: usize,
        /// The pinned algorithm.
        algorithm: Algorithm,
    },
    /// Leeway out of bounds.
    #[error("leeway_secs is {0}: at most {MAX_LEEWAY_SECS}")]
    Leeway(u64),
    /// Token size bound out of bounds.
    #[error("max_token_bytes is {0}: it must be 256 to 65536")]
    MaxTokenBytes(usize),
}

/// Why a token was refused. Every variant is a 401 for the services; the
/// message is what the client is told (no internal detail, never the token
/// itself), the label is what metrics and logs record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{}", self.message())]
pub enum TokenError {
    /// Longer than `max_token_bytes`; refused before parsing.
    TooLong,
    /// Not three base64url parts, or a header or payload that is not JSON.
    Malformed,
    /// The header's `alg` is not the pinned algorithm (`none` included).
    WrongAlgorithm,
    /// The header's `kid` names no configured key, or no key fits a token
    /// without `kid`.
    UnknownKey,
    /// No key verifies the signature.
    BadSignature,
    /// Signed, but a claim does not parse (or `exp` is missing).
    ClaimsMalformed,
    /// `exp` (plus the leeway) is past.
    Expired,
    /// `nbf` (minus the leeway) is still ahead.
    NotYetValid,
    /// `aud` is missing or does not name the configured audience.
    WrongAudience,
    /// `iss` is missing or is not the configured issuer.
    WrongIssuer,
}

impl TokenError {
    /// Every refusal, for metrics that register their label values up front.
    pub const ALL: [TokenError; 10] = [
        Self::TooLong,
        Self::Malformed,
        Self::WrongAlgorithm,
        Self::UnknownKey,
        Self::BadSignature,
        Self::ClaimsMalformed,
        Self::Expired,
        Self::NotYetValid,
        Self::WrongAudience,
        Self::WrongIssuer,
    ];

    /// What the client is told, in a 401 JSend body.
    pub fn message(self) -> &'static str {
        match self {
            Self::TooLong => "token is too long",
            Self::Malformed => "token is malformed",
            Self::WrongAlgorithm => "token algorithm is not accepted",
            Self::UnknownKey => "token key is unknown",
            Self::BadSignature => "token signature is invalid",
            Self::ClaimsMalformed => "token claims are malformed",
            Self::Expired => "token has expired",
            Self::NotYetValid => "token is not valid yet",
            Self::WrongAudience => "token audience is not accepted",
            Self::WrongIssuer => "token issuer is not accepted",
        }
    }

    /// A stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::TooLong => "too-long",
            Self::Malformed => "malformed",
            Self::WrongAlgorithm => "wrong-algorithm",
            Self::UnknownKey => "unknown-key",
            Self::BadSignature => "bad-signature",
            Self::ClaimsMalformed => "claims-malformed",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::WrongAudience => "wrong-audience",
            Self::WrongIssuer => "wrong-issuer",
        }
    }
}

/// One accepted key, ready to verify.
#[derive(Debug)]
struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

/// Verifies tokens against a fixed algorithm and key set. Cheap to share
/// (`Arc`); `verify` takes `&self`.
#[derive(Debug)]
pub struct Verifier {
    algorithm: Algorithm,
    keys: Vec<Key>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway_secs: u64,
    max_token_bytes: usize,
}

/// The header fields read before any key is touched. A duplicate field is
/// a parse error, so `{"alg":"HS256","alg":"none"}` cannot be read two ways.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Extensions the token says must be understood (RFC 7515 §4.1.11);
    /// we understand none, so any is a refusal.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl Verifier {
    /// Checks every key and bound; the error names the first problem.
    pub fn new(config: VerifierConfig) -> Result<Self, ConfigError> {
        if config.keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        if config.keys.len() > MAX_KEYS {
            return Err(ConfigError::TooManyKeys(config.keys.len()));
        }
        if config.leeway_secs > MAX_LEEWAY_SECS {
            return Err(ConfigError::Leeway(config.leeway_secs));
        }
        if !TOKEN_BYTES_RANGE.contains(&config.max_token_bytes) {
            return Err(ConfigError::MaxTokenBytes(config.max_token_bytes));
        }
        let mut kids = HashSet::new();
        let mut keys = Vec::with_capacity(config.keys.len());
        for (index, key) in config.keys.iter().enumerate() {
            if let Some(kid) = &key.kid
                && !kids.insert(kid.as_str())
            {
                return Err(ConfigError::DuplicateKid(kid.clone()));
            }
            keys.push(Key {
                kid: key.kid.clone(),
                key: decoding_key(index, &key.key, config.algorithm)?,
            });
        }

        Ok(Self {
            algorithm: config.algorithm,
            keys,
            audience: config.audience,
            issuer: config.issuer,
            leeway_secs: config.leeway_secs,
            max_token_bytes: config.max_token_bytes,
        })
    }

    /// The pinned algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Longest token accepted, in bytes: what a token source may read.
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// Verifies `token` as of `now`. Never panics, whatever the bytes.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Grant, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLong);
        }
        let (header, message, signature) = split(token)?;
        if header.alg != self.algorithm.name() {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut candidates = self
            .keys
            .iter()
            .filter(|key| key.kid.as_deref() == header.kid.as_deref())
            .peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKey);
        }
        let mut verified = false;
        for key in candidates {
            match jsonwebtoken::crypto::verify(
                signature,
                message.as_bytes(),
                &key.key,
                self.algorithm.jwt(),
            ) {
                Ok(true) => {
                    verified = true;
                    break;
                }
                // Rotation: the next key may be the one.
                Ok(false) => continue,
                // Only the signature's base64 can fail here: the keys were
                // tried at build time.
                Err(_) => return Err(TokenError::Malformed),
            }
        }
        if !verified {
            return Err(TokenError::BadSignature);
        }
        let payload = message.split_once('.').map_or("", |(_, payload)| payload);
        let claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Malformed)?;
        self.grant(claims, now)
    }

    fn grant(&self, claims: serde_json::Value, now: SystemTime) -> Result<Grant, TokenError> {
        let claims = Claims::read(claims).ok_or(TokenError::ClaimsMalformed)?;
        if claims
            .sub
            .as_ref()
            .is_some_and(|sub| sub.len() > MAX_SUBJECT_LEN)
        {
            return Err(TokenError::ClaimsMalformed);
        }
        if let Some(audience) = &self.audience {
            let named = match &claims.aud {
                Some(Audience::One(one)) => one == audience,
                Some(Audience::Many(many)) => many.contains(audience),
                None => false,
            };
            if !named {
                return Err(TokenError::WrongAudience);
            }
        }
        if self.issuer.is_some() && claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        // RFC 7519 §4.1.4: the current time must be *before* `exp`.
        if claims.exp.saturating_add(self.leeway_secs) <= now {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway_secs))
        {
            return Err(TokenError::NotYetValid);
        }
        let permissions = claims.event_stream.unwrap_or_default();
        Ok(Grant {
            publish: permissions.publish,
            subscribe: permissions.subscribe,
            expires_at: claims.exp,
            subject: claims.sub,
        })
    }
}

/// Shape and header, read without trusting anything: three parts, a
/// base64url JSON header with a string `alg` and no `crit`. Returns the
/// header, the signed message (`header.payload`) and the signature part.
fn split(token: &str) -> Result<(Header, &str, &str), TokenError> {
    let (message, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (header, payload) = message.split_once('.').ok_or(TokenError::Malformed)?;
    if header.is_empty() || payload.is_empty() || payload.contains('.') {
        return Err(TokenError::Malformed);
    }
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: Header = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if header.crit.is_some() {
        return Err(TokenError::Malformed);
    }
    Ok((header, message, signature))
}

/// A configured key, checked against the pinned algorithm.
fn decoding_key(
    index: usize,
    source: &KeySource,
    algorithm: Algorithm,
) -> Result<DecodingKey, ConfigError> {
    let wrong_family = |found| ConfigError::WrongFamily {
        index,
        found,
        algorithm,
    };
    let key = match (source, PemKind::for_algorithm(algorithm)) {
        (KeySource::Secret(secret), None) => {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(ConfigError::ShortSecret {
                    index,
                    len: secret.len(),
                });
            }
            DecodingKey::from_secret(secret).map_err(|_| ConfigError::BadPem { index })?
        }
        (KeySource::Secret(_), Some(_)) => return Err(wrong_family("a secret")),
        (KeySource::Pem(pem), needed) => {
            if pem_label(pem).is_some_and(|label| label.contains("PRIVATE")) {
                return Err(ConfigError::PrivateKey { index });
            }
            let found = PemKind::of_public(pem).ok_or(ConfigError::BadPem { index })?;
            if Some(found) != needed {
                return Err(wrong_family(found.name()));
            }
            match found {
                PemKind::Rsa => DecodingKey::from_rsa_pem(pem.as_bytes()),
                _ => DecodingKey::from_ec_pem(pem.as_bytes()),
            }
            .map_err(|_| ConfigError::BadPem { index })?
        }
    };
    // A key of the right family can still be unusable (an EC key on another
    // curve): try it once now rather than refuse every token later.
    jsonwebtoken::crypto::verify("AA", b"probe", &key, algorithm.jwt())
        .map_err(|_| ConfigError::Unusable { index, algorithm })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_a_distinct_label_and_a_short_message() {
        let labels: HashSet<_> = TokenError::ALL.iter().map(|e| e.label()).collect();
        assert_eq!(labels.len(), TokenError::ALL.len());
        for error in TokenError::ALL {
            assert!(error.message().starts_with("token "), "{error:?}");
            assert_eq!(error.to_string(), error.message());
            assert!(
                error
                    .label()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-')
            );
        }
        assert_eq!(
            TokenError::ClaimsMalformed.message(),
            "token claims are malformed"
        );
    }

    #[test]
    fn the_token_must_be_three_parts_with_a_json_header() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let cases = [
            String::new(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("{header}..sig"),
            format!(".{header}.sig"),
            "!!!.b.c".into(),
            format!("{}.b.c", URL_SAFE_NO_PAD.encode(b"not json")),
            format!("{}.b.c", URL_SAFE_NO_PAD.encode(br#"{"alg":256}"#)),
            format!(
                "{}.b.c",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","alg":"none"}"#)
            ),
        ];
        for token in cases {
            assert!(
                matches!(split(&token), Err(TokenError::Malformed)),
                "{token}"
            );
        }
        let crit = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","crit":["b64"],"b64":false}"#);
        assert!(matches!(
            split(&format!("{crit}.b.c")),
            Err(TokenError::Malformed)
        ));
        let token = format!("{header}.b.");
        let (read, message, signature) = split(&token).expect("an empty signature is a shape");
        assert_eq!((read.alg.as_str(), read.kid), ("HS256", None));
        assert_eq!((message, signature), (format!("{header}.b").as_str(), ""));
    }
}
