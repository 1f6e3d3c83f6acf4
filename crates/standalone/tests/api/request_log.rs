//! Request ids, the access log and bounded metric labels: what a client
//! and a log pipeline see. The log tests run the real binary and read its
//! output.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::free_port;

use crate::helpers::{GetPath, PATIENCE, spawn_app_with, wait_until};

const ORIGIN: &str = "https://app.example.com";

fn is_fresh_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn echoed(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on a {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Every kind of answer: a publish (201 and 400), a 404, an invented
/// method, a stream on each path (200 and 400), a refused CORS preflight.
async fn every_answer(
    app: &crate::helpers::TestApp,
    id: Option<&str>,
) -> Vec<(String, reqwest::Response)> {
    let url = format!("{}/event-stream", app.address);
    let with_id = |request: reqwest::RequestBuilder| match id {
        Some(id) => request.header("X-Request-Id", id),
        None => request,
    };
    let requests = [
        (
            "publish 201",
            app.client
                .post(&url)
                .json(&serde_json::json!({"message": "hi"})),
        ),
        (
            "publish 400",
            app.client.post(&url).json(&serde_json::json!({})),
        ),
        ("404", app.client.get(format!("{}/random/123", app.address))),
        (
            "invented method",
            app.client.request(
                reqwest::Method::from_bytes(b"FOOA").unwrap(),
                format!("{}/x", app.address),
            ),
        ),
        ("fast stream", app.get_on(GetPath::Fast, "topic=t")),
        ("fast refusal", app.get_on(GetPath::Fast, "topic=a%20b")),
        ("actix stream", app.get_on(GetPath::Actix, "topic=t")),
        ("actix refusal", app.get_on(GetPath::Actix, "topic=a%20b")),
        (
            "CORS refusal",
            app.client
                .request(reqwest::Method::OPTIONS, &url)
                .header("Origin", "https://evil.example.com")
                .header("Access-Control-Request-Method", "POST"),
        ),
    ];
    let mut answers = Vec::new();
    for (what, request) in requests {
        let response = with_id(request).send().await.unwrap();
        answers.push((what.to_owned(), response));
    }
    answers
}

#[tokio::test]
async fn a_request_id_is_kept_only_from_a_trusted_proxy_and_echoed_on_every_answer() {
    let cors = ("ES__HTTP__CORS__ALLOWED_ORIGINS", ORIGIN);
    let trusting = spawn_app_with(&[("ES__HTTP__TRUSTED_PROXIES", "127.0.0.1"), cors]).await;
    let trusting_none = spawn_app_with(&[cors]).await;
    let trusting_others =
        spawn_app_with(&[("ES__HTTP__TRUSTED_PROXIES", "10.0.0.0/8"), cors]).await;

    for (what, response) in every_answer(&trusting, Some("edge-42.a:b_c")).await {
        assert_eq!(echoed(&response), "edge-42.a:b_c", "{what}");
    }
    for app in [&trusting_none, &trusting_others] {
        for (what, response) in every_answer(app, Some("edge-42")).await {
            let id = echoed(&response);
            assert!(is_fresh_id(&id), "{what}: {id}");
        }
    }
    // Even a trusted proxy's id is replaced when it is not one we may log.
    for bad in ["{\"json\":1}", &"a".repeat(65), "a b"] {
        for (what, response) in every_answer(&trusting, Some(bad)).await {
            let id = echoed(&response);
            assert!(is_fresh_id(&id), "{what} with {bad:?}: {id}");
        }
    }
    // Without one, each answer has its own.
    let ids: std::collections::HashSet<String> = every_answer(&trusting, None)
        .await
        .iter()
        .map(|(what, response)| {
            let id = echoed(response);
            assert!(is_fresh_id(&id), "{what}: {id}");
            id
        })
        .collect();
    assert_eq!(ids.len(), 9);
}

/// The label values of `name`'s series in a scrape.
fn label_values(scrape: &str, name: &str, label: &str) -> std::collections::BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| {
            let start = line.find(&format!("{label}=\""))? + label.len() + 2;
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn invented_methods_and_paths_add_no_metric_label_values() {
    let app = spawn_app_with(&[]).await;
    let odd = [
        ("FOOA", "/x"),
        ("FOOB", "/event-stream"),
        ("GET", "/random/123"),
        ("GET", "/random/456?x=1"),
        ("DELETE", "/metrics"),
        ("PUT", "/event-stream/extra"),
        ("GET", "/%2e%2e/etc/passwd"),
    ];
    for (method, path) in odd {
        let response = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.address),
            )
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{method} {path}");
    }
    let scrape = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = "es_http_request_duration_seconds_count";
    let routes = label_values(&scrape, metric, "route");
    let known = [
        "/event-stream",
        "/healthz",
        "/readyz",
        "/metrics",
        "/",
        "/app.js",
        "other",
    ];
    assert!(routes.contains("other"), "{routes:?}");
    for route in &routes {
        assert!(
            known.contains(&route.as_str()),
            "route {route:?} in\n{scrape}"
        );
    }
    let methods = label_values(&scrape, metric, "method");
    assert!(methods.contains("other"), "{methods:?}");
    for method in &methods {
        assert!(
            [
                "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other"
            ]
            .contains(&method.as_str()),
            "method {method:?}"
        );
    }
}

#[tokio::test]
async fn access_refusals_are_counted_by_action_and_reason() {
    let app = spawn_app_with(&[
        ("ES__AUTH__PUBLISH", "token"),
        ("ES__AUTH__PRIVATE_TOPICS", "staff"),
        (
            "ES__AUTH__HS256_SECRETS",
            "a-secret-of-the-request-log-tests-0123456",
        ),
    ])
    .await;
    let url = format!("{}/event-stream", app.address);
    let body = serde_json::json!({"message": "hi"});
    let missing = app.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let malformed = app
        .client
        .post(&url)
        .bearer_auth("a.b.c")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 401);
    for path in [GetPath::Fast, GetPath::Actix] {
        let refused = app.get_on(path, "topic=staff").send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path:?}");
    }
    let metric = |action: &str, reason: &str| {
        format!("es_auth_refusals_total{{action=\"{action}\",reason=\"{reason}\"}}")
    };
    assert_eq!(app.metric(&metric("publish", "missing")).await, 1.0);
    assert_eq!(app.metric(&metric("publish", "malformed")).await, 1.0);
    assert_eq!(app.metric(&metric("subscribe", "missing")).await, 2.0);
}

/// The real binary with its output captured, line by line.
struct LoggedBinary {
    child: Child,
    address: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LoggedBinary {
    async fn start(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_event-stream"))
            .env("ES__HTTP__HOST", "127.0.0.1")
            .env("ES__HTTP__PORT", port.to_string())
            .env("ES__HTTP__WORKERS", "1")
            .env("ES__LOG__LEVEL", "info")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let binary = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
            lines,
        };
        let client = reqwest::Client::new();
        wait_until("the binary answers", || {
            let request = client.get(format!("{}/healthz", binary.address)).send();
            async move { request.await.is_ok() }
        })
        .await;
        binary
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a line containing every one of `parts`; returns it.
    async fn line_with(&self, parts: &[&str]) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self
                .lines()
                .into_iter()
                .find(|line| parts.iter().all(|part| line.contains(part)))
            {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no line with {parts:?} in:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LoggedBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stream opened with `id` and a token in its query, read to its
/// `retry:`, then closed by the client.
async fn open_and_close_a_stream(client: &reqwest::Client, address: &str, id: &str) {
    let response = client
        .get(format!(
            "{address}/event-stream?topic=t1&topic=t2&access_token=sekrit-token"
        ))
        .header("X-Request-Id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(echoed(&response), id);
    let mut stream = sse_reader::SseStream::new(response);
    assert!(matches!(
        stream.next_item_timeout(PATIENCE).await.unwrap(),
        Some(sse_reader::Item::Retry(_))
    ));
    drop(stream);
}

#[tokio::test]
async fn text_access_lines_name_the_request_id_the_client_and_never_the_query() {
    let binary = LoggedBinary::start(&[("ES__HTTP__TRUSTED_PROXIES", "127.0.0.1")]).await;
    let client = reqwest::Client::new();
    let published = client
        .post(format!("{}/event-stream?sig=query-secret", binary.address))
        .header("X-Request-Id", "pub-1")
        .header("X-Forwarded-For", "203.0.113.7")
        .form(&[("message", "hello")])
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    open_and_close_a_stream(&client, &binary.address, "sub-1").await;

    let publish = binary.line_with(&["pub-1", "access", "status=201"]).await;
    for part in [
        "method=POST",
        "path=/event-stream",
        "client=203.0.113.7",
        "bytes=",
        "duration_ms=",
    ] {
        assert!(publish.contains(part), "{part} missing in {publish}");
    }
    let opened = binary.line_with(&["sub-1", "stream opened"]).await;
    for part in ["status=200", "topics=2", "client=127.0.0.1"] {
        assert!(opened.contains(part), "{part} missing in {opened}");
    }
    let closed = binary.line_with(&["sub-1", "stream closed"]).await;
    for part in [
        "topics=2",
        "end=client-gone",
        "bytes=",
        "events=0",
        "duration_ms=",
    ] {
        assert!(closed.contains(part), "{part} missing in {closed}");
    }
    let all = binary.lines().join("\n");
    for secret in ["query-secret", "sekrit-token", "access_token", "sig="] {
        assert!(!all.contains(secret), "{secret} logged:\n{all}");
    }
}

/// The JSON lines of `binary` that name `id` as their request id.
fn json_lines_of(binary: &LoggedBinary, id: &str) -> Vec<serde_json::Value> {
    binary
        .lines()
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
        })
        .filter(|line| line["request_id"] == id)
        .collect()
}

#[tokio::test]
async fn json_lines_parse_with_the_request_id_a_top_level_field() {
    let binary = LoggedBinary::start(&[
        ("ES__HTTP__TRUSTED_PROXIES", "127.0.0.1"),
        ("ES__LOG__FORMAT", "json"),
    ])
    .await;
    let client = reqwest::Client::new();
    let published = client
        .post(format!("{}/event-stream", binary.address))
        .header("X-Request-Id", "json-pub")
        .json(&serde_json::json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    open_and_close_a_stream(&client, &binary.address, "json-sub").await;
    binary.line_with(&["stream closed", "json-sub"]).await;

    let publish = json_lines_of(&binary, "json-pub");
    assert_eq!(publish.len(), 1, "{publish:?}");
    let line = &publish[0];
    assert_eq!(line["target"], "access");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "request");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/event-stream");
    assert_eq!(line["status"], 201);
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["bytes"].as_u64().unwrap() > 0, "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert!(line["timestamp"].is_string(), "{line}");

    let stream = json_lines_of(&binary, "json-sub");
    let messages: Vec<&str> = stream
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert_eq!(messages, ["stream opened", "stream closed"], "{stream:?}");
    assert_eq!(stream[0]["topics"], 2);
    assert_eq!(stream[1]["topics"], 2);
    assert_eq!(stream[1]["end"], "client-gone");
    assert!(stream[1]["bytes"].as_u64().unwrap() > 0, "{:?}", stream[1]);
}

#[tokio::test]
async fn a_bus_failure_is_logged_with_the_request_id_and_told_in_public_terms() {
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let binary = LoggedBinary::start(&[
        ("ES__HTTP__TRUSTED_PROXIES", "127.0.0.1"),
        ("ES__LOG__FORMAT", "json"),
        ("ES__BUS__ENGINE", "redis"),
        ("ES__REDIS__URL", &dead),
    ])
    .await;
    let client = reqwest::Client::new();
    let refused = client
        .post(format!("{}/event-stream", binary.address))
        .header("X-Request-Id", "bus-down-1")
        .json(&serde_json::json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(echoed(&refused), "bus-down-1");
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"status":"error","message":"event bus unavailable; retry later"}"#
    );
    binary.line_with(&["bus-down-1", "\"status\":503"]).await;
    let lines = json_lines_of(&binary, "bus-down-1");
    let warning = lines
        .iter()
        .find(|line| line["message"] == "publish refused by the bus")
        .unwrap_or_else(|| panic!("no bus warning with the id: {lines:?}"));
    assert_eq!(warning["level"], "WARN");
    let error = warning["error"].as_str().unwrap();
    assert!(
        error.starts_with("event bus unavailable: ") && error.len() > 30,
        "the underlying error is logged: {error}"
    );
}
