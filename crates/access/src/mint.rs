//! Signs claims into a token: for tests, and for operators minting tokens
//! for their clients (HS256 with the shared secret; RS256/ES256 with the
//! PEM private key whose public half the services hold).

use jsonwebtoken::{EncodingKey, Header};

use crate::claims::Claims;
use crate::key::{Algorithm, KeySource, MIN_SECRET_BYTES, pem_label};

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// HS256 needs a secret; RS256/ES256 a PEM private key.
    #[error("{algorithm} cannot sign with {found}")]
    WrongKind {
        /// The algorithm asked for.
        algorithm: Algorithm,
        /// What was given.
        found: &'static str,
    },
    /// The verifier would refuse this secret; so does minting.
    #[error("an HS256 secret must be at least {MIN_SECRET_BYTES} bytes, this one has {0}")]
    ShortSecret(usize),
    /// Not a PEM private key of the algorithm's family.
    #[error("not a PEM private key for {0}")]
    BadPem(Algorithm),
    /// The crypto backend refused to sign.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Signs `claims` with `key` under `algorithm`, naming `kid` in the header
/// when given.
pub fn mint(
    claims: &Claims,
    key: &KeySource,
    algorithm: Algorithm,
    kid: Option<&str>,
) -> Result<String, MintError> {
    if let KeySource::Pem(pem) = key
        && !pem_label(pem).is_some_and(|label| label.contains("PRIVATE"))
    {
        // `jsonwebtoken` reads a public RSA key here and fails only at signing.
        return Err(MintError::BadPem(algorithm));
    }
    let key =
        match (key, algorithm) {
            (KeySource::Secret(secret), Algorithm::HS256) => {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(MintError::ShortSecret(secret.len()));
                }
                EncodingKey::from_secret(secret)
                    .map_err(|error| MintError::Signing(error.to_string()))?
            }
            (KeySource::Pem(pem), Algorithm::RS256) => EncodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|_| MintError::BadPem(algorithm))?,
            (KeySource::Pem(pem), Algorithm::ES256) => EncodingKey::from_ec_pem(pem.as_bytes())
                .map_err(|_| MintError::BadPem(algorithm))?,
            (KeySource::Secret(_), _) => {
                return Err(MintError::WrongKind {
                    algorithm,
                    found: "a secret",
                });
            }
            (KeySource::Pem(_), Algorithm::HS256) => {
                return Err(MintError::WrongKind {
                    algorithm,
                    found: "a PEM key",
                });
            }
        };
    let mut header = Header::new(algorithm.jwt());
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key)
        .map_err(|error| MintError::Signing(error.to_string()))
}
