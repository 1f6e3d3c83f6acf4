//! Commands through the connection pool: publish, head, replay, health.
//!
//! Every operation, from waiting for a pooled connection to the last reply,
//! runs under one deadline ([`RedisConfig::operation_timeout`]), so a caller
//! (an HTTP request) is answered within a known bound even when Redis hangs.

use std::sync::Arc;
use std::time::Duration;

use ::redis::{RedisError, RedisResult, Value};
use deadpool_redis::{Manager, Pool, PoolError, Runtime};
use shared_types::{Epoch, Event, Position};

use super::RedisConfig;
use super::schema::{self, Entry, Keys};
use crate::error::Error;
use crate::replay::{self, HistoryBounds, Replay};
use crate::stats::Counters;

/// Events a replay may return beyond `history_size`. `MAXLEN ~` trims whole
/// stream nodes (100 entries by default), so the stream keeps a little more
/// than asked; anything past this bound counts as trimmed, which keeps
/// replies bounded whatever the stream holds.
const REPLAY_SLACK: usize = 256;

/// The stateless side of the engine, shared by the engine and its relay.
pub(crate) struct Store {
    /// Multiplexed connections for every command but SUBSCRIBE.
    pool: Pool,
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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .field("prefix", &self.keys)
            .field("pool", &self.pool.status())
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
    /// Builds the pool; connects nothing yet.
    pub(crate) fn new(config: RedisConfig, url: String) -> Result<Self, Error> {
        let connection = ::redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        let manager = Manager::new_with_config(config.url.as_str(), connection)
            .map_err(|e| Error::Unavailable(format!("invalid Redis URL {url}: {e}")))?;
        // Built in code rather than from deadpool's serde config: we want
        // every timeout set, and all of them need the Tokio runtime.
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(config.wait_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.response_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| {
                Error::Unavailable(format!("cannot build the Redis pool for {url}: {e}"))
            })?;
        Ok(Self {
            pool,
            keys: Keys::new(&config.key_prefix),
            script: ::redis::Script::new(schema::PUBLISH_SCRIPT),
            config,
            url,
            counters: Counters::default(),
        })
    }

    /// Runs `command` on a pooled connection within the operation deadline.
    async fn run<T>(
        &self,
        command: impl AsyncFnOnce(&mut deadpool_redis::Connection) -> RedisResult<T>,
    ) -> Result<T, Error> {
        let bound = self.config.operation_timeout();
        let work = async {
            let mut connection = self.pool.get().await.map_err(|e| pool_error(e, bound))?;
            command(&mut connection)
                .await
                .map_err(|e| redis_error(e, bound))
        };
        tokio::time::timeout(bound, work)
            .await
            .unwrap_or(Err(Error::Timeout(bound)))
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
                    .arg(self.keys.channel(topic));
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

    /// The retained events after `after`, by the rules of [`replay::plan`].
    pub(crate) async fn replay(&self, topic: &Arc<str>, after: Position) -> Result<Replay, Error> {
        let cap = self.replay_cap();
        // Guess the common case (the reader is covered) and read from just
        // after its position; if the plan says otherwise, read again from
        // where it says. Two reads suffice unless the topic changes under
        // us between them, hence the small retry bound.
        let mut from = after.offset.saturating_add(1);
        for _ in 0..3 {
            let snapshot = self.snapshot(topic, from, cap).await?;
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
            let events = contiguous(topic, bounds, plan.from, snapshot.entries)?;
            return Ok(Replay {
                reset: plan.reset,
                start: plan.start,
                events,
            });
        }
        Err(Error::Unavailable(format!(
            "history of topic {topic} kept changing while it was read"
        )))
    }
}

/// Turns the entries from `from` to the head into events, checking they are
/// exactly `from, from + 1, ..., head`: a hole or an entry past the head
/// means meta and stream disagree, and a reader must not be given a history
/// that silently skips.
fn contiguous(
    topic: &Arc<str>,
    bounds: HistoryBounds,
    from: u64,
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
    if expected != bounds.head + 1 {
        return Err(Error::Corrupt(format!(
            "history of topic {topic} ends at {} but its head is {}",
            expected - 1,
            bounds.head
        )));
    }
    Ok(events)
}

/// Sorts a Redis error into the bus's three kinds.
pub(crate) fn redis_error(error: RedisError, bound: Duration) -> Error {
    if error.is_timeout() {
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
            ::redis::ErrorKind::UnexpectedReturnType | ::redis::ErrorKind::Parse
        );
    if data_problem {
        Error::Corrupt(text)
    } else {
        Error::Unavailable(text)
    }
}

fn pool_error(error: PoolError, bound: Duration) -> Error {
    match error {
        PoolError::Timeout(_) => Error::Timeout(bound),
        PoolError::Backend(error) => redis_error(error, bound),
        other => Error::Unavailable(other.to_string()),
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
            contiguous(&topic, bounds, 2, vec![entry(2), entry(3)])
                .unwrap()
                .len(),
            2
        );
        assert!(contiguous(&topic, bounds, 4, vec![]).unwrap().is_empty());
        for entries in [
            vec![entry(1), entry(3)],
            vec![entry(1), entry(2)],
            vec![entry(1), entry(2), entry(3), entry(4)],
        ] {
            assert!(matches!(
                contiguous(&topic, bounds, 1, entries),
                Err(Error::Corrupt(_))
            ));
        }
    }
}
