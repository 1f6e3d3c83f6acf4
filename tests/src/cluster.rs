//! Redis, one ingest and several gateways, started for one test.

use std::time::Duration;

use crate::process::Service;
use crate::{PATIENCE, RedisServer, unique_prefix};

/// The distributed topology on loopback.
#[derive(Debug)]
pub struct Cluster {
    pub redis: RedisServer,
    pub ingest: Service,
    pub gateways: Vec<Service>,
    pub client: reqwest::Client,
}

/// What a publish attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 201: stored and broadcast; the id from `X-Event-Id`.
    Stored(String),
    /// Any other status, or no answer at all.
    Refused(String),
}

impl Cluster {
    /// Starts Redis, ingest and `gateways` gateways, all ready.
    pub async fn start(gateways: usize, extra: &[(&str, &str)]) -> Self {
        let cluster = Self::launch(RedisServer::start(), gateways, extra);
        cluster.wait_ready().await;
        cluster
    }

    /// Starts ingest and `gateways` gateways against `redis`, running or
    /// not (the services wait for it), without waiting for them.
    pub fn launch(redis: RedisServer, gateways: usize, extra: &[(&str, &str)]) -> Self {
        let env = service_env(&redis, extra);
        let ingest = Service::start("ingest", &env);
        let gateways: Vec<Service> = (0..gateways)
            .map(|_| Service::start("stream-gateway", &env))
            .collect();
        Self {
            redis,
            ingest,
            gateways,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("building an HTTP client"),
        }
    }

    /// Waits until every service answers `/readyz` with 200.
    pub async fn wait_ready(&self) {
        self.ingest.wait_ready().await;
        for gateway in &self.gateways {
            gateway.wait_ready().await;
        }
    }

    pub fn gateway_urls(&self) -> Vec<String> {
        self.gateways.iter().map(Service::url).collect()
    }

    /// Publishes `message` to `topic` through ingest.
    pub async fn publish(&self, topic: &str, message: &str) -> Outcome {
        publish(&self.client, &self.ingest.url(), topic, message).await
    }

    /// Publishes `count` messages `<label>-<n>` to `topic` through ingest.
    pub async fn publish_numbered(
        &self,
        topic: &str,
        label: &str,
        count: usize,
        published: &mut Published,
    ) {
        let ingest = self.ingest.url();
        publish_numbered(&self.client, &ingest, topic, label, count, published).await;
    }
}

/// The settings every service of a cluster gets: the Redis engine at
/// `redis`, a fresh key prefix, short health checks; `extra` on top.
pub fn service_env(redis: &RedisServer, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    with_test_settings(vec![("ES__REDIS__URL".into(), redis.url())], extra)
}

/// The same over a Redis Cluster: cluster mode with `seeds` as the seed
/// list.
pub fn cluster_service_env(seeds: &[String], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    with_test_settings(
        vec![
            ("ES__REDIS__MODE".into(), "cluster".into()),
            ("ES__REDIS__CLUSTER_NODES".into(), seeds.join(",")),
            // A publish waits for a replica's WAIT within half of this; on
            // a loaded test machine the default (250 ms of 500) can pass.
            ("ES__REDIS__RESPONSE_TIMEOUT_MS".into(), "2000".into()),
        ],
        extra,
    )
}

/// `redis` (where Redis is) plus the settings every test service gets,
/// then `extra` on top.
fn with_test_settings(
    redis: Vec<(String, String)>,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![("ES__BUS__ENGINE".into(), "redis".into())];
    env.extend(redis);
    env.extend::<[(String, String); 5]>([
        ("ES__REDIS__KEY_PREFIX".into(), unique_prefix()),
        // Fast failure detection keeps the outage scenarios short.
        ("ES__REDIS__PING_INTERVAL_MS".into(), "200".into()),
        ("ES__REDIS__PING_TIMEOUT_MS".into(), "500".into()),
        ("ES__STREAM__KEEPALIVE_MS".into(), "250".into()),
        ("ES__HTTP__SHUTDOWN_GRACE_MS".into(), "2000".into()),
    ]);
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }
    env
}

/// Publishes through any service that mounts POST /event-stream.
pub async fn publish(client: &reqwest::Client, base: &str, topic: &str, message: &str) -> Outcome {
    let body = serde_json::json!({ "message": message, "topic": topic });
    match client
        .post(format!("{base}/event-stream"))
        .json(&body)
        .send()
        .await
    {
        Ok(response) if response.status() == 201 => Outcome::Stored(
            response
                .headers()
                .get("x-event-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        ),
        Ok(response) => {
            let status = response.status();
            Outcome::Refused(format!(
                "{status}: {}",
                response.text().await.unwrap_or_default()
            ))
        }
        Err(error) => Outcome::Refused(error.to_string()),
    }
}

/// What one keyed publish came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status, or `None` when no answer came at all.
    pub status: Option<u16>,
    pub id: Option<String>,
    pub replayed: bool,
    pub body: String,
}

/// Publishes `message` to `topic` with `key` in the `Idempotency-Key` header.
pub async fn publish_keyed(
    client: &reqwest::Client,
    ingest: &str,
    topic: &str,
    message: &str,
    key: &str,
) -> Answer {
    let response = client
        .post(format!("{ingest}/event-stream"))
        .header("Idempotency-Key", key)
        .json(&serde_json::json!({ "message": message, "topic": topic }))
        .send()
        .await;
    match response {
        Ok(response) => {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            Answer {
                status: Some(response.status().as_u16()),
                id: header("x-event-id"),
                replayed: header("idempotent-replayed").as_deref() == Some("true"),
                body: response.text().await.unwrap_or_default(),
            }
        }
        Err(error) => Answer {
            status: None,
            id: None,
            replayed: false,
            body: error.to_string(),
        },
    }
}

/// Retries the keyed publish, as a publisher would after a failure, until
/// it is answered 201; fails the test after [`PATIENCE`]. Every answer is
/// returned, the 201 last.
pub async fn retry_until_created(
    client: &reqwest::Client,
    ingest: &str,
    topic: &str,
    message: &str,
    key: &str,
) -> Vec<Answer> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut answers = Vec::new();
    loop {
        let answer = publish_keyed(client, ingest, topic, message, key).await;
        let created = answer.status == Some(201);
        answers.push(answer);
        if created {
            return answers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 201 within {PATIENCE:?}: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `count` messages `<label>-<n>` to `topic` at `base`, one
/// after another, recording each outcome in `published`.
pub async fn publish_numbered(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    label: &str,
    count: usize,
    published: &mut Published,
) {
    for n in 0..count {
        let message = format!("{label}-{n}");
        let outcome = publish(client, base, topic, &message).await;
        published.record(message, outcome);
    }
}

/// The record of a publishing run: what was attempted and what was acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Published {
    pub attempted: Vec<String>,
    pub stored: Vec<String>,
    pub refused: Vec<(String, String)>,
}

impl Published {
    pub fn record(&mut self, message: String, outcome: Outcome) {
        self.attempted.push(message.clone());
        match outcome {
            Outcome::Stored(_) => self.stored.push(message),
            Outcome::Refused(why) => self.refused.push((message, why)),
        }
    }
}
