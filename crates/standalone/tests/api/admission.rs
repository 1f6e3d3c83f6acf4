//! Every way `GET /event-stream` is admitted or refused, on both paths that
//! serve it: the connection's own (a plain GET) and actix-web's (a GET
//! whose head is longer than the fast path reads, so it is handed over).
//! Both call the gateway's one admission function, so each case must get
//! the same answer, byte for byte, from either.

use reqwest::header::{HeaderMap, HeaderValue};

use crate::helpers::{PATIENCE, TestApp, spawn_app, spawn_app_with};

#[derive(Debug, Clone, Copy)]
enum Path {
    Fast,
    Actix,
}

/// What a client sees of an answer: status, the headers that matter, and
/// the body (a whole JSend refusal, or a stream's first bytes).
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    cache_control: Option<String>,
    retry_after: Option<String>,
    body: String,
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
    let (status, content_type, cache_control, retry_after) = (
        response.status().as_u16(),
        header("content-type"),
        header("cache-control"),
        header("retry-after"),
    );
    let body = if status == 200 {
        // A stream does not end: its first chunk is the retry hint.
        let chunk = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .expect("no first chunk")
            .unwrap()
            .unwrap_or_default();
        String::from_utf8_lossy(&chunk).into_owned()
    } else {
        response.text().await.unwrap()
    };
    Answer {
        status,
        content_type,
        cache_control,
        retry_after,
        body,
    }
}

/// The answer on both paths, which must agree; returns it.
async fn on_both_paths(app: &TestApp, query: &str, headers: HeaderMap, case: &str) -> Answer {
    let fast = get(app, Path::Fast, query, headers.clone()).await;
    let actix = get(app, Path::Actix, query, headers).await;
    assert_eq!(fast, actix, "{case}: the two paths disagree");
    fast
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
    let answer = on_both_paths(&app, "topic=admitted", HeaderMap::new(), "valid").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
    assert_eq!(answer.cache_control.as_deref(), Some("no-cache"));
    assert_eq!(answer.body, "retry: 3000\n\n");
}

#[tokio::test]
async fn each_bad_request_gets_the_same_400_on_both_paths() {
    let app = spawn_app().await;
    let many: Vec<String> = (0..17).map(|i| format!("topic=t{i}")).collect();
    let cases = [
        ("topic=a%20b".to_owned(), HeaderMap::new(), "a bad topic"),
        (many.join("&"), HeaderMap::new(), "17 topics"),
        (
            "lastEventId=zz".to_owned(),
            HeaderMap::new(),
            "a malformed id",
        ),
        (
            "topic=a&topic=b".to_owned(),
            last_event_id(b"0-0"),
            "an id for one topic of two",
        ),
        (
            "topic=a".to_owned(),
            last_event_id(b"\xff-1"),
            "a non-ASCII Last-Event-ID",
        ),
    ];
    for (query, headers, case) in cases {
        let answer = on_both_paths(&app, &query, headers, case).await;
        assert_eq!(answer.status, 400, "{case}: {answer:?}");
        assert_eq!(answer.content_type.as_deref(), Some("application/json"));
        assert!(answer.body.starts_with(FAIL), "{case}: {}", answer.body);
    }
    let answer = on_both_paths(&app, "topic=a%20b", HeaderMap::new(), "bad topic").await;
    assert!(answer.body.contains("topic"), "{}", answer.body);
}

#[tokio::test]
async fn a_full_server_refuses_with_the_same_503_and_retry_after_on_both_paths() {
    let app = spawn_app_with(&[("ES__STREAM__MAX_STREAMS", "1")]).await;
    let _only = app.subscribe("topic=held", None).await;
    let answer = on_both_paths(&app, "topic=other", HeaderMap::new(), "full").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    assert!(
        answer.body.contains(r#""status":"error""#),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn a_new_topic_past_max_topics_gets_the_same_503_on_both_paths() {
    let app = spawn_app_with(&[("ES__BUS__MAX_TOPICS", "1")]).await;
    app.publish_to("held", "x").await;
    let answer = on_both_paths(&app, "topic=new", HeaderMap::new(), "max topics").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer.body.contains(r#""status":"error""#) && answer.body.contains("too many topics"),
        "{}",
        answer.body
    );
    // The held topic is still served, on both paths.
    let answer = on_both_paths(&app, "topic=held", HeaderMap::new(), "held topic").await;
    assert_eq!(answer.status, 200);
}
