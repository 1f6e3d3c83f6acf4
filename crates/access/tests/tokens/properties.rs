//! No bytes make `verify` panic or succeed unless a key signed them.

use access::{Claims, Verifier};
use proptest::prelude::*;

use crate::helpers::*;

fn verifiers() -> &'static [(Verifier, String)] {
    static VERIFIERS: std::sync::OnceLock<Vec<(Verifier, String)>> = std::sync::OnceLock::new();
    VERIFIERS.get_or_init(|| {
        families()
            .iter()
            .map(|family| (family.verifier(), family.mint(&claims())))
            .collect()
    })
}

/// Characters a token is made of, plus a few that break it.
fn token_char() -> impl Strategy<Value = char> {
    prop_oneof![
        8 => proptest::char::ranges(vec!['A'..='Z', 'a'..='z', '0'..='9'].into()),
        2 => Just('.'),
        1 => Just('-'),
        1 => Just('_'),
        1 => any::<char>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_are_never_a_grant(input in any::<String>()) {
        for (verifier, _) in verifiers() {
            prop_assert!(verifier.verify(&input, now()).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_are_never_a_grant(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let input = String::from_utf8_lossy(&bytes);
        for (verifier, _) in verifiers() {
            prop_assert!(verifier.verify(&input, now()).is_err());
        }
    }

    #[test]
    fn token_shaped_strings_are_never_a_grant(
        chars in proptest::collection::vec(token_char(), 0..400),
    ) {
        let input: String = chars.into_iter().collect();
        for (verifier, _) in verifiers() {
            prop_assert!(verifier.verify(&input, now()).is_err());
        }
    }

    #[test]
    fn a_valid_token_with_any_byte_changed_is_refused(
        at in any::<prop::sample::Index>(),
        replacement in token_char(),
    ) {
        for (verifier, token) in verifiers() {
            prop_assert!(verifier.verify(token, now()).is_ok());
            let index = at.index(token.len());
            let mut mutated = String::with_capacity(token.len() + 4);
            mutated.push_str(&token[..index]);
            mutated.push(replacement);
            mutated.push_str(&token[index + 1..]);
            if mutated != *token {
                prop_assert!(verifier.verify(&mutated, now()).is_err(), "{}", mutated);
            }
        }
    }

    #[test]
    fn a_valid_token_cut_or_grown_anywhere_is_refused(
        at in any::<prop::sample::Index>(),
        insert in proptest::option::of(token_char()),
    ) {
        for (verifier, token) in verifiers() {
            let index = at.index(token.len());
            let mut changed = token[..index].to_owned();
            if let Some(c) = insert {
                changed.push(c);
                changed.push_str(&token[index..]);
            } else {
                changed.push_str(&token[index + 1..]);
            }
            prop_assert!(verifier.verify(&changed, now()).is_err(), "{}", changed);
        }
    }
}

#[test]
fn parts_swapped_between_valid_tokens_are_refused() {
    for family in families() {
        let verifier = family.verifier();
        let a = family.mint(&claims());
        let b = family.mint(&Claims::new(NOW + 7));
        let a: Vec<&str> = a.split('.').collect();
        let b: Vec<&str> = b.split('.').collect();
        for (header, payload, signature) in [(a[0], b[1], a[2]), (a[0], a[1], b[2])] {
            let spliced = format!("{header}.{payload}.{signature}");
            assert_eq!(
                verifier.verify(&spliced, now()),
                Err(access::TokenError::BadSignature),
                "{}",
                family.algorithm
            );
        }
    }
}
