//! A token found in any source verifies as it was minted; a query token
//! too long to copy is still refused as too long.

use std::borrow::Cow;

use access::{Source, TokenError, TokenSources, scrub_query};

use crate::helpers::*;

#[test]
fn a_token_from_each_source_verifies() {
    let family = &families()[0];
    let verifier = family.verifier();
    let sources = TokenSources::new("es_token", verifier.max_token_bytes());
    let token = family.mint(&claims());
    let escaped = token.replace('.', "%2E");
    let authorization = format!("Bearer {token}");
    let cookie = format!("theme=dark; es_token={token}");
    let query = format!("topic=chat.room-1&access_token={token}");
    let escaped_query = format!("access_token={escaped}");
    let cases = [
        (Some(authorization.as_str()), None, None, Source::Header),
        (None, Some(cookie.as_str()), None, Source::Cookie),
        (None, None, Some(query.as_str()), Source::Query),
        (None, None, Some(escaped_query.as_str()), Source::Query),
    ];
    for (authorization, cookie, query, source) in cases {
        let found = sources
            .find(authorization, cookie, query)
            .unwrap_or_else(|| panic!("a token in the {}", source.label()));
        assert_eq!(found.source, source);
        assert_eq!(found.token, token);
        let grant = verifier.verify(&found.token, now()).expect("verifies");
        assert!(grant.may_subscribe(&["chat.room-1"]));
    }
    assert!(!scrub_query(&query).contains(&token));
}

#[test]
fn a_query_token_too_long_to_copy_is_refused_as_too_long() {
    let family = &families()[0];
    let verifier = family.verifier();
    let max = verifier.max_token_bytes();
    let sources = TokenSources::new("es_token", max);
    let query = format!("access_token={}", "%41".repeat(max + 1));
    let found = sources.find(None, None, Some(&query)).expect("present");
    assert!(matches!(found.token, Cow::Borrowed(_)), "not copied");
    assert_eq!(
        verifier.verify(&found.token, now()),
        Err(TokenError::TooLong)
    );
}
