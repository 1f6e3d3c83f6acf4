#![allow(clippy::unwrap_used, unreachable_pub)]

mod binary;
mod body_limits;
mod framing;
mod health;
mod helpers;
mod idempotency;
mod invalid_input;
mod media_types;
mod publish;
mod routing;
