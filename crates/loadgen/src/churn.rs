//! Connect/disconnect churn: subscribers that open a stream, wait for its
//! first bytes and hang up, over and over. A server that leaks per
//! connection shows it here as open files or memory that stay behind.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::http::{self, Url};

/// What the churn did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnResult {
    pub cycles: u64,
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    pub per_second: f64,
}

/// Runs `cycles` connect/first-bytes/close cycles over `concurrency`
/// loops, stopping early at `limit`.
pub async fn run(
    urls: &[Url],
    source_ips: &[IpAddr],
    cycles: u64,
    concurrency: usize,
    limit: Duration,
) -> ChurnResult {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let next = next.clone();
        let urls = urls.to_vec();
        let source_ips = source_ips.to_vec();
        tasks.spawn(async move {
            let mut result = ChurnResult::default();
            loop {
                let cycle = next.fetch_add(1, Ordering::Relaxed);
                if cycle >= cycles || Instant::now() >= deadline {
                    return result;
                }
                let url = &urls[cycle as usize % urls.len()];
                let source =
                    (!source_ips.is_empty()).then(|| source_ips[cycle as usize % source_ips.len()]);
                result.cycles += 1;
                match tokio::time::timeout(Duration::from_secs(10), once(url, source)).await {
                    Ok(Ok(())) => result.ok += 1,
                    Ok(Err(error)) => {
                        result.failed += 1;
                        *result.errors.entry(format!("{error:#}")).or_default() += 1;
                    }
                    Err(_) => {
                        result.failed += 1;
                        *result.errors.entry("timed out".to_owned()).or_default() += 1;
                    }
                }
            }
        });
    }
    let mut total = ChurnResult::default();
    while let Some(Ok(result)) = tasks.join_next().await {
        total.cycles += result.cycles;
        total.ok += result.ok;
        total.failed += result.failed;
        for (reason, n) in result.errors {
            *total.errors.entry(reason).or_default() += n;
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    total.per_second = total.cycles as f64 / total.seconds.max(1e-9);
    total
}

/// One cycle: the response head and at least one body byte, then close.
async fn once(url: &Url, source: Option<IpAddr>) -> anyhow::Result<()> {
    let mut stream = http::connect(url.addr, source, Duration::from_secs(5)).await?;
    stream
        .write_all(&http::get_request(url, "text/event-stream"))
        .await?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            anyhow::bail!("closed before the first body bytes");
        }
        if let Some(head) = http::parse_head(&buf)? {
            head.ensure_stream()?;
            if buf.len() > head.len {
                return Ok(());
            }
        }
        buf.reserve(4096);
    }
}
