//! One thread's share of the subscribers: the hot path of the tool.
//!
//! A shard is one OS thread running a single-threaded runtime. Its
//! subscribers are local tasks, so their bookkeeping lives in plain
//! `RefCell`s, and they share one read buffer: a task only borrows it
//! between `readable()` and the end of parsing, never across an await.
//! Per connection that leaves the socket, the chunked decoder, the SSE
//! parser's buffers (the line and the event being read) and the tracker,
//! which is what lets one process hold tens of thousands of subscribers
//! without loading the machine more than the server it measures. Events
//! are counted as the parser finds them, borrowed from its buffers.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use sse_reader::{ItemRef, Parser};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::histogram::Histogram;
use crate::http::{self, Chunked, Framing, Url};
use crate::payload;
use crate::protocol::{
    Acked, Command, ConnectReport, MISSING_SAMPLES, MissingSample, PhaseReport, Report, StopReport,
};
use crate::tracker::Tracker;

/// Bytes read per `read` call: large enough that a subscriber far behind
/// takes many events per system call.
const READ_BUFFER: usize = 64 * 1024;
/// How often a draining shard checks whether every subscriber has
/// everything.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// One subscriber to open.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Global subscriber index, for reports.
    pub index: u64,
    pub url: Rc<Url>,
    pub topic: u32,
    pub source: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Connecting,
    Open,
    Failed,
    Closed,
}

#[derive(Debug)]
struct Subscriber {
    index: u64,
    topic: u32,
    status: Status,
    tracker: Tracker,
    /// The server closed this stream during the current phase.
    closed_in_phase: bool,
}

/// The state every subscriber task of a shard shares.
#[derive(Debug)]
struct Shard {
    subscribers: RefCell<Vec<Subscriber>>,
    buffer: RefCell<Vec<u8>>,
    phase: Cell<u32>,
    stats: RefCell<PhaseStats>,
    connected: Cell<u64>,
    failed: Cell<u64>,
    errors: RefCell<BTreeMap<String, u64>>,
    /// Closed by the server after having connected, over the whole run.
    disconnected: Cell<u64>,
}

#[derive(Debug, Default)]
struct PhaseStats {
    deliveries: u64,
    late: u64,
    foreign: u64,
    last_delivery_micros: u64,
    latency: Histogram,
}

/// Runs a shard on the current thread until told to stop.
pub fn run_shard(
    plans: Vec<Plan>,
    ramp_per_sec: f64,
    connect_timeout: Duration,
    commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<Report>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(
        &runtime,
        serve(plans, ramp_per_sec, connect_timeout, commands, reports),
    );
    Ok(())
}

async fn serve(
    plans: Vec<Plan>,
    ramp_per_sec: f64,
    connect_timeout: Duration,
    mut commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let shard = Rc::new(Shard {
        subscribers: RefCell::new(
            plans
                .iter()
                .map(|plan| Subscriber {
                    index: plan.index,
                    topic: plan.topic,
                    status: Status::Connecting,
                    tracker: Tracker::default(),
                    closed_in_phase: false,
                })
                .collect(),
        ),
        buffer: RefCell::new(vec![0; READ_BUFFER]),
        phase: Cell::new(0),
        stats: RefCell::new(PhaseStats::default()),
        connected: Cell::new(0),
        failed: Cell::new(0),
        errors: RefCell::new(BTreeMap::new()),
        disconnected: Cell::new(0),
    });
    let total = plans.len() as u64;
    let mut tasks = JoinSet::new();

    // Ramp: start connections at the requested pace, answering commands
    // meanwhile would complicate the protocol for nothing, since the
    // coordinator waits for `Connected` before it sends any.
    let started = tokio::time::Instant::now();
    for (index, plan) in plans.into_iter().enumerate() {
        if ramp_per_sec > 0.0 {
            let due = started + Duration::from_secs_f64(index as f64 / ramp_per_sec);
            tokio::time::sleep_until(due).await;
        }
        tasks.spawn_local(subscriber(shard.clone(), index, plan, connect_timeout));
    }
    while shard.connected.get() + shard.failed.get() < total {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = reports.send(Report::Connected(ConnectReport {
        connected: shard.connected.get(),
        failed: shard.failed.get(),
        errors: shard.errors.borrow().clone(),
    }));

    let mut subscribers_at_start = 0;
    while let Some(command) = commands.recv().await {
        match command {
            Command::Phase { phase, .. } => {
                shard.phase.set(phase);
                *shard.stats.borrow_mut() = PhaseStats::default();
                let mut subscribers = shard.subscribers.borrow_mut();
                for subscriber in subscribers.iter_mut() {
                    subscriber.tracker.reset();
                    subscriber.closed_in_phase = false;
                }
                subscribers_at_start = subscribers
                    .iter()
                    .filter(|s| s.status == Status::Open)
                    .count() as u64;
                let _ = reports.send(Report::PhaseReady { phase });
            }
            Command::End {
                phase,
                acked,
                drain_ms,
            } => {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(drain_ms);
                while !all_complete(&shard, &acked) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(DRAIN_POLL).await;
                }
                let mut report = phase_report(&shard, &acked);
                report.phase = phase;
                report.subscribers = subscribers_at_start;
                let _ = reports.send(Report::Phase(report));
            }
            Command::Stop => break,
        }
    }
    let open = shard
        .subscribers
        .borrow()
        .iter()
        .filter(|s| s.status == Status::Open)
        .count() as u64;
    tasks.shutdown().await;
    let _ = reports.send(Report::Stopped(StopReport {
        disconnected: shard.disconnected.get(),
        open,
    }));
}

/// Every open subscriber has every acknowledged message of its topic.
fn all_complete(shard: &Shard, acked: &[Acked]) -> bool {
    shard.subscribers.borrow().iter().all(|subscriber| {
        subscriber.status != Status::Open
            || acked
                .iter()
                .filter(|a| a.topic == subscriber.topic)
                .all(|a| subscriber.tracker.missing(a) == 0)
    })
}

fn phase_report(shard: &Shard, acked: &[Acked]) -> PhaseReport {
    let stats = shard.stats.borrow();
    let mut report = PhaseReport {
        deliveries: stats.deliveries,
        late: stats.late,
        foreign: stats.foreign,
        last_delivery_micros: stats.last_delivery_micros,
        latency: stats.latency.to_wire(),
        ..PhaseReport::default()
    };
    for subscriber in shard.subscribers.borrow().iter() {
        // Subscribers that never connected were reported as failures
        // already; everyone else is owed every acknowledged message.
        if matches!(subscriber.status, Status::Connecting | Status::Failed) {
            continue;
        }
        if subscriber.status == Status::Closed && !subscriber.closed_in_phase {
            // Gone before this phase began: not a subscriber of it.
            continue;
        }
        let mut lost = 0;
        for a in acked.iter().filter(|a| a.topic == subscriber.topic) {
            let missing = subscriber.tracker.missing(a);
            lost += missing;
            if missing > 0
                && report.missing_samples.len() < MISSING_SAMPLES
                && let Some(seq) = subscriber.tracker.first_missing(a)
            {
                report.missing_samples.push(MissingSample {
                    subscriber: subscriber.index,
                    publisher: a.publisher,
                    seq,
                    last_acked: a.ranges.last().map_or(0, |r| r.1.saturating_sub(1)),
                    missing,
                });
            }
        }
        report.lost += lost;
        report.subscribers_with_loss += u64::from(lost > 0);
        report.duplicates += subscriber.tracker.duplicates;
        report.out_of_order += subscriber.tracker.out_of_order;
        report.unacknowledged += subscriber.tracker.unacknowledged(acked);
        report.disconnected += u64::from(subscriber.closed_in_phase);
    }
    report
}

/// Per-connection decoding state.
struct Reader {
    head: Vec<u8>,
    framing: Option<Framing>,
    chunked: Chunked,
    /// Body bytes left when the response has a length.
    remaining: u64,
    parser: Parser,
}

async fn subscriber(shard: Rc<Shard>, index: usize, plan: Plan, connect_timeout: Duration) {
    let outcome = connect_and_read(&shard, index, &plan, connect_timeout).await;
    let mut subscribers = shard.subscribers.borrow_mut();
    let subscriber = &mut subscribers[index];
    match subscriber.status {
        Status::Connecting => {
            subscriber.status = Status::Failed;
            shard.failed.set(shard.failed.get() + 1);
            let reason = match outcome {
                Err(error) => short_reason(&error),
                Ok(()) => "closed before the response head".to_owned(),
            };
            *shard.errors.borrow_mut().entry(reason).or_default() += 1;
        }
        Status::Open => {
            subscriber.status = Status::Closed;
            subscriber.closed_in_phase = true;
            shard.disconnected.set(shard.disconnected.get() + 1);
        }
        Status::Failed | Status::Closed => {}
    }
}

/// An error chain on one line, bounded, as a key for counting failures.
fn short_reason(error: &anyhow::Error) -> String {
    format!("{error:#}").chars().take(120).collect()
}

async fn connect_and_read(
    shard: &Shard,
    index: usize,
    plan: &Plan,
    connect_timeout: Duration,
) -> anyhow::Result<()> {
    let mut stream = http::connect(plan.url.addr, plan.source, connect_timeout).await?;
    stream
        .write_all(&http::get_request(&plan.url, "text/event-stream"))
        .await?;
    let mut reader = Reader {
        head: Vec::new(),
        framing: None,
        chunked: Chunked::default(),
        remaining: 0,
        parser: Parser::new(),
    };
    loop {
        // Until the head arrives, a silent server must not hold the ramp.
        if reader.framing.is_none() {
            tokio::time::timeout(connect_timeout, stream.readable())
                .await
                .map_err(|_| anyhow::anyhow!("no response head in time"))??;
        } else {
            stream.readable().await?;
        }
        let mut buffer = shard.buffer.borrow_mut();
        let n = match stream.try_read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error.into()),
        };
        if !consume(shard, index, &mut reader, &buffer[..n])? {
            return Ok(());
        }
    }
}

/// Handles bytes read from one subscriber's socket; false when its
/// response is over.
fn consume(
    shard: &Shard,
    index: usize,
    reader: &mut Reader,
    mut bytes: &[u8],
) -> anyhow::Result<bool> {
    if reader.framing.is_none() {
        reader.head.extend_from_slice(bytes);
        let Some(head) = http::parse_head(&reader.head)? else {
            anyhow::ensure!(reader.head.len() < 64 * 1024, "response head too large");
            return Ok(true);
        };
        head.ensure_stream()?;
        reader.framing = Some(head.framing);
        if let Framing::Length(n) = head.framing {
            reader.remaining = n;
        }
        let mut subscribers = shard.subscribers.borrow_mut();
        subscribers[index].status = Status::Open;
        shard.connected.set(shard.connected.get() + 1);
        drop(subscribers);
        let body = std::mem::take(&mut reader.head);
        let rest = &body[head.len..];
        return match rest.is_empty() {
            true => Ok(true),
            false => consume(shard, index, reader, rest),
        };
    }
    // Events are counted as the parser finds them, borrowed from its
    // buffers: nothing is allocated per event.
    let mut delivery = Delivery::new(shard, index);
    let mut on_item = |item: ItemRef<'_>| {
        if let ItemRef::Event(event) = item {
            delivery.event(event.data);
        }
    };
    let done = match reader.framing {
        Some(Framing::Chunked) => {
            let parser = &mut reader.parser;
            reader
                .chunked
                .decode(bytes, |piece| parser.feed_with(piece, &mut on_item))?
        }
        Some(Framing::Length(_)) => {
            let take = (reader.remaining.min(bytes.len() as u64)) as usize;
            bytes = &bytes[..take];
            reader.remaining -= take as u64;
            reader.parser.feed_with(bytes, &mut on_item);
            reader.remaining == 0
        }
        _ => {
            reader.parser.feed_with(bytes, &mut on_item);
            false
        }
    };
    Ok(!done)
}

/// The bookkeeping of the events one read brought to one subscriber.
struct Delivery<'a> {
    stats: RefMut<'a, PhaseStats>,
    subscribers: RefMut<'a, Vec<Subscriber>>,
    index: usize,
    phase: u32,
    /// The receive time of every event of this read, taken at the first.
    now: Option<u64>,
}

impl<'a> Delivery<'a> {
    fn new(shard: &'a Shard, index: usize) -> Self {
        Self {
            stats: shard.stats.borrow_mut(),
            subscribers: shard.subscribers.borrow_mut(),
            index,
            phase: shard.phase.get(),
            now: None,
        }
    }

    fn event(&mut self, data: &str) {
        let now = *self.now.get_or_insert_with(payload::now_micros);
        let stats = &mut *self.stats;
        let Some(stamp) = payload::decode(data) else {
            stats.foreign += 1;
            return;
        };
        if stamp.phase != self.phase {
            stats.late += 1;
            return;
        }
        stats.deliveries += 1;
        stats.latency.record(now.saturating_sub(stamp.sent_micros));
        stats.last_delivery_micros = now;
        self.subscribers[self.index]
            .tracker
            .record(stamp.publisher, stamp.seq);
    }
}
