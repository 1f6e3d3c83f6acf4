//! The connection layer over raw sockets: what reaches the wire, when
//! connections close, and that it answers like actix-http.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod fast_path;
mod hand_over;
mod helpers;
mod limits;
mod properties;
mod stream_runtime;
mod unix_socket;
