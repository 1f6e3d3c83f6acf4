//! A live feed of one topic, bounded per reader.
//!
//! Every subscriber of a topic reads from the topic's one broadcast ring, so
//! an event is stored once however many read it. A reader that falls more
//! than the ring's capacity behind is *lagging*: it has lost events, and the
//! caller must end its stream (the client resumes from history). Nobody
//! ever waits for a slow reader.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use shared_types::Event;
use tokio::sync::broadcast;
use tokio_util::sync::ReusableBoxFuture;

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

type Received = (
    Result<Arc<Event>, broadcast::error::RecvError>,
    broadcast::Receiver<Arc<Event>>,
);

/// One reader's place in a topic's live feed.
///
/// It can be polled by hand ([`Subscription::poll_recv`]), so a stream
/// body can wait on it without an async state machine of its own: the
/// pending receive lives in one small reused allocation.
pub struct Subscription {
    next: ReusableBoxFuture<'static, Received>,
    release: Option<Release>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

async fn receive(mut receiver: broadcast::Receiver<Arc<Event>>) -> Received {
    let result = receiver.recv().await;
    (result, receiver)
}

impl Subscription {
    pub(crate) fn new(receiver: broadcast::Receiver<Arc<Event>>, release: Option<Release>) -> Self {
        Self {
            next: ReusableBoxFuture::new(receive(receiver)),
            release,
        }
    }

    /// Polls for the next event; registers `cx` to be woken when one comes.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Recv> {
        let (result, receiver) = std::task::ready!(self.next.poll(cx));
        self.next.set(receive(receiver));
        Poll::Ready(match result {
            Ok(event) => Recv::Event(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Recv::Lagged,
            Err(broadcast::error::RecvError::Closed) => Recv::Closed,
        })
    }

    /// Waits for the next event.
    pub async fn recv(&mut self) -> Recv {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next event if one is already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Recv> {
        match self.poll_recv(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(recv) => Some(recv),
            Poll::Pending => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            // The receiver goes first, so the release counts exactly the
            // subscribers that remain.
            self.next.set(std::future::pending());
            release();
        }
    }
}
