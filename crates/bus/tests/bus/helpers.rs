//! Starting an engine for a test, and reading subscriptions with deadlines.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bus::{Bus, MemoryConfig, Recv, RedisConfig, RedisMode, Role, Subscription};
use shared_types::Event;
use testkit::{RedisCluster, RedisServer};

/// Longest a test waits for an event that should come.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which engine a shared test runs against.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Memory,
    Redis,
    /// A 3-master Redis Cluster, shared by the tests running at the same
    /// time (each has its own key prefix).
    RedisCluster,
}

/// The cluster the tests running now share; started by the first, stopped
/// when the last one drops it.
static CLUSTER: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());

/// The shared cluster, started if no running test holds it.
pub(crate) fn shared_cluster() -> Arc<RedisCluster> {
    let mut shared = CLUSTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(RedisCluster::start());
    *shared = Arc::downgrade(&cluster);
    cluster
}

/// A cluster-mode config for `cluster`, with the short test timings.
pub(crate) fn cluster_config(cluster: &RedisCluster) -> RedisConfig {
    RedisConfig {
        mode: RedisMode::Cluster,
        cluster_nodes: cluster.seeds(),
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(1000),
        startup_timeout: Duration::from_secs(20),
        // A publish waits for a replica's WAIT within half of this: on a
        // loaded 2-core machine six redis-servers and the tests share, a
        // replica's acknowledgement can take longer than the default's 250 ms.
        response_timeout: Duration::from_secs(2),
        ..redis_config_for(String::new())
    }
}

/// The knobs the shared tests turn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) history_size: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) max_topics: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            history_size: 1000,
            queue_capacity: 1024,
            max_topics: 10_000,
        }
    }
}

/// A running engine. For Redis, `bus` is a gateway (subscriber role) and
/// `publisher` a separate ingest-like handle, as in production; for memory
/// both are the same bus. Fields drop in order: buses before the server.
pub(crate) struct Engine {
    pub(crate) bus: Bus,
    pub(crate) publisher: Bus,
    /// Kept only to live as long as the buses, then be killed.
    _server: Option<RedisServer>,
    _cluster: Option<Arc<RedisCluster>>,
}

impl Kind {
    pub(crate) async fn start(self, sizes: Sizes) -> Engine {
        match self {
            Kind::Memory => {
                let bus = Bus::memory(MemoryConfig {
                    history_size: sizes.history_size,
                    queue_capacity: sizes.queue_capacity,
                    max_topics: sizes.max_topics,
                    ..MemoryConfig::default()
                });
                Engine {
                    publisher: bus.clone(),
                    bus,
                    _server: None,
                    _cluster: None,
                }
            }
            Kind::Redis => {
                let server = RedisServer::start();
                let config = RedisConfig {
                    history_size: sizes.history_size,
                    queue_capacity: sizes.queue_capacity,
                    max_topics: sizes.max_topics,
                    ..redis_config(&server)
                };
                Engine {
                    bus: subscriber(config.clone()).await,
                    publisher: connected(config, Role::Publisher).await,
                    _server: Some(server),
                    _cluster: None,
                }
            }
            Kind::RedisCluster => {
                let cluster = shared_cluster();
                let config = RedisConfig {
                    history_size: sizes.history_size,
                    queue_capacity: sizes.queue_capacity,
                    max_topics: sizes.max_topics,
                    ..cluster_config(&cluster)
                };
                Engine {
                    bus: subscriber(config.clone()).await,
                    publisher: connected(config, Role::Publisher).await,
                    _server: None,
                    _cluster: Some(cluster),
                }
            }
        }
    }
}

/// A config for `server` with a fresh key prefix and timings short enough
/// that outage tests finish in seconds.
pub(crate) fn redis_config(server: &RedisServer) -> RedisConfig {
    redis_config_for(server.url())
}

fn redis_config_for(url: String) -> RedisConfig {
    RedisConfig {
        url,
        key_prefix: testkit::unique_prefix(),
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        startup_timeout: Duration::from_secs(10),
        ..RedisConfig::default()
    }
}

/// A Redis bus in `role`, once it is ready (within the config's
/// `startup_timeout`).
pub(crate) async fn connected(config: RedisConfig, role: Role) -> Bus {
    let bus = Bus::redis(config, role).expect("a valid config");
    bus.wait_ready().await.expect("the bus becomes ready");
    bus
}

pub(crate) async fn subscriber(config: RedisConfig) -> Bus {
    connected(config, Role::Subscriber).await
}

/// The next event, failing the test on anything else or after the deadline.
pub(crate) async fn next_event(subscription: &mut Subscription) -> Arc<Event> {
    match tokio::time::timeout(EVENT_TIMEOUT, subscription.recv()).await {
        Ok(Recv::Event(event)) => event,
        Ok(other) => panic!("expected an event, got {other:?}"),
        Err(_) => panic!("no event within {EVENT_TIMEOUT:?}"),
    }
}

/// The offsets of a run of events.
pub(crate) fn offsets(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|event| event.position.offset).collect()
}

/// A direct connection, to play a foreign writer or an operator.
pub(crate) async fn raw_connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// `CLIENT KILL TYPE pubsub`: closes every pub/sub connection of the
/// server (the relay's), as a network blip would; answers how many.
pub(crate) fn kill_pubsub() -> redis::Cmd {
    let mut kill = redis::cmd("CLIENT");
    kill.arg("KILL").arg("TYPE").arg("pubsub");
    kill
}

/// Queues on `pipe` an event at `offset` (data: the offset) appended to
/// `stream` as the publish script would store it, behind the bus's back:
/// how the tests make Redis hold what pub/sub never carried.
pub(crate) fn add_raw_event(
    pipe: &mut redis::Pipeline,
    stream: &str,
    offset: impl std::fmt::Display,
) {
    pipe.cmd("XADD")
        .arg(stream)
        .arg(format!("{offset}-0"))
        .arg("type")
        .arg("message")
        .arg("data")
        .arg(offset.to_string())
        .ignore();
}

/// Retries `attempt` every 50 ms until it succeeds or `timeout` passes
/// (then fails the test with the last error): for steps that work again
/// only once a restarted Redis is back.
pub(crate) async fn eventually<T, E, F, Fut>(timeout: Duration, mut attempt: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) if tokio::time::Instant::now() >= deadline => {
                panic!("still failing after {timeout:?}: {error:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A Redis restart costs no failed command: publishes and reads once
/// through `config`, kills and restarts `server`, then the first publish
/// and the first read on each connection succeed, with no retry: a
/// connection closed by the restart is replaced before a command is
/// written to it.
pub(crate) async fn assert_first_commands_after_a_restart_succeed(
    server: &mut RedisServer,
    config: RedisConfig,
) {
    let ingest = connected(config.clone(), Role::Publisher).await;
    let gateway = subscriber(config).await;
    ingest.publish("t", "message", "before").await.unwrap();
    gateway.head("t").await.unwrap();

    // Both processes' command connections see the socket close; nothing
    // is sent on them while Redis is away.
    server.kill();
    server.restart();
    assert!(server.answers(Duration::from_secs(5)));
    // kill() and restart() block this test's only thread; in a server the
    // runtime keeps running and sees the close at once. Let it run.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let after = ingest.publish("t", "message", "after").await.unwrap();
    assert_eq!(after.offset, 1);
    assert_eq!(gateway.head("t").await.unwrap(), after);
}
