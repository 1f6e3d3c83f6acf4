//! The pinned algorithm and where a key comes from.
//!
//! One algorithm per deployment: a verifier accepts tokens signed with it
//! and nothing else, so neither `none` nor a token signed with HS256 using
//! the RSA public key as its secret (algorithm confusion) can get through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Shortest HS256 secret accepted, in bytes: as long as the hash (RFC 7518
/// §3.2 asks for at least this much).
pub const MIN_SECRET_BYTES: usize = 32;

/// The signing algorithms event-stream accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256; verified with an RSA public key.
    RS256,
    /// ECDSA on P-256 with SHA-256; verified with an EC public key.
    ES256,
}

impl Algorithm {
    /// The name a token's header carries in `alg`.
    pub fn name(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "HS256" => Ok(Self::HS256),
            "RS256" => Ok(Self::RS256),
            "ES256" => Ok(Self::ES256),
            _ => Err("the algorithm must be HS256, RS256 or ES256".to_owned()),
        }
    }
}

/// Key material, as the caller read it (from the environment, from a file).
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An HS256 secret: at least [`MIN_SECRET_BYTES`] bytes.
    Secret(Vec<u8>),
    /// A PEM document: a public key to verify with (`BEGIN PUBLIC KEY`),
    /// a private key to mint with (`BEGIN PRIVATE KEY`).
    Pem(String),
}

impl fmt::Debug for KeySource {
    /// Never prints key material: configs end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(secret) => write!(f, "Secret({} bytes)", secret.len()),
            Self::Pem(_) => f.write_str("Pem(..)"),
        }
    }
}

/// One accepted key. Several keys make rotation possible: a token names its
/// key with `kid`, or, without one, is tried against every key without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    /// The `kid` a token names to pick this key.
    pub kid: Option<String>,
    /// The key itself.
    pub key: KeySource,
}

/// The kind of key a PEM document holds, from its label and its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PemKind {
    Rsa,
    Ec,
    Other,
}

impl PemKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Rsa => "an RSA key",
            Self::Ec => "an EC key",
            Self::Other => "a key of another kind",
        }
    }

    /// What a public PEM holds, if it is a key `jsonwebtoken` can read at all.
    pub(crate) fn of_public(pem: &str) -> Option<Self> {
        use jsonwebtoken::DecodingKey;
        if DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok() {
            Some(Self::Rsa)
        } else if DecodingKey::from_ec_pem(pem.as_bytes()).is_ok() {
            Some(Self::Ec)
        } else if DecodingKey::from_ed_pem(pem.as_bytes()).is_ok() {
            Some(Self::Other)
        } else {
            None
        }
    }

    /// The family `algorithm` needs.
    pub(crate) fn for_algorithm(algorithm: Algorithm) -> Option<Self> {
        match algorithm {
            Algorithm::HS256 => None,
            Algorithm::RS256 => Some(Self::Rsa),
            Algorithm::ES256 => Some(Self::Ec),
        }
    }
}

/// The label of a PEM document's first block (`PUBLIC KEY`, `PRIVATE KEY`, ...).
pub(crate) fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &pem[start..];
    Some(&rest[..rest.find("-----")?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_nothing_else_parses() {
        for algorithm in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
            assert_eq!(algorithm.name().parse::<Algorithm>(), Ok(algorithm));
        }
        for name in ["none", "hs256", "HS384", "PS256", "EdDSA", ""] {
            assert!(name.parse::<Algorithm>().is_err(), "{name}");
        }
    }

    #[test]
    fn debug_never_prints_key_material() {
        let secret = KeySource::Secret(b"0123456789abcdef0123456789abcdef".to_vec());
        assert_eq!(format!("{secret:?}"), "Secret(32 bytes)");
        let pem = KeySource::Pem("-----BEGIN PRIVATE KEY-----\nMIIE\n".into());
        assert_eq!(format!("{pem:?}"), "Pem(..)");
    }

    #[test]
    fn pem_label_reads_the_first_block() {
        assert_eq!(
            pem_label("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            Some("PUBLIC KEY")
        );
        assert_eq!(pem_label("not a pem"), None);
    }
}
