//! Commands on shared multiplexed connections: publish, head, replay,
//! health.
//!
//! Each thread that sends commands keeps one multiplexed connection per
//! store, opened on first use and replaced after a connection-level error.
//! Concurrent commands from one thread are pipelined on it, and the
//! connection's driver runs on the runtime of the thread that opened it: an
//! actix worker's command and its reply never cross threads.
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

use ::redis::aio::MultiplexedConnection;
use ::redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo as _,
    RedisError, RedisResult, Value,
};
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use shared_types::{Epoch, Event, Position};

use super::RedisConfig;
use super::schema::{self, Entry, Keys};
use crate::error::Error;
use crate::replay::{self, HistoryBounds, Replay, Slice};
use crate::stats::Counters;

/// Events a replay may return beyond `history_size`. `MAXLEN ~` trims whole
/// stream nodes (100 entries by default), so the stream keeps a little more
/// than asked; anything past this bound counts as trimmed, which keeps
/// replies bounded whatever the stream holds.
const REPLAY_SLACK: usize = 256;

/// Tells stores apart in the per-thread connection table.
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

/// A multiplexed connection and whether its driver has stopped.
#[derive(Clone)]
struct Connection {
    commands: MultiplexedConnection,
    /// Set when the driver task ends: the socket closed or failed. A
    /// command sent now would fail without reaching Redis, so the caller
    /// opens a new connection instead; after a Redis restart the first
    /// publish succeeds rather than failing on the old socket.
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Connects and runs the handshake (AUTH, SELECT) under the caller's
    /// deadline, then drives the connection on the current runtime.
    async fn open(info: ConnectionInfo, config: AsyncConnectionConfig) -> RedisResult<Self> {
        let (commands, driver) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                let (commands, driver) =
                    MultiplexedConnection::new_with_config(info.redis_settings(), stream, config)
                        .await?;
                (commands, driver.boxed())
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await?;
                let (commands, driver) =
                    MultiplexedConnection::new_with_config(info.redis_settings(), stream, config)
                        .await?;
                (commands, driver.boxed())
            }
            other => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "unsupported Redis address (use redis:// or unix://)",
                    other.to_string(),
                )));
            }
        };
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        tokio::spawn(async move {
            driver.await;
            flag.store(true, Ordering::Release);
        });
        Ok(Self { commands, closed })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

thread_local! {
    /// Store id → this thread's connection. An entry of a dropped store
    /// stays until its thread ends; its connection closes when the runtime
    /// that drives it stops, or on its first failed command.
    static CONNECTIONS: RefCell<HashMap<u64, Slot>> = RefCell::new(HashMap::new());
}

/// The stateless side of the engine, shared by the engine and its relay.
pub(crate) struct Store {
    /// Key of this store's connections in each thread's table.
    id: u64,
    /// Where and how to connect (address, credentials, database).
    info: ConnectionInfo,
    /// The response timeout of every command. Opening a connection is
    /// bounded in [`Store::connection`] by `connect_timeout`.
    connection_config: AsyncConnectionConfig,
    pub(crate) keys: Keys,
    /// One value for the process: `invoke_async` sends EVALSHA with its
    /// hash and loads the script only when Redis answers NOSCRIPT.
    script: ::redis::Script,
    pub(crate) config: RedisConfig,
    /// The URL with any password masked, for logs and errors.
    pub(crate) url: String,
    /// The engine's statistics; the relay counts reconnects and refills
    /// here too, through its own handle on the store.
    pub(crate) counters: Counters,
    /// Redis's clock minus ours, in milliseconds, measured with `TIME` on
    /// every new connection: publish deadlines are sent in Redis's clock.
    clock_offset_ms: Arc<AtomicI64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .field("prefix", &self.keys)
            .finish_non_exhaustive()
    }
}

/// What one atomic read of a topic saw.
struct Snapshot {
    /// `None` when the topic has no history.
    head: Option<Position>,
    /// Offset of the first entry the stream retains.
    first: Option<u64>,
    /// Entries from the requested offset on.
    entries: Vec<Entry>,
}

impl Store {
    /// Checks the URL; connects nothing yet.
    pub(crate) fn new(config: RedisConfig, url: String) -> Result<Self, Error> {
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::Unavailable(format!("invalid Redis URL {url}: {e}")))?;
        let connection_config =
            AsyncConnectionConfig::new().set_response_timeout(Some(config.response_timeout));
        Ok(Self {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            info,
            connection_config,
            keys: Keys::new(&config.key_prefix),
            script: ::redis::Script::new(schema::PUBLISH_SCRIPT),
            config,
            url,
            counters: Counters::default(),
            clock_offset_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    /// This thread's connection, opening it if there is none or if the one
    /// it had has closed. Callers on the same thread that arrive while it
    /// opens wait for the same attempt.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), Error> {
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
                    let info = self.info.clone();
                    let config = self.connection_config.clone();
                    let offset = self.clock_offset_ms.clone();
                    let limit = self.config.connect_timeout;
                    let future = async move {
                        // Bounded here, not only by the callers' deadlines:
                        // an attempt that hangs (a frozen Redis accepts
                        // connections but never answers the handshake) must
                        // end, or this thread would wait on it for good.
                        let mut connection =
                            tokio::time::timeout(limit, Connection::open(info, config))
                                .await
                                .map_err(|_| {
                                    format!("no connection within {} ms", limit.as_millis())
                                })?
                                .map_err(|e| e.to_string())?;
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
    /// deadline. A connection that timed out or failed below the level of
    /// a Redis error reply is replaced: after a restart, a network fault or
    /// a hang, the next command starts from a fresh connection.
    async fn run<T>(
        &self,
        command: impl AsyncFnOnce(&mut MultiplexedConnection) -> RedisResult<T>,
    ) -> Result<T, Error> {
        let bound = self.config.operation_timeout();
        let mut used = None;
        let work = async {
            let (id, mut connection) = self.connection().await?;
            used = Some(id);
            command(&mut connection).await.map_err(|e| {
                if !is_reply_error(&e) {
                    self.discard(id);
                }
                redis_error(e, bound)
            })
        };
        match tokio::time::timeout(bound, work).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(id) = used {
                    self.discard(id);
                }
                Err(Error::Timeout(bound))
            }
        }
    }

    /// PING, to check that commands get through.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        self.run(async |c| ::redis::cmd("PING").query_async::<()>(c).await)
            .await
    }

    /// Loads the publish script, so a Redis that refuses scripts is found
    /// at start rather than on the first publish.
    pub(crate) async fn load_script(&self) -> Result<(), Error> {
        self.run(async |c| self.script.load_async(c).await.map(drop))
            .await
    }

    /// Publishes a raw payload; returns how many connections received it.
    pub(crate) async fn publish_raw(&self, channel: &str, payload: &str) -> Result<u64, Error> {
        self.run(async |c| {
            ::redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async(c)
                .await
        })
        .await
    }

    /// Stores and broadcasts one event; see [`schema::PUBLISH_SCRIPT`].
    pub(crate) async fn publish(
        &self,
        topic: &str,
        event_type: &str,
        data: &str,
    ) -> Result<Position, Error> {
        let candidate = Epoch::random().to_string();
        // The script refuses to run after this moment (Redis's clock), so
        // a publish that waited in a frozen Redis's socket until after this
        // call gave up is not stored later. The call gives up when the
        // reply is later than the response timeout (the operation bound is
        // longer: it adds the connect timeout); the last quarter of it is
        // left for the reply to come back.
        let gives_up = self.config.response_timeout;
        let deadline_ms = unix_ms()
            .saturating_add(self.clock_offset_ms.load(Ordering::Relaxed))
            .saturating_add(i64::try_from((gives_up * 3 / 4).as_millis()).unwrap_or(i64::MAX));
        let maxlen = self.config.history_size.max(1);
        let ttl_ms = u64::try_from(self.config.history_ttl.as_millis()).unwrap_or(u64::MAX);
        let reply: Value = self
            .run(async |c| {
                let mut invocation = self.script.prepare_invoke();
                invocation
                    .key(self.keys.meta(topic))
                    .key(self.keys.stream(topic))
                    .arg(candidate)
                    .arg(event_type)
                    .arg(data)
                    .arg(maxlen)
                    .arg(ttl_ms)
                    .arg(self.keys.channel(topic))
                    .arg(deadline_ms);
                invocation.invoke_async(c).await
            })
            .await?;
        schema::parse_published(reply)
    }

    /// The topic's newest position, or [`Position::START`].
    pub(crate) async fn head(&self, topic: &str) -> Result<Position, Error> {
        let reply: Value = self
            .run(async |c| {
                ::redis::cmd("HMGET")
                    .arg(self.keys.meta(topic))
                    .arg("epoch")
                    .arg("offset")
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(schema::parse_meta(reply)?.unwrap_or(Position::START))
    }

    /// Reads meta, the first retained id and entries from `from` in one
    /// MULTI/EXEC, so all three describe the same moment.
    async fn snapshot(&self, topic: &str, from: u64, count: usize) -> Result<Snapshot, Error> {
        let stream = self.keys.stream(topic);
        let replies: Vec<Value> = self
            .run(async |c| {
                ::redis::pipe()
                    .atomic()
                    .cmd("HMGET")
                    .arg(self.keys.meta(topic))
                    .arg("epoch")
                    .arg("offset")
                    .cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("XRANGE")
                    .arg(&stream)
                    .arg(format!("{from}-0"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(c)
                    .await
            })
            .await?;
        let [meta, first, range] = <[Value; 3]>::try_from(replies)
            .map_err(|_| Error::Corrupt("MULTI/EXEC returned the wrong reply count".into()))?;
        Ok(Snapshot {
            head: schema::parse_meta(meta)?,
            first: schema::parse_entries(first)?
                .first()
                .map(|entry| entry.offset),
            entries: schema::parse_entries(range)?,
        })
    }

    /// Most events one replay returns; see [`REPLAY_SLACK`].
    fn replay_cap(&self) -> usize {
        self.config.history_size.max(1).saturating_add(REPLAY_SLACK)
    }

    /// The retained events after `after`, by the rules of [`replay::plan`],
    /// at most one `slice` of them.
    pub(crate) async fn replay(
        &self,
        topic: &Arc<str>,
        after: Position,
        slice: Slice,
    ) -> Result<Replay, Error> {
        let cap = self.replay_cap();
        let count = cap.min(slice.events.max(1));
        // Guess the common case (the reader is covered) and read from just
        // after its position; if the plan says otherwise, read again from
        // where it says. Two reads suffice unless the topic changes under
        // us between them, hence the small retry bound.
        let mut from = after.offset.saturating_add(1);
        for _ in 0..3 {
            let snapshot = self.snapshot(topic, from, count).await?;
            let bounds = match snapshot.head {
                None => HistoryBounds {
                    epoch: Epoch::NONE,
                    oldest: 1,
                    head: 0,
                },
                Some(head) => HistoryBounds {
                    epoch: head.epoch,
                    // Beyond the cap, older entries count as trimmed.
                    oldest: snapshot
                        .first
                        .unwrap_or(head.offset + 1)
                        .max(head.offset.saturating_sub(cap as u64) + 1),
                    head: head.offset,
                },
            };
            let plan = replay::plan(after, bounds);
            if plan.from <= bounds.head && plan.from != from {
                from = plan.from;
                continue;
            }
            let mut events = contiguous(topic, bounds, plan.from, count, snapshot.entries)?;
            events.truncate(slice.fit(&events));
            let last = plan.from.saturating_sub(1) + events.len() as u64;
            return Ok(Replay {
                reset: plan.reset,
                start: plan.start,
                more: last < bounds.head,
                events,
            });
        }
        Err(Error::Unavailable(format!(
            "history of topic {topic} kept changing while it was read"
        )))
    }
}

/// Turns the entries from `from` to the head (or the first `count` of them)
/// into events, checking they are exactly `from, from + 1, ...`: a hole, an
/// entry past the head or a range that stops short of it means meta and
/// stream disagree, and a reader must not be given a history that silently
/// skips.
fn contiguous(
    topic: &Arc<str>,
    bounds: HistoryBounds,
    from: u64,
    count: usize,
    entries: Vec<Entry>,
) -> Result<Vec<Arc<Event>>, Error> {
    if from > bounds.head {
        return Ok(Vec::new());
    }
    let mut events = Vec::with_capacity(entries.len());
    let mut expected = from;
    for entry in entries {
        if entry.offset != expected || entry.offset > bounds.head {
            return Err(Error::Corrupt(format!(
                "history of topic {topic} has entry {} where {expected} was expected (head {})",
                entry.offset, bounds.head
            )));
        }
        let position = Position::new(bounds.epoch, entry.offset);
        events.push(Arc::new(Event::new(
            topic.clone(),
            position,
            entry.event_type,
            entry.data,
        )));
        expected += 1;
    }
    if expected != bounds.head + 1 && events.len() < count {
        return Err(Error::Corrupt(format!(
            "history of topic {topic} ends at {} but its head is {}",
            expected - 1,
            bounds.head
        )));
    }
    Ok(events)
}

/// Milliseconds since the Unix epoch by this host's clock.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| i64::try_from(since.as_millis()).ok())
        .unwrap_or(0)
}

/// Sets `offset` to Redis's clock minus ours, from one `TIME` round trip
/// (taken as happening at its midpoint). A slow answer (over 50 ms) says
/// too little to be used; the previous offset stays.
async fn measure_clock_offset(connection: &mut MultiplexedConnection, offset: &AtomicI64) {
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
pub(crate) fn redis_error(error: RedisError, bound: Duration) -> Error {
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
        Error::Unavailable(text)
    }
}

/// `url` with the password (if any) replaced by `***`, safe to log.
pub(crate) fn redact(url: &str) -> String {
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
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn history_with_a_hole_or_a_short_tail_is_corrupt() {
        let topic: Arc<str> = "t".into();
        let bounds = HistoryBounds {
            epoch: Epoch(9),
            oldest: 1,
            head: 3,
        };
        let entry = |offset| Entry {
            offset,
            event_type: "m".into(),
            data: "d".into(),
        };
        assert_eq!(
            contiguous(&topic, bounds, 2, 100, vec![entry(2), entry(3)])
                .unwrap()
                .len(),
            2
        );
        assert!(
            contiguous(&topic, bounds, 4, 100, vec![])
                .unwrap()
                .is_empty()
        );
        // A slice may stop short of the head when it is full.
        assert_eq!(
            contiguous(&topic, bounds, 1, 2, vec![entry(1), entry(2)])
                .unwrap()
                .len(),
            2
        );
        for entries in [
            vec![entry(1), entry(3)],
            vec![entry(1), entry(2)],
            vec![entry(1), entry(2), entry(3), entry(4)],
        ] {
            assert!(matches!(
                contiguous(&topic, bounds, 1, 100, entries),
                Err(Error::Corrupt(_))
            ));
        }
    }
}
