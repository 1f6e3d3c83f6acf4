//! The per-topic hub: this process's local fan-out of one pub/sub
//! connection's messages.
//!
//! The [`Hub`] maps each topic with local subscribers to a [`Feed`]: its
//! broadcast sender, the last position delivered, and how many local
//! subscribers it has. The map is the truth about what this process wants:
//! [`Hub::subscribe`] and the release of the last subscriber change it,
//! then ask the relay to reconcile that topic. The relay compares the map
//! with what the connection is subscribed to and sends SUBSCRIBE or
//! UNSUBSCRIBE, so requests can never be applied in the wrong order.
//!
//! # A fresh subscriber's start, without asking Redis
//! A subscriber with no cursor needs the position its subscription starts
//! after: every event after it must arrive on its receiver, none at or
//! below it needs to. The feed answers that from its `last` and the one
//! head read its activation made, so a crowd arriving at a topic costs
//! Redis one head read per process, however quiet the topic.
//! - The relay activates a feed after Redis confirmed its SUBSCRIBE: it
//!   reads the head `H` and, under the hub's lock, sets `last = H` (also
//!   [`Position::START`] for a topic with no event yet) and turns the feed
//!   active. Before that it sends nothing on the feed, and after it only
//!   events classified against `last` ([`Position::sequence`]): an event
//!   published between the SUBSCRIBE and the read is in `H` and arrives
//!   at or below it, so it is dropped as a duplicate; any event after `H`
//!   was published after the read, so it arrives on pub/sub (or a refill)
//!   and goes out. Nothing after `START` is ever a duplicate, so `last =
//!   START` drops nothing: delivery is what it was with no base at all.
//! - A subscriber that joined before the activation made its receiver
//!   then, so it gets every event sent on the feed: exactly those after
//!   `H`, which it takes from [`Activation::Active`]. Every subscriber
//!   that arrived while the read was in flight shares it.
//! - A subscriber that joins an active feed reads `last` under the same
//!   lock as its receiver is made: events sent before are at or below
//!   `last`, events sent after reach the receiver.
//! - When the activation could not read the head, the feed has no base
//!   (`last` is `None`, and the first message sets it), and a fresh
//!   subscriber reads the head itself. An empty one becomes the base
//!   ([`Hub::learnt_head`] says when that is safe), so a crowd at a quiet
//!   topic still costs one read that succeeds; a non-empty one cannot.
//! - `last` moves only with what the feed sends, so it cannot be stale
//!   while the feed delivers what Redis holds. Where the feed may have
//!   missed events (pub/sub was down, a cluster node came back), the relay
//!   refills it from the stream after `last` before anyone can read a
//!   newer one; from `START`, that is the whole history created meanwhile.
//!   After a reconnect a feed at `START` is refilled only if its topic's
//!   head has moved: the heads of all such feeds are read first,
//!   pipelined, after their subscriptions are confirmed, so a head still
//!   `START` means any event is later than the subscription and arrives on
//!   pub/sub. A quiet topic costs a reconnect one `HMGET`, not a replay.
//!   A refill that finds `last`'s epoch gone (Redis restarted empty, the
//!   topic expired or was reset) moves `last` to where the new history
//!   starts, so later subscribers start in the epoch that exists. A feed
//!   dropped with its last subscriber takes its `last` with it: a new
//!   feed reads the head again.
//! - One case remains where `last` is older than Redis's truth: a topic
//!   that expires while followed (nobody published for `history_ttl`)
//!   keeps the old epoch's `last` until its next event. A subscriber that
//!   joins in between starts in the old epoch, and the next event (of a
//!   new one) sends it to replay, which answers `epoch-changed`. A topic
//!   with no event yet cannot expire, so its `START` is never stale so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use shared_types::{Event, Position};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::debug;

use super::RedisConfig;
use super::schema::Message;
use crate::error::Error;
use crate::subscription::Subscription;

/// One topic's live feed inside this process.
pub(super) struct Feed {
    /// One ring per topic: an event is stored once however many local
    /// subscribers read it, and a slow one lags instead of blocking.
    pub(super) sender: broadcast::Sender<Arc<Event>>,
    /// Local subscribers; the feed (and the Redis subscription) goes when
    /// the last one drops.
    pub(super) subscribers: usize,
    /// Tells a release which feed it belongs to, should the topic have been
    /// dropped and subscribed again in between.
    pub(super) generation: u64,
    /// The newest position delivered, the base of gap detection: set at
    /// activation to the head read then, [`Position::START`] included (a
    /// topic with no event yet), and moved by every event sent. `None`
    /// only when the head could not be read at activation and no event
    /// has come since; the first message then sets it.
    ///
    /// It is also the start of every fresh subscriber that joins the
    /// active feed (see [`Hub::subscribe`]), so a crowd arriving at a
    /// quiet topic costs Redis the one head read of the activation. Why
    /// that is exact, and when it moves, is in the module docs.
    pub(super) last: Option<Position>,
    /// [`Activation::Pending`] until the relay has confirmed SUBSCRIBE and
    /// read the head; `subscribe` waits for it, the relay delivers nothing
    /// before it.
    pub(super) active: watch::Sender<Activation>,
    /// Refills the relay skipped because `last` was `None`: events pub/sub
    /// did not deliver may be in the history unseen, so a head read begun
    /// before one must not become the base (see [`Hub::learnt_head`]).
    pub(super) refills_skipped: u64,
}

impl Feed {
    pub(super) fn is_active(&self) -> bool {
        self.active.borrow().is_active()
    }
}

/// Where a feed stands with the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Activation {
    /// The relay has not confirmed SUBSCRIBE and read the head yet.
    Pending,
    /// Delivering. `head` is what the activation read (`None`: it could
    /// not be read): the start of every subscriber that joined before, the
    /// one head read they all share.
    Active { head: Option<Position> },
}

impl Activation {
    pub(super) fn is_active(self) -> bool {
        matches!(self, Activation::Active { .. })
    }
}

/// Where a new subscription starts, as its feed knows it.
pub(crate) enum Start {
    /// After this position: exactly the events after it arrive.
    Known(Position),
    /// The feed has no base (its activation could not read the head, and
    /// no event came since): the caller reads the head itself and hands it
    /// back with [`Hub::learnt_head`].
    Unknown(Ticket),
}

/// What [`Hub::learnt_head`] checks a head read against: the feed it was
/// read for, and whether a refill was skipped since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    generation: u64,
    refills_skipped: u64,
}

/// Per-topic fan-out for this process, shared by the engine, the release
/// callbacks of subscriptions, and the relay.
pub(crate) struct Hub {
    feeds: Mutex<HashMap<Arc<str>, Feed>>,
    /// Topics whose feed changed and need reconciling with Redis.
    reconcile: mpsc::UnboundedSender<Arc<str>>,
    /// A pub/sub session is up: new subscriptions can be confirmed.
    pub(super) connected: AtomicBool,
    /// The last health check arrived in time.
    pub(super) ready: watch::Sender<bool>,
    /// Source of [`Feed::generation`].
    generations: AtomicU64,
    /// Capacity of each feed's broadcast ring.
    queue_capacity: usize,
    /// Most feeds at once; see [`RedisConfig::max_topics`].
    max_topics: usize,
    /// How long `subscribe` waits for the relay to confirm.
    confirm_timeout: Duration,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // try_lock: formatting must never wait on (or deadlock with) delivery.
        let topics = self.feeds.try_lock().map(|feeds| feeds.len()).ok();
        f.debug_struct("Hub")
            .field("topics", &topics)
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .field("ready", &*self.ready.borrow())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// An empty hub sized by `config`; `reconcile` reaches the relay.
    pub(super) fn new(config: &RedisConfig, reconcile: mpsc::UnboundedSender<Arc<str>>) -> Self {
        Self {
            feeds: Mutex::new(HashMap::new()),
            reconcile,
            connected: AtomicBool::new(false),
            ready: watch::channel(false).0,
            generations: AtomicU64::new(0),
            queue_capacity: config.queue_capacity,
            max_topics: config.max_topics,
            confirm_timeout: config.operation_timeout() * 2,
        }
    }

    /// Locks ignoring poison: every critical section leaves the map
    /// consistent, so one panic must not stop all delivery.
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Feed>> {
        self.feeds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.connected.load(Ordering::Acquire) && *self.ready.borrow()
    }

    /// Resolves once a health check has come back (at once if the last
    /// one did).
    pub(crate) async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Joins the topic's feed; returns once Redis has confirmed the channel
    /// subscription, so any event published after this returns is delivered.
    ///
    /// While the pub/sub connection is down this fails at once rather than
    /// waiting: the caller (the gateway) answers 503 and the client retries,
    /// which beats holding requests open for an outage of unknown length.
    ///
    /// Also returns where the subscription starts (it carries exactly the
    /// events after that): the feed's `last` when the feed was already
    /// active, the head its activation read when it was not; unknown only
    /// when the activation could not read the head and no event came since.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        topic: &str,
    ) -> Result<(Subscription, Start), Error> {
        if !self.connected.load(Ordering::Acquire) {
            return Err(Error::Unavailable(
                "Redis pub/sub connection is down; reconnecting".into(),
            ));
        }
        let (subscription, mut active, created, last, ticket) = {
            let mut feeds = self.lock();
            let created = !feeds.contains_key(topic);
            if created && feeds.len() >= self.max_topics {
                return Err(Error::TooManyTopics(self.max_topics));
            }
            if created {
                let (sender, _) = broadcast::channel(self.queue_capacity.max(1));
                feeds.insert(
                    Arc::from(topic),
                    Feed {
                        sender,
                        subscribers: 0,
                        generation: self.generations.fetch_add(1, Ordering::Relaxed),
                        last: None,
                        active: watch::channel(Activation::Pending).0,
                        refills_skipped: 0,
                    },
                );
            }
            let (topic, feed) = feed_mut(&mut feeds, topic)
                .ok_or_else(|| Error::Unavailable("hub lost a topic".into()))?;
            feed.subscribers += 1;
            // The receiver exists before activation, so nothing the relay
            // delivers after confirming can slip past this subscriber.
            let receiver = feed.sender.subscribe();
            let hub = Arc::downgrade(self);
            let generation = feed.generation;
            let release_topic = topic.clone();
            let release = Box::new(move || release(&hub, &release_topic, generation));
            let subscription = Subscription::new(receiver, Some(release));
            let active = feed.active.subscribe();
            // An active feed's `last` is the newest event its sender has
            // carried (or the head its activation read, before any), read
            // under the same lock as the receiver was made: this receiver
            // gets exactly the events after it.
            let last = feed.is_active().then_some(feed.last);
            let ticket = Ticket {
                generation,
                refills_skipped: feed.refills_skipped,
            };
            if created {
                let _ = self.reconcile.send(topic);
            }
            (subscription, active, created, last, ticket)
        };
        let start = |head: Option<Position>| head.map_or(Start::Unknown(ticket), Start::Known);
        if let Some(last) = last {
            return Ok((subscription, start(last)));
        }
        debug!(%topic, created, "waiting for the relay to confirm a subscription");
        // Dropping `subscription` on any error below releases it again.
        match tokio::time::timeout(
            self.confirm_timeout,
            active.wait_for(|active| active.is_active()),
        )
        .await
        {
            // Joined before the activation: nothing was sent on the feed
            // before it, and everything sent after is past the head it
            // read, so that head is this receiver's exact start too.
            Ok(Ok(activation)) => match *activation {
                Activation::Active { head } => Ok((subscription, start(head))),
                Activation::Pending => Ok((subscription, start(None))),
            },
            Ok(Err(_)) => Err(Error::Unavailable(
                "the bus shut down before the subscription was confirmed".into(),
            )),
            Err(_) => Err(Error::Timeout(self.confirm_timeout)),
        }
    }

    /// A head a subscriber read itself, for want of one known to its feed
    /// (see [`Start::Unknown`]). An empty one ([`Position::START`]) becomes
    /// the feed's base, so the rest of a crowd at a quiet topic takes it
    /// without asking Redis, provided the feed still has none and no refill
    /// was skipped since the subscriber joined: then every event after
    /// `START` is either still on its way on pub/sub or will be refilled
    /// from `START`, and nothing is dropped as at or below it. Any other
    /// head is not kept: subscribers that read older heads are owed the
    /// events between, which a higher base would drop as duplicates.
    pub(crate) fn learnt_head(&self, topic: &str, ticket: Ticket, head: Position) {
        if head != Position::START {
            return;
        }
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get_mut(topic)
            && feed.generation == ticket.generation
            && feed.refills_skipped == ticket.refills_skipped
            && feed.last.is_none()
        {
            feed.last = Some(head);
        }
    }

    /// Topics with a feed in this process.
    pub(crate) fn topic_count(&self) -> usize {
        self.lock().len()
    }

    /// Drops every feed: their subscribers see the end of the feed.
    pub(super) fn close(&self) {
        self.connected.store(false, Ordering::Release);
        self.ready.send_replace(false);
        self.lock().clear();
    }
}

/// The feed of `topic` with the map's own key, shared by every event.
pub(super) fn feed_mut<'a>(
    feeds: &'a mut HashMap<Arc<str>, Feed>,
    topic: &str,
) -> Option<(Arc<str>, &'a mut Feed)> {
    let key = feeds.get_key_value(topic)?.0.clone();
    Some((key, feeds.get_mut(topic)?))
}

/// Run when a subscription drops: the last local subscriber of a topic
/// takes the feed with it and asks the relay to unsubscribe.
fn release(hub: &Weak<Hub>, topic: &Arc<str>, generation: u64) {
    let Some(hub) = hub.upgrade() else { return };
    let mut feeds = hub.lock();
    if let Some(feed) = feeds.get_mut(topic)
        && feed.generation == generation
    {
        feed.subscribers = feed.subscribers.saturating_sub(1);
        if feed.subscribers == 0 {
            feeds.remove(topic);
            let _ = hub.reconcile.send(topic.clone());
        }
    }
}

/// Sends a message's event to the feed and advances its base.
pub(super) fn deliver(feed: &mut Feed, topic: &Arc<str>, message: Message) {
    feed.last = Some(message.position);
    let event = Event::new(
        topic.clone(),
        message.position,
        message.event_type,
        message.data,
    );
    // No receiver is fine: they may all be dropping right now.
    let _ = feed.sender.send(Arc::new(event));
}
