//! A verifier refuses to be built from a config it could not honour, and
//! says what to fix.

use access::{
    Algorithm, ConfigError, KeyConfig, KeySource, MintError, Verifier, VerifierConfig, mint,
};

use crate::helpers::*;

fn key(key: KeySource) -> KeyConfig {
    KeyConfig { kid: None, key }
}

fn build(algorithm: Algorithm, keys: Vec<KeyConfig>) -> Result<Verifier, ConfigError> {
    Verifier::new(VerifierConfig::new(algorithm, keys))
}

#[test]
fn each_bad_config_is_refused_with_an_error_naming_the_problem() {
    let secret = || key(KeySource::Secret(SECRET.to_vec()));
    let pem = |pem: &str| key(KeySource::Pem(pem.to_owned()));
    let cases: Vec<(Result<Verifier, ConfigError>, ConfigError, &str, &str)> = vec![
        (
            build(Algorithm::HS256, vec![]),
            ConfigError::NoKeys,
            "at least one key",
            "no keys",
        ),
        (
            build(Algorithm::HS256, (0..17).map(|_| secret()).collect()),
            ConfigError::TooManyKeys(17),
            "at most 16",
            "17 keys",
        ),
        (
            build(Algorithm::HS256, vec![key(KeySource::Secret(vec![7; 31]))]),
            ConfigError::ShortSecret { index: 0, len: 31 },
            "at least 32 bytes",
            "a 31-byte secret",
        ),
        (
            build(Algorithm::RS256, vec![secret()]),
            ConfigError::WrongFamily {
                index: 0,
                found: "a secret",
                algorithm: Algorithm::RS256,
            },
            "keys[0] is a secret, which RS256 cannot use",
            "a secret for RS256",
        ),
        (
            build(Algorithm::HS256, vec![secret(), pem(&rsa().public)]),
            ConfigError::WrongFamily {
                index: 1,
                found: "an RSA key",
                algorithm: Algorithm::HS256,
            },
            "keys[1] is an RSA key, which HS256 cannot use",
            "a PEM key for HS256",
        ),
        (
            build(Algorithm::ES256, vec![pem(&rsa().public)]),
            ConfigError::WrongFamily {
                index: 0,
                found: "an RSA key",
                algorithm: Algorithm::ES256,
            },
            "which ES256 cannot use",
            "an RSA key for ES256",
        ),
        (
            build(Algorithm::RS256, vec![pem(&ec().public)]),
            ConfigError::WrongFamily {
                index: 0,
                found: "an EC key",
                algorithm: Algorithm::RS256,
            },
            "which RS256 cannot use",
            "an EC key for RS256",
        ),
        (
            build(Algorithm::ES256, vec![pem(&ed25519().public)]),
            ConfigError::WrongFamily {
                index: 0,
                found: "a key of another kind",
                algorithm: Algorithm::ES256,
            },
            "another kind",
            "an Ed25519 key for ES256",
        ),
        (
            build(Algorithm::RS256, vec![pem(&rsa().private)]),
            ConfigError::PrivateKey { index: 0 },
            "openssl pkey -pubout",
            "the private key",
        ),
        (
            build(
                Algorithm::RS256,
                vec![pem(
                    "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
                )],
            ),
            ConfigError::BadPem { index: 0 },
            "not a PEM public key",
            "a broken PEM",
        ),
        (
            build(Algorithm::RS256, vec![pem("")]),
            ConfigError::BadPem { index: 0 },
            "not a PEM public key",
            "an empty file",
        ),
        (
            build(Algorithm::ES256, vec![pem(&ec_p384().public)]),
            ConfigError::Unusable {
                index: 0,
                algorithm: Algorithm::ES256,
            },
            "P-256",
            "a P-384 key for ES256",
        ),
        (
            build(
                Algorithm::HS256,
                vec![
                    KeyConfig {
                        kid: Some("a".into()),
                        key: KeySource::Secret(SECRET.to_vec()),
                    },
                    KeyConfig {
                        kid: Some("a".into()),
                        key: KeySource::Secret(OTHER_SECRET.to_vec()),
                    },
                ],
            ),
            ConfigError::DuplicateKid("a".into()),
            "names two keys",
            "a kid twice",
        ),
        (
            Verifier::new(VerifierConfig {
                leeway_secs: 301,
                ..families()[0].config()
            }),
            ConfigError::Leeway(301),
            "at most 300",
            "leeway 301",
        ),
        (
            Verifier::new(VerifierConfig {
                max_token_bytes: 100,
                ..families()[0].config()
            }),
            ConfigError::MaxTokenBytes(100),
            "256 to 65536",
            "max_token_bytes 100",
        ),
    ];
    for (result, expected, says, why) in cases {
        let error = result.expect_err(why);
        assert_eq!(error, expected, "{why}");
        assert!(error.to_string().contains(says), "{why}: {error}");
    }
}

#[test]
fn the_bounds_themselves_are_accepted() {
    let secrets: Vec<KeyConfig> = (0..16u8)
        .map(|i| KeyConfig {
            kid: Some(format!("k{i}")),
            key: KeySource::Secret(vec![i; 32]),
        })
        .collect();
    assert!(
        build(Algorithm::HS256, secrets).is_ok(),
        "16 keys of 32 bytes"
    );
    let family = &families()[0];
    for (leeway_secs, max_token_bytes) in [(0, 256), (300, 65536)] {
        let config = VerifierConfig {
            leeway_secs,
            max_token_bytes,
            ..family.config()
        };
        assert!(
            Verifier::new(config).is_ok(),
            "{leeway_secs} {max_token_bytes}"
        );
    }
}

#[test]
fn an_rsa_public_key_in_pkcs1_form_verifies_too() {
    let pkcs1 = rsa_pkcs1_public();
    assert!(pkcs1.contains("BEGIN RSA PUBLIC KEY"), "{pkcs1}");
    let verifier = build(Algorithm::RS256, vec![key(KeySource::Pem(pkcs1))]).expect("valid");
    let token = families()[1].mint(&claims());
    assert!(verifier.verify(&token, now()).is_ok());
}

#[test]
fn minting_refuses_a_key_its_algorithm_cannot_sign_with() {
    let claims = claims();
    let cases = [
        (
            KeySource::Secret(vec![1; 31]),
            Algorithm::HS256,
            "at least 32 bytes",
        ),
        (
            KeySource::Pem(rsa().private.clone()),
            Algorithm::HS256,
            "cannot sign with a PEM key",
        ),
        (
            KeySource::Secret(SECRET.to_vec()),
            Algorithm::RS256,
            "cannot sign with a secret",
        ),
        (
            KeySource::Pem(ec().private.clone()),
            Algorithm::RS256,
            "not a PEM private key for RS256",
        ),
        (
            KeySource::Pem(rsa().private.clone()),
            Algorithm::ES256,
            "not a PEM private key for ES256",
        ),
        (
            KeySource::Pem(rsa().public.clone()),
            Algorithm::RS256,
            "not a PEM private key",
        ),
    ];
    for (key, algorithm, says) in cases {
        let error: MintError = mint(&claims, &key, algorithm, None).expect_err(says);
        assert!(error.to_string().contains(says), "{says}: {error}");
    }
}
