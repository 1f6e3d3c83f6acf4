//! A subscriber that behaves like a browser's EventSource: it reconnects
//! when its stream ends, sending the last id it saw, and may move to
//! another address (another replica) each time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sse_reader::{Event, Item, SseStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken as Stop;

/// What a subscriber saw, shared with the test.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every event in arrival order, `reset` events included.
    pub events: Vec<Event>,
    /// Connections opened (1 + reconnects).
    pub connections: usize,
    /// Streams that ended or failed, with why.
    pub ends: Vec<String>,
    pub keepalives: usize,
}

/// A running subscriber; stop it to get what it saw.
#[derive(Debug)]
pub struct Subscriber {
    seen: Arc<Mutex<Seen>>,
    stop: Stop,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Subscribes to `query` on `urls[0]`, moving to the next address after
    /// every end of stream, and waits until the first stream is open.
    pub async fn start(urls: Vec<String>, query: &str) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Stop::new();
        let (opened, wait_open) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(
            urls,
            query.to_owned(),
            seen.clone(),
            stop.clone(),
            opened,
        ));
        wait_open.await.expect("the subscriber never connected");
        Self { seen, stop, task }
    }

    /// Data of the non-reset events seen so far.
    pub fn data(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|seen| {
                seen.events
                    .iter()
                    .filter(|e| e.event != "reset")
                    .map(|e| e.data.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("subscriber state"))
    }

    /// Stops and returns everything seen.
    pub async fn finish(self) -> Seen {
        self.stop.cancel();
        let _ = self.task.await;
        Arc::try_unwrap(self.seen)
            .map(|m| m.into_inner().unwrap_or_default())
            .unwrap_or_default()
    }
}

async fn run(
    urls: Vec<String>,
    query: String,
    seen: Arc<Mutex<Seen>>,
    stop: Stop,
    opened: tokio::sync::oneshot::Sender<()>,
) {
    let client = reqwest::Client::new();
    let mut opened = Some(opened);
    let mut last_id = String::new();
    let mut attempt = 0usize;
    while !stop.is_cancelled() {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let mut request = client.get(format!("{url}/event-stream?{query}"));
        if !last_id.is_empty() {
            request = request.header("Last-Event-ID", &last_id);
        }
        let response = tokio::select! {
            response = request.send() => response,
            _ = stop.cancelled() => return,
        };
        let response = match response {
            Ok(response) if response.status() == 200 => response,
            Ok(response) => {
                note_end(&seen, format!("{url}: status {}", response.status()));
                retry_pause(&stop).await;
                continue;
            }
            Err(error) => {
                note_end(&seen, format!("{url}: {error}"));
                retry_pause(&stop).await;
                continue;
            }
        };
        let mut stream = SseStream::new(response);
        if let Ok(mut seen) = seen.lock() {
            seen.connections += 1;
        }
        loop {
            let item = tokio::select! {
                item = stream.next_item() => item,
                _ = stop.cancelled() => return,
            };
            match item {
                Some(Ok(Item::Retry(_))) => {
                    if let Some(opened) = opened.take() {
                        let _ = opened.send(());
                    }
                }
                Some(Ok(Item::Comment(_))) => {
                    if let Ok(mut seen) = seen.lock() {
                        seen.keepalives += 1;
                    }
                }
                Some(Ok(Item::Event(event))) => {
                    last_id = stream.last_event_id().to_owned();
                    if let Ok(mut seen) = seen.lock() {
                        seen.events.push(event);
                    }
                }
                Some(Err(error)) => {
                    note_end(&seen, format!("{url}: {error}"));
                    break;
                }
                None => {
                    note_end(&seen, format!("{url}: end of stream"));
                    break;
                }
            }
        }
    }
}

fn note_end(seen: &Mutex<Seen>, why: String) {
    if let Ok(mut seen) = seen.lock() {
        seen.ends.push(why);
    }
}

/// A short pause before reconnecting, as EventSource waits `retry` ms.
async fn retry_pause(stop: &Stop) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        _ = stop.cancelled() => {}
    }
}
