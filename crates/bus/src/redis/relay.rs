//! The subscriber side: one pub/sub connection per process, kept alive,
//! feeding the [`Hub`] without gaps.
//!
//! # Contiguity
//! Offsets of a topic are contiguous within an epoch, so the relay knows
//! exactly what a feed should deliver next. A message at `last + 1` goes
//! out; one at or below `last` is a duplicate and is dropped; one further
//! ahead means pub/sub lost something, and the missing events are read from
//! the stream and delivered first ([`Position::sequence`] classifies); if
//! that read finds the message's epoch gone from Redis, the feed moves to
//! the history that exists and the message is dropped. A message of
//! another epoch goes out as is: the history was recreated, and the
//! reader's own replay reports that.
//! After every reconnect each feed is refilled from its last position, so
//! an outage shows up as a delay, not as a gap; a feed at
//! [`Position::START`] only if its topic's head, read for all such feeds in
//! pipelines first, shows events (see [`Relay::catch_up`]).
//!
//! # Supervision
//! A RESP2 pub/sub connection never reconnects by itself, and it stays
//! silent rather than failing when Redis hangs. So every await has a
//! timeout and races shutdown, and a health check publishes a token to a
//! channel private to this relay every `ping_interval`: only its arrival
//! within `ping_timeout` proves that publishing and delivery both work.
//! Readiness is exactly "the last check arrived". A failed check ends the
//! session; the relay reconnects with jittered exponential backoff (reset
//! only after a session that passed two checks, so a flapping Redis is not
//! hammered).
//!
//! # Cluster mode
//! The connection is a RESP3 cluster connection (redis-rs
//! `cluster-async`): each topic's channel is `SSUBSCRIBE`d on the master
//! owning its slot, and messages, confirmations and removals arrive as
//! pushes. The health check then has one channel per master (a hash tag
//! picked to land in a slot the master owns, re-placed when the layout
//! changes), and every master's token must come back. On top of what
//! redis-rs does by itself (follow `MOVED`, re-subscribe a node's channels
//! when it reconnects or after a layout change):
//! - a confirmation the relay did not ask for is redis-rs re-subscribing a
//!   topic (a node came back, a slot moved): the topic is refilled;
//! - a removal it did not ask for is a master giving up the topic's slot
//!   (resharding, or a master turned replica): the topic is subscribed
//!   again, which finds the new owner, and refilled;
//! - a master that dies or hangs fails the health check, and the whole
//!   connection is rebuilt and every topic refilled, as after losing the
//!   single Redis.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ::redis::aio::{PubSub, PubSubSink, PubSubStream};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{ConnectionInfo, Msg, PushInfo, PushKind, RedisResult, Value};
use futures_util::{StreamExt, TryStreamExt};
use shared_types::{Position, Sequence};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::cluster;
use super::hub::{Activation, Hub, deliver, feed_mut};
use super::schema;
use super::socket;
use super::store::Store;
use super::tls::{self, RedisTls};
use crate::error::Error;
use crate::replay::{ResetReason, Slice};
use crate::stats::Counters;

/// Most channels named in one SUBSCRIBE, so resubscribing thousands of
/// topics after a reconnect does not build one enormous command.
const SUBSCRIBE_CHUNK: usize = 500;

/// Topics activated or refilled at once after a (re)subscribe: enough to
/// keep the command connection busy (concurrent commands are pipelined on
/// it), few enough that a reconnect with many busy topics does not queue
/// thousands of replays at Redis together.
const CATCH_UP_IN_FLIGHT: usize = 64;

/// Why a relay operation did not complete.
#[derive(Debug)]
enum Stop {
    Shutdown,
    /// The session is unusable; the text says why, for the log.
    Broken(String),
}

/// The pub/sub connection itself.
enum Link {
    /// One Redis: a RESP2 pub/sub connection.
    Single {
        /// Sends SUBSCRIBE/UNSUBSCRIBE and waits for Redis's confirmation.
        sink: PubSubSink,
        /// Messages in the order Redis sent them; ends when the connection
        /// does.
        stream: PubSubStream,
    },
    /// A cluster: SSUBSCRIBE per channel (each routed to its slot's
    /// master), everything Redis sends back arriving as pushes.
    Cluster {
        connection: ClusterConnection,
        /// Ends when the connection is dropped.
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    },
}

/// What the link received.
enum Incoming {
    Message(Msg),
    /// A sharded subscription was confirmed (cluster mode).
    Subscribed(Vec<u8>),
    /// A sharded subscription ended (cluster mode).
    Unsubscribed(Vec<u8>),
    /// Anything else (a reply pushed as well, an invalidation).
    Other,
}

impl Link {
    /// Subscribes `channels`, each confirmed. A cluster takes one channel
    /// per SSUBSCRIBE (channels of one command must share a slot), sent
    /// concurrently.
    async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single { sink, .. } => sink.subscribe(channels).await,
            Self::Cluster { connection, .. } => {
                futures_util::future::try_join_all(channels.iter().map(|channel| {
                    let mut connection = connection.clone();
                    async move { connection.ssubscribe(channel).await }
                }))
                .await
                .map(drop)
            }
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single { sink, .. } => sink.unsubscribe(channels).await,
            Self::Cluster { connection, .. } => {
                futures_util::future::try_join_all(channels.iter().map(|channel| {
                    let mut connection = connection.clone();
                    async move { connection.sunsubscribe(channel).await }
                }))
                .await
                .map(drop)
            }
        }
    }

    /// The next thing Redis sent; `None` once the connection is gone.
    async fn next(&mut self) -> Option<Incoming> {
        match self {
            Self::Single { stream, .. } => stream.next().await.map(Incoming::Message),
            Self::Cluster { pushes, .. } => {
                let push = pushes.recv().await?;
                let channel = |push: PushInfo| match push.data.into_iter().next() {
                    Some(Value::BulkString(channel)) => channel,
                    _ => Vec::new(),
                };
                Some(match push.kind {
                    PushKind::SMessage => {
                        Msg::from_push_info(push).map_or(Incoming::Other, Incoming::Message)
                    }
                    PushKind::SSubscribe => Incoming::Subscribed(channel(push)),
                    PushKind::SUnsubscribe => Incoming::Unsubscribed(channel(push)),
                    _ => Incoming::Other,
                })
            }
        }
    }
}

/// One pub/sub connection and what it is subscribed to.
struct Session {
    link: Link,
    /// Topics this connection is subscribed to, compared with the hub's
    /// map to decide what to (un)subscribe.
    subscribed: HashSet<Arc<str>>,
    /// Health channels subscribed: one in single mode, one per master in
    /// cluster mode.
    health: Vec<String>,
    /// Cluster mode: confirmations and removals of channels the relay asked
    /// for itself, still to arrive as pushes. Any other is Redis's or
    /// redis-rs's doing (see the module docs).
    own_pushes: HashMap<(bool, Vec<u8>), u32>,
    /// Health checks passed; two mean the session was healthy.
    checks_passed: u32,
}

impl Session {
    /// Counts the pushes the relay's own (un)subscribe of `channels` will
    /// cause (cluster mode only: a single link sends no such pushes).
    fn expect(&mut self, subscribed: bool, channels: &[String]) {
        if matches!(self.link, Link::Cluster { .. }) {
            for channel in channels {
                *self
                    .own_pushes
                    .entry((subscribed, channel.as_bytes().to_vec()))
                    .or_default() += 1;
            }
        }
    }

    /// Whether a confirmation or removal was one the relay asked for.
    fn was_expected(&mut self, subscribed: bool, channel: &[u8]) -> bool {
        let key = (subscribed, channel.to_vec());
        match self.own_pushes.get_mut(&key) {
            Some(count) => {
                *count -= 1;
                if *count == 0 {
                    self.own_pushes.remove(&key);
                }
                true
            }
            None => false,
        }
    }
}

/// A health check in flight: the token published and when it is due.
struct Check {
    /// Unique per check, so a late answer to an earlier one proves nothing.
    token: String,
    /// Past this, the session counts as dead.
    due: Instant,
    /// Health channels whose token has not come back yet.
    pending: HashSet<String>,
}

/// The task that owns the pub/sub connection. See the module docs.
pub(crate) struct Relay {
    /// Commands: head reads, refills and health-check publishes.
    store: Arc<Store>,
    hub: Arc<Hub>,
    /// Where the dedicated pub/sub connection goes (never a command one: a
    /// subscribed connection can run no other command), and the TLS
    /// material for `rediss://`. `None` in cluster mode, where each session
    /// builds its own cluster client.
    single: Option<(ConnectionInfo, Option<RedisTls>)>,
    /// Topics to reconcile; unbounded because senders are synchronous
    /// (a subscription's drop) and each entry is one topic name.
    commands: mpsc::UnboundedReceiver<Arc<str>>,
    /// Cancelled by the engine's shutdown or drop; every await races it.
    shutdown: CancellationToken,
    /// This relay's private health channel (single mode), or the base of
    /// its per-master hash tags (cluster mode).
    health_base: String,
    /// Counter that makes each health token unique.
    checks_sent: u64,
}

impl Relay {
    /// Starts the relay task on the current Tokio runtime and returns the
    /// hub it feeds, without waiting for Redis: the task connects in the
    /// background, retrying with backoff for as long as it takes. Until
    /// its first health check arrives the hub is not ready and refuses
    /// subscriptions. Fails only on a URL the client cannot use, or
    /// outside a runtime.
    pub(crate) fn start(store: Arc<Store>, shutdown: CancellationToken) -> Result<Arc<Hub>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Unavailable("a Redis subscriber must be created inside a Tokio runtime".into())
        })?;
        let single = match store.config.mode {
            super::RedisMode::Single => Some((
                socket::address(&store.config, &store.url)?,
                store.config.tls.clone(),
            )),
            super::RedisMode::Cluster => {
                // Checked now, so bad seeds fail at start, not in a retry loop.
                cluster::client(&store.config, None::<mpsc::UnboundedSender<PushInfo>>)?;
                None
            }
        };
        let (reconcile, commands) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub::new(&store.config, reconcile));
        let token = format!("{:016x}", rand::random::<u64>());
        let relay = Relay {
            health_base: store.keys.health_channel(&token),
            store,
            hub: hub.clone(),
            single,
            commands,
            shutdown,
            checks_sent: 0,
        };
        runtime.spawn(relay.run());
        Ok(hub)
    }

    /// Connects, and reconnects forever with backoff, until shutdown; then
    /// closes the hub. The first connection is retried like any other, so
    /// a gateway started before Redis waits for it.
    async fn run(mut self) {
        let config = self.store.config.clone();
        let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
        let mut connected_before = false;
        loop {
            let session = match self.open().await {
                Ok(session) => {
                    if connected_before {
                        Counters::add(&self.store.counters.reconnects, 1);
                        info!(url = %self.store.url, "redis pub/sub reconnected");
                    } else {
                        info!(url = %self.store.url, "redis pub/sub connected");
                    }
                    connected_before = true;
                    session
                }
                Err(Stop::Shutdown) => break,
                Err(Stop::Broken(why)) => {
                    let delay = backoff.next_delay();
                    let retry_in_ms = delay.as_millis() as u64;
                    if connected_before {
                        warn!(url = %self.store.url, %why, retry_in_ms, "redis pub/sub reconnect failed");
                    } else {
                        warn!(url = %self.store.url, %why, retry_in_ms, "redis not reachable yet; retrying");
                    }
                    if self.pause(delay).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let (end, healthy) = self.serve(session).await;
            self.hub.connected.store(false, Ordering::Release);
            self.hub.ready.send_replace(false);
            match end {
                Stop::Shutdown => break,
                Stop::Broken(why) => {
                    warn!(url = %self.store.url, %why, "redis pub/sub session ended");
                    if healthy {
                        // A session that worked for a while: its failure says
                        // nothing about the next, so retry at once.
                        backoff.reset();
                    } else if self.pause(backoff.next_delay()).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.hub.close();
        debug!("redis relay stopped");
    }

    /// Sleeps unless shutdown comes first.
    async fn pause(&self, duration: Duration) -> Result<(), ()> {
        tokio::select! {
            // Shutdown must not wait out a 30 s backoff.
            _ = self.shutdown.cancelled() => Err(()),
            // The backoff elapsed: try again.
            _ = tokio::time::sleep(duration) => Ok(()),
        }
    }

    /// Runs `future` with a time bound, unless shutdown comes first.
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        limit: Duration,
        future: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Stop> {
        tokio::select! {
            biased;
            // Shutdown wins even over a reply that is ready at the same time.
            _ = self.shutdown.cancelled() => Err(Stop::Shutdown),
            // The operation finished, failed, or ran out of time.
            result = tokio::time::timeout(limit, future) => match result {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(Stop::Broken(tls::explain(format!("{what}: {error}")))),
                Err(_) => Err(Stop::Broken(format!("{what}: no answer within {} ms", limit.as_millis()))),
            },
        }
    }

    /// Connects, subscribes the health channel and every wanted topic, and
    /// brings every feed up to date from the streams.
    async fn open(&mut self) -> Result<Session, Stop> {
        let config = self.store.config.clone();
        let link = match &self.single {
            Some((info, tls)) => {
                // The same bound as `bounded`'s below, started first: a
                // TLS handshake nobody answers fails with its own message.
                let deadline = Instant::now() + config.connect_timeout;
                let connect = async {
                    let stream = socket::connect(info, tls.as_ref(), deadline).await?;
                    PubSub::new(info.redis_settings(), stream).await
                };
                let pubsub = self
                    .bounded("connect", config.connect_timeout, connect)
                    .await?;
                let (sink, stream) = pubsub.split();
                Link::Single { sink, stream }
            }
            None => {
                let (push, pushes) = mpsc::unbounded_channel();
                let client = cluster::client(&config, Some(push))
                    .map_err(|e| Stop::Broken(e.to_string()))?;
                let connection = self
                    .bounded(
                        "connect",
                        config.operation_timeout(),
                        client.get_async_connection(),
                    )
                    .await?;
                Link::Cluster { connection, pushes }
            }
        };
        let mut session = Session {
            link,
            subscribed: HashSet::new(),
            health: Vec::new(),
            own_pushes: HashMap::new(),
            checks_passed: 0,
        };
        // Pending reconcile requests are only hints; the map read below is
        // the truth, so they can go.
        while self.commands.try_recv().is_ok() {}
        self.place_health_channels(&mut session).await?;
        let topics: Vec<Arc<str>> = self.hub.lock().keys().cloned().collect();
        self.subscribe(&mut session, &topics).await?;
        self.catch_up(&topics).await?;
        self.hub.connected.store(true, Ordering::Release);
        Ok(session)
    }

    /// SUBSCRIBEs the channels of `topics`, in chunks, each confirmed.
    async fn subscribe(&self, session: &mut Session, topics: &[Arc<str>]) -> Result<(), Stop> {
        for chunk in topics.chunks(SUBSCRIBE_CHUNK) {
            let channels: Vec<String> = chunk
                .iter()
                .map(|topic| self.store.keys.channel(topic))
                .collect();
            let limit = self.store.config.response_timeout;
            session.expect(true, &channels);
            self.bounded("subscribe", limit, session.link.subscribe(&channels))
                .await?;
            session.subscribed.extend(chunk.iter().cloned());
        }
        Ok(())
    }

    /// For each topic now subscribed: a new feed learns its head and goes
    /// active; an active one is refilled with what it missed. A feed at
    /// [`Position::START`] (a quiet topic) is refilled only when its
    /// topic's head shows it gained events: the heads of all such feeds
    /// are read first, [`SUBSCRIBE_CHUNK`] to a pipeline
    /// ([`Store::heads`]), so after a reconnect a quiet topic costs one
    /// `HMGET`, not a snapshot script. Then up to [`CATCH_UP_IN_FLIGHT`]
    /// topics are activated or refilled at once; the topics are
    /// independent, and no pub/sub message is handled until all are done.
    async fn catch_up(&self, topics: &[Arc<str>]) -> Result<(), Stop> {
        let quiet: Vec<Arc<str>> = {
            let feeds = self.hub.lock();
            topics
                .iter()
                .filter(|topic| {
                    feeds
                        .get(*topic)
                        .is_some_and(|feed| feed.is_active() && feed.last == Some(Position::START))
                })
                .cloned()
                .collect()
        };
        let mut unchanged = HashSet::new();
        for chunk in quiet.chunks(SUBSCRIBE_CHUNK) {
            match self.store_call("read heads", self.store.heads(chunk)).await {
                // Still no event: nothing to refill. One published after
                // this read was published after the subscription was
                // confirmed, so it arrives on pub/sub.
                Ok(heads) => unchanged.extend(
                    chunk
                        .iter()
                        .zip(heads)
                        .filter(|(_, head)| *head == Position::START)
                        .map(|(topic, _)| topic.clone()),
                ),
                Err(Stop::Shutdown) => return Err(Stop::Shutdown),
                // Heads unknown: the refills decide (and warn if they
                // cannot read either).
                Err(Stop::Broken(why)) => {
                    warn!(%why, "cannot read quiet topics' heads; refilling them")
                }
            }
        }
        let unchanged = &unchanged;
        // Owned names: a closure over borrowed ones trips the compiler's
        // proof that the relay's future is `Send`.
        futures_util::stream::iter(topics.iter().cloned())
            .map(|topic| async move {
                let state = self
                    .hub
                    .lock()
                    .get(&topic)
                    .map(|feed| (feed.is_active(), feed.generation, feed.last));
                match state {
                    None => Ok(()),
                    Some((false, generation, _)) => self.activate(&topic, generation).await,
                    Some((true, _, Some(Position::START))) if unchanged.contains(&topic) => Ok(()),
                    Some((true, _, _)) => self.refill(&topic, None).await.map(drop),
                }
            })
            .buffer_unordered(CATCH_UP_IN_FLIGHT)
            .try_for_each(|()| std::future::ready(Ok(())))
            .await
    }

    /// Sets a new feed's base to the topic's head ([`Position::START`] for
    /// a topic with no event yet) and lets its subscribers return, each
    /// starting after that head (see the hub's module docs). Events up to
    /// the head are a resuming subscriber's own replay's job.
    async fn activate(&self, topic: &Arc<str>, generation: u64) -> Result<(), Stop> {
        let head = match self.store_call("read head", self.store.head(topic)).await {
            Ok(head) => Some(head),
            Err(Stop::Shutdown) => return Err(Stop::Shutdown),
            // The subscription itself is confirmed; without a base, the
            // first message sets it and the reader's replay covers the rest.
            Err(Stop::Broken(why)) => {
                warn!(%topic, %why, "cannot read a topic head; gap detection starts with its next event");
                None
            }
        };
        let mut feeds = self.hub.lock();
        if let Some(feed) = feeds.get_mut(topic)
            && feed.generation == generation
        {
            feed.last = head;
            feed.active.send_replace(Activation::Active { head });
        }
        Ok(())
    }

    /// A command under the operation deadline and shutdown. Failures
    /// here are about the command connection, not the pub/sub session.
    async fn store_call<T>(
        &self,
        what: &str,
        future: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Stop> {
        self.bounded(what, self.store.config.operation_timeout(), future)
            .await
    }

    /// Delivers what `topic`'s feed missed, read from the stream. `live` is
    /// the message that revealed the gap, not counted as refilled. Says
    /// whether the feed's epoch was found gone and the feed moved to the
    /// history that exists (then `live`, of the gone epoch, must not go
    /// out).
    async fn refill(&self, topic: &Arc<str>, live: Option<Position>) -> Result<bool, Stop> {
        let Some((last, generation)) = self.hub.lock().get_mut(topic).and_then(|feed| {
            if feed.last.is_none() {
                // Nothing to refill after; a head read begun before this
                // cannot become the base (see `Hub::learnt_head`).
                feed.refills_skipped += 1;
            }
            Some((feed.last?, feed.generation))
        }) else {
            return Ok(false);
        };
        let replay = match self
            .store_call("refill", self.store.replay(topic, last, Slice::ALL))
            .await
        {
            Ok(replay) => replay,
            Err(Stop::Shutdown) => return Err(Stop::Shutdown),
            // Deliver on: the reader sees the jump and replays by itself.
            Err(Stop::Broken(why)) => {
                warn!(%topic, %why, "cannot refill a gap from history");
                return Ok(false);
            }
        };
        if let Some(reset) = replay.reset {
            warn!(%topic, reason = reset.as_str(), "history no longer covers the live feed");
        }
        let mut refilled = 0;
        let mut feeds = self.hub.lock();
        let Some(feed) = feeds
            .get_mut(topic)
            .filter(|feed| feed.generation == generation)
        else {
            return Ok(false);
        };
        let epoch_gone = replay.reset == Some(ResetReason::EpochChanged);
        if epoch_gone {
            // `last`'s epoch is gone (Redis restarted empty, the topic
            // expired or was reset): the base moves to where the history
            // that exists starts, `START` when there is none, so that a
            // fresh subscriber taking `last` starts in it, not in an epoch
            // whose next event would send it to replay and a reset.
            // Subscribers of the old epoch still see the jump and replay.
            feed.last = Some(replay.start);
        }
        for event in replay.events {
            if event.position.sequence(feed.last) == Sequence::Duplicate {
                continue;
            }
            if Some(event.position) != live {
                refilled += 1;
            }
            feed.last = Some(event.position);
            let _ = feed.sender.send(event);
        }
        if refilled > 0 {
            Counters::add(&self.store.counters.gaps_refilled, 1);
            Counters::add(&self.store.counters.refilled_events, refilled);
            debug!(%topic, refilled, "refilled a live gap from history");
        }
        Ok(epoch_gone)
    }

    /// Serves one session until it breaks or shutdown; says whether it was
    /// healthy (passed two health checks).
    async fn serve(&mut self, mut session: Session) -> (Stop, bool) {
        let config = self.store.config.clone();
        // The first tick is immediate: readiness is proven, not assumed.
        let mut ping = tokio::time::interval(config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check: Option<Check> = None;
        let end = loop {
            let due = check
                .as_ref()
                .map_or_else(|| Instant::now() + config.ping_interval, |check| check.due);
            let step = tokio::select! {
                biased;
                // Shutdown: stop at once; the engine is going away.
                _ = self.shutdown.cancelled() => Err(Stop::Shutdown),
                // A topic gained its first or lost its last local subscriber.
                // Before messages, so a flood of them cannot starve new
                // subscribers; these are rare and cheap.
                Some(topic) = self.commands.recv() => self.reconcile(&mut session, topic).await,
                // Redis pushed a message, or the connection ended (a RESP2
                // pub/sub connection ends for good: reconnect). Before the
                // health timers: a token queued behind a burst is on its
                // way, and a flowing stream is itself a sign of life.
                message = session.link.next() => match message {
                    Some(message) => self.handle(&mut session, &mut check, message).await,
                    None => Err(Stop::Broken("connection closed".into())),
                },
                // The last health token did not come back in time: Redis
                // hangs, or our subscription is gone.
                _ = tokio::time::sleep_until(due), if check.is_some() => {
                    Err(Stop::Broken(format!("health check not delivered within {} ms", config.ping_timeout.as_millis())))
                }
                // Time for the next health check (none is in flight).
                _ = ping.tick(), if check.is_none() => self.start_check(&mut session, &mut check).await,
            };
            if let Err(stop) = step {
                break stop;
            }
        };
        (end, session.checks_passed >= 2)
    }

    /// Subscribes the health channels the layout calls for: the one
    /// channel, or in cluster mode one in a slot of each master (asked
    /// with `CLUSTER SLOTS`); channels of a layout gone are unsubscribed.
    async fn place_health_channels(&self, session: &mut Session) -> Result<(), Stop> {
        let wanted: Vec<String> = match session.link {
            Link::Single { .. } => vec![self.health_base.clone()],
            Link::Cluster { .. } => self
                .store_call("read the cluster layout", self.store.master_ranges())
                .await?
                .iter()
                .filter_map(|ranges| cluster::tag_in_ranges(&self.health_base, ranges))
                .map(|tag| self.store.keys.health_channel(&format!("{{{tag}}}")))
                .collect(),
        };
        let limit = self.store.config.response_timeout;
        let gone: Vec<String> = session
            .health
            .iter()
            .filter(|channel| !wanted.contains(channel))
            .cloned()
            .collect();
        if !gone.is_empty() {
            session.expect(false, &gone);
            self.bounded(
                "unsubscribe health channels",
                limit,
                session.link.unsubscribe(&gone),
            )
            .await?;
        }
        let new: Vec<String> = wanted
            .iter()
            .filter(|channel| !session.health.contains(channel))
            .cloned()
            .collect();
        if !new.is_empty() {
            session.expect(true, &new);
            self.bounded(
                "subscribe health channels",
                limit,
                session.link.subscribe(&new),
            )
            .await?;
        }
        session.health = wanted;
        Ok(())
    }

    /// Publishes a fresh token to every health channel as a command.
    async fn start_check(
        &mut self,
        session: &mut Session,
        check: &mut Option<Check>,
    ) -> Result<(), Stop> {
        self.checks_sent += 1;
        let token = self.checks_sent.to_string();
        let limit = self.store.config.ping_timeout;
        let sent_at = Instant::now();
        let sent = async {
            // The layout may have changed since the last check.
            self.place_health_channels(session).await?;
            for channel in &session.health {
                let receivers = self
                    .bounded(
                        "health check",
                        limit,
                        self.store.publish_raw(channel, token.as_bytes()),
                    )
                    .await?;
                if receivers == 0 {
                    // Redis is up but does not know our subscription: it
                    // restarted, or our connection was killed and we have
                    // not noticed yet.
                    return Err(Stop::Broken(format!(
                        "health channel {channel} has no subscriber"
                    )));
                }
            }
            Ok(())
        };
        sent.await.inspect_err(|_| {
            self.hub.ready.send_replace(false);
        })?;
        *check = Some(Check {
            token,
            due: sent_at + limit,
            pending: session.health.iter().cloned().collect(),
        });
        Ok(())
    }

    /// Handles one pub/sub message.
    async fn handle(
        &mut self,
        session: &mut Session,
        check: &mut Option<Check>,
        incoming: Incoming,
    ) -> Result<(), Stop> {
        let message = match incoming {
            Incoming::Message(message) => message,
            Incoming::Subscribed(channel) => return self.resubscribed(session, &channel).await,
            Incoming::Unsubscribed(channel) => return self.dropped(session, &channel).await,
            Incoming::Other => return Ok(()),
        };
        let channel = message.get_channel_name();
        if session.health.iter().any(|health| health == channel) {
            if let Some(pending) = check
                .as_mut()
                .filter(|check| message.get_payload_bytes() == check.token.as_bytes())
            {
                pending.pending.remove(channel);
                if pending.pending.is_empty() {
                    *check = None;
                    session.checks_passed = session.checks_passed.saturating_add(1);
                    if !self.hub.ready.send_replace(true) {
                        info!(url = %self.store.url, "redis pub/sub is delivering");
                    }
                }
            }
            return Ok(());
        }
        let Some(topic) = self.store.keys.topic_of(channel) else {
            return Ok(());
        };
        let decoded = match schema::decode_message(message.get_payload_bytes()) {
            Ok(decoded) => decoded,
            Err(error) => {
                // Skipping it leaves a gap that the next message or the
                // reader's replay fills from the stream.
                Counters::add(&self.store.counters.corrupt_messages, 1);
                warn!(%topic, %error, "dropping an unreadable pub/sub message");
                return Ok(());
            }
        };
        let gap = {
            let mut feeds = self.hub.lock();
            let Some((topic, feed)) = feed_mut(&mut feeds, topic) else {
                return Ok(());
            };
            if !feed.is_active() {
                // Not confirmed yet: whatever this is, the head read at
                // activation (and the reader's replay) covers it.
                return Ok(());
            }
            match decoded.position.sequence(feed.last) {
                // Another epoch goes out too: the feed is shared by many
                // readers, each of which finds the new history through its
                // own replay (and tells its client with a reset); refilling
                // here could not tell them apart.
                Sequence::Next | Sequence::OtherEpoch => {
                    deliver(feed, &topic, decoded);
                    None
                }
                Sequence::Duplicate => {
                    Counters::add(&self.store.counters.duplicates_dropped, 1);
                    None
                }
                Sequence::Gap => Some((topic, feed.generation, decoded)),
            }
        };
        if let Some((topic, generation, decoded)) = gap {
            if self.refill(&topic, Some(decoded.position)).await? {
                // The message's epoch is gone from Redis and the feed has
                // moved to the history that exists: this event belongs to
                // none a reader could replay.
                debug!(%topic, "dropping a live message of an epoch Redis no longer holds");
                return Ok(());
            }
            // If the refill could not reach this event, deliver it anyway:
            // the reader sees the jump and replays by itself. Only to the
            // feed that saw the gap: while the refill ran, its last
            // subscriber may have left and a new feed, not yet at its
            // head, taken the topic.
            let mut feeds = self.hub.lock();
            if let Some(feed) = feeds.get_mut(&topic)
                && feed.generation == generation
                && feed.is_active()
                && decoded.position.sequence(feed.last) != Sequence::Duplicate
            {
                deliver(feed, &topic, decoded);
            }
        }
        Ok(())
    }

    /// Cluster mode: a sharded subscription was confirmed. One the relay
    /// did not ask for is redis-rs subscribing the topic again on a node
    /// (reconnected, or the slot's new owner): what was published in
    /// between is read from the stream.
    async fn resubscribed(&self, session: &mut Session, channel: &[u8]) -> Result<(), Stop> {
        if session.was_expected(true, channel) {
            return Ok(());
        }
        let Some(topic) = std::str::from_utf8(channel)
            .ok()
            .and_then(|channel| self.store.keys.topic_of(channel))
        else {
            return Ok(());
        };
        let Some(topic) = session.subscribed.get(topic).cloned() else {
            return Ok(());
        };
        debug!(%topic, "channel subscribed again by the cluster client; refilling");
        Counters::add(&self.store.counters.resubscriptions, 1);
        let active = self
            .hub
            .lock()
            .get(&topic)
            .is_some_and(|feed| feed.is_active());
        if active {
            self.refill(&topic, None).await?;
        }
        Ok(())
    }

    /// Cluster mode: a sharded subscription ended. One the relay did not
    /// ask for is a master giving up the channel's slot (resharding, or a
    /// failover that made it a replica): the topic is subscribed again,
    /// which reaches the slot's new owner, and refilled. A health channel
    /// is placed again at the next check.
    async fn dropped(&mut self, session: &mut Session, channel: &[u8]) -> Result<(), Stop> {
        if session.was_expected(false, channel) {
            return Ok(());
        }
        let Ok(channel) = std::str::from_utf8(channel) else {
            return Ok(());
        };
        if let Some(at) = session.health.iter().position(|health| health == channel) {
            session.health.remove(at);
            return Ok(());
        }
        let Some(topic) = self.store.keys.topic_of(channel) else {
            return Ok(());
        };
        let Some(topic) = session.subscribed.take(topic) else {
            return Ok(());
        };
        info!(%topic, "redis cluster moved a topic's channel; subscribing again");
        Counters::add(&self.store.counters.resubscriptions, 1);
        self.reconcile(session, topic).await
    }

    /// Brings the connection's subscriptions in line with the hub for the
    /// given topic and any other requests already queued.
    async fn reconcile(&mut self, session: &mut Session, first: Arc<str>) -> Result<(), Stop> {
        let mut batch = HashSet::from([first]);
        while let Ok(topic) = self.commands.try_recv() {
            batch.insert(topic);
        }
        let (mut join, mut leave, mut pending) = (Vec::new(), Vec::new(), Vec::new());
        {
            let feeds = self.hub.lock();
            for topic in batch {
                match (feeds.get(&topic), session.subscribed.contains(&topic)) {
                    (Some(_), false) => join.push(topic),
                    (Some(feed), true) if !feed.is_active() => pending.push(topic),
                    (None, true) => leave.push(topic),
                    _ => {}
                }
            }
        }
        for chunk in leave.chunks(SUBSCRIBE_CHUNK) {
            let channels: Vec<String> = chunk
                .iter()
                .map(|topic| self.store.keys.channel(topic))
                .collect();
            let limit = self.store.config.response_timeout;
            session.expect(false, &channels);
            self.bounded("unsubscribe", limit, session.link.unsubscribe(&channels))
                .await?;
            for topic in chunk {
                session.subscribed.remove(topic);
            }
        }
        self.subscribe(session, &join).await?;
        join.extend(pending);
        self.catch_up(&join).await
    }
}
