#![allow(clippy::unwrap_used, unreachable_pub)]

mod admission;
mod auth;
mod binary;
mod connection;
mod cors;
mod helpers;
mod limits;
mod page;
mod publish_and_stream;
mod request_log;
mod resume;
mod slow_clients;
