//! Who may publish and who may read: signed tokens and the topic patterns
//! they grant.
//!
//! A token is a JWT whose `event_stream` claim lists topic patterns, one list
//! for publishing and one for subscribing (the layout of Mercure's `mercure`
//! claim, with our topic names):
//!
//! ```json
//! {"exp": 4102444800, "sub": "reader-7",
//!  "event_stream": {"publish": ["chat.room-1"], "subscribe": ["chat.*"]}}
//! ```
//!
//! A [`Verifier`] is built once from a [`VerifierConfig`] (the algorithm is
//! pinned, keys are checked at build time) and turns a token into a
//! [`Grant`], or into a [`TokenError`] with a short message fit for a 401
//! body and a stable label for metrics. Everything here is a pure function of
//! its inputs, the clock included (`now` is a parameter): no I/O, no runtime.
//!
//! # Layout
//! - [`pattern`]: topic patterns (`chat.room-1`, `chat.*`, `*`) and bounded lists of them.
//! - [`claims`]: the claims a token carries, as minted and as read.
//! - [`key`]: the pinned algorithm and where a key comes from (secret or PEM).
//! - [`verifier`]: builds a verifier from its config, verifies a token into a grant.
//! - [`grant`]: what a verified token allows.
//! - [`source`]: finds the token in a request (header, cookie, query) and scrubs it from logs.
//! - [`mod@mint`]: signs claims into a token (tests, and the binaries' `mint-token` command).

pub mod claims;
pub mod grant;
pub mod key;
pub mod mint;
pub mod pattern;
pub mod source;
pub mod verifier;

pub use claims::{Audience, Claims, Permissions};
pub use grant::Grant;
pub use key::{Algorithm, KeyConfig, KeySource};
pub use mint::{MintError, mint};
pub use pattern::{MAX_PATTERNS, PatternError, TopicPattern, TopicPatterns};
pub use source::{Found, Source, TokenSources, bearer, cookie, query_token, scrub_query};
pub use verifier::{
    ConfigError, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_BYTES, MAX_KEYS, TokenError, Verifier,
    VerifierConfig,
};
