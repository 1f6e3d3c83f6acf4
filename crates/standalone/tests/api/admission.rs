//! Every way `GET /event-stream` is admitted or refused, on both paths that
//! serve it: the connection's own (a plain GET) and actix-web's (a GET
//! whose head is longer than the fast path reads, so it is handed over).
//! Both call the gateway's one admission function, so each case must get
//! the same answer, byte for byte (but for a jittered `retry:`), from
//! either. A transient refusal is a short SSE stream for a client that
//! accepts `text/event-stream` (every EventSource) and a JSend 503 for
//! anyone else.

use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use sse_reader::{Item, Parser};

use crate::helpers::{PATIENCE, TestApp, spawn_app, spawn_app_with};

#[derive(Debug, Clone, Copy)]
enum Path {
    Fast,
    Actix,
}

/// What a client sees of an answer: status, the headers that matter, and
/// the body (a whole JSend refusal, or a stream's first bytes).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: Option<String>,
    cache_control: Option<String>,
    accel_buffering: Option<String>,
    retry_after: Option<String>,
    pub(crate) body: String,
    /// A whole SSE body (one with a length, not a stream), as an
    /// EventSource reads it, `retry:` values set to 0 ...
    items: Vec<Item>,
    /// ... and here instead: they are jittered.
    retries: Vec<u64>,
}

async fn get(app: &TestApp, path: Path, query: &str, headers: HeaderMap) -> Answer {
    let mut request = app
        .client
        .get(format!("{}/event-stream?{query}", app.address))
        .headers(headers);
    if let Path::Actix = path {
        // Past the fast path's 4 KiB head buffer: actix-http serves it.
        request = request.header("X-Padding", "p".repeat(5000));
    }
    let mut response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (status, content_type, cache_control, accel_buffering, retry_after, sized) = (
        response.status().as_u16(),
        header("content-type"),
        header("cache-control"),
        header("x-accel-buffering"),
        header("retry-after"),
        response.content_length().is_some(),
    );
    let body = if status == 200 && !sized {
        // A stream does not end: its first chunk is the retry hint.
        let chunk = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .expect("no first chunk")
            .unwrap()
            .unwrap_or_default();
        String::from_utf8_lossy(&chunk).into_owned()
    } else {
        tokio::time::timeout(PATIENCE, response.text())
            .await
            .expect("a whole answer did not end")
            .unwrap()
    };
    let (mut items, mut retries) = (Vec::new(), Vec::new());
    if status == 200 && sized {
        for item in Parser::new().feed(body.as_bytes()) {
            match item {
                Item::Retry(ms) => {
                    retries.push(ms);
                    items.push(Item::Retry(0));
                }
                other => items.push(other),
            }
        }
    }
    let body = if retries.is_empty() {
        body
    } else {
        String::new()
    };
    Answer {
        status,
        content_type,
        cache_control,
        accel_buffering,
        retry_after,
        body,
        items,
        retries,
    }
}

/// The answer on both paths, which must agree; returns both.
pub(crate) async fn on_both_paths(
    app: &TestApp,
    query: &str,
    headers: HeaderMap,
    case: &str,
) -> (Answer, Answer) {
    let fast = get(app, Path::Fast, query, headers.clone()).await;
    let actix = get(app, Path::Actix, query, headers).await;
    let same = |a: &Answer| Answer {
        retries: Vec::new(),
        items: a.items.clone(),
        body: a.body.clone(),
        content_type: a.content_type.clone(),
        cache_control: a.cache_control.clone(),
        accel_buffering: a.accel_buffering.clone(),
        retry_after: a.retry_after.clone(),
        status: a.status,
    };
    assert_eq!(same(&fast), same(&actix), "{case}: the two paths disagree");
    (fast, actix)
}

/// What every EventSource sends.
fn event_source() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    headers
}

/// Asserts what an EventSource must get for a transient refusal, on both
/// paths: `200 text/event-stream` with the stream's headers, a body that
/// is one `retry:` in [3000, 6000] (`stream.retry_ms` 3000, jittered) and
/// the comment `unavailable: <why>, retrying`, then its end; no `id:`, no
/// event.
async fn assert_sse_refusal(app: &TestApp, query: &str, why: &str) {
    for answer in <[Answer; 2]>::from(on_both_paths(app, query, event_source(), why).await) {
        assert_eq!(answer.status, 200, "{why}: {answer:?}");
        assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
        assert_eq!(answer.cache_control.as_deref(), Some("no-cache"));
        assert_eq!(answer.accel_buffering.as_deref(), Some("no"));
        assert_eq!(answer.retry_after, None);
        assert_eq!(
            answer.items,
            [
                Item::Retry(0),
                Item::Comment(format!("unavailable: {why}, retrying"))
            ],
            "{why}"
        );
        assert!(
            answer.retries.iter().all(|ms| (3000..=6000).contains(ms)),
            "{why}: {:?}",
            answer.retries
        );
    }
}

/// Asserts the JSend 503 everyone else gets for the same refusal, on both
/// paths; returns its message.
async fn assert_jsend_503(app: &TestApp, query: &str, case: &str) -> String {
    let (answer, _) = on_both_paths(app, query, HeaderMap::new(), case).await;
    assert_eq!(answer.status, 503, "{case}: {answer:?}");
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(answer.retry_after.as_deref(), Some("1"), "{case}");
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["status"], "error", "{case}: {}", answer.body);
    body["message"].as_str().unwrap().to_owned()
}

fn last_event_id(value: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("last-event-id", HeaderValue::from_bytes(value).unwrap());
    headers
}

/// How every 400 of this route starts: JSend `fail`, naming the rule.
const FAIL: &str = r#"{"status":"fail","data":"request validation error: "#;

#[tokio::test]
async fn a_valid_request_gets_the_same_stream_head_on_both_paths() {
    let app = spawn_app().await;
    let (answer, _) = on_both_paths(&app, "topic=admitted", HeaderMap::new(), "valid").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.accel_buffering.as_deref(), Some("no"));
    assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
    assert_eq!(answer.cache_control.as_deref(), Some("no-cache"));
    assert_eq!(answer.body, "retry: 3000\n\n");
}

#[tokio::test]
async fn each_bad_request_gets_the_same_400_on_both_paths() {
    let app = spawn_app().await;
    let many: Vec<String> = (0..17).map(|i| format!("topic=t{i}")).collect();
    // Permanent refusals are the same 400 for an EventSource: asking
    // again cannot help.
    for headers in [HeaderMap::new(), event_source()] {
        let cases = [
            ("topic=a%20b".to_owned(), "a bad topic"),
            (many.join("&"), "17 topics"),
        ];
        for (query, case) in cases {
            let (answer, _) = on_both_paths(&app, &query, headers.clone(), case).await;
            assert_eq!(answer.status, 400, "{case}: {answer:?}");
            assert_eq!(answer.content_type.as_deref(), Some("application/json"));
            assert!(answer.body.starts_with(FAIL), "{case}: {}", answer.body);
        }
    }
    let (answer, _) = on_both_paths(&app, "topic=a%20b", HeaderMap::new(), "bad topic").await;
    assert!(answer.body.contains("topic"), "{}", answer.body);
}

#[tokio::test]
async fn an_unreadable_last_event_id_starts_the_stream_on_both_paths() {
    let app = spawn_app().await;
    let cases = [
        ("topic=a&lastEventId=zz", HeaderMap::new(), "a malformed id"),
        (
            "topic=a&topic=b",
            last_event_id(b"0-0"),
            "an id for one topic of two",
        ),
        (
            "topic=a",
            last_event_id(b"\xff-1"),
            "a non-ASCII Last-Event-ID",
        ),
    ];
    for (query, headers, case) in cases {
        let (answer, _) = on_both_paths(&app, query, headers, case).await;
        assert_eq!(answer.status, 200, "{case}: {answer:?}");
        assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
    }
}

#[tokio::test]
async fn each_transient_refusal_is_an_sse_retry_for_an_event_source_and_a_503_for_others() {
    // One stream per process: the second is refused as "full".
    let app = spawn_app_with(&[("ES__STREAM__MAX_STREAMS", "1")]).await;
    let _only = app.subscribe("topic=held", None).await;
    assert_sse_refusal(&app, "topic=other", "too many open streams").await;
    let message = assert_jsend_503(&app, "topic=other", "full").await;
    assert_eq!(message, "too many open streams on this server; retry later");

    // One topic per process: a new one is refused by the bus.
    let app = spawn_app_with(&[("ES__BUS__MAX_TOPICS", "1")]).await;
    app.publish_to("held", "x").await;
    assert_sse_refusal(&app, "topic=new", "too many topics in use").await;
    let message = assert_jsend_503(&app, "topic=new", "max topics").await;
    assert!(message.contains("too many topics"), "{message}");
}

#[tokio::test]
async fn refusal_delays_are_jittered_within_their_window() {
    let app = spawn_app_with(&[("ES__STREAM__MAX_STREAMS", "1")]).await;
    let _only = app.subscribe("topic=held", None).await;
    let mut delays = Vec::new();
    for _ in 0..20 {
        let answer = get(&app, Path::Fast, "topic=other", event_source()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        delays.extend(answer.retries);
    }
    assert_eq!(delays.len(), 20);
    assert!(
        delays.iter().all(|ms| (3000..=6000).contains(ms)),
        "{delays:?}"
    );
    assert!(
        delays.iter().any(|ms| *ms != delays[0]),
        "20 refusals, one delay: {delays:?}"
    );
}
