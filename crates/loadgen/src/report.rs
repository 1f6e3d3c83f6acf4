//! The run's result: one JSON document, and a human summary of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::churn::ChurnResult;
use crate::histogram::LatencySummary;
use crate::memory::{GroupReport, Growth, Sample};
use crate::protocol::MissingSample;
use crate::replay::ReplaySummary;
use crate::sweep::{SweepBy, SweepPass};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    pub label: Option<String>,
    /// Wall-clock start, µs since the Unix epoch.
    pub started_micros: u64,
    /// `/proc/loadavg` before and after: how busy the machine was.
    pub load_average_start: [f64; 3],
    pub load_average_end: [f64; 3],
    /// Subscribe URL templates, one per server, in round-robin order.
    pub sub_urls: Vec<String>,
    pub pub_url: String,
    pub topics: Vec<String>,
    pub subscribers: SubscriberSummary,
    pub memory: Vec<GroupReport>,
    pub phases: Vec<PhaseSummary>,
    pub churn: Option<ChurnSummary>,
    /// Memory per topic, one entry per --sweep-by pass.
    #[serde(default)]
    pub topic_sweep: Vec<SweepPass>,
    /// Memory per replaying client.
    #[serde(default)]
    pub replay: Option<ReplaySummary>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscriberSummary {
    pub requested: u64,
    pub connected: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub processes: usize,
    pub threads_per_process: usize,
    pub source_ips: usize,
    /// From the first connect to the last subscriber connected or failed.
    pub connect_seconds: f64,
    /// Closed by the server over the whole run.
    pub disconnected: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub phase: u32,
    /// `open` (paced) or `closed` (flat out).
    pub pace: String,
    /// Messages/s asked for (open loop).
    pub target_rate: Option<f64>,
    pub duration_seconds: f64,
    /// Wall clock, µs since the Unix epoch, when the phase began and when
    /// its delivery report was complete (after the drain): the window to
    /// read other processes' CPU over.
    #[serde(default)]
    pub started_micros: u64,
    #[serde(default)]
    pub ended_micros: u64,
    pub publishers: usize,
    pub publish: PublishSummary,
    pub delivery: DeliverySummary,
    /// Cores used while the phase published, by each --mem group and by
    /// this tool (`loadgen`, its child processes included).
    #[serde(default)]
    pub cpu: Vec<CpuUse>,
}

/// Cores one set of processes used over a phase: CPU seconds (user and
/// system, every thread) over the phase's wall-clock seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuUse {
    pub name: String,
    pub cores: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishSummary {
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub behind_schedule: u64,
    /// Scheduled but never sent: the publishers could not keep the pace.
    pub unsent: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Acknowledged publishes per second of the phase.
    pub per_second: f64,
    pub latency: LatencySummary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliverySummary {
    /// Subscribers open when the phase began.
    pub subscribers: u64,
    /// What should have arrived: every acknowledged message of a topic, to
    /// every subscriber of that topic.
    pub expected: u64,
    pub deliveries: u64,
    /// Deliveries per second, from the phase's start to its last delivery.
    pub per_second: f64,
    pub lost: u64,
    pub subscribers_with_loss: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub unacknowledged: u64,
    pub late: u64,
    pub foreign: u64,
    pub disconnected: u64,
    /// Seconds from the phase's start to its last delivery.
    pub seconds: f64,
    pub latency: LatencySummary,
    /// A few subscribers that missed messages: which, and from where on.
    pub missing_samples: Vec<MissingSample>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnSummary {
    pub result: ChurnResult,
    /// Per --mem group: before the churn, right after it, and after the
    /// settle time.
    pub samples: Vec<ChurnSamples>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnSamples {
    pub name: String,
    pub before: Sample,
    pub after: Sample,
    pub settled: Sample,
}

fn latency(l: &LatencySummary) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
    )
}

fn counts<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl RunReport {
    pub fn human(&self) -> String {
        let mut out = String::new();
        let s = &self.subscribers;
        let _ = writeln!(
            out,
            "loadgen{}: {} subscribers on {} topic(s){}: {} connected, {} failed in {:.1} s ({} process(es) × {} thread(s), {} source address(es))",
            self.label
                .as_ref()
                .map(|l| format!(" [{l}]"))
                .unwrap_or_default(),
            s.requested,
            self.topics.len(),
            match self.sub_urls.len() {
                0 | 1 => String::new(),
                servers => format!(" over {servers} servers"),
            },
            s.connected,
            s.failed,
            s.connect_seconds,
            s.processes,
            s.threads_per_process,
            s.source_ips,
        );
        if !s.errors.is_empty() {
            let _ = writeln!(out, "  connect errors: {}", counts(&s.errors));
        }
        let _ = writeln!(
            out,
            "  machine load average: {:.2} at start, {:.2} at end",
            self.load_average_start[0], self.load_average_end[0]
        );
        for m in &self.memory {
            let _ = writeln!(
                out,
                "  memory {}: {:.0} bytes/connection{} (RSS {} → {} KiB, open files {} → {})",
                m.name,
                m.bytes_per_connection,
                m.bytes_per_open_file
                    .map(|b| format!(", {b:.0} bytes per open file gained"))
                    .unwrap_or_default(),
                m.before.rss_kib,
                m.after.rss_kib,
                m.before.fds,
                m.after.fds
            );
        }
        for p in &self.phases {
            let pace = match p.target_rate {
                Some(rate) => format!("open loop at {rate} msg/s"),
                None => "closed loop".to_owned(),
            };
            let _ = writeln!(
                out,
                "phase {}: {pace}, {} publisher(s), {:.1} s",
                p.phase, p.publishers, p.duration_seconds
            );
            let pu = &p.publish;
            let _ = writeln!(
                out,
                "  publish: {} sent, {} ok ({:.0}/s), {} failed, {} timed out, {} behind schedule, {} unsent; latency {}",
                pu.sent,
                pu.ok,
                pu.per_second,
                pu.failed,
                pu.timeouts,
                pu.behind_schedule,
                pu.unsent,
                latency(&pu.latency)
            );
            if !pu.statuses.is_empty() {
                let _ = writeln!(out, "  publish statuses: {}", counts(&pu.statuses));
            }
            if !pu.errors.is_empty() {
                let _ = writeln!(out, "  publish errors: {}", counts(&pu.errors));
            }
            if !p.cpu.is_empty() {
                let cores: Vec<String> = p
                    .cpu
                    .iter()
                    .map(|c| format!("{} {:.2}", c.name, c.cores))
                    .collect();
                let _ = writeln!(out, "  cores while publishing: {}", cores.join(", "));
            }
            let d = &p.delivery;
            if d.subscribers > 0 {
                let _ = writeln!(
                    out,
                    "  deliveries: {} of {} expected to {} subscribers ({:.0}/s over {:.1} s); latency {}",
                    d.deliveries,
                    d.expected,
                    d.subscribers,
                    d.per_second,
                    d.seconds,
                    latency(&d.latency)
                );
                let _ = writeln!(
                    out,
                    "  lost {} ({} subscribers), duplicates {}, out of order {}, disconnected {}, unacknowledged {}, late {}, foreign {}",
                    d.lost,
                    d.subscribers_with_loss,
                    d.duplicates,
                    d.out_of_order,
                    d.disconnected,
                    d.unacknowledged,
                    d.late,
                    d.foreign
                );
                for m in &d.missing_samples {
                    let _ = writeln!(
                        out,
                        "    subscriber {} lacks {} from publisher {}, first seq {} (last acknowledged {})",
                        m.subscriber, m.missing, m.publisher, m.seq, m.last_acked
                    );
                }
            }
        }
        if let Some(churn) = &self.churn {
            let r = &churn.result;
            let _ = writeln!(
                out,
                "churn: {} cycles ({} ok, {} failed) in {:.1} s, {:.0}/s",
                r.cycles, r.ok, r.failed, r.seconds, r.per_second
            );
            if !r.errors.is_empty() {
                let _ = writeln!(out, "  churn errors: {}", counts(&r.errors));
            }
            for m in &churn.samples {
                let _ = writeln!(
                    out,
                    "  {}: open files {} → {} → {} settled; RSS {} → {} → {} KiB",
                    m.name,
                    m.before.fds,
                    m.after.fds,
                    m.settled.fds,
                    m.before.rss_kib,
                    m.after.rss_kib,
                    m.settled.rss_kib
                );
            }
        }
        for pass in &self.topic_sweep {
            let by = match pass.by {
                SweepBy::Publish => "publish, one event each",
                SweepBy::Subscribe => "subscribe only, GETs closed at once",
            };
            let _ = writeln!(
                out,
                "topic sweep ({by}): {} new topics in {} requests ({} ok, {} failed, {} unsent) in {:.1} s",
                pass.topics, pass.requests, pass.ok, pass.failed, pass.unsent, pass.seconds
            );
            if !pass.statuses.is_empty() {
                let _ = writeln!(out, "  statuses: {}", counts(&pass.statuses));
            }
            if !pass.errors.is_empty() {
                let _ = writeln!(out, "  errors: {}", counts(&pass.errors));
            }
            growth(&mut out, &pass.memory, "topic");
        }
        if let Some(r) = &self.replay {
            let h = &r.history;
            let _ = writeln!(
                out,
                "replay: {} topics × {} events of {} bytes published ({} ok, {} failed, {} unsent; statuses {}) in {:.1} s",
                r.topics,
                r.events_per_topic,
                r.message_bytes,
                h.ok,
                h.failed,
                h.unsent,
                counts(&h.statuses),
                h.seconds
            );
            let _ = writeln!(
                out,
                "  {} clients resuming from the start, never reading (SO_RCVBUF {} bytes), {} at a time: {} open, {} failed in {:.1} s",
                r.clients, r.recv_buffer, r.concurrency, r.opened, r.failed, r.connect_seconds
            );
            if !r.errors.is_empty() {
                let _ = writeln!(out, "  errors: {}", counts(&r.errors));
            }
            growth(&mut out, &r.memory, "client");
            let [before, open, closed] = r.tcp_buffers_kib;
            let _ = writeln!(
                out,
                "  TCP socket buffers, machine-wide: {:.0} KiB/client ({before} → {open} KiB; {closed} KiB once closed)",
                (open as f64 - before as f64) / r.opened.max(1) as f64
            );
        }
        out
    }
}

fn growth(out: &mut String, memory: &[Growth], unit: &str) {
    for m in memory {
        let closed = m
            .closed
            .map(|c| format!("; {} KiB, {} open files once closed", c.rss_kib, c.fds))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  memory {}: {:.0} bytes/{unit} = {:.1} KiB (RSS {} → {} KiB, open files {} → {}{closed})",
            m.name,
            m.bytes_per_unit,
            m.bytes_per_unit / 1024.0,
            m.before.rss_kib,
            m.after.rss_kib,
            m.before.fds,
            m.after.fds,
        );
    }
}
