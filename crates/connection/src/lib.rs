//! Serves HTTP/1 connections: a stream route on the socket itself, everything else by actix-http.
//!
//! Every service accepts its connections here (on actix-server), over TCP
//! and, when [`Config::unix_socket`] is set, over a unix socket too (for a
//! proxy on the same host; its peer counts as [`UNIX_PEER`], 127.0.0.1). A plain
//! `GET` of the service's stream route is answered on the connection with
//! no per-connection buffers, and its body written on one multi-thread
//! runtime shared by all workers ([`Config::stream_threads`]), so a busy or
//! descheduled worker holds no stream back; any other request is handed to
//! an actix-http service the caller builds (an actix-web app, for example).
//! The limits a hostile client could otherwise abuse are enforced on both
//! paths:
//!
//! - a request head must arrive whole within [`Config::request_timeout`] of
//!   its first byte (the first request's from accept), on every request of
//!   every connection: else `408`, then the connection closes. On actix's
//!   path the bound runs until the response starts, so a request body and
//!   the handler's answer must fit in it too;
//! - a connection idle between requests closes after
//!   [`Config::keep_alive`], or at once when shutdown begins, and so does one
//!   whose next request is only partly read (on the fast path);
//! - a stream is written as chunks to HTTP/1.1 clients; a route head with
//!   `no_chunking` (what HTTP/1.0 needs) gets bare frames and the
//!   connection closes after them; a client that closes its side ends its
//!   stream at once, and the route hears how each stream ended
//!   ([`StreamRoute::ended`]);
//! - at most [`Config::max_connections`] connections per worker, and at most
//!   [`Config::max_connections_per_address`] from one client address across
//!   all workers (IPv6 grouped by /64); past it a client gets a `503`, or,
//!   for a stream request, the route's own answer if it has one
//!   ([`StreamRoute::over_address_limit`]);
//! - request metrics get a method label from a fixed set ([`method_label`]).
//!
//! # Layout
//! - [`server`]: binds, starts the workers and the stream runtime, builds
//!   actix-http's service; [`Config`].
//! - [`route`]: what a service plugs in: the [`StreamRoute`], how its stream
//!   ended ([`StreamEnd`]), and the request [`Observer`].
//! - `connection`: one accepted connection, from its first byte to its close.
//! - `replay`: the socket as actix-http sees it: bytes already read first,
//!   and the request deadline enforced on its reads.
//! - [`per_address`]: connections (and a service's own things) counted per
//!   client address, IPv6 grouped by /64.
//! - `socket`: the kinds of stream served (TCP, unix), and who a unix peer
//!   is ([`UNIX_PEER`]).
//! - [`unix`]: binding a unix socket (a stale file replaced, a live one
//!   refused), and removing it at the end.
//! - `answer`: the few responses written here rather than by actix.

mod answer;
mod connection;
pub mod per_address;
mod replay;
pub mod route;
pub mod server;
mod socket;
pub mod unix;

pub use route::{NoStreamRoute, Observer, StreamEnd, StreamRoute, method_label};
pub use server::{AppFactory, Bound, Config, bind};
pub use socket::UNIX_PEER;
pub use unix::SocketFile;

/// actix-http's request head, as [`StreamRoute::open`] receives it.
pub use actix_http::RequestHead;

/// A request head longer than this is not read by the fast path: actix-http
/// gets it (and answers 431 past its own, larger limit). Browsers'
/// EventSource heads, cookies included, are usually well under it.
pub const MAX_HEAD: usize = 4096;
