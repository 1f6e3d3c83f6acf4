//! Where a request carries its token, and how to keep it out of logs.
//!
//! In order of precedence: `Authorization: Bearer <token>` (the scheme is
//! case-insensitive; another scheme is not a token), a cookie with a
//! configured name (an `EventSource` with `withCredentials` sends cookies),
//! and the query string's `access_token` (an `EventSource` cannot set
//! headers). The first source that holds a token is the one used: a bad
//! header token is not rescued by a good cookie.
//!
//! These are pure functions over header values and the query string. The
//! header and cookie tokens are borrowed from the request; only a
//! percent-encoded query token is copied, and only when it decodes to at
//! most `max_token_bytes` (a longer one is handed back as it came, and the
//! verifier refuses it as too long). The Cookie header is scanned, never
//! split into a collection.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The query parameter that carries a token.
pub const QUERY_PARAM: &str = "access_token";

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// `Authorization: Bearer`.
    Header,
    /// The configured cookie.
    Cookie,
    /// The `access_token` query parameter.
    Query,
}

impl Source {
    /// A stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Cookie => "cookie",
            Self::Query => "query",
        }
    }
}

/// A token and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    /// The token, not yet verified.
    pub token: Cow<'a, str>,
    /// Where it was.
    pub source: Source,
}

/// The token sources a service reads, with their settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSources {
    cookie_name: String,
    max_token_bytes: usize,
}

impl TokenSources {
    /// Sources reading the cookie `cookie_name`, copying at most
    /// `max_token_bytes` of a query token (the verifier's bound).
    pub fn new(cookie_name: impl Into<String>, max_token_bytes: usize) -> Self {
        Self {
            cookie_name: cookie_name.into(),
            max_token_bytes,
        }
    }

    /// The token of a request, from the first source that has one: the
    /// `Authorization` header value, then each `Cookie` header value (HTTP/2
    /// may split them), then the query string (without the `?`).
    pub fn find<'a, C>(
        &self,
        authorization: Option<&'a str>,
        cookies: C,
        query: Option<&'a str>,
    ) -> Option<Found<'a>>
    where
        C: IntoIterator<Item = &'a str>,
    {
        let found = |token, source| Some(Found { token, source });
        if let Some(token) = authorization.and_then(bearer) {
            return found(Cow::Borrowed(token), Source::Header);
        }
        if let Some(token) = cookies
            .into_iter()
            .find_map(|header| cookie(header, &self.cookie_name))
        {
            return found(Cow::Borrowed(token), Source::Cookie);
        }
        let token = query_token(query?, self.max_token_bytes)?;
        found(token, Source::Query)
    }
}

/// The token of an `Authorization` header value, if its scheme is `Bearer`
/// (in any case) and a token follows.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim_matches(' ').split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("Bearer") && !token.is_empty()).then_some(token)
}

/// The value of the first cookie called `name` in a `Cookie` header value
/// (`a=1; name=value`), without surrounding double quotes; `None` if absent
/// or empty.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    let value = header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(value);
    (!value.is_empty()).then_some(value)
}

/// The first `access_token` of a query string (without the `?`),
/// percent-decoded when that fits in `max_token_bytes`; `None` if absent
/// or empty.
pub fn query_token(query: &str, max_token_bytes: usize) -> Option<Cow<'_, str>> {
    let pair = query
        .split('&')
        .find(|pair| is_token_param(name_of(pair)))?;
    let value = pair.split_once('=').map_or("", |(_, value)| value);
    if value.is_empty() {
        return None;
    }
    if !value.contains('%') {
        return Some(Cow::Borrowed(value));
    }
    let decoded_len = value.len() - 2 * escapes(value);
    if decoded_len > max_token_bytes {
        // Too long to be a token whatever it decodes to: the verifier says so.
        return Some(Cow::Borrowed(value));
    }
    let mut decoded = Vec::with_capacity(decoded_len);
    decoded.extend(percent_decode_str(value));
    // Invalid UTF-8 is no token either; the raw value fails verification.
    Some(String::from_utf8(decoded).map_or(Cow::Borrowed(value), Cow::Owned))
}

/// The query string with every `access_token` value replaced by `***`, for
/// logs. Borrowed when there is nothing to hide.
pub fn scrub_query(query: &str) -> Cow<'_, str> {
    if !query.split('&').any(|pair| is_token_param(name_of(pair))) {
        return Cow::Borrowed(query);
    }
    let mut scrubbed = String::with_capacity(query.len());
    for (index, pair) in query.split('&').enumerate() {
        if index > 0 {
            scrubbed.push('&');
        }
        let name = name_of(pair);
        if is_token_param(name) {
            scrubbed.push_str(name);
            scrubbed.push_str("=***");
        } else {
            scrubbed.push_str(pair);
        }
    }
    Cow::Owned(scrubbed)
}

/// The name of a `name=value` pair (all of it without `=`).
fn name_of(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

/// True for `access_token`, spelled plainly or percent-encoded (a scrubber
/// that misses `access%5Ftoken` would leak what the reader accepts).
fn is_token_param(name: &str) -> bool {
    name == QUERY_PARAM || (name.contains('%') && percent_decode_str(name).eq(QUERY_PARAM.bytes()))
}

/// Valid `%XX` escapes in `value`: each decodes three bytes into one.
fn escapes(value: &str) -> usize {
    let bytes = value.as_bytes();
    let mut count = 0;
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            count += 1;
            at += 3;
        } else {
            at += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bearer_takes_the_token_of_the_bearer_scheme_in_any_case() {
        let cases = [
            ("Bearer abc.def.ghi", Some("abc.def.ghi")),
            ("bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("Bearer   abc  ", Some("abc")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Basic dXNlcjpwYXNz", None),
            ("Bearerabc", None),
            ("Token abc", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(bearer(value), expected, "{value:?}");
        }
    }

    #[test]
    fn cookie_finds_the_named_cookie_only() {
        let cases = [
            ("es_token=abc", Some("abc")),
            ("a=1; es_token=abc; b=2", Some("abc")),
            ("a=1;es_token=abc", Some("abc")),
            ("es_token=\"abc\"", Some("abc")),
            ("es_token=first; es_token=second", Some("first")),
            ("x_es_token=abc", None),
            ("es_token_x=abc", None),
            ("es_token=", None),
            ("es_token", None),
            ("", None),
        ];
        for (header, expected) in cases {
            assert_eq!(cookie(header, "es_token"), expected, "{header:?}");
        }
        assert_eq!(cookie("=abc", ""), None, "an empty name matches nothing");
    }

    #[test]
    fn query_token_reads_the_first_access_token_and_decodes_it() {
        let max = 4096;
        let cases = [
            ("access_token=abc", Some("abc")),
            ("topic=a&access_token=abc&x=1", Some("abc")),
            ("access_token=a%2Eb", Some("a.b")),
            ("access%5Ftoken=abc", Some("abc")),
            ("access_token=first&access_token=second", Some("first")),
            ("access_token=", None),
            ("access_token", None),
            ("x_access_token=abc", None),
            ("topic=a", None),
            ("", None),
        ];
        for (query, expected) in cases {
            assert_eq!(query_token(query, max).as_deref(), expected, "{query:?}");
        }
    }

    #[test]
    fn a_query_token_is_copied_only_when_it_fits() {
        let fits = format!("access_token={}", "%41".repeat(100));
        let token = query_token(&fits, 100).expect("present");
        assert!(matches!(token, Cow::Owned(_)));
        assert_eq!(token, "A".repeat(100));
        let too_long = format!("access_token={}", "%41".repeat(101));
        let token = query_token(&too_long, 100).expect("present");
        assert!(
            matches!(token, Cow::Borrowed(_)),
            "not copied: handed back as it came"
        );
        assert!(token.len() > 100, "so the verifier refuses it as too long");
        let invalid = query_token("access_token=%FF%FE", 100).expect("present");
        assert_eq!(invalid, "%FF%FE", "invalid UTF-8 is handed back raw");
    }

    #[test]
    fn header_wins_over_cookie_and_cookie_over_query() {
        let sources = TokenSources::new("es_token", 4096);
        let query = Some("access_token=q");
        let found = sources
            .find(Some("Bearer h"), ["es_token=c"], query)
            .expect("found");
        assert_eq!((found.token.as_ref(), found.source), ("h", Source::Header));
        let found = sources
            .find(Some("Basic x"), ["a=1", "es_token=c"], query)
            .expect("found");
        assert_eq!((found.token.as_ref(), found.source), ("c", Source::Cookie));
        let found = sources.find(None, ["a=1"], query).expect("found");
        assert_eq!((found.token.as_ref(), found.source), ("q", Source::Query));
        assert_eq!(sources.find(None, [], Some("topic=a")), None);
        assert_eq!(sources.find(None, [], None), None);
        assert_eq!(
            [Source::Header, Source::Cookie, Source::Query].map(Source::label),
            ["header", "cookie", "query"]
        );
    }

    #[test]
    fn scrub_query_hides_every_token_and_keeps_the_rest() {
        let cases = [
            ("topic=a&access_token=abc", "topic=a&access_token=***"),
            ("access_token=abc&topic=a", "access_token=***&topic=a"),
            (
                "access_token=a&access_token=b",
                "access_token=***&access_token=***",
            ),
            ("access%5Ftoken=abc", "access%5Ftoken=***"),
            ("access_token", "access_token=***"),
        ];
        for (query, expected) in cases {
            assert_eq!(scrub_query(query), expected, "{query:?}");
        }
        let clean = "topic=a&lastEventId=5";
        assert!(matches!(scrub_query(clean), Cow::Borrowed(q) if q == clean));
    }

    proptest! {
        #[test]
        fn a_scrubbed_query_never_holds_the_token(
            before in "[a-z=&]{0,20}",
            token in "[A-Za-z0-9_.-]{4,40}",
            after in "[a-z=&]{0,20}",
        ) {
            let query = format!("{before}&access_token={token}&{after}");
            let scrubbed = scrub_query(&query);
            prop_assert!(query_token(&scrubbed, 4096).is_none_or(|t| t == "***"));
            let leaked = format!("access_token={token}");
            prop_assert!(!scrubbed.contains(&leaked));
        }

        #[test]
        fn no_input_panics_a_source(input in any::<String>(), max in 0usize..64) {
            let _ = bearer(&input);
            let _ = cookie(&input, "es_token");
            if let Some(token) = query_token(&input, max) {
                prop_assert!(matches!(token, Cow::Borrowed(_)) || token.len() <= max);
            }
            let _ = scrub_query(&input);
        }
    }
}
