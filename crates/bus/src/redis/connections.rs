//! The store's connections: one multiplexed connection per thread, opened
//! on first use and replaced after a connection-level error.
//!
//! Concurrent commands from one thread are pipelined on its connection, and
//! the connection's driver runs on the runtime of the thread that opened
//! it: an actix worker's command and its reply never cross threads. Each new
//! connection measures Redis's clock against ours with `TIME`, so publish
//! deadlines can be sent in Redis's clock.
//!
//! In cluster mode each thread's connection is a cluster connection
//! (redis-rs keeps one multiplexed connection per node inside it and
//! routes each command by its key's slot); everything else is the same.
//!
//! Every operation, from opening the connection (or waiting for another
//! caller to open it) to the last reply, runs under one deadline
//! ([`RedisConfig::operation_timeout`]), so a caller (an HTTP request) is
//! answered within a known bound even when Redis hangs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, ErrorKind, Pipeline, RedisError, RedisFuture,
    RedisResult, Value,
};
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use super::tls::{self, RedisTls};
use super::{RedisConfig, RedisMode, cluster, socket};
use crate::error::Error;

/// Tells [`Connections`] apart in the per-thread connection table.
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// Tells connections apart, so a failed one is replaced only once.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Opening a connection, shared by every caller on the thread that waits
/// for it. The error is text: [`RedisError`] is not `Clone`.
type Opening = Shared<BoxFuture<'static, Result<Connection, String>>>;

/// A thread's connection for one store.
#[derive(Clone)]
enum Slot {
    Open { id: u64, connection: Connection },
    Opening { id: u64, future: Opening },
}

/// What commands are sent on: one Redis's connection, or a cluster
/// connection that routes each command to the master of its key's slot.
#[derive(Clone)]
pub(super) enum Commands {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Where connections go.
#[derive(Clone)]
enum Target {
    /// One Redis's address and credentials, and for `rediss://` the TLS
    /// material.
    Single {
        info: Box<ConnectionInfo>,
        tls: Option<RedisTls>,
    },
    Cluster(Box<ClusterClient>),
}

/// A connection and whether its driver has stopped.
#[derive(Clone)]
struct Connection {
    commands: Commands,
    /// Set when the driver task ends: the socket closed or failed. A
    /// command sent now would fail without reaching Redis, so the caller
    /// opens a new connection instead; after a Redis restart the first
    /// publish succeeds rather than failing on the old socket.
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Connects (with TLS for `rediss://`) and runs the handshake (AUTH,
    /// SELECT) under the caller's deadline, then drives the connection on
    /// the current runtime. A cluster connection learns the slot map from
    /// a seed, and repairs its node connections itself: it never counts as
    /// closed.
    async fn open(
        target: Target,
        config: AsyncConnectionConfig,
        deadline: tokio::time::Instant,
    ) -> RedisResult<Self> {
        let (info, tls) = match target {
            Target::Single { info, tls } => (info, tls),
            Target::Cluster(client) => {
                return Ok(Self {
                    commands: Commands::Cluster(client.get_async_connection().await?),
                    closed: Arc::new(AtomicBool::new(false)),
                });
            }
        };
        let stream = socket::connect(&info, tls.as_ref(), deadline).await?;
        let (commands, driver) =
            MultiplexedConnection::new_with_config(info.redis_settings(), stream, config).await?;
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        tokio::spawn(async move {
            driver.await;
            flag.store(true, Ordering::Release);
        });
        Ok(Self {
            commands: Commands::Single(commands),
            closed,
        })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

thread_local! {
    /// [`Connections::id`] → this thread's connection. An entry of dropped
    /// connections stays until its thread ends; its connection closes when
    /// the runtime that drives it stops, or on its first failed command.
    static CONNECTIONS: RefCell<HashMap<u64, Slot>> = RefCell::new(HashMap::new());
}

/// Each thread's connection to one Redis, for one store.
pub(super) struct Connections {
    /// Key of these connections in each thread's table.
    id: u64,
    /// Where and how to connect (address, credentials, database; or the
    /// cluster's seeds).
    target: Target,
    /// The response timeout of every command. Opening a connection is
    /// bounded in [`Connections::connection`] by `connect_timeout`.
    connection_config: AsyncConnectionConfig,
    connect_timeout: Duration,
    /// See [`RedisConfig::operation_timeout`].
    operation_timeout: Duration,
    /// Redis's clock minus ours, in milliseconds, measured with `TIME` on
    /// every new connection: publish deadlines are sent in Redis's clock.
    clock_offset_ms: Arc<AtomicI64>,
}

impl Connections {
    /// Checks the URL (`url` is its masked form, for the error); connects
    /// nothing yet.
    pub(super) fn new(config: &RedisConfig, url: &str) -> Result<Self, Error> {
        let target = match config.mode {
            RedisMode::Single => Target::Single {
                info: Box::new(socket::address(config, url)?),
                tls: config.tls.clone(),
            },
            RedisMode::Cluster => Target::Cluster(Box::new(cluster::client(
                config,
                None::<tokio::sync::mpsc::UnboundedSender<::redis::PushInfo>>,
            )?)),
        };
        let connection_config =
            AsyncConnectionConfig::new().set_response_timeout(Some(config.response_timeout));
        Ok(Self {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            target,
            connection_config,
            connect_timeout: config.connect_timeout,
            operation_timeout: config.operation_timeout(),
            clock_offset_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Redis's clock minus ours, in milliseconds, as last measured.
    pub(super) fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// This thread's connection, opening it if there is none or if the one
    /// it had has closed. Callers on the same thread that arrive while it
    /// opens wait for the same attempt.
    async fn connection(&self) -> Result<(u64, Commands), Error> {
        let slot = CONNECTIONS.with_borrow_mut(|table| {
            // A closed connection, or an attempt that failed while nobody
            // was waiting for it, is replaced now rather than failing one
            // more command.
            let stale = match table.get(&self.id) {
                Some(Slot::Open { connection, .. }) => connection.is_closed(),
                Some(Slot::Opening { future, .. }) => {
                    matches!(future.peek(), Some(Err(_)))
                }
                None => false,
            };
            if stale {
                table.remove(&self.id);
            }
            table
                .entry(self.id)
                .or_insert_with(|| {
                    let target = self.target.clone();
                    let config = self.connection_config.clone();
                    let offset = self.clock_offset_ms.clone();
                    let limit = self.connect_timeout;
                    let future = async move {
                        // Bounded here, not only by the callers' deadlines:
                        // an attempt that hangs (a frozen Redis accepts
                        // connections but never answers the handshake) must
                        // end, or this thread would wait on it for good.
                        let deadline = tokio::time::Instant::now() + limit;
                        let mut connection = tokio::time::timeout_at(
                            deadline,
                            Connection::open(target, config, deadline),
                        )
                        .await
                        .map_err(|_| format!("no connection within {} ms", limit.as_millis()))?
                        .map_err(|e| tls::explain(e.to_string()))?;
                        measure_clock_offset(&mut connection.commands, &offset).await;
                        Ok(connection)
                    }
                    .boxed()
                    .shared();
                    Slot::Opening {
                        id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
                        future,
                    }
                })
                .clone()
        });
        match slot {
            Slot::Open { id, connection } => Ok((id, connection.commands)),
            Slot::Opening { id, future } => match future.await {
                Ok(connection) => {
                    // Whoever gets here first (on this thread) files it.
                    CONNECTIONS.with_borrow_mut(|table| {
                        if let Some(slot) = table.get_mut(&self.id)
                            && matches!(slot, Slot::Opening { id: current, .. } if *current == id)
                        {
                            *slot = Slot::Open {
                                id,
                                connection: connection.clone(),
                            };
                        }
                    });
                    Ok((id, connection.commands))
                }
                Err(why) => {
                    self.discard(id);
                    Err(Error::Unavailable(why))
                }
            },
        }
    }

    /// Forgets connection `id` on this thread, if it is still the current
    /// one, so the next command opens a new one.
    fn discard(&self, id: u64) {
        CONNECTIONS.with_borrow_mut(|table| {
            let current = match table.get(&self.id) {
                Some(Slot::Open { id, .. } | Slot::Opening { id, .. }) => *id,
                None => return,
            };
            if current == id {
                table.remove(&self.id);
            }
        });
    }

    /// Runs `command` on this thread's connection within the operation
    /// deadline. A single Redis's connection that timed out or failed below
    /// the level of a Redis error reply is replaced: after a restart, a
    /// network fault or a hang, the next command starts from a fresh
    /// connection. A cluster connection is kept: the failure was one node's
    /// (redis-rs repairs that connection and refreshes the layout itself),
    /// the others still serve their slots, and a new cluster connection
    /// could not even open while that node hangs or its host is gone (it
    /// connects to every node), so every topic would fail until a failover.
    pub(super) async fn run<T>(
        &self,
        command: impl AsyncFnOnce(&mut Commands) -> RedisResult<T>,
    ) -> Result<T, Error> {
        let bound = self.operation_timeout;
        let replace_on_failure = matches!(self.target, Target::Single { .. });
        let mut used = None;
        let work = async {
            let (id, mut connection) = self.connection().await?;
            used = Some(id);
            command(&mut connection).await.map_err(|e| {
                if replace_on_failure && !is_reply_error(&e) {
                    self.discard(id);
                }
                redis_error(e, bound)
            })
        };
        match tokio::time::timeout(bound, work).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(id) = used.filter(|_| replace_on_failure) {
                    self.discard(id);
                }
                Err(Error::Timeout(bound))
            }
        }
    }
}

/// Milliseconds since the Unix epoch by this host's clock.
pub(super) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| i64::try_from(since.as_millis()).ok())
        .unwrap_or(0)
}

/// Sets `offset` to Redis's clock minus ours, from one `TIME` round trip
/// (taken as happening at its midpoint). A slow answer (over 50 ms) says
/// too little to be used; the previous offset stays.
async fn measure_clock_offset(connection: &mut Commands, offset: &AtomicI64) {
    let sent = unix_ms();
    let Ok((seconds, micros)) = ::redis::cmd("TIME")
        .query_async::<(i64, i64)>(connection)
        .await
    else {
        return;
    };
    let received = unix_ms();
    if received - sent > 50 {
        return;
    }
    let redis_ms = seconds.saturating_mul(1000).saturating_add(micros / 1000);
    let measured = redis_ms - (sent + received) / 2;
    offset.store(measured, Ordering::Relaxed);
    if measured.abs() > 1000 {
        tracing::warn!(
            offset_ms = measured,
            "Redis's clock differs from this host's by over a second; publish deadlines allow for it"
        );
    }
}

/// An error Redis answered (the connection is fine), as opposed to a
/// failure of the connection itself.
fn is_reply_error(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType
    )
}

/// Sorts a Redis error into the bus's three kinds.
fn redis_error(error: RedisError, bound: Duration) -> Error {
    // EXPIRED: the publish script ran after its deadline and stored
    // nothing; the caller has given up on it by now, or is about to.
    if error.is_timeout() || error.code() == Some("EXPIRED") {
        return Error::Timeout(bound);
    }
    let text = error.to_string();
    // WRONGTYPE: a key of ours holds another type. CORRUPT: our script
    // refused inconsistent data. Both are data problems, not outages. Inside
    // MULTI/EXEC the code is not exposed, only the text.
    let data_problem = matches!(error.code(), Some("WRONGTYPE" | "CORRUPT"))
        || text.contains("WRONGTYPE")
        || text.contains("CORRUPT")
        || matches!(
            error.kind(),
            ErrorKind::UnexpectedReturnType | ErrorKind::Parse
        );
    if data_problem {
        Error::Corrupt(text)
    } else {
        Error::Unavailable(tls::explain(text))
    }
}

/// `url` with the password (if any) replaced by `***`, safe to log.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://:s3cret@host:1/2"), "redis://:***@host:1/2");
        assert_eq!(redact("redis://user:s3cret@host"), "redis://user:***@host");
        assert_eq!(
            redact("rediss://tokenonly@host?x=1"),
            "rediss://***@host?x=1"
        );
        assert_eq!(redact("redis://u:p@ss@host"), "redis://u:***@host");
        assert_eq!(redact("not a url"), "not a url");
    }
}
