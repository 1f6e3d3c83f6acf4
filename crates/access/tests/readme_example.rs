//! The token format's documented example (README.md, "Access tokens"):
//! these constants are the ones shown there; this test keeps them true.

use std::time::{Duration, UNIX_EPOCH};

use access::{Algorithm, Claims, KeyConfig, KeySource, Verifier, VerifierConfig};

/// The example's HS256 secret (an example: never deploy it).
const SECRET: &str = "example-secret-for-docs-only-0123456789";

/// The example's claims: expires 2100-01-01, publishes to one room, reads
/// every room.
const CLAIMS: &str = r#"{"exp":4102444800,"sub":"reader-7","event_stream":{"publish":["chat.room-1"],"subscribe":["chat.*"]}}"#;

/// `CLAIMS` signed with `SECRET` (header `{"typ":"JWT","alg":"HS256"}`).
const TOKEN: &str = concat!(
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
    ".",
    "eyJleHAiOjQxMDI0NDQ4MDAsInN1YiI6InJlYWRlci03IiwiZXZlbnRfc3RyZWFtIjp7InB1Ymxpc2giOlsiY2hhdC5yb29tLTEiXSwic3Vic2NyaWJlIjpbImNoYXQuKiJdfX0",
    ".",
    "A3rjT7iztaGeM7YWhPlzxA4CL2xb-5Rx8yuEnhDZvX0",
);

fn verifier() -> Verifier {
    Verifier::new(VerifierConfig::new(
        Algorithm::HS256,
        vec![KeyConfig {
            kid: None,
            key: KeySource::Secret(SECRET.as_bytes().to_vec()),
        }],
    ))
    .expect("the example's config is valid")
}

#[test]
fn the_example_token_is_the_example_claims_signed_with_the_example_secret() {
    let claims: Claims = serde_json::from_str(CLAIMS).expect("the example's claims parse");
    let minted = access::mint(
        &claims,
        &KeySource::Secret(SECRET.as_bytes().to_vec()),
        Algorithm::HS256,
        None,
    )
    .expect("mints");
    assert_eq!(minted, TOKEN);
}

#[test]
fn the_example_token_grants_exactly_the_claims_shown() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let grant = verifier().verify(TOKEN, now).expect("the example verifies");
    assert_eq!(grant.expires_at, 4102444800);
    assert_eq!(grant.subject.as_deref(), Some("reader-7"));
    assert!(grant.may_publish("chat.room-1"));
    assert!(!grant.may_publish("chat.room-2"));
    assert!(!grant.may_publish("news"));
    assert!(grant.may_subscribe(&["chat.room-1", "chat.room-2"]));
    assert!(!grant.may_subscribe(&["chat.room-1", "news"]));
    assert_eq!(
        serde_json::to_value(&grant.publish).expect("serializes"),
        serde_json::json!(["chat.room-1"])
    );
    assert_eq!(
        serde_json::to_value(&grant.subscribe).expect("serializes"),
        serde_json::json!(["chat.*"])
    );
}

#[test]
fn the_example_token_stops_at_its_exp() {
    let after = UNIX_EPOCH + Duration::from_secs(4102444800 + 6);
    assert_eq!(
        verifier().verify(TOKEN, after).map(|_| ()),
        Err(access::TokenError::Expired)
    );
}
