//! A load generator for SSE hubs: event-stream, or anything that streams
//! `text/event-stream` over HTTP/1.1 and takes publishes by POST (Nchan, a
//! bare hub, ...).
//!
//! It opens N subscribers, publishes stamped messages, and reports what
//! arrived: deliveries per second, end-to-end latency (each message carries
//! its send time), loss, duplicates and order per subscriber, publishes per
//! second and their latency, and the memory per connection of the server
//! processes it is told to watch, and per topic or per replaying client
//! when asked. Every loop is bounded in count and time.
//!
//! # Layout
//! - [`args`]: the command line.
//! - [`run`]: the coordinator; ramps subscribers, runs phases, assembles
//!   the report.
//! - [`worker`]: a subscriber population in one process, in-process or as
//!   a child process (`loadgen worker`) past the open-file limit.
//! - [`subscriber`]: the hot path; one thread's subscribers sharing a read
//!   buffer, parsing with `sse_reader`'s WHATWG parser.
//! - [`publisher`]: open-loop and closed-loop publishers.
//! - [`http`]: the little HTTP/1.1 the tool needs, chunked decoding included.
//! - [`payload`]: the stamp each message carries.
//! - [`tracker`]: per-subscriber loss, duplicate and order bookkeeping.
//! - [`histogram`]: mergeable latency histograms.
//! - [`memory`]: RSS and open files from `/proc`.
//! - [`churn`]: connect/disconnect cycles.
//! - [`sweep`]: memory per topic, over many new topics.
//! - [`replay`]: memory per client resuming a full history without reading.
//! - [`protocol`]: what the coordinator and workers exchange.
//! - [`report`]: the JSON report and its human summary.

pub mod args;
pub mod churn;
pub mod histogram;
pub mod http;
pub mod memory;
pub mod payload;
pub mod protocol;
pub mod publisher;
pub mod replay;
pub mod report;
pub mod run;
pub mod subscriber;
pub mod sweep;
pub mod tracker;
pub mod worker;
