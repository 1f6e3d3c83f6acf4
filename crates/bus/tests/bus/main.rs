//! The bus's behaviour, end to end against each engine (one test binary).
//!
//! - `engines`: one suite, run once per engine, for everything the gateway
//!   relies on whichever engine is configured.
//! - `redis_outages`: what only the Redis engine faces: crashes, hangs,
//!   killed connections and data it did not write.
//! - `redis_heads`: where a fresh subscriber starts and what that costs
//!   Redis (one head read per topic per process), kept true across outages.
//! - `redis_tls`: `rediss://`: CA files, client certificates, every
//!   refusal with its reason, a cluster over TLS.

// A failed unwrap is a failed test, with its location: exactly what we want here.
#![allow(clippy::unwrap_used)]

mod engines;
mod helpers;
mod redis_heads;
mod redis_outages;
mod redis_tls;
