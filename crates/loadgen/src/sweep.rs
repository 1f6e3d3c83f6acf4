//! Memory per topic: a pass creates many new, distinct topics and the
//! processes under test are read before and after, so what a server keeps
//! for each topic a client names is measured directly, whether the client
//! published to it or only subscribed for a moment.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::churn;
use crate::http::Url;
use crate::memory::{self, Group, Growth};
use crate::publisher::{self, Batch, BodyFormat};

/// How a pass makes the server meet its topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SweepBy {
    /// One event published to each topic.
    Publish,
    /// Short GETs naming several unused topics each (repeated `topic=`),
    /// closed as soon as the first body bytes arrive; nothing is published.
    Subscribe,
}

/// Everything a pass needs besides its topics.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// Subscribe URL with `{topic}` in it; a GET's topics replace it joined
    /// by `&topic=`, which is event-stream's repeated query parameter when
    /// the URL ends in `topic={topic}`.
    pub sub_template: String,
    /// Publish URL with `{topic}` still in it.
    pub pub_url: Url,
    pub body: BodyFormat,
    pub topics_per_get: usize,
    pub message_bytes: usize,
    pub concurrency: usize,
    pub publish_timeout: Duration,
    /// Bound on the pass's requests.
    pub limit: Duration,
    /// Wait before reading memory again, so freed memory is counted freed.
    pub settle: Duration,
    pub source_ips: Vec<IpAddr>,
    pub allow_remote: bool,
}

/// One pass: what was asked, what the server answered, what it kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepPass {
    pub by: SweepBy,
    /// Distinct topics named, none of them seen by the server before.
    pub topics: u64,
    /// One per topic publishing; one per `topics_per_get` topics subscribing.
    pub requests: u64,
    /// Publishes answered 2xx; GETs answered 200 with the first body bytes.
    pub ok: u64,
    pub failed: u64,
    /// Publish answers by status (publish passes only: a GET refused says
    /// its status in `errors`).
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Requests not made before the time limit.
    pub unsent: u64,
    pub seconds: f64,
    /// RSS growth per topic of each --mem group.
    pub memory: Vec<Growth>,
}

/// Runs one pass over `topics` (names the server has never seen) and reads
/// `groups` before it and after it settled.
pub async fn run(
    plan: &SweepPlan,
    by: SweepBy,
    topics: Vec<String>,
    groups: &[Group],
) -> anyhow::Result<SweepPass> {
    let before = memory::sample_all(groups);
    let count = topics.len() as u64;
    let mut pass = match by {
        SweepBy::Publish => {
            let result = publisher::publish_batch(Batch {
                url: plan.pub_url.clone(),
                body: plan.body,
                topics: Arc::from(topics),
                count,
                message_bytes: plan.message_bytes,
                connections: plan.concurrency,
                timeout: plan.publish_timeout,
                limit: plan.limit,
                source_ips: plan.source_ips.clone(),
            })
            .await;
            SweepPass {
                by,
                topics: count,
                requests: result.sent,
                ok: result.ok,
                failed: result.failed,
                statuses: result.statuses,
                errors: result.errors,
                unsent: result.unsent,
                seconds: result.seconds,
                memory: Vec::new(),
            }
        }
        SweepBy::Subscribe => {
            let urls = topics
                .chunks(plan.topics_per_get.max(1))
                .map(|chunk| {
                    let url = plan.sub_template.replace("{topic}", &chunk.join("&topic="));
                    Url::parse(&url, plan.allow_remote)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let gets = urls.len() as u64;
            // Each URL once: cycle i takes URL i.
            let result =
                churn::run(&urls, &plan.source_ips, gets, plan.concurrency, plan.limit).await;
            SweepPass {
                by,
                topics: count,
                requests: result.cycles,
                ok: result.ok,
                failed: result.failed,
                statuses: BTreeMap::new(),
                errors: result.errors,
                unsent: gets.saturating_sub(result.cycles),
                seconds: result.seconds,
                memory: Vec::new(),
            }
        }
    };
    tokio::time::sleep(plan.settle).await;
    pass.memory = Growth::of_groups(groups, &before, &memory::sample_all(groups), count);
    Ok(pass)
}
