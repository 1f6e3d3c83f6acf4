//! Spawns the real ingest service on a free port, over its own in-memory
//! bus, and talks to it over HTTP; the bus handle lets a test check what was
//! actually stored, not just what the response claimed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bus::Bus;
use ingest::PublishSettings;
use operations::Shutdown;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use service_kit::Settings;
use service_kit::settings::{BinaryDefaults, Engine};
use shared_types::{DEFAULT_EVENT_TYPE, DEFAULT_TOPIC, Event, Position};
use tokio::task::JoinHandle;

/// Long enough for a loaded CI machine; only a hang ever reaches it.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The ingest binary's own defaults, with the memory engine so no Redis is needed.
const DEFAULTS: BinaryDefaults = BinaryDefaults {
    name: "ingest",
    port: 8081,
    engine: Engine::Memory,
};

pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    pub port: u16,
    /// The very bus the service publishes to.
    pub bus: Bus,
    pub client: reqwest::Client,
    /// Stops the service like SIGTERM would.
    pub shutdown: Shutdown,
    /// `App::run`, which ends once a shutdown has drained.
    pub server: JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Spawns the service with extra `ES__...` settings, given as they would be
/// in the environment (the process environment itself is never touched).
pub async fn spawn_app_with(env: &[(&str, &str)]) -> TestApp {
    let base = [
        ("ES__HTTP__HOST", "127.0.0.1"),
        ("ES__HTTP__PORT", "0"),
        ("ES__HTTP__WORKERS", "1"),
        ("ES__BUS__ENGINE", "memory"),
    ];
    let vars: HashMap<String, String> = base
        .iter()
        .chain(env)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let settings = Settings::<PublishSettings>::load_from(DEFAULTS, None, Some(vars)).unwrap();
    let bus = Bus::memory(settings.memory_config());
    let app = ingest::build(&settings, bus.clone()).unwrap();
    let port = app.port();
    let shutdown = app.shutdown();
    let server = tokio::spawn(app.run());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        bus,
        client: reqwest::Client::builder()
            .timeout(PATIENCE)
            .build()
            .unwrap(),
        shutdown,
        server,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POST /event-stream with a JSON body.
    pub async fn post_json(&self, body: &serde_json::Value) -> Response {
        self.send(self.publish().json(body)).await
    }

    /// POST /event-stream with a JSON body and these `Idempotency-Key`
    /// header values (none, one, or the header repeated).
    pub async fn post_json_keyed(&self, body: &serde_json::Value, keys: &[&[u8]]) -> Response {
        let request = keys.iter().fold(self.publish().json(body), |request, key| {
            request.header("idempotency-key", HeaderValue::from_bytes(key).unwrap())
        });
        self.send(request).await
    }

    /// POST /event-stream with an `application/x-www-form-urlencoded` body.
    pub async fn post_form(&self, fields: &[(&str, &str)]) -> Response {
        self.send(self.publish().form(fields)).await
    }

    /// POST /event-stream with a `multipart/form-data` body.
    pub async fn post_multipart(&self, form: reqwest::multipart::Form) -> Response {
        self.send(self.publish().multipart(form)).await
    }

    /// POST /event-stream with no body, the fields in the query string.
    pub async fn post_query(&self, query: &[(&str, &str)]) -> Response {
        self.send(self.publish().query(query)).await
    }

    /// POST /event-stream with exactly these bytes and Content-Type (none
    /// when `None`), sent with a Content-Length.
    pub async fn post_raw(&self, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Response {
        let mut request = self.publish().body(body.into());
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        self.send(request).await
    }

    /// As [`TestApp::post_raw`], with a Content-Type that need not be text.
    pub async fn post_raw_header(&self, content_type: HeaderValue, body: Vec<u8>) -> Response {
        self.send(self.publish().header(CONTENT_TYPE, content_type).body(body))
            .await
    }

    /// POST /event-stream with a body sent in chunks and no Content-Length,
    /// so the service learns its size only by reading it.
    pub async fn post_chunked(&self, content_type: Option<&str>, chunks: Vec<Vec<u8>>) -> Response {
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        let mut request = self.publish().body(reqwest::Body::wrap_stream(stream));
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        self.send(request).await
    }

    /// Any method on any path, without a body.
    pub async fn request(&self, method: Method, path: &str) -> Response {
        self.send(self.client.request(method, self.url(path))).await
    }

    pub async fn get_healthz(&self) -> Response {
        self.request(Method::GET, "/healthz").await
    }

    pub async fn get_readyz(&self) -> Response {
        self.request(Method::GET, "/readyz").await
    }

    pub async fn get_metrics(&self) -> Response {
        self.request(Method::GET, "/metrics").await
    }

    /// The value of one un-labelled sample in `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get_metrics().await.text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found in\n{text}"))
    }

    /// Every event the bus retains for `topic`, oldest first.
    pub async fn stored(&self, topic: &str) -> Vec<Arc<Event>> {
        self.bus
            .replay(topic, Position::START)
            .await
            .unwrap()
            .events
    }

    /// Asserts that no publish happened: the counter of published events is
    /// still zero, and neither the default topic nor any of `topics` holds
    /// an event.
    pub async fn assert_nothing_published(&self, topics: &[&str], why: &str) {
        assert_eq!(
            self.metric("es_events_published_total").await,
            0.0,
            "{why}: the service counted a publish"
        );
        for topic in std::iter::once(DEFAULT_TOPIC).chain(topics.iter().copied()) {
            assert!(
                self.stored(topic).await.is_empty(),
                "{why}: something was stored in topic {topic:?}"
            );
        }
    }

    /// Asserts a 201 with the tutorial's exact body, then that exactly
    /// `message` was stored, alone, in `topic` (default when `None`) under
    /// `event_type` (default when `None`), at the id the response announced.
    pub async fn assert_published(
        &self,
        response: Response,
        message: &str,
        topic: Option<&str>,
        event_type: Option<&str>,
        why: &str,
    ) -> Arc<Event> {
        let topic = topic.unwrap_or(DEFAULT_TOPIC);
        let event_type = event_type.unwrap_or(DEFAULT_EVENT_TYPE);
        let id = response
            .headers()
            .get(ingest::EVENT_ID_HEADER)
            .map(|value| value.to_str().unwrap().to_owned());
        assert_body(response, StatusCode::CREATED, &jsend_success(message), why).await;
        let id = id.unwrap_or_else(|| panic!("{why}: no {} header", ingest::EVENT_ID_HEADER));
        let stored = self.stored(topic).await;
        assert_eq!(stored.len(), 1, "{why}: expected one event in {topic:?}");
        let event = stored[0].clone();
        assert_eq!(event.data, message, "{why}: stored message");
        assert_eq!(event.event_type, event_type, "{why}: stored event type");
        assert_eq!(&*event.topic, topic, "{why}: stored topic");
        assert_eq!(event.position.to_string(), id, "{why}: id header");
        assert_eq!(
            self.bus.head(topic).await.unwrap(),
            event.position,
            "{why}: head"
        );
        event
    }

    fn publish(&self) -> reqwest::RequestBuilder {
        self.client.post(self.url("/event-stream"))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Response {
        request.send().await.unwrap()
    }
}

/// `{"status":"success","data":<data>}`, byte for byte.
pub fn jsend_success(data: &str) -> String {
    format!(
        r#"{{"status":"success","data":{}}}"#,
        serde_json::to_string(data).unwrap()
    )
}

/// `{"status":"fail","data":<data>}`, byte for byte.
pub fn jsend_fail(data: &str) -> String {
    format!(
        r#"{{"status":"fail","data":{}}}"#,
        serde_json::to_string(data).unwrap()
    )
}

/// `{"status":"error","message":<message>}`, byte for byte.
pub fn jsend_error(message: &str) -> String {
    format!(
        r#"{{"status":"error","message":{}}}"#,
        serde_json::to_string(message).unwrap()
    )
}

/// Asserts the status, a JSON content type, and the exact body bytes.
pub async fn assert_body(response: Response, status: StatusCode, body: &str, why: &str) {
    let actual_status = response.status();
    let content_type = content_type(&response);
    let actual = response.bytes().await.unwrap();
    assert_eq!(
        actual_status,
        status,
        "{why}: status (body {:?})",
        String::from_utf8_lossy(&actual)
    );
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{why}: content type"
    );
    assert_eq!(
        String::from_utf8_lossy(&actual),
        body,
        "{why}: body must be exactly this"
    );
}

/// Asserts a JSend `fail` with exactly this `data`, and no event id.
pub async fn assert_fail(response: Response, status: StatusCode, data: &str, why: &str) {
    assert!(
        !response.headers().contains_key(ingest::EVENT_ID_HEADER),
        "{why}: a failure must not announce an event id"
    );
    assert_body(response, status, &jsend_fail(data), why).await;
}

/// Asserts a JSend `fail` with `status` whose `data` starts with `prefix`,
/// for texts that quote a parser (serde, multipart) rather than our rules;
/// returns the `data`.
pub async fn assert_fail_starting_with(
    response: Response,
    status: StatusCode,
    prefix: &str,
    why: &str,
) -> String {
    let actual_status = response.status();
    let content_type = content_type(&response);
    let has_id = response.headers().contains_key(ingest::EVENT_ID_HEADER);
    let text = response.text().await.unwrap();
    assert_eq!(actual_status, status, "{why}: status (body {text:?})");
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{why}: content type"
    );
    assert!(!has_id, "{why}: a failure must not announce an event id");
    let value: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{why}: body is not JSON ({error}): {text:?}"));
    assert_eq!(value["status"], "fail", "{why}: {text}");
    let data = value["data"]
        .as_str()
        .unwrap_or_else(|| panic!("{why}: data is not a string: {text}"))
        .to_owned();
    assert!(
        data.starts_with(prefix),
        "{why}: data should start with {prefix:?}: {data:?}"
    );
    assert_eq!(text, jsend_fail(&data), "{why}: exactly status and data");
    assert!(
        !data.contains(['\r', '\n']),
        "{why}: the reason is one line: {data:?}"
    );
    data
}

/// The media type without parameters, lower-cased.
pub fn content_type(response: &Response) -> Option<String> {
    let value = response.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
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
