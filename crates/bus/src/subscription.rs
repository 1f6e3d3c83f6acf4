//! A live feed of one topic, bounded per reader.
//!
//! Every subscriber of a topic reads from the topic's one broadcast ring, so
//! an event is stored once however many read it. A reader that falls more
//! than the ring's capacity behind is *lagging*: it has lost events, and the
//! caller must end its stream (the client resumes from history). Nobody
//! ever waits for a slow reader.

use std::sync::Arc;

use shared_types::Event;
use tokio::sync::broadcast;

/// What [`Subscription::recv`] yields.
#[derive(Debug)]
pub enum Recv {
    Event(Arc<Event>),
    /// The reader fell behind by more than its buffer and missed events.
    Lagged,
    /// The topic's feed ended (engine shut down or the topic was dropped).
    Closed,
}

/// Run when a subscription ends, so an engine can release the topic's
/// upstream feed after its last local reader.
pub(crate) type Release = Box<dyn FnOnce() + Send + Sync>;

/// One reader's place in a topic's live feed.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Event>>,
    release: Option<Release>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("queued", &self.receiver.len())
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(receiver: broadcast::Receiver<Arc<Event>>, release: Option<Release>) -> Self {
        Self { receiver, release }
    }

    /// Waits for the next event.
    pub async fn recv(&mut self) -> Recv {
        match self.receiver.recv().await {
            Ok(event) => Recv::Event(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Recv::Lagged,
            Err(broadcast::error::RecvError::Closed) => Recv::Closed,
        }
    }

    /// The next event if one is already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Recv> {
        match self.receiver.try_recv() {
            Ok(event) => Some(Recv::Event(event)),
            Err(broadcast::error::TryRecvError::Empty) => None,
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Recv::Lagged),
            Err(broadcast::error::TryRecvError::Closed) => Some(Recv::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}
