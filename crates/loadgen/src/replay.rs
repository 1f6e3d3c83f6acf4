//! Memory per replaying client: fills topics' history, then opens streams
//! that resume from the start of all of them and never read, so whatever
//! the server prepares for a replay stays in the server, where it is
//! measured. The clients' receive buffers are kept small (SO_RCVBUF) so
//! the kernel holds little of it on their side.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::http::{self, Url};
use crate::memory::{self, Group, Growth};
use crate::publisher::{self, Batch, BatchResult, BodyFormat};

/// Most bytes a replaying client reads: enough for the response head,
/// which tells whether the stream was accepted.
const HEAD_LIMIT: usize = 8192;

/// Everything the replay stage needs.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    /// Subscribe URL with `{topic}` in it, as for [`crate::sweep`].
    pub sub_template: String,
    /// Publish URL with `{topic}` still in it.
    pub pub_url: Url,
    pub body: BodyFormat,
    pub topics: Vec<String>,
    /// Events published to each topic before the clients connect.
    pub events_per_topic: u64,
    pub message_bytes: usize,
    pub clients: usize,
    /// Clients waiting for their response head at a time.
    pub concurrency: usize,
    /// SO_RCVBUF of each client's socket, in bytes.
    pub recv_buffer: u32,
    pub publish_timeout: Duration,
    pub connect_timeout: Duration,
    /// Bound on publishing the history.
    pub limit: Duration,
    pub settle: Duration,
    pub source_ips: Vec<IpAddr>,
    pub allow_remote: bool,
}

/// What the replay stage did and what it cost the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplaySummary {
    pub clients: u64,
    /// Streams answered 200 and then held open without reading.
    pub opened: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub topics: usize,
    pub events_per_topic: u64,
    pub message_bytes: usize,
    pub recv_buffer: u32,
    pub concurrency: usize,
    /// The `Last-Event-ID` every client sent.
    pub last_event_id: String,
    /// Publishing the history.
    pub history: BatchResult,
    pub connect_seconds: f64,
    /// RSS growth per replaying client of each --mem group, read with the
    /// clients open; `closed` once they are gone.
    pub memory: Vec<Growth>,
    /// Machine-wide TCP socket buffers, KiB: before the clients connect,
    /// with them open, and once closed. Data that left the server's
    /// memory for its socket (or a proxy's) waits here.
    pub tcp_buffers_kib: [u64; 3],
}

/// Publishes the history, opens the clients, measures, closes them and
/// measures again.
pub async fn run(plan: &ReplayPlan, groups: &[Group]) -> anyhow::Result<ReplaySummary> {
    let history = publisher::publish_batch(Batch {
        url: plan.pub_url.clone(),
        body: plan.body,
        topics: Arc::from(plan.topics.clone()),
        count: plan.events_per_topic * plan.topics.len() as u64,
        message_bytes: plan.message_bytes,
        connections: plan.topics.len(),
        timeout: plan.publish_timeout,
        limit: plan.limit,
        source_ips: plan.source_ips.clone(),
    })
    .await;
    let url = plan
        .sub_template
        .replace("{topic}", &plan.topics.join("&topic="));
    let url = Url::parse(&url, plan.allow_remote)?;
    // `0-0` for each topic: nothing seen yet, so resume from its first
    // retained event. Every position is the same, so the order of topics
    // (sorted by name on the server) does not matter.
    let last_event_id = vec!["0-0"; plan.topics.len()].join(",");
    let request = http::get_request_with(
        &url,
        "text/event-stream",
        &format!("Last-Event-ID: {last_event_id}\r\n"),
    );

    tokio::time::sleep(plan.settle).await;
    let before = memory::sample_all(groups);
    let tcp_before = memory::tcp_buffers_kib();
    let started = Instant::now();
    // At most `concurrency` requests wait for their head at a time: a
    // server that builds each replay before answering may refuse or time
    // out a burst of them, which would measure the burst, not the clients.
    let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..plan.clients {
        let source =
            (!plan.source_ips.is_empty()).then(|| plan.source_ips[client % plan.source_ips.len()]);
        let (url, request, plan, gate) = (url.clone(), request.clone(), plan.clone(), gate.clone());
        tasks.spawn(async move {
            let _turn = gate.acquire_owned().await?;
            let opened = tokio::time::timeout(
                plan.connect_timeout,
                open(&url, source, &request, plan.recv_buffer),
            )
            .await;
            match opened {
                Ok(result) => result,
                Err(_) => bail!("timed out before the response head"),
            }
        });
    }
    let mut streams = Vec::with_capacity(plan.clients);
    let mut errors = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(stream)) => streams.push(stream),
            Ok(Err(error)) => *errors.entry(format!("{error:#}")).or_default() += 1,
            Err(error) => *errors.entry(format!("{error}")).or_default() += 1,
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let opened = streams.len() as u64;

    tokio::time::sleep(plan.settle).await;
    let after = memory::sample_all(groups);
    let tcp_after = memory::tcp_buffers_kib();
    drop(streams);
    tokio::time::sleep(plan.settle).await;
    let closed = memory::sample_all(groups);
    let tcp_closed = memory::tcp_buffers_kib();
    let mut growth = Growth::of_groups(groups, &before, &after, opened);
    for (g, sample) in growth.iter_mut().zip(closed) {
        g.closed = Some(sample);
    }
    Ok(ReplaySummary {
        clients: plan.clients as u64,
        opened,
        failed: plan.clients as u64 - opened,
        errors,
        topics: plan.topics.len(),
        events_per_topic: plan.events_per_topic,
        message_bytes: plan.message_bytes,
        recv_buffer: plan.recv_buffer,
        concurrency: plan.concurrency,
        last_event_id,
        history,
        connect_seconds,
        memory: growth,
        tcp_buffers_kib: [tcp_before, tcp_after, tcp_closed],
    })
}

/// Connects with a small receive buffer, sends the resuming request and
/// reads no more than the response head.
async fn open(
    url: &Url,
    source: Option<IpAddr>,
    request: &[u8],
    recv_buffer: u32,
) -> anyhow::Result<TcpStream> {
    let mut stream =
        http::connect_with_recv_buffer(url.addr, source, Duration::from_secs(5), Some(recv_buffer))
            .await?;
    stream.write_all(request).await?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(head) = http::parse_head(&buf)? {
            head.ensure_stream()?;
            return Ok(stream);
        }
        if buf.len() >= HEAD_LIMIT {
            bail!("no response head in the first {HEAD_LIMIT} bytes");
        }
        // Small reads: what follows the head is the replay, left unread.
        let mut piece = [0u8; 256];
        let n = stream.read(&mut piece).await?;
        if n == 0 {
            bail!("closed before the response head");
        }
        buf.extend_from_slice(&piece[..n]);
    }
}
