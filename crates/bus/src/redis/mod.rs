//! The Redis engine: history and fan-out shared by every replica.
//!
//! Publishing is one Lua script that stores the event in the topic's stream
//! and publishes it on the topic's channel, atomically. Reading history
//! (head, replay) goes through multiplexed connections, one per thread. A
//! subscriber process also keeps one dedicated pub/sub connection, run by a
//! supervised relay that turns Redis's at-most-once pub/sub into a
//! contiguous feed per topic by refilling gaps from the streams.
//!
//! Creating the engine connects nothing: a Redis that is not there yet is
//! an outage like any other, retried in the background, and
//! [`RedisEngine::wait_ready`] is how a service waits for it at start.
//!
//! # Layout
//! - `schema`: key names, the publish script, the pub/sub
//!   message encoding and the decoders for everything read back.
//! - `backoff`: exponential delays with jitter between reconnect attempts.
//! - `connections`: one multiplexed connection per thread, opened on first
//!   use and replaced when it fails; the clock offset to Redis; the
//!   deadline of every operation.
//! - `store`: commands (publish, head, replay) under
//!   one deadline each.
//! - `hub`: the per-topic fan-out inside this process: one broadcast
//!   ring per topic with local subscribers, and what the relay must
//!   (un)subscribe.
//! - `relay`: the pub/sub connection, its supervision and gap
//!   refilling.
//! - `cluster`: Redis Cluster mode: the one place a cluster client is
//!   built, and key slots (where each master's health channel goes).
//! - `socket`: single mode's byte stream to Redis (TCP, TLS or Unix),
//!   for the command connections and the relay alike.
//! - `tls`: `rediss://`: the trusted roots and the client certificate,
//!   read and checked once; the handshake; what a TLS failure means.

mod backoff;
mod cluster;
mod connections;
mod hub;
mod relay;
mod schema;
mod socket;
mod store;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use shared_types::Position;
use tokio_util::sync::CancellationToken;

use self::backoff::Backoff;
use self::hub::{Hub, Start};
use self::relay::Relay;
use self::store::Store;
pub use self::tls::RedisTls;
use crate::error::Error;
use crate::idempotency::{IdempotencyPolicy, Published};
use crate::replay::{Replay, Slice};
use crate::stats::{BusStats, Counters};
use crate::subscription::Subscription;

/// One Redis (or a primary with replicas behind one address), or a Redis
/// Cluster whose topics are spread over its masters by their hash tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisMode {
    /// `url` names the one Redis; pub/sub is `PUBLISH`/`SUBSCRIBE`.
    #[default]
    Single,
    /// `cluster_nodes` are seeds from which the cluster's layout is
    /// learnt; each topic's script and its sharded pub/sub
    /// (`SPUBLISH`/`SSUBSCRIBE`) run on the master that owns its slot.
    Cluster,
}

/// How the Redis engine is reached and sized. Durations are plain
/// [`Duration`]s; the services map their `*_ms` settings onto them.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`, `unix://`).
    /// Never logged as is: errors and logs show it with the password masked.
    pub url: String,
    /// Single Redis or Redis Cluster; see [`RedisMode`].
    pub mode: RedisMode,
    /// Cluster mode: `redis://host:port` of some of the cluster's nodes
    /// (any of them, masters or replicas); the rest is discovered. `url` is
    /// not used in cluster mode. All `rediss://` for a cluster over TLS:
    /// every node found is then reached over TLS too.
    pub cluster_nodes: Vec<String>,
    /// What `rediss://` connections trust and present (see [`RedisTls`]).
    /// `None` with a `rediss://` target: the system's roots and no client
    /// certificate. Set with a plain target, it is refused: it would be
    /// ignored.
    pub tls: Option<RedisTls>,
    /// Cluster mode: replicas that must hold a publish before it is
    /// answered and broadcast (`WAIT`), so a master's failover cannot lose
    /// an acknowledged event, nor one a subscriber already saw. 0 skips
    /// the wait (a master without replicas).
    pub cluster_ack_replicas: u32,
    /// Prefix of every key and channel, so several deployments (or tests)
    /// can share one Redis without seeing each other's data.
    pub key_prefix: String,
    /// Bound on opening a connection (TCP and handshake): a Redis that
    /// accepts but does not answer must not hold a request.
    pub connect_timeout: Duration,
    /// Bound on one command's reply. With the one above it sets the
    /// deadline of every operation (see [`RedisConfig::operation_timeout`]),
    /// which is how a publish fails within about a second when Redis is
    /// down or hung, and ingest can answer 503 quickly.
    pub response_timeout: Duration,
    /// Events each topic's stream keeps (`MAXLEN ~`, so a little more) for
    /// resuming readers.
    pub history_size: usize,
    /// A topic nobody publishes to for this long is forgotten by Redis (TTL
    /// on its keys, refreshed by each publish); its next event starts a new
    /// epoch. Zero keeps topics forever.
    pub history_ttl: Duration,
    /// Events a local subscriber may fall behind before it counts as
    /// lagging (the capacity of each topic's broadcast ring).
    pub queue_capacity: usize,
    /// Most topics a subscriber process follows at once (each costs a
    /// broadcast ring and a channel subscription); a new one past it is
    /// refused with [`Error::TooManyTopics`].
    pub max_topics: usize,
    /// How often the subscriber relay proves that pub/sub delivers.
    pub ping_interval: Duration,
    /// How long a health check may take before the connection counts as
    /// dead (a hung Redis answers nothing, it does not close).
    pub ping_timeout: Duration,
    /// Longest first delay before reconnecting the pub/sub connection.
    pub backoff_min: Duration,
    /// Longest delay between reconnect attempts; the delay doubles up to
    /// this and resets after a healthy session. Each delay is drawn between
    /// half of the current one and all of it, so processes cut off together
    /// do not reconnect in lockstep.
    pub backoff_max: Duration,
    /// How long [`RedisEngine::wait_ready`] waits for a Redis that is not
    /// reachable yet, as when a service starts before Redis; zero waits for
    /// ever. The engine itself never gives up: it keeps retrying.
    pub startup_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            mode: RedisMode::Single,
            cluster_nodes: Vec::new(),
            tls: None,
            cluster_ack_replicas: 1,
            key_prefix: "es".to_owned(),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            history_size: 1000,
            history_ttl: Duration::from_secs(86_400),
            queue_capacity: 1024,
            max_topics: 10_000,
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_millis(1000),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            startup_timeout: Duration::ZERO,
        }
    }
}

impl RedisConfig {
    /// Deadline of one operation, from getting a connection to the last
    /// reply: opening a connection (when the thread has none) plus one
    /// reply. 1 s by default.
    pub fn operation_timeout(&self) -> Duration {
        self.connect_timeout + self.response_timeout
    }

    /// `url` with any password masked, safe to log or show.
    pub fn redacted(url: &str) -> String {
        connections::redact(url)
    }

    /// Whether the engine connects over TLS: a `rediss://` URL, or in
    /// cluster mode `rediss://` seeds.
    pub fn uses_tls(&self) -> bool {
        let tls = |url: &str| url.starts_with("rediss://");
        match self.mode {
            RedisMode::Single => tls(&self.url),
            RedisMode::Cluster => self.cluster_nodes.iter().any(|node| tls(node)),
        }
    }

    /// The TLS material the targets need: `tls` for `rediss://` targets
    /// (the system's roots when it is `None`), nothing for plain ones. An
    /// error for TLS material with plain targets, for a cluster seed list
    /// that mixes both, and for a URL that turns certificate checks off
    /// (`#insecure`).
    fn resolve_tls(&self) -> Result<Option<RedisTls>, Error> {
        let target = self.target();
        let refuse = |why: &str| Err(Error::Unavailable(format!("{target}: {why}")));
        let urls: Vec<&str> = match self.mode {
            RedisMode::Single => vec![self.url.as_str()],
            RedisMode::Cluster => self.cluster_nodes.iter().map(String::as_str).collect(),
        };
        if !self.uses_tls() {
            return match self.tls {
                Some(_) => refuse(
                    "TLS settings are given but the target is not rediss://; they would be ignored",
                ),
                None => Ok(None),
            };
        }
        if urls.iter().any(|url| !url.starts_with("rediss://")) {
            return refuse("cluster seeds must be all rediss:// or all redis://");
        }
        if urls.iter().any(|url| url.contains("#insecure")) {
            return refuse(
                "certificate checks cannot be turned off (#insecure); trust the server's CA instead",
            );
        }
        match &self.tls {
            Some(tls) => Ok(Some(tls.clone())),
            None => RedisTls::system()
                .map(Some)
                .map_err(|error| Error::Unavailable(format!("{target}: {error}"))),
        }
    }

    /// Where the engine connects, password masked: the URL, or in cluster
    /// mode the seed list.
    pub(crate) fn target(&self) -> String {
        match self.mode {
            RedisMode::Single => connections::redact(&self.url),
            RedisMode::Cluster => {
                let seeds: Vec<String> = self
                    .cluster_nodes
                    .iter()
                    .map(|node| connections::redact(node))
                    .collect();
                format!("cluster [{}]", seeds.join(", "))
            }
        }
    }
}

/// What a process does with the bus; decides which connections it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes only (ingest): command connections, no pub/sub.
    /// [`Bus::subscribe`](crate::Bus::subscribe) is refused.
    Publisher,
    /// Reads and fans out (gateway): command connections plus the pub/sub relay,
    /// started at once (it connects in the background).
    Subscriber,
}

/// The Redis engine behind [`Bus::Redis`](crate::Bus::Redis).
#[derive(Debug)]
pub struct RedisEngine {
    store: Arc<Store>,
    /// The local fan-out; only in the subscriber role.
    hub: Option<Arc<Hub>>,
    role: Role,
    /// Stops the relay when the engine is dropped or shut down.
    shutdown: CancellationToken,
}

impl RedisEngine {
    /// Creates the engine without any network I/O: command connections
    /// open on first use, and a subscriber's relay (started here, on the
    /// current Tokio runtime) connects in the background, retrying with
    /// backoff until Redis answers. Until then [`RedisEngine::is_ready`]
    /// is false and publish and subscribe fail with
    /// [`Error::Unavailable`], as during any outage; see
    /// [`RedisEngine::wait_ready`]. Fails only on a URL that cannot be
    /// used, or TLS settings that do not fit it (the error shows the URL
    /// with the password masked).
    pub fn new(mut config: RedisConfig, role: Role) -> Result<Arc<Self>, Error> {
        config.tls = config.resolve_tls()?;
        let url = config.target();
        if let Some(tls) = &config.tls {
            tracing::info!(
                %url,
                roots = if tls.has_ca_file() { "CA file" } else { "system" },
                client_certificate = tls.has_client_certificate(),
                "Redis over TLS"
            );
        }
        let store = Arc::new(Store::new(config, url)?);
        let shutdown = CancellationToken::new();
        let hub = match role {
            Role::Publisher => None,
            Role::Subscriber => Some(Relay::start(store.clone(), shutdown.clone())?),
        };
        Ok(Arc::new(Self {
            store,
            hub,
            role,
            shutdown,
        }))
    }

    /// Resolves once the engine is ready (see [`RedisEngine::is_ready`]),
    /// or fails after [`RedisConfig::startup_timeout`] (zero: waits for
    /// ever) with an error naming the URL, password masked. Also fails if
    /// the engine is shut down first.
    pub async fn wait_ready(&self) -> Result<(), Error> {
        let limit = self.store.config.startup_timeout;
        if limit.is_zero() {
            return self.until_ready().await;
        }
        tokio::time::timeout(limit, self.until_ready())
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable(format!(
                    "Redis at {} was not ready within {} ms",
                    self.store.url,
                    limit.as_millis()
                )))
            })
    }

    /// Waits for readiness however long it takes. A publisher tries a PING
    /// with the relay's backoff and logs each failed attempt; a subscriber
    /// waits for its relay, which logs its own.
    async fn until_ready(&self) -> Result<(), Error> {
        let shut_down = || Error::Unavailable("the bus shut down before Redis was reached".into());
        if let Some(hub) = &self.hub {
            return tokio::select! {
                // Shut down while waiting: nothing will ever be ready.
                _ = self.shutdown.cancelled() => Err(shut_down()),
                // The relay's first health check came back.
                () = hub.wait_ready() => Ok(()),
            };
        }
        let config = &self.store.config;
        let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
        loop {
            let why = match tokio::time::timeout(config.ping_timeout, self.store.ping()).await {
                Ok(Ok(())) => {
                    tracing::info!(url = %self.store.url, "connected to Redis");
                    return Ok(());
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no PONG within {} ms", config.ping_timeout.as_millis()),
            };
            let delay = backoff.next_delay();
            tracing::warn!(url = %self.store.url, %why, retry_in_ms = delay.as_millis() as u64, "redis not reachable yet; retrying");
            tokio::select! {
                // Shutdown must not wait out a 30 s backoff.
                _ = self.shutdown.cancelled() => return Err(shut_down()),
                // The backoff elapsed: try again.
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    pub async fn publish(
        &self,
        topic: &str,
        event_type: &str,
        data: &str,
    ) -> Result<Position, Error> {
        self.store.publish(topic, event_type, data).await
    }

    /// See [`Bus::publish_idempotent`](crate::Bus::publish_idempotent).
    pub async fn publish_idempotent(
        &self,
        topic: &str,
        event_type: &str,
        data: &str,
        key: &str,
        policy: &IdempotencyPolicy,
    ) -> Result<Published, Error> {
        self.store
            .publish_idempotent(topic, event_type, data, key, policy)
            .await
    }

    pub async fn head(&self, topic: &str) -> Result<Position, Error> {
        self.store.head(topic).await
    }

    /// Subscriber role only; see [`Role`]. Returns once Redis confirmed the
    /// channel subscription (an event published after this returns is
    /// delivered). While the pub/sub connection is down it fails at once
    /// with [`Error::Unavailable`] (the gateway answers 503, the client
    /// retries); subscriptions opened before an outage stay open and are
    /// refilled from history when the relay reconnects.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, Error> {
        Ok(self.hub()?.subscribe(topic).await?.0)
    }

    /// See [`Bus::subscribe_at_head`](crate::Bus::subscribe_at_head).
    ///
    /// The start comes from the topic's feed in this process (its last
    /// event, or the head its activation read once for everyone joining
    /// it), counted as a local head; Redis is asked only when the feed has
    /// no base (that read failed, and no event came since). See the hub's
    /// module docs for why the feed's start is exact.
    pub async fn subscribe_at_head(&self, topic: &str) -> Result<(Subscription, Position), Error> {
        let hub = self.hub()?;
        let (subscription, start) = hub.subscribe(topic).await?;
        let head = match start {
            Start::Known(start) => {
                Counters::add(&self.store.counters.local_heads, 1);
                start
            }
            Start::Unknown(ticket) => {
                let head = self.store.head(topic).await?;
                hub.learnt_head(topic, ticket, head);
                head
            }
        };
        Ok((subscription, head))
    }

    fn hub(&self) -> Result<&Arc<Hub>, Error> {
        self.hub.as_ref().ok_or_else(|| {
            Error::Unavailable(
                "this bus was started in the publisher role and cannot subscribe".to_owned(),
            )
        })
    }

    pub async fn replay(
        &self,
        topic: &str,
        after: Position,
        slice: Slice,
    ) -> Result<Replay, Error> {
        let replay = self.store.replay(&Arc::from(topic), after, slice).await?;
        Counters::add(
            &self.store.counters.replayed_events,
            replay.events.len() as u64,
        );
        Ok(replay)
    }

    /// Publisher: a PING answers within the ping timeout.
    /// Subscriber: the relay's last health check (a message published
    /// as a command and received on the pub/sub connection) arrived; so
    /// false until the relay first reached Redis.
    pub async fn is_ready(&self) -> bool {
        match &self.hub {
            Some(hub) => hub.is_ready(),
            None => tokio::time::timeout(self.store.config.ping_timeout, self.store.ping())
                .await
                .is_ok_and(|result| result.is_ok()),
        }
    }

    /// Topics followed for local subscribers (0 for a publisher).
    pub fn topic_count(&self) -> usize {
        self.hub.as_ref().map_or(0, |hub| hub.topic_count())
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn stats(&self) -> BusStats {
        self.store.counters.snapshot()
    }

    /// Stops the relay: live subscriptions end with
    /// [`Recv::Closed`](crate::Recv::Closed). Commands keep working.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
