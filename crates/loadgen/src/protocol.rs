//! What the coordinator and its subscriber workers say to each other.
//!
//! A worker is a thread of the coordinator's process for small runs, or a
//! child process (`loadgen worker`) when one process cannot hold all the
//! sockets; either way it gets the same [`WorkerConfig`] and [`Command`]s
//! and answers with the same [`Report`]s. Between processes they travel as
//! JSON lines over the child's stdin and stdout.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::histogram::{Histogram, WireHistogram};

/// Which subscribers a worker opens, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// Subscribe URL per server, then per topic: subscriber `i` (global
    /// index) goes to server `i % sub_urls.len()` for topic
    /// `i % topics`. One server keeps the single-target behaviour.
    pub sub_urls: Vec<Vec<String>>,
    pub allow_remote: bool,
    /// Global index of this worker's first subscriber.
    pub first: usize,
    pub count: usize,
    /// Subscriber `i` connects from `source_ips[i % len]` (none: the OS
    /// picks).
    pub source_ips: Vec<IpAddr>,
    /// New connections per second, for this worker alone.
    pub ramp_per_sec: f64,
    /// Threads, each with its own single-threaded runtime and share of the
    /// subscribers, so delivery bookkeeping needs no locks.
    pub threads: usize,
    pub connect_timeout_ms: u64,
}

/// Coordinator to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Forget the previous phase's bookkeeping; messages stamped with this
    /// phase count from now on. Answered with [`Report::PhaseReady`] once
    /// every subscriber thread counts them: the coordinator publishes only
    /// then, or a message could reach a thread still in the last phase and
    /// be thrown away as late.
    Phase { phase: u32, start_micros: u64 },
    /// Publishing for `phase` ended and these messages were acknowledged:
    /// wait up to `drain_ms` for every subscriber to have them, then report.
    End {
        phase: u32,
        acked: Vec<Acked>,
        drain_ms: u64,
    },
    /// Close every connection and report the last counters.
    Stop,
}

/// The messages one publisher had acknowledged in a phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Acked {
    pub publisher: u32,
    pub topic: u32,
    /// Half-open ranges `[start, end)` of acknowledged sequence numbers.
    pub ranges: Vec<(u64, u64)>,
}

impl Acked {
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a).sum()
    }

    /// Adds `seq`, extending the last range when contiguous.
    pub fn push(&mut self, seq: u64) {
        match self.ranges.last_mut() {
            Some((_, end)) if *end == seq => *end += 1,
            _ => self.ranges.push((seq, seq + 1)),
        }
    }
}

/// Worker to coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    /// Every subscriber of the worker either connected or failed.
    Connected(ConnectReport),
    /// Every subscriber thread of the worker counts the new phase.
    PhaseReady {
        phase: u32,
    },
    Phase(PhaseReport),
    Stopped(StopReport),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    pub connected: u64,
    pub failed: u64,
    /// Failure reasons and how often each was seen.
    pub errors: BTreeMap<String, u64>,
}

impl ConnectReport {
    pub fn merge(&mut self, other: &ConnectReport) {
        self.connected += other.connected;
        self.failed += other.failed;
        for (reason, n) in &other.errors {
            *self.errors.entry(reason.clone()).or_default() += n;
        }
    }
}

/// What the subscribers saw of one phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseReport {
    pub phase: u32,
    /// Subscribers open when the phase began.
    pub subscribers: u64,
    /// Stamped messages of this phase received, duplicates included.
    pub deliveries: u64,
    /// Acknowledged messages a subscriber never got (summed over
    /// subscribers; a subscriber that disconnected counts what it missed).
    pub lost: u64,
    pub subscribers_with_loss: u64,
    pub duplicates: u64,
    /// Messages that came after a later one from the same publisher.
    pub out_of_order: u64,
    /// Received but never acknowledged (the publish failed or timed out
    /// after the server had taken it).
    pub unacknowledged: u64,
    /// Messages stamped with an earlier phase, arriving in this one.
    pub late: u64,
    /// Events whose data is not a loadgen stamp (`reset` notices, other
    /// publishers' traffic).
    pub foreign: u64,
    pub disconnected: u64,
    /// Wall-clock µs of the last stamped delivery of this phase.
    pub last_delivery_micros: u64,
    /// End-to-end latency: receive time minus the stamp's send time.
    pub latency: WireHistogram,
    /// A few of the subscribers that missed something, to tell a message
    /// dropped mid-stream from one stuck at the end of the phase.
    pub missing_samples: Vec<MissingSample>,
}

/// One subscriber's first missing message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MissingSample {
    /// Global subscriber index.
    pub subscriber: u64,
    pub publisher: u32,
    /// The first acknowledged sequence number it lacks.
    pub seq: u64,
    /// The publisher's last acknowledged sequence number in the phase.
    pub last_acked: u64,
    /// How many it lacks from this publisher.
    pub missing: u64,
}

/// Missing samples kept per report.
pub const MISSING_SAMPLES: usize = 10;

impl PhaseReport {
    pub fn merge(&mut self, other: &PhaseReport) {
        self.subscribers += other.subscribers;
        self.deliveries += other.deliveries;
        self.lost += other.lost;
        self.subscribers_with_loss += other.subscribers_with_loss;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.unacknowledged += other.unacknowledged;
        self.late += other.late;
        self.foreign += other.foreign;
        self.disconnected += other.disconnected;
        self.last_delivery_micros = self.last_delivery_micros.max(other.last_delivery_micros);
        let room = MISSING_SAMPLES.saturating_sub(self.missing_samples.len());
        self.missing_samples
            .extend(other.missing_samples.iter().take(room).cloned());
        let mut latency = Histogram::from_wire(&self.latency);
        latency.merge(&Histogram::from_wire(&other.latency));
        self.latency = latency.to_wire();
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StopReport {
    /// Subscribers the server closed (or that failed) over the whole run.
    pub disconnected: u64,
    /// Subscribers still open when told to stop.
    pub open: u64,
}

impl StopReport {
    pub fn merge(&mut self, other: &StopReport) {
        self.disconnected += other.disconnected;
        self.open += other.open;
    }
}
