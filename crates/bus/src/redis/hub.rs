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
    /// The newest position delivered, the base of gap detection. `None`
    /// only when the head could not be read at activation; the first
    /// message then sets it.
    pub(super) last: Option<Position>,
    /// False until the relay has confirmed SUBSCRIBE and read the head;
    /// `subscribe` waits for true, the relay delivers nothing before it.
    pub(super) active: watch::Sender<bool>,
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
    /// Also returns the feed's last delivered position when the feed was
    /// already active: the subscription then carries exactly the events
    /// after it.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        topic: &str,
    ) -> Result<(Subscription, Option<Position>), Error> {
        if !self.connected.load(Ordering::Acquire) {
            return Err(Error::Unavailable(
                "Redis pub/sub connection is down; reconnecting".into(),
            ));
        }
        let (subscription, mut active, created, last) = {
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
                        active: watch::channel(false).0,
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
            // carried, read under the same lock as the receiver was made:
            // this receiver gets exactly the events after it.
            let last = if *active.borrow() { feed.last } else { None };
            if created {
                let _ = self.reconcile.send(topic);
            }
            (subscription, active, created, last)
        };
        debug!(%topic, created, "waiting for the relay to confirm a subscription");
        // Dropping `subscription` on any error below releases it again.
        match tokio::time::timeout(self.confirm_timeout, active.wait_for(|active| *active)).await {
            Ok(Ok(_)) => Ok((subscription, last)),
            Ok(Err(_)) => Err(Error::Unavailable(
                "the bus shut down before the subscription was confirmed".into(),
            )),
            Err(_) => Err(Error::Timeout(self.confirm_timeout)),
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
