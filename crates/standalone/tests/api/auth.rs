//! Access tokens at the door: every refusal of a publish, every refusal of
//! a private subscription on both GET paths (through the admission test's
//! helper), a stream ending at its token's `exp` and resuming with a fresh
//! token, and the query token kept out of the logs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use access::{Algorithm, Claims, KeySource, Permissions, TopicPatterns};
use reqwest::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderValue};
use serde_json::json;
use sse_reader::{Item, SseStream};

use crate::admission::on_both_paths;
use crate::helpers::{PATIENCE, TestApp, spawn_app_with};

/// The deployment's HS256 secret in these tests.
const SECRET: &str = "a-secret-of-the-standalone-auth-tests-01";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with `secret`, expiring at `exp`.
fn token_with(secret: &str, exp: u64, publish: &[&str], subscribe: &[&str]) -> String {
    let claims = Claims {
        event_stream: Some(Permissions {
            publish: TopicPatterns::parse(publish).unwrap(),
            subscribe: TopicPatterns::parse(subscribe).unwrap(),
        }),
        ..Claims::new(exp)
    };
    access::mint(
        &claims,
        &KeySource::Secret(secret.as_bytes().to_vec()),
        Algorithm::HS256,
        None,
    )
    .unwrap()
}

/// A token of the deployment's, valid for an hour.
fn token(publish: &[&str], subscribe: &[&str]) -> String {
    token_with(SECRET, now() + 3600, publish, subscribe)
}

/// Publishing needs a token; `chat.*` and `staff` are private.
async fn spawn_token_app() -> TestApp {
    spawn_app_with(&[
        ("ES__AUTH__PUBLISH", "token"),
        ("ES__AUTH__PRIVATE_TOPICS", "chat.*,staff"),
        ("ES__AUTH__HS256_SECRETS", SECRET),
    ])
    .await
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

#[tokio::test]
async fn publish_needs_a_token_that_covers_the_topic_and_each_refusal_publishes_nothing() {
    let app = spawn_token_app().await;
    let reader = token(&[], &["chat.*"]);
    let mut stream = app
        .subscribe(&format!("topic=news&access_token={reader}"), None)
        .await;
    let expired = token_with(SECRET, now() - 3600, &["news"], &[]);
    let wrong_key = token_with(
        "another-secret-nobody-configured-0123456",
        now() + 3600,
        &["news"],
        &[],
    );
    let cases = [
        (
            HeaderMap::new(),
            401,
            Some("Bearer"),
            "a token is required to publish",
            "no token",
        ),
        (
            bearer("not-a-token"),
            401,
            Some(r#"Bearer error="invalid_token""#),
            "token is malformed",
            "garbage",
        ),
        (
            bearer(&expired),
            401,
            Some(r#"Bearer error="invalid_token""#),
            "token has expired",
            "expired",
        ),
        (
            bearer(&wrong_key),
            401,
            Some(r#"Bearer error="invalid_token""#),
            "token signature is invalid",
            "another key",
        ),
        (
            bearer(&token(&["chat.*"], &["news"])),
            403,
            None,
            "the token does not allow publishing to this topic",
            "a token for other topics",
        ),
    ];
    for (headers, status, challenge, data, why) in cases {
        let response = app
            .client
            .post(format!("{}/event-stream", app.address))
            .headers(headers)
            .json(&json!({"message": why, "topic": "news"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{why}");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            challenge,
            "{why}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, json!({"status": "fail", "data": data}), "{why}");
    }
    // A cookie or a query token does not publish: only the header does.
    let writer = token(&["news"], &[]);
    let response = app
        .client
        .post(format!(
            "{}/event-stream?access_token={writer}",
            app.address
        ))
        .header(COOKIE, format!("es_token={writer}"))
        .json(&json!({"message": "by cookie", "topic": "news"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "cookie and query");
    let response = app
        .client
        .post(format!("{}/event-stream", app.address))
        .headers(bearer(&writer))
        .json(&json!({"message": "allowed", "topic": "news"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The first event the topic ever saw is the allowed one.
    let event = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
    assert_eq!(event.data, "allowed");
}

#[tokio::test]
async fn a_private_topic_needs_a_token_that_covers_it_on_both_paths() {
    let app = spawn_token_app().await;
    let reader = token(&[], &["chat.*"]);
    let mut cookie = HeaderMap::new();
    cookie.insert(
        COOKIE,
        HeaderValue::from_str(&format!("theme=dark; es_token={reader}")).unwrap(),
    );
    let expired = token_with(SECRET, now() - 3600, &[], &["chat.*"]);
    let refusals = [
        (
            "topic=chat.a",
            HeaderMap::new(),
            401,
            "a token is required to read a private topic",
            "no token",
        ),
        (
            "topic=news&topic=staff",
            HeaderMap::new(),
            401,
            "a token is required to read a private topic",
            "one private among public",
        ),
        (
            "topic=chat.a&access_token=abc",
            HeaderMap::new(),
            401,
            "token is malformed",
            "garbage in the query",
        ),
        (
            "topic=chat.a",
            bearer(&expired),
            401,
            "token has expired",
            "expired",
        ),
        (
            "topic=chat.a&topic=staff",
            bearer(&reader),
            403,
            "the token does not allow reading every topic asked for",
            "one not covered",
        ),
    ];
    for (query, headers, status, data, why) in refusals {
        let (answer, _) = on_both_paths(&app, query, headers.clone(), why).await;
        assert_eq!(answer.status, status, "{why}: {answer:?}");
        assert_eq!(
            answer.content_type.as_deref(),
            Some("application/json"),
            "{why}"
        );
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body, json!({"status": "fail", "data": data}), "{why}");
        // Permanent even for an EventSource: no SSE form to retry after.
        let mut event_source = headers;
        event_source.insert("accept", HeaderValue::from_static("text/event-stream"));
        let (answer, _) = on_both_paths(&app, query, event_source, why).await;
        assert_eq!(answer.status, status, "{why}, EventSource: {answer:?}");
        // HEAD checks the same.
        let head = app
            .client
            .head(format!("{}/event-stream?{query}", app.address))
            .headers(if why == "expired" {
                bearer(&expired)
            } else if why == "one not covered" {
                bearer(&reader)
            } else {
                HeaderMap::new()
            })
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), status, "{why}, HEAD");
    }
    let opened = [
        ("topic=news", HeaderMap::new(), "a public topic"),
        (
            "topic=news&access_token=abc",
            HeaderMap::new(),
            "a public topic ignores any token",
        ),
        ("topic=chat.a&topic=news", bearer(&reader), "header"),
        ("topic=chat.a", cookie, "cookie"),
        (
            &*format!("topic=chat.a&access_token={reader}"),
            HeaderMap::new(),
            "query",
        ),
    ];
    for (query, headers, why) in opened {
        let (answer, _) = on_both_paths(&app, query, headers, why).await;
        assert_eq!(answer.status, 200, "{why}: {answer:?}");
        assert_eq!(
            answer.content_type.as_deref(),
            Some("text/event-stream"),
            "{why}"
        );
        assert!(answer.body.starts_with("retry: "), "{why}: {answer:?}");
    }
}

#[tokio::test]
async fn a_stream_ends_at_its_tokens_exp_and_resumes_with_a_fresh_token_losing_nothing() {
    let app = spawn_token_app().await;
    let writer = bearer(&token(&["chat.*"], &[]));
    let publish = |message: &'static str| {
        let request = app
            .client
            .post(format!("{}/event-stream", app.address))
            .headers(writer.clone())
            .json(&json!({"message": message, "topic": "chat.room"}));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 201, "{message}");
        }
    };
    // Expires in two seconds: long enough to open and read one event.
    let short = token_with(SECRET, now() + 2, &[], &["chat.*"]);
    let mut stream = app
        .subscribe(&format!("topic=chat.room&access_token={short}"), None)
        .await;
    publish("before").await;
    let before = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
    assert_eq!(before.data, "before");
    let last_id = before.id.clone();
    // The end: one `token-expired` event without an id, then nothing.
    let mut ended = None;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let item = stream
            .next_item_timeout(deadline - Instant::now())
            .await
            .unwrap();
        match item {
            Some(Item::Event(event)) => {
                assert!(ended.is_none(), "an event after the last: {event:?}");
                ended = Some(event);
            }
            Some(Item::Comment(_)) => {}
            None => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let ended = ended.expect("no token-expired event");
    assert_eq!(ended.event, "token-expired");
    assert_eq!(ended.data, r#"{"reason":"token-expired"}"#);
    assert_eq!(ended.id, last_id, "no id: the client keeps its last one");
    // Published while the client was away.
    publish("while away").await;
    // The old token, still inside the verifier's leeway, opens nothing
    // that lasts: the stream ends at once, with the same last event.
    let mut stale = app
        .subscribe(
            &format!("topic=chat.room&access_token={short}"),
            Some(&last_id),
        )
        .await;
    let event = stale.next_event_timeout(PATIENCE).await.unwrap().unwrap();
    assert_eq!(event.event, "token-expired", "{event:?}");
    // A fresh token resumes where the client left.
    let fresh = token(&[], &["chat.*"]);
    let mut stream = app
        .subscribe(
            &format!("topic=chat.room&access_token={fresh}"),
            Some(&last_id),
        )
        .await;
    let resumed = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
    assert_eq!(resumed.data, "while away", "nothing lost, nothing twice");
}

/// The binary at debug level, refusing and admitting query tokens: no log
/// line holds one.
#[tokio::test]
async fn query_tokens_never_reach_a_log_line() {
    let port = testkit::free_port();
    let log = std::env::temp_dir().join(format!("es-auth-log-{}-{port}", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_event-stream"))
        .env("ES__HTTP__HOST", "127.0.0.1")
        .env("ES__HTTP__PORT", port.to_string())
        .env("ES__LOG__LEVEL", "debug")
        .env("ES__AUTH__PRIVATE_TOPICS", "chat.*")
        .env("ES__AUTH__HS256_SECRETS", SECRET)
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/event-stream");
    let good = token(&[], &["chat.*"]);
    let bad = token_with(
        "another-secret-nobody-configured-0123456",
        now() + 3600,
        &[],
        &["chat.*"],
    );
    let deadline = Instant::now() + PATIENCE;
    let refused = loop {
        match client
            .get(format!("{url}?topic=chat.a&access_token={bad}"))
            .send()
            .await
        {
            Ok(response) => break response,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(error) => panic!("the binary never answered: {error}"),
        }
    };
    assert_eq!(refused.status(), 401);
    let response = client
        .get(format!("{url}?topic=chat.a&access_token={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = SseStream::new(response);
    assert!(matches!(
        stream.next_item_timeout(PATIENCE).await.unwrap(),
        Some(Item::Retry(_))
    ));
    drop(stream);
    let mut logged = String::new();
    let deadline = Instant::now() + PATIENCE;
    while !logged.contains("stream refused: access") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        logged = std::fs::read_to_string(&log).unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        logged.contains("stream refused: access") && logged.contains("bad-signature"),
        "the refusal is logged with its label: {logged}"
    );
    for token in [&good, &bad] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logged.contains(signature), "a token in the log: {logged}");
    }
    assert!(!logged.contains(SECRET));
    std::fs::remove_file(&log).ok();
}

/// `mint-token` prints a token the binary's own settings accept.
#[tokio::test]
async fn mint_token_prints_a_token_the_service_accepts() {
    let output = Command::new(env!("CARGO_BIN_EXE_event-stream"))
        .args([
            "mint-token",
            "--secret-env",
            "ES_TEST_SECRET",
            "--publish",
            "chat.*",
        ])
        .args(["--subscribe", "chat.*", "--ttl", "600", "--sub", "tester"])
        .env("ES_TEST_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let minted = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let app = spawn_token_app().await;
    let response = app
        .client
        .post(format!("{}/event-stream", app.address))
        .headers(bearer(&minted))
        .json(&json!({"message": "minted", "topic": "chat.x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (answer, _) = on_both_paths(
        &app,
        &format!("topic=chat.x&access_token={minted}"),
        HeaderMap::new(),
        "minted",
    )
    .await;
    assert_eq!(answer.status, 200);
}
