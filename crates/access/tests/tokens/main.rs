//! Tokens end to end: minted with real keys (made by `openssl`), verified,
//! refused for each reason, and fuzzed.

mod config;
mod helpers;
mod matrix;
mod properties;
mod sources;
