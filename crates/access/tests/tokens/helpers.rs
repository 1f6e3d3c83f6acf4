//! Keys made by `openssl` for this test run, and token builders.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use access::{
    Algorithm, Claims, KeyConfig, KeySource, Permissions, TopicPatterns, Verifier, VerifierConfig,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The clock of every test: a fixed instant, so expiry needs no sleeping.
pub(crate) const NOW: u64 = 1_900_000_000;
/// An HS256 secret for tests only (33 bytes).
pub(crate) const SECRET: &[u8] = b"test-only-secret-0123456789abcdef";
/// Another one, for "signed with the wrong key".
pub(crate) const OTHER_SECRET: &[u8] = b"test-only-secret-fedcba9876543210";

pub(crate) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(crate) fn now() -> SystemTime {
    at(NOW)
}

/// A private key and its public half, as PEM.
#[derive(Debug)]
pub(crate) struct KeyPair {
    pub(crate) private: String,
    pub(crate) public: String,
}

fn openssl(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs (Debian: apt-get install openssl)");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write to openssl");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("openssl finishes");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("PEM is text")
}

fn generate(args: &[&str]) -> KeyPair {
    let mut full = vec!["genpkey"];
    full.extend_from_slice(args);
    let private = openssl(&full, None);
    let public = openssl(&["pkey", "-pubout"], Some(&private));
    KeyPair { private, public }
}

macro_rules! key_pair {
    ($name:ident, $($arg:expr),+) => {
        pub(crate) fn $name() -> &'static KeyPair {
            static PAIR: OnceLock<KeyPair> = OnceLock::new();
            PAIR.get_or_init(|| generate(&[$($arg),+]))
        }
    };
}

key_pair!(rsa, "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048");
key_pair!(
    other_rsa,
    "-algorithm",
    "RSA",
    "-pkeyopt",
    "rsa_keygen_bits:2048"
);
key_pair!(
    ec,
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256"
);
key_pair!(
    other_ec,
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256"
);
key_pair!(
    ec_p384,
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-384"
);
key_pair!(ed25519, "-algorithm", "ED25519");

/// The public half of [`rsa`] in PKCS#1 form (`BEGIN RSA PUBLIC KEY`).
pub(crate) fn rsa_pkcs1_public() -> String {
    openssl(&["rsa", "-RSAPublicKey_out"], Some(&rsa().private))
}

/// One algorithm's keys: what signs, what verifies, and a wrong signer.
#[derive(Debug)]
pub(crate) struct Family {
    pub(crate) algorithm: Algorithm,
    pub(crate) signing: KeySource,
    pub(crate) verifying: KeySource,
    pub(crate) wrong_signing: KeySource,
}

pub(crate) fn families() -> [Family; 3] {
    [
        Family {
            algorithm: Algorithm::HS256,
            signing: KeySource::Secret(SECRET.to_vec()),
            verifying: KeySource::Secret(SECRET.to_vec()),
            wrong_signing: KeySource::Secret(OTHER_SECRET.to_vec()),
        },
        Family {
            algorithm: Algorithm::RS256,
            signing: KeySource::Pem(rsa().private.clone()),
            verifying: KeySource::Pem(rsa().public.clone()),
            wrong_signing: KeySource::Pem(other_rsa().private.clone()),
        },
        Family {
            algorithm: Algorithm::ES256,
            signing: KeySource::Pem(ec().private.clone()),
            verifying: KeySource::Pem(ec().public.clone()),
            wrong_signing: KeySource::Pem(other_ec().private.clone()),
        },
    ]
}

impl Family {
    pub(crate) fn config(&self) -> VerifierConfig {
        VerifierConfig::new(
            self.algorithm,
            vec![KeyConfig {
                kid: None,
                key: self.verifying.clone(),
            }],
        )
    }

    pub(crate) fn verifier(&self) -> Verifier {
        Verifier::new(self.config()).expect("a valid config")
    }

    pub(crate) fn mint(&self, claims: &Claims) -> String {
        access::mint(claims, &self.signing, self.algorithm, None).expect("mints")
    }
}

/// Claims valid at [`NOW`] for an hour, publishing to `chat.room-1` and
/// reading `chat.*`.
pub(crate) fn claims() -> Claims {
    Claims {
        sub: Some("tester".into()),
        event_stream: Some(Permissions {
            publish: TopicPatterns::parse(["chat.room-1"]).expect("valid"),
            subscribe: TopicPatterns::parse(["chat.*"]).expect("valid"),
        }),
        ..Claims::new(NOW + 3600)
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token built by hand: any header, any payload, any signature part.
pub(crate) fn craft(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.as_bytes()),
        b64(payload.as_bytes())
    )
}

/// A token with any header and payload, signed with HS256 under `secret`.
pub(crate) fn sign_hs256(header: &str, payload: &str, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let key = jsonwebtoken::EncodingKey::from_secret(secret).expect("a secret");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .expect("signs");
    format!("{message}.{signature}")
}
