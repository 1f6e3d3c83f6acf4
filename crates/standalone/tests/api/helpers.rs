//! Spawns the real standalone app on a free port and talks to it over HTTP.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bus::Bus;
use operations::Shutdown;
use service_kit::Settings;
use service_kit::settings::{BinaryDefaults, Engine};
use sse_reader::{Event, Item, SseStream};

/// Long enough for a loaded CI machine; only a hang ever reaches it.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub address: String,
    /// The port of [`TestApp::address`], for raw connections.
    pub port: u16,
    pub bus: Bus,
    pub client: reqwest::Client,
    pub shutdown: Shutdown,
}

/// Which of the two paths that serve `GET /event-stream` a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetPath {
    Fast,
    Actix,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Spawns the app with extra `ES__...` settings.
pub async fn spawn_app_with(env: &[(&str, &str)]) -> TestApp {
    let mut vars: HashMap<String, String> = [
        ("ES__HTTP__HOST", "127.0.0.1"),
        ("ES__HTTP__PORT", "0"),
        ("ES__HTTP__WORKERS", "2"),
    ]
    .iter()
    .chain(env)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.entry("ES__LOG__LEVEL".into())
        .or_insert_with(|| "warn".into());
    let defaults = BinaryDefaults {
        name: "event-stream",
        port: 9990,
        engine: Engine::Memory,
    };
    let settings = Settings::<standalone::Sections>::load_from(defaults, None, Some(vars)).unwrap();
    let bus = Bus::memory(settings.memory_config());
    let app = standalone::build(&settings, bus.clone()).unwrap();
    let port = app.port();
    let address = format!("http://127.0.0.1:{port}");
    let shutdown = app.shutdown();
    tokio::spawn(app.run());
    TestApp {
        address,
        port,
        bus,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        shutdown,
    }
}

impl TestApp {
    /// Publishes through HTTP to the default topic; returns the event id.
    pub async fn publish(&self, message: &str) -> String {
        self.publish_json(serde_json::json!({ "message": message }))
            .await
    }

    pub async fn publish_to(&self, topic: &str, message: &str) -> String {
        self.publish_json(serde_json::json!({ "message": message, "topic": topic }))
            .await
    }

    pub async fn publish_json(&self, body: serde_json::Value) -> String {
        let response = self
            .client
            .post(format!("{}/event-stream", self.address))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "publish of {body} failed: {:?}",
            response.text().await
        );
        response.headers()["x-event-id"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// GET /event-stream?{query}, asserting a 200 SSE response.
    pub async fn subscribe(&self, query: &str, last_event_id: Option<&str>) -> SseStream {
        let response = self.get_stream(query, last_event_id).await;
        assert_eq!(response.status(), 200, "subscribe {query:?} failed");
        let mut stream = SseStream::new(response);
        // The retry hint comes first and at once: after it the subscription
        // is live, so publishes from here on must arrive.
        match stream.next_item_timeout(PATIENCE).await.unwrap() {
            Some(Item::Retry(_)) => {}
            other => panic!("expected retry first, got {other:?}"),
        }
        stream
    }

    pub async fn get_stream(&self, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .get(format!("{}/event-stream?{query}", self.address));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.unwrap()
    }

    /// `GET /event-stream?{query}` on one of the two paths that serve it:
    /// as sent, the connection's own; padded past the fast path's 4 KiB
    /// head buffer, actix-http's.
    pub fn get_on(&self, path: GetPath, query: &str) -> reqwest::RequestBuilder {
        let request = self
            .client
            .get(format!("{}/event-stream?{query}", self.address));
        match path {
            GetPath::Fast => request,
            GetPath::Actix => request.header("X-Padding", "p".repeat(5000)),
        }
    }

    pub async fn metric(&self, name: &str) -> f64 {
        // Some tests make the server abort stalled connections quickly
        // (http.send_timeout_ms); a pooled connection may be one of them,
        // so a transport error is retried on a fresh one.
        let mut attempts = 0;
        let text = loop {
            match self
                .client
                .get(format!("{}/metrics", self.address))
                .send()
                .await
            {
                Ok(response) => break response.text().await.unwrap(),
                Err(error) if attempts < 5 => {
                    attempts += 1;
                    eprintln!("retrying /metrics after {error}");
                }
                Err(error) => panic!("/metrics failed: {error}"),
            }
        };
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found in\n{text}"))
    }
}

/// The next `n` events, failing on a hang or an early end.
pub async fn next_events(stream: &mut SseStream, n: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        match stream.next_event_timeout(PATIENCE).await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => panic!("stream ended after {} of {n} events", events.len()),
            Err(error) => panic!("no event after {} of {n}: {error}", events.len()),
        }
    }
    events
}

pub fn data(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.data.clone()).collect()
}

/// Polls `condition` until it holds, failing after [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        testkit::wait_until(PATIENCE, condition).await,
        "timed out waiting until {what}"
    );
}
