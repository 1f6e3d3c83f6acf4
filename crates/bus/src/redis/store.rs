//! The store's commands: publish, head, replay and the health check's
//! raw publish, each under one operation deadline on this thread's
//! connection (see the `connections` module).

use std::sync::Arc;

use ::redis::{RedisResult, Value};
use shared_types::{Epoch, Event, Position};

use super::connections::{Commands, Connections, unix_ms};
use super::schema::{self, Entry, Keys};
use super::{RedisConfig, RedisMode};
use crate::error::Error;
use crate::idempotency::{IdempotencyPolicy, Published, request_digest};
use crate::replay::{self, HistoryBounds, Replay, Slice};
use crate::stats::Counters;

/// Events a replay may return beyond `history_size`. `MAXLEN ~` trims whole
/// stream nodes (100 entries by default), so the stream keeps a little more
/// than asked; anything past this bound counts as trimmed, which keeps
/// replies bounded whatever the stream holds.
const REPLAY_SLACK: usize = 256;

/// The stateless side of the engine, shared by the engine and its relay.
pub(crate) struct Store {
    /// This thread's connection, opened on first use.
    connections: Connections,
    pub(crate) keys: Keys,
    /// One value for the process: `invoke_async` sends EVALSHA with its
    /// hash and loads the script only when Redis answers NOSCRIPT.
    script: ::redis::Script,
    /// The same for [`schema::SNAPSHOT_SCRIPT`].
    snapshot_script: ::redis::Script,
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
        Ok(Self {
            connections: Connections::new(&config, &url)?,
            keys: Keys::new(&config.key_prefix),
            script: ::redis::Script::new(schema::PUBLISH_SCRIPT),
            snapshot_script: ::redis::Script::new(schema::SNAPSHOT_SCRIPT),
            config,
            url,
            counters: Counters::default(),
        })
    }

    /// Runs `command` under the operation deadline; see
    /// [`Connections::run`].
    async fn run<T>(
        &self,
        command: impl AsyncFnOnce(&mut Commands) -> RedisResult<T>,
    ) -> Result<T, Error> {
        self.connections.run(command).await
    }

    /// PING, to check that commands get through.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        self.run(async |c| ::redis::cmd("PING").query_async::<()>(c).await)
            .await
    }

    /// `PUBLISH`, or in cluster mode `SPUBLISH` (sharded: delivered by
    /// the master of the channel's slot to its own subscribers).
    fn publish_command(&self) -> &'static str {
        match self.config.mode {
            RedisMode::Single => "PUBLISH",
            RedisMode::Cluster => "SPUBLISH",
        }
    }

    /// Publishes a raw payload; returns how many connections received it.
    pub(crate) async fn publish_raw(&self, channel: &str, payload: &[u8]) -> Result<u64, Error> {
        self.run(async |c| {
            ::redis::cmd(self.publish_command())
                .arg(channel)
                .arg(payload)
                .query_async(c)
                .await
        })
        .await
    }

    /// Cluster mode: for each master, the slot ranges it owns, from
    /// `CLUSTER SLOTS` (asked of any node), masters ordered by their lowest
    /// slot so the same layout always gives the same list.
    pub(crate) async fn master_ranges(&self) -> Result<Vec<Vec<(u16, u16)>>, Error> {
        let reply: Value = self
            .run(async |c| ::redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await)
            .await?;
        let corrupt = || Error::Corrupt("CLUSTER SLOTS returned an unexpected reply".into());
        let Value::Array(ranges) = reply else {
            return Err(corrupt());
        };
        // Master address (host and port as Redis sent them) → its ranges.
        let mut masters: std::collections::HashMap<String, Vec<(u16, u16)>> =
            std::collections::HashMap::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(corrupt());
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(corrupt());
            };
            let start = u16::try_from(*start).map_err(|_| corrupt())?;
            let end = u16::try_from(*end).map_err(|_| corrupt())?;
            let address = format!("{:?}", master.iter().take(2).collect::<Vec<_>>());
            masters.entry(address).or_default().push((start, end));
        }
        let mut layout: Vec<Vec<(u16, u16)>> = masters
            .into_values()
            .map(|mut owned| {
                owned.sort_unstable();
                owned
            })
            .collect();
        layout.sort_unstable();
        Ok(layout)
    }

    /// Stores and broadcasts one event; see [`schema::PUBLISH_SCRIPT`].
    pub(crate) async fn publish(
        &self,
        topic: &str,
        event_type: &str,
        data: &str,
    ) -> Result<Position, Error> {
        match self.run_script(topic, event_type, data, None).await? {
            Published::Stored(position) => Ok(position),
            // The script answers these only to a publish with a key.
            Published::Replayed(_) | Published::KeyReused => Err(Error::Corrupt(
                "publish script answered as if the publish had a key".to_owned(),
            )),
        }
    }

    /// As [`Store::publish`], once per `key` within the policy's window;
    /// see [`crate::idempotency`].
    pub(crate) async fn publish_idempotent(
        &self,
        topic: &str,
        event_type: &str,
        data: &str,
        key: &str,
        policy: &IdempotencyPolicy,
    ) -> Result<Published, Error> {
        self.run_script(topic, event_type, data, Some((key, policy)))
            .await
    }

    async fn run_script(
        &self,
        topic: &str,
        event_type: &str,
        data: &str,
        key: Option<(&str, &IdempotencyPolicy)>,
    ) -> Result<Published, Error> {
        let candidate = Epoch::random().to_string();
        // The script refuses to run after this moment (Redis's clock), so
        // a publish that waited in a frozen Redis's socket until after this
        // call gave up is not stored later. The call gives up when the
        // reply is later than the response timeout (the operation bound is
        // longer: it adds the connect timeout); the last quarter of it is
        // left for the reply to come back.
        let gives_up = self.config.response_timeout;
        let deadline_ms = unix_ms()
            .saturating_add(self.connections.clock_offset_ms())
            .saturating_add(i64::try_from((gives_up * 3 / 4).as_millis()).unwrap_or(i64::MAX));
        let maxlen = self.config.history_size.max(1);
        let ttl_ms = u64::try_from(self.config.history_ttl.as_millis()).unwrap_or(u64::MAX);
        let cluster = self.config.mode == RedisMode::Cluster;
        // In cluster mode the script does not broadcast; see below.
        let script_channel = if cluster {
            String::new()
        } else {
            self.keys.channel(topic)
        };
        let keyed = key.map(|(key, policy)| {
            let window = policy.window_within(self.config.history_ttl);
            (
                key,
                request_digest(event_type, data),
                u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
                policy.max_keys.max(1),
            )
        });
        let reply: Value = self
            .run(async |c| {
                let mut invocation = self.script.prepare_invoke();
                invocation
                    .key(self.keys.meta(topic))
                    .key(self.keys.stream(topic))
                    .key(self.keys.idempotency_keys(topic))
                    .key(self.keys.idempotency_ages(topic))
                    .arg(candidate)
                    .arg(event_type)
                    .arg(data)
                    .arg(maxlen)
                    .arg(ttl_ms)
                    .arg(script_channel)
                    .arg(deadline_ms);
                if let Some((key, digest, window_ms, max_keys)) = &keyed {
                    invocation
                        .arg(*key)
                        .arg(digest)
                        .arg(*window_ms)
                        .arg(*max_keys);
                }
                invocation.invoke_async(c).await
            })
            .await?;
        let published = schema::parse_published(reply)?;
        // A replay too: its first publish may have been refused because no
        // replica confirmed it, and then it was never broadcast either. A
        // gateway that already delivered it drops it as a duplicate. A
        // refused key stored nothing.
        if let (true, Published::Stored(position) | Published::Replayed(position)) =
            (cluster, &published)
        {
            self.replicate_and_broadcast(topic, *position, event_type, data)
                .await?;
        }
        Ok(published)
    }

    /// Cluster mode, after the script stored the event (or replayed it):
    /// waits until `cluster_ack_replicas` replicas of the topic's master
    /// hold it, then broadcasts it with `SPUBLISH`. A master's replication is
    /// asynchronous, and a replica promoted after a failover reuses every
    /// offset its old master handed out that it never received: had the
    /// event been broadcast (or acknowledged) first, a subscriber could have
    /// seen an event the new history does not hold, and would skip the
    /// other event later given its offset. So nothing is visible before it
    /// is on a replica. Fails (503) when the replicas do not confirm in
    /// time; the event is then stored on the master but not broadcast, and
    /// readers get it from history if it survives.
    async fn replicate_and_broadcast(
        &self,
        topic: &str,
        position: Position,
        event_type: &str,
        data: &str,
    ) -> Result<(), Error> {
        let wanted = self.config.cluster_ack_replicas;
        if wanted > 0 {
            // WAIT counts what this connection wrote; it must go to the
            // master that ran the script: the one owning the topic's slot.
            let wait_ms = (self.config.response_timeout / 2).as_millis().max(1) as u64;
            let route = ::redis::cluster_routing::RoutingInfo::SingleNode(
                ::redis::cluster_routing::SingleNodeRoutingInfo::SpecificNode(
                    ::redis::cluster_routing::Route::with_key(
                        self.keys.meta(topic),
                        ::redis::cluster_routing::SlotAddr::Master,
                    ),
                ),
            );
            let acked: Value = self
                .run(async |c| {
                    let mut wait = ::redis::cmd("WAIT");
                    wait.arg(wanted).arg(wait_ms);
                    match c {
                        Commands::Cluster(cluster) => cluster.route_command(wait, route).await,
                        Commands::Single(single) => wait.query_async(single).await,
                    }
                })
                .await?;
            let acked = match acked {
                Value::Int(n) => n,
                _ => return Err(Error::Corrupt("WAIT returned an unexpected reply".into())),
            };
            if acked < i64::from(wanted) {
                return Err(Error::Unavailable(format!(
                    "publish on topic {topic} reached {acked} of {wanted} replicas in time; not broadcast"
                )));
            }
        }
        let message = schema::encode_message(position, event_type, data);
        self.publish_raw(&self.keys.channel(topic), &message)
            .await
            .map(drop)
    }

    /// The topic's newest position, or [`Position::START`].
    pub(crate) async fn head(&self, topic: &str) -> Result<Position, Error> {
        let reply: Value = self
            .run(async |c| self.head_read(topic).query_async(c).await)
            .await?;
        parse_head(reply)
    }

    /// The command [`Store::head`] and [`Store::heads`] read a head with.
    fn head_read(&self, topic: &str) -> ::redis::Cmd {
        let mut read = ::redis::cmd("HMGET");
        read.arg(self.keys.meta(topic)).arg("epoch").arg("offset");
        read
    }

    /// The heads of `topics`, in order, as [`Store::head`] reads each: one
    /// pipeline of `HMGET`s in single mode; in cluster mode, where keys of
    /// different topics live on different masters and one pipeline may
    /// not span slots, one `HMGET` per topic, all sent at once.
    pub(crate) async fn heads(&self, topics: &[Arc<str>]) -> Result<Vec<Position>, Error> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        if self.config.mode == RedisMode::Cluster {
            return futures_util::future::try_join_all(topics.iter().map(|topic| self.head(topic)))
                .await;
        }
        let replies: Vec<Value> = self
            .run(async |c| {
                let mut pipeline = ::redis::pipe();
                for topic in topics {
                    pipeline.add_command(self.head_read(topic));
                }
                pipeline.query_async(c).await
            })
            .await?;
        if replies.len() != topics.len() {
            return Err(Error::Corrupt(
                "a pipeline of head reads returned the wrong reply count".into(),
            ));
        }
        replies.into_iter().map(parse_head).collect()
    }

    /// Reads meta, the first retained id and entries from `from` in one
    /// atomic step ([`schema::SNAPSHOT_SCRIPT`]), so all three describe the
    /// same moment.
    async fn snapshot(&self, topic: &str, from: u64, count: usize) -> Result<Snapshot, Error> {
        let replies: Vec<Value> = self
            .run(async |c| {
                let mut invocation = self.snapshot_script.prepare_invoke();
                invocation
                    .key(self.keys.meta(topic))
                    .key(self.keys.stream(topic))
                    .arg(format!("{from}-0"))
                    .arg(count);
                invocation.invoke_async(c).await
            })
            .await?;
        let [meta, first, range] = <[Value; 3]>::try_from(replies).map_err(|_| {
            Error::Corrupt("the snapshot script returned the wrong reply count".into())
        })?;
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
                None => HistoryBounds::EMPTY,
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

/// A head read's reply: the topic's newest position, or [`Position::START`]
/// for a topic with no meta.
fn parse_head(reply: Value) -> Result<Position, Error> {
    Ok(schema::parse_meta(reply)?.unwrap_or(Position::START))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The heads of many topics read at once come back in the topics'
    /// order, `START` for one without events: in single mode from one
    /// pipeline, in cluster mode from topics spread over the masters.
    #[tokio::test]
    async fn heads_come_back_in_the_topics_order_in_single_and_cluster_mode() {
        let server = testkit::RedisServer::start();
        let cluster = testkit::RedisCluster::start();
        let configs = [
            RedisConfig {
                url: server.url(),
                key_prefix: testkit::unique_prefix(),
                ..RedisConfig::default()
            },
            RedisConfig {
                mode: RedisMode::Cluster,
                cluster_nodes: cluster.seeds(),
                key_prefix: testkit::unique_prefix(),
                // A publish waits for a replica on a loaded machine.
                response_timeout: std::time::Duration::from_secs(2),
                ..RedisConfig::default()
            },
        ];
        for config in configs {
            let mode = config.mode;
            let url = config.target();
            let store = Store::new(config, url).unwrap();
            let topics: Vec<Arc<str>> = (0..40).map(|i| format!("t{i}").into()).collect();
            let mut expected = vec![Position::START; topics.len()];
            for (i, topic) in topics.iter().enumerate().filter(|(i, _)| i % 3 == 1) {
                for _ in 0..=(i % 4) {
                    expected[i] = store.publish(topic, "m", "d").await.unwrap();
                }
            }
            assert_eq!(
                store.heads(&topics).await.unwrap(),
                expected,
                "{mode:?} mode"
            );
            assert!(store.heads(&[]).await.unwrap().is_empty());
        }
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
