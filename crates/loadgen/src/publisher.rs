//! Publishers: keep-alive connections sending stamped messages, paced
//! (open loop: a fixed schedule, whatever the server's answers) or flat out
//! (closed loop: the next request as soon as the previous one is
//! answered).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::histogram::Histogram;
use crate::http::{Connection, Url};
use crate::payload::{self, Stamp};
use crate::protocol::Acked;

/// How the message travels in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// `{"message": "...", "topic": "..."}` (event-stream's API).
    Json,
    /// `message=...&topic=...`, form-encoded.
    Form,
    /// The message itself as a text/plain body; the topic is in the URL
    /// (Nchan's publisher endpoint).
    Raw,
}

/// Pacing of one phase.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Messages per second over all publishers.
    Open(f64),
    Closed,
}

/// Everything the publishers of one phase need.
#[derive(Debug, Clone)]
pub struct PhasePlan {
    pub phase: u32,
    /// Publish URL per topic.
    pub urls: Vec<Url>,
    pub topic_names: Vec<String>,
    pub body: BodyFormat,
    pub publishers: usize,
    pub pace: Pace,
    pub duration: Duration,
    pub message_bytes: usize,
    pub timeout: Duration,
    pub source_ips: Vec<IpAddr>,
}

/// What one publisher did in a phase.
#[derive(Debug, Default)]
pub struct PublisherResult {
    pub acked: Acked,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Sends that left more than one interval after their scheduled time:
    /// the server (or this tool) could not keep the open-loop pace.
    pub behind_schedule: u64,
    /// Scheduled sends that were still waiting when the phase ended
    /// (open loop): the offered rate fell short by this many messages.
    pub unsent: u64,
    pub latency: Histogram,
}

/// Runs every publisher of `plan` to the end of its duration.
pub async fn run_phase(plan: &PhasePlan) -> Vec<PublisherResult> {
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for publisher in 0..plan.publishers {
        let plan = plan.clone();
        tasks.spawn(async move { publish(&plan, publisher, start).await });
    }
    let mut results = Vec::with_capacity(plan.publishers);
    while let Some(result) = tasks.join_next().await {
        if let Ok(result) = result {
            results.push(result);
        }
    }
    results.sort_by_key(|r| r.acked.publisher);
    results
}

async fn publish(plan: &PhasePlan, publisher: usize, start: Instant) -> PublisherResult {
    let topic = publisher % plan.urls.len();
    let source =
        (!plan.source_ips.is_empty()).then(|| plan.source_ips[publisher % plan.source_ips.len()]);
    let url = &plan.urls[topic];
    let mut connection = Connection::new(url.clone(), source);
    let mut result = PublisherResult {
        acked: Acked {
            publisher: publisher as u32,
            topic: topic as u32,
            ranges: Vec::new(),
        },
        ..PublisherResult::default()
    };
    let end = start + plan.duration;
    // Publishers start spread over one interval, not all at once.
    let interval = match plan.pace {
        Pace::Open(rate) if rate > 0.0 => {
            Some(Duration::from_secs_f64(plan.publishers as f64 / rate))
        }
        _ => None,
    };
    let offset = interval.map_or(Duration::ZERO, |i| {
        i.mul_f64(publisher as f64 / plan.publishers as f64)
    });
    let mut message = String::with_capacity(plan.message_bytes + 64);
    let mut request = Vec::with_capacity(plan.message_bytes + 256);
    for seq in 0u64.. {
        let now = Instant::now();
        if let Some(interval) = interval {
            let due = start + offset + interval.mul_f64(seq as f64);
            if due >= end {
                break;
            }
            if now >= end {
                // The phase is over however far behind we are: what was
                // not sent by now is reported, not sent late.
                result.unsent = ((end - due).as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
                break;
            }
            if due > now {
                tokio::time::sleep_until(due).await;
            } else if now - due > interval {
                result.behind_schedule += 1;
            }
        } else if now >= end {
            break;
        }
        let stamp = Stamp {
            phase: plan.phase,
            publisher: publisher as u32,
            seq,
            sent_micros: payload::now_micros(),
        };
        payload::encode(stamp, plan.message_bytes, &mut message);
        build_request(
            url,
            plan.body,
            &plan.topic_names[topic],
            &message,
            &mut request,
        );
        let sent = Instant::now();
        result.sent += 1;
        match tokio::time::timeout(plan.timeout, connection.exchange(&request)).await {
            Ok(Ok(response)) => {
                result.latency.record(sent.elapsed().as_micros() as u64);
                *result.statuses.entry(response.status).or_default() += 1;
                if (200..300).contains(&response.status) {
                    result.ok += 1;
                    result.acked.push(seq);
                } else {
                    result.failed += 1;
                    // An overloaded server answering errors at once must not
                    // turn this into a busy loop.
                    if interval.is_none() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            Ok(Err(error)) => {
                result.failed += 1;
                *result.errors.entry(format!("{error:#}")).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                result.timeouts += 1;
                // The late response would be taken for the next one's.
                connection = Connection::new(url.clone(), source);
            }
        }
    }
    result
}

/// A fixed number of publishes spread over keep-alive connections, for
/// filling topics rather than pacing load: publish `i` goes to topic
/// `i % topics.len()`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The publish URL with `{topic}` still in it (replaced per publish).
    pub url: Url,
    pub body: BodyFormat,
    pub topics: Arc<[String]>,
    pub count: u64,
    pub message_bytes: usize,
    pub connections: usize,
    /// Bound on each publish.
    pub timeout: Duration,
    /// Bound on the whole batch; what is left when it passes stays unsent.
    pub limit: Duration,
    pub source_ips: Vec<IpAddr>,
}

/// What a [`Batch`] did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchResult {
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered otherwise, or not at all (then counted in `errors`).
    pub failed: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Not sent before the time limit.
    pub unsent: u64,
    pub seconds: f64,
}

impl BatchResult {
    fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.failed += other.failed;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
    }
}

/// Sends every publish of `batch`, or as many as fit in its time limit.
pub async fn publish_batch(batch: Batch) -> BatchResult {
    let batch = Arc::new(batch);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + batch.limit;
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..batch.connections.max(1) {
        let (batch, next) = (batch.clone(), next.clone());
        tasks.spawn(async move {
            let source = (!batch.source_ips.is_empty())
                .then(|| batch.source_ips[connection % batch.source_ips.len()]);
            let mut link = Connection::new(batch.url.clone(), source);
            let mut result = BatchResult::default();
            let mut message = String::with_capacity(batch.message_bytes + 64);
            let mut request = Vec::with_capacity(batch.message_bytes + 256);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= batch.count || Instant::now() >= deadline {
                    return result;
                }
                let topic = &batch.topics[(i % batch.topics.len() as u64) as usize];
                let url = batch
                    .url
                    .with_target(batch.url.target.replace("{topic}", topic));
                let stamp = Stamp {
                    phase: 0,
                    publisher: connection as u32,
                    seq: i,
                    sent_micros: payload::now_micros(),
                };
                payload::encode(stamp, batch.message_bytes, &mut message);
                build_request(&url, batch.body, topic, &message, &mut request);
                result.sent += 1;
                match tokio::time::timeout(batch.timeout, link.exchange(&request)).await {
                    Ok(Ok(response)) => {
                        *result.statuses.entry(response.status).or_default() += 1;
                        if (200..300).contains(&response.status) {
                            result.ok += 1;
                        } else {
                            result.failed += 1;
                        }
                    }
                    Ok(Err(error)) => {
                        result.failed += 1;
                        *result.errors.entry(format!("{error:#}")).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => {
                        result.failed += 1;
                        *result.errors.entry("timed out".to_owned()).or_default() += 1;
                        // The late response would be taken for the next one's.
                        link = Connection::new(batch.url.clone(), source);
                    }
                }
            }
        });
    }
    let mut total = BatchResult::default();
    while let Some(result) = tasks.join_next().await {
        if let Ok(result) = result {
            total.merge(result);
        }
    }
    total.unsent = batch.count.saturating_sub(total.sent);
    total.seconds = started.elapsed().as_secs_f64();
    total
}

/// A whole POST request carrying `message` to `topic`.
pub fn build_request(url: &Url, body: BodyFormat, topic: &str, message: &str, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.clear();
    let (content_type, payload) = match body {
        // Stamps and topic names need no escaping: ASCII letters, digits,
        // spaces and `_.:-` only.
        BodyFormat::Json => (
            "application/json",
            format!(r#"{{"message":"{message}","topic":"{topic}"}}"#),
        ),
        BodyFormat::Form => (
            "application/x-www-form-urlencoded",
            format!("message={}&topic={topic}", message.replace(' ', "+")),
        ),
        BodyFormat::Raw => ("text/plain", message.to_owned()),
    };
    let _ = write!(
        out,
        "POST {} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{payload}",
        url.target,
        url.authority,
        url.headers,
        payload.len()
    );
}
