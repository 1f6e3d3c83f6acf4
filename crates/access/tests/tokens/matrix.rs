//! Every refusal reason, for each of HS256, RS256 and ES256.

use access::{Audience, Claims, KeyConfig, KeySource, TokenError, Verifier, VerifierConfig, mint};

use crate::helpers::*;

#[test]
fn a_token_signed_with_the_right_key_grants_exactly_its_claims() {
    for family in families() {
        let grant = family
            .verifier()
            .verify(&family.mint(&claims()), now())
            .unwrap_or_else(|e| panic!("{}: {e:?}", family.algorithm));
        assert!(grant.may_publish("chat.room-1"), "{}", family.algorithm);
        assert!(!grant.may_publish("chat.room-2"), "{}", family.algorithm);
        assert!(grant.may_subscribe(&["chat.room-2", "chat.x"]));
        assert!(!grant.may_subscribe(&["news"]));
        assert_eq!(grant.expires_at, NOW + 3600);
        assert_eq!(grant.subject.as_deref(), Some("tester"));
    }
}

#[test]
fn a_token_without_the_event_stream_claim_grants_nothing() {
    for family in families() {
        let grant = family
            .verifier()
            .verify(&family.mint(&Claims::new(NOW + 60)), now())
            .expect("valid");
        assert!(!grant.may_publish("chat.room-1"));
        assert!(!grant.may_subscribe(&["chat.room-1"]));
        assert_eq!(grant.subject, None);
    }
}

#[test]
fn a_token_signed_with_another_key_is_a_bad_signature() {
    for family in families() {
        let token = mint(&claims(), &family.wrong_signing, family.algorithm, None).expect("mints");
        assert_eq!(
            family.verifier().verify(&token, now()),
            Err(TokenError::BadSignature),
            "{}",
            family.algorithm
        );
    }
}

#[test]
fn a_token_of_another_algorithm_is_refused_before_its_signature() {
    let payload = serde_json::to_string(&claims()).expect("serializes");
    for family in families() {
        let verifier = family.verifier();
        let mut headers = vec![
            r#"{"alg":"none","typ":"JWT"}"#.to_owned(),
            r#"{"alg":"None"}"#.to_owned(),
            r#"{"alg":"HS384"}"#.to_owned(),
            r#"{"alg":"PS256"}"#.to_owned(),
            r#"{"alg":""}"#.to_owned(),
        ];
        for other in families() {
            if other.algorithm != family.algorithm {
                headers.push(format!(r#"{{"alg":"{}"}}"#, other.algorithm));
            }
        }
        for header in headers {
            for signature in ["", "c2lnbmF0dXJl"] {
                let token = craft(&header, &payload, signature);
                assert_eq!(
                    verifier.verify(&token, now()),
                    Err(TokenError::WrongAlgorithm),
                    "{} accepting {header} with signature {signature:?}",
                    family.algorithm
                );
            }
        }
        // A real token of another algorithm too, not only crafted ones.
        for other in families() {
            if other.algorithm != family.algorithm {
                assert_eq!(
                    verifier.verify(&other.mint(&claims()), now()),
                    Err(TokenError::WrongAlgorithm)
                );
            }
        }
    }
}

#[test]
fn algorithm_confusion_with_the_public_key_as_hmac_secret_is_refused() {
    let payload = serde_json::to_string(&claims()).expect("serializes");
    for family in families() {
        let KeySource::Pem(public) = &family.verifying else {
            continue;
        };
        let token = sign_hs256(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &payload,
            public.as_bytes(),
        );
        assert_eq!(
            family.verifier().verify(&token, now()),
            Err(TokenError::WrongAlgorithm),
            "{}",
            family.algorithm
        );
    }
}

#[test]
fn expiry_and_not_before_count_the_leeway_to_the_second() {
    for family in families() {
        let verifier = family.verifier(); // default leeway: 5 s
        let expiring = family.mint(&Claims::new(NOW));
        assert!(verifier.verify(&expiring, at(NOW - 1)).is_ok());
        assert!(
            verifier.verify(&expiring, at(NOW + 4)).is_ok(),
            "within the leeway"
        );
        assert_eq!(
            verifier.verify(&expiring, at(NOW + 5)),
            Err(TokenError::Expired),
            "valid only before exp + leeway (RFC 7519 §4.1.4)"
        );
        assert_eq!(
            verifier.verify(&expiring, at(NOW + 86_400)),
            Err(TokenError::Expired)
        );

        let later = family.mint(&Claims {
            nbf: Some(NOW + 100),
            ..Claims::new(NOW + 3600)
        });
        assert_eq!(
            verifier.verify(&later, at(NOW)),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            verifier.verify(&later, at(NOW + 94)),
            Err(TokenError::NotYetValid)
        );
        assert!(
            verifier.verify(&later, at(NOW + 95)).is_ok(),
            "within the leeway"
        );
        assert!(verifier.verify(&later, at(NOW + 100)).is_ok());
    }
}

#[test]
fn leeway_is_configurable_and_zero_means_none() {
    let family = &families()[0];
    let strict = Verifier::new(VerifierConfig {
        leeway_secs: 0,
        ..family.config()
    })
    .expect("valid");
    let token = family.mint(&Claims::new(NOW));
    assert!(strict.verify(&token, at(NOW - 1)).is_ok());
    assert_eq!(
        strict.verify(&token, at(NOW)),
        Err(TokenError::Expired),
        "at exp itself a token is expired"
    );
}

#[test]
fn extreme_times_neither_overflow_nor_pass() {
    let family = &families()[0];
    let verifier = family.verifier();
    let forever = family.mint(&Claims::new(u64::MAX));
    assert!(verifier.verify(&forever, at(NOW)).is_ok());
    let epoch = family.mint(&Claims::new(0));
    assert_eq!(verifier.verify(&epoch, at(NOW)), Err(TokenError::Expired));
    let never = family.mint(&Claims {
        nbf: Some(u64::MAX),
        ..Claims::new(u64::MAX)
    });
    assert_eq!(
        verifier.verify(&never, at(NOW)),
        Err(TokenError::NotYetValid)
    );
}

fn with_audience_and_issuer(family: &Family) -> Verifier {
    Verifier::new(VerifierConfig {
        audience: Some("event-stream".into()),
        issuer: Some("https://auth.example".into()),
        ..family.config()
    })
    .expect("valid")
}

#[test]
fn audience_and_issuer_are_checked_when_configured() {
    let good = Claims {
        aud: Some(Audience::One("event-stream".into())),
        iss: Some("https://auth.example".into()),
        ..claims()
    };
    for family in families() {
        let verifier = with_audience_and_issuer(&family);
        assert!(verifier.verify(&family.mint(&good), now()).is_ok());
        let many = Claims {
            aud: Some(Audience::Many(vec!["other".into(), "event-stream".into()])),
            ..good.clone()
        };
        assert!(verifier.verify(&family.mint(&many), now()).is_ok());

        let cases = [
            (
                Claims {
                    aud: Some(Audience::One("other".into())),
                    ..good.clone()
                },
                TokenError::WrongAudience,
                "another audience",
            ),
            (
                Claims {
                    aud: Some(Audience::Many(vec!["a".into(), "b".into()])),
                    ..good.clone()
                },
                TokenError::WrongAudience,
                "a list without ours",
            ),
            (
                Claims {
                    aud: None,
                    ..good.clone()
                },
                TokenError::WrongAudience,
                "no audience",
            ),
            (
                Claims {
                    iss: Some("https://evil.example".into()),
                    ..good.clone()
                },
                TokenError::WrongIssuer,
                "another issuer",
            ),
            (
                Claims {
                    iss: None,
                    ..good.clone()
                },
                TokenError::WrongIssuer,
                "no issuer",
            ),
        ];
        for (claims, expected, why) in cases {
            assert_eq!(
                verifier.verify(&family.mint(&claims), now()),
                Err(expected),
                "{}: {why}",
                family.algorithm
            );
        }
    }
}

#[test]
fn audience_and_issuer_are_ignored_when_not_configured() {
    let claims = Claims {
        aud: Some(Audience::One("someone-else".into())),
        iss: Some("anyone".into()),
        ..claims()
    };
    for family in families() {
        assert!(
            family
                .verifier()
                .verify(&family.mint(&claims), now())
                .is_ok()
        );
    }
}

fn kid_key(kid: Option<&str>, key: KeySource) -> KeyConfig {
    KeyConfig {
        kid: kid.map(str::to_owned),
        key,
    }
}

#[test]
fn a_kid_selects_its_key_and_an_unknown_kid_is_refused() {
    let old = KeySource::Pem(rsa().private.clone());
    let new = KeySource::Pem(other_rsa().private.clone());
    let verifier = Verifier::new(VerifierConfig::new(
        access::Algorithm::RS256,
        vec![
            kid_key(Some("2026-10"), KeySource::Pem(rsa().public.clone())),
            kid_key(Some("2026-11"), KeySource::Pem(other_rsa().public.clone())),
        ],
    ))
    .expect("valid");
    let rs = access::Algorithm::RS256;
    let signed = |key: &KeySource, kid| mint(&claims(), key, rs, kid).expect("mints");

    assert!(
        verifier
            .verify(&signed(&old, Some("2026-10")), now())
            .is_ok()
    );
    assert!(
        verifier
            .verify(&signed(&new, Some("2026-11")), now())
            .is_ok()
    );
    assert_eq!(
        verifier.verify(&signed(&new, Some("2026-10")), now()),
        Err(TokenError::BadSignature),
        "the kid picks one key; no other is tried"
    );
    assert_eq!(
        verifier.verify(&signed(&old, Some("2027-01")), now()),
        Err(TokenError::UnknownKey)
    );
    assert_eq!(
        verifier.verify(&signed(&old, None), now()),
        Err(TokenError::UnknownKey),
        "every key has a kid, so a token without one has no key"
    );
}

#[test]
fn without_a_kid_every_key_without_one_is_tried() {
    let first = b"test-only-rotation-secret-old-000".to_vec();
    let second = b"test-only-rotation-secret-new-111".to_vec();
    let named = b"test-only-rotation-secret-named-2".to_vec();
    let hs = access::Algorithm::HS256;
    let verifier = Verifier::new(VerifierConfig::new(
        hs,
        vec![
            kid_key(None, KeySource::Secret(first.clone())),
            kid_key(Some("named"), KeySource::Secret(named.clone())),
            kid_key(None, KeySource::Secret(second.clone())),
        ],
    ))
    .expect("valid");
    let signed = |secret: &Vec<u8>, kid| {
        mint(&claims(), &KeySource::Secret(secret.clone()), hs, kid).expect("mints")
    };
    assert!(verifier.verify(&signed(&first, None), now()).is_ok());
    assert!(verifier.verify(&signed(&second, None), now()).is_ok());
    assert!(
        verifier
            .verify(&signed(&named, Some("named")), now())
            .is_ok()
    );
    assert_eq!(
        verifier.verify(&signed(&named, None), now()),
        Err(TokenError::BadSignature),
        "a key with a kid is used only when the token names it"
    );
    assert_eq!(
        verifier.verify(&signed(&OTHER_SECRET.to_vec(), None), now()),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn an_oversized_token_is_refused_before_parsing() {
    for family in families() {
        let verifier = family.verifier();
        let max = verifier.max_token_bytes();
        assert_eq!(
            verifier.verify(&"x".repeat(max + 1), now()),
            Err(TokenError::TooLong)
        );
        assert_eq!(
            verifier.verify(&"x".repeat(max), now()),
            Err(TokenError::Malformed),
            "at the bound it is parsed"
        );
        // A real, validly signed token over the bound is still too long.
        let long_subject = Claims {
            event_stream: Some(access::Permissions {
                subscribe: access::TopicPatterns::parse((0..64).map(|i| format!("{i:0>100}")))
                    .expect("valid"),
                ..Default::default()
            }),
            ..claims()
        };
        let token = family.mint(&long_subject);
        assert!(token.len() > max);
        assert_eq!(verifier.verify(&token, now()), Err(TokenError::TooLong));
    }
}

#[test]
fn each_malformed_token_is_refused_as_malformed() {
    let payload = serde_json::to_string(&claims()).expect("serializes");
    let good = families()[0].mint(&claims());
    let mut parts = good.split('.');
    let (header, body, signature) = (
        parts.next().expect("header"),
        parts.next().expect("payload"),
        parts.next().expect("signature"),
    );
    let cases = [
        (String::new(), "empty"),
        ("abc".into(), "one part"),
        (format!("{header}.{body}"), "two parts"),
        (format!("{header}.{body}.{signature}.x"), "four parts"),
        (format!("{header}..{signature}"), "empty payload"),
        (format!(".{body}.{signature}"), "empty header"),
        (format!("{header}.{body}.{signature} "), "trailing space"),
        (format!("{header}.{body}.{signature}="), "padded signature"),
        (format!("{header}=.{body}.{signature}"), "padded header"),
        (craft("not json", &payload, signature), "header not JSON"),
        (craft(r#"{"typ":"JWT"}"#, &payload, signature), "no alg"),
        (craft(r#"{"alg":256}"#, &payload, signature), "alg a number"),
        (
            craft(r#"{"alg":"HS256","kid":5}"#, &payload, signature),
            "kid a number",
        ),
        (
            craft(r#"{"alg":"HS256","alg":"none"}"#, &payload, signature),
            "alg twice",
        ),
        (
            craft(r#"{"alg":"HS256","crit":["exp"]}"#, &payload, signature),
            "a critical extension",
        ),
        // Signed, so only the payload can be at fault.
        (
            sign_hs256(r#"{"alg":"HS256"}"#, "not json", SECRET),
            "payload not JSON",
        ),
        (
            format!("{}!", sign_hs256(r#"{"alg":"HS256"}"#, "{}", SECRET)),
            "signature not base64url",
        ),
    ];
    let verifier = families()[0].verifier();
    for (token, why) in cases {
        assert_eq!(
            verifier.verify(&token, now()),
            Err(TokenError::Malformed),
            "{why}"
        );
    }
    // A payload changed after signing fails its signature first.
    assert_eq!(
        verifier.verify(&format!("{header}.{body}x.{signature}"), now()),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn signed_claims_that_do_not_parse_refuse_the_token() {
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let exp = NOW + 60;
    let long_subject = "s".repeat(257);
    let cases = [
        ("{}".to_owned(), "no exp"),
        (r#"{"exp":"soon"}"#.to_owned(), "exp a string"),
        (format!(r#"{{"exp":{exp}.5}}"#), "exp not an integer"),
        (format!(r#"{{"exp":{exp},"nbf":"x"}}"#), "nbf a string"),
        (format!(r#"{{"exp":{exp},"sub":["a"]}}"#), "sub a list"),
        (
            format!(r#"{{"exp":{exp},"sub":"{long_subject}"}}"#),
            "sub of 257 bytes",
        ),
        (
            format!(r#"{{"exp":{exp},"event_stream":"all"}}"#),
            "event_stream a string",
        ),
        (
            format!(r#"{{"exp":{exp},"event_stream":{{"publish":["chat.*","a*b"]}}}}"#),
            "one bad publish pattern",
        ),
        (
            format!(r#"{{"exp":{exp},"event_stream":{{"subscribe":[""]}}}}"#),
            "an empty subscribe pattern",
        ),
        (
            format!(
                r#"{{"exp":{exp},"event_stream":{{"subscribe":[{}]}}}}"#,
                (0..65)
                    .map(|i| format!("\"t{i}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "65 patterns",
        ),
        (format!("[{exp}]"), "an array"),
    ];
    let verifier = families()[0].verifier();
    for (payload, why) in cases {
        let token = sign_hs256(header, &payload, SECRET);
        let result = verifier.verify(&token, now());
        assert_eq!(result, Err(TokenError::ClaimsMalformed), "{why}");
        assert_eq!(
            result.expect_err(why).to_string(),
            "token claims are malformed"
        );
    }
    let subject_at_bound = sign_hs256(
        header,
        &format!(
            r#"{{"exp":{exp},"sub":"{}","scope":"ignored"}}"#,
            "s".repeat(256)
        ),
        SECRET,
    );
    assert!(verifier.verify(&subject_at_bound, now()).is_ok());
}

#[test]
fn refusal_messages_never_echo_the_token() {
    let family = &families()[0];
    let verifier = family.verifier();
    let expired = family.mint(&Claims::new(1));
    let error = verifier.verify(&expired, now()).expect_err("expired");
    assert_eq!(error.label(), "expired");
    for part in expired.split('.') {
        assert!(!error.to_string().contains(part));
    }
}
