//! Publishing through HTTP and receiving through SSE: fan-out, framing,
//! headers, keep-alives.

use sse_reader::Item;

use crate::helpers::{PATIENCE, data, next_events, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_tutorials_commands_publish_and_stream() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("", None).await;
    // curl -X POST localhost:9990/event-stream -d '{"message":"hello"}' -H 'Content-Type: application/json'
    let response = app
        .client
        .post(format!("{}/event-stream", app.address))
        .header("Content-Type", "application/json")
        .body(r#"{"message":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.headers()["x-event-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"status":"success","data":"hello"}"#
    );
    let events = next_events(&mut stream, 1).await;
    assert_eq!(events[0].event, "message");
    assert_eq!(events[0].data, "hello");
    assert_eq!(events[0].id, id);
}

#[tokio::test]
async fn stream_headers_and_retry_hint_arrive_before_any_event() {
    let app = spawn_app().await;
    let response = app.get_stream("", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut stream = sse_reader::SseStream::new(response);
    assert_eq!(
        stream.next_item_timeout(PATIENCE).await.unwrap(),
        Some(Item::Retry(3000))
    );
}

#[tokio::test]
async fn every_subscriber_gets_every_event_in_order_once() {
    let app = spawn_app().await;
    let mut streams = Vec::new();
    for _ in 0..25 {
        streams.push(app.subscribe("topic=fan", None).await);
    }
    let sent: Vec<String> = (0..60).map(|i| format!("event {i}")).collect();
    for message in &sent {
        app.publish_to("fan", message).await;
    }
    for stream in &mut streams {
        let events = next_events(stream, sent.len()).await;
        assert_eq!(data(&events), sent);
        // Ids are contiguous offsets of one epoch.
        let offsets: Vec<u64> = events
            .iter()
            .map(|e| e.id.rsplit_once('-').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(offsets, (1..=60).collect::<Vec<_>>());
        // Nothing more: no duplicate was queued behind them.
        app.publish_to("fan", "sentinel").await;
        assert_eq!(next_events(stream, 1).await[0].data, "sentinel");
    }
}

#[tokio::test]
async fn subscribers_of_other_topics_see_nothing() {
    let app = spawn_app().await;
    let mut other = app.subscribe("topic=other", None).await;
    let mut mine = app.subscribe("topic=mine", None).await;
    app.publish_to("mine", "for mine").await;
    app.publish_to("other", "for other").await;
    assert_eq!(data(&next_events(&mut other, 1).await), ["for other"]);
    assert_eq!(data(&next_events(&mut mine, 1).await), ["for mine"]);
}

#[tokio::test]
async fn line_breaks_cannot_inject_fields_or_events() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("", None).await;
    let cases = [
        ("a\rb", "a\nb"),
        ("a\nb", "a\nb"),
        ("a\r\nb", "a\nb"),
        ("\n\nevent: x\ndata: y", "\n\nevent: x\ndata: y"),
        (
            "x\r\rid: 999\revent: evil\r\r",
            "x\n\nid: 999\nevent: evil\n\n",
        ),
        ("data: fake\n\n:comment", "data: fake\n\n:comment"),
        (" leading space", " leading space"),
        ("  two", "  two"),
    ];
    let mut ids = Vec::new();
    for (message, _) in cases {
        ids.push(app.publish(message).await);
    }
    let events = next_events(&mut stream, cases.len()).await;
    for ((event, (sent, expected)), id) in events.iter().zip(cases).zip(ids) {
        assert_eq!(event.data, expected, "data of {sent:?}");
        assert_eq!(event.event, "message", "event type of {sent:?}");
        assert_eq!(event.id, id, "id of {sent:?}");
    }
}

#[tokio::test]
async fn unicode_at_the_limit_arrives_intact() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("", None).await;
    let messages = [
        "é".repeat(100),
        "😀".repeat(100),
        "日本語".repeat(33) + "x",
        "\u{200b}\u{feff}zero width".to_owned(),
    ];
    for message in &messages {
        app.publish(message).await;
    }
    assert_eq!(
        data(&next_events(&mut stream, messages.len()).await),
        messages
    );
}

#[tokio::test]
async fn custom_event_types_are_sent_as_the_event_field() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("topic=t", None).await;
    app.publish_json(serde_json::json!({"message": "m", "topic": "t", "event": "chat.msg"}))
        .await;
    let event = &next_events(&mut stream, 1).await[0];
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("chat.msg", "m")
    );
}

/// Browsers hand `error` and `open` to `onerror`/`onopen`, and `reset` is
/// the server's own: none can be published, in any case, by any body form.
#[tokio::test]
async fn reserved_event_types_are_refused_with_400_naming_the_rule() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("topic=spoof", None).await;
    let url = format!("{}/event-stream", app.address);
    for event in ["error", "open", "reset", "Error", "RESET"] {
        let expected = serde_json::json!({
            "status": "fail",
            "data": format!(
                "request validation error: event \"{event}\" is reserved (reserved: error, open, reset, token-expired)"
            ),
        });
        let fields = [("message", "m"), ("topic", "spoof"), ("event", event)];
        for (form, request) in [
            (
                "json",
                app.client
                    .post(&url)
                    .json(&serde_json::json!({"message": "m", "topic": "spoof", "event": event})),
            ),
            ("form", app.client.post(&url).form(&fields)),
            ("query", app.client.post(&url).query(&fields)),
        ] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 400, "{event} as {form}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body, expected, "{event} as {form}");
        }
    }
    app.publish_json(serde_json::json!({"message": "m", "topic": "spoof", "event": "message"}))
        .await;
    let event = &next_events(&mut stream, 1).await[0];
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("message", "m"),
        "nothing reserved was published before it"
    );
}

#[tokio::test]
async fn keep_alive_comments_flow_during_silence() {
    let app = spawn_app_with(&[("ES__STREAM__KEEPALIVE_MS", "50")]).await;
    let mut stream = app.subscribe("", None).await;
    for _ in 0..2 {
        let item = stream.next_item_timeout(PATIENCE).await.unwrap();
        assert_eq!(item, Some(Item::Comment("keep-alive".into())));
    }
}

#[tokio::test]
async fn invalid_subscriptions_get_jsend_400() {
    let app = spawn_app_with(&[("ES__STREAM__MAX_TOPICS", "2")]).await;
    let cases = [
        (
            "topic=a%20b",
            None,
            "request validation error: topic may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'",
        ),
        (
            "topic=",
            None,
            "request validation error: topic must be 1 to 128 characters",
        ),
        (
            "topic=a&topic=b&topic=c",
            None,
            "request validation error: at most 2 topics per subscription",
        ),
    ];
    for (query, header, expected) in cases {
        let response = app.get_stream(query, header).await;
        assert_eq!(response.status(), 400, "{query:?} {header:?}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"status": "fail", "data": expected}),
            "{query:?} {header:?}"
        );
    }
}

#[tokio::test]
async fn health_readiness_and_method_errors_are_jsend() {
    let app = spawn_app().await;
    let get = |path: &str| app.client.get(format!("{}{path}", app.address)).send();
    let healthz = get("/healthz").await.unwrap();
    assert_eq!(healthz.status(), 200);
    assert_eq!(
        healthz.text().await.unwrap(),
        r#"{"status":"success","data":"alive"}"#
    );
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let missing = get("/nope").await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.text().await.unwrap(),
        r#"{"status":"fail","data":"no such endpoint"}"#
    );
    let put = app
        .client
        .put(format!("{}/event-stream", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    assert_eq!(
        put.text().await.unwrap(),
        r#"{"status":"fail","data":"method not allowed"}"#
    );
}

#[tokio::test]
async fn draining_refuses_new_streams_and_ends_open_ones() {
    let app = spawn_app_with(&[("ES__HTTP__SHUTDOWN_GRACE_MS", "400")]).await;
    let mut stream = app.subscribe("", None).await;
    app.publish("before shutdown").await;
    assert_eq!(
        data(&next_events(&mut stream, 1).await),
        ["before shutdown"]
    );
    app.shutdown.begin();
    // The open stream ends cleanly, on an event boundary.
    let end = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.next_item().await {
                None => return Ok(()),
                Some(Err(error)) => return Err(error),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("stream did not end after shutdown");
    assert!(end.is_ok(), "stream ended with an error: {end:?}");
}

#[tokio::test]
async fn past_max_streams_new_streams_get_503_with_retry_after() {
    let app = spawn_app_with(&[("ES__STREAM__MAX_STREAMS", "2")]).await;
    let first = app.subscribe("", None).await;
    let _second = app.subscribe("", None).await;
    let refused = app.get_stream("", None).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"status":"error","message":"too many open streams on this server; retry later"}"#
    );
    // A slot comes back when a stream ends.
    drop(first);
    crate::helpers::wait_until("a slot is free again", || async {
        app.get_stream("", None).await.status() == 200
    })
    .await;
}

#[tokio::test]
async fn metrics_show_both_parts_each_counting_its_own() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("", None).await;
    app.publish("counted").await;
    next_events(&mut stream, 1).await;

    assert_eq!(app.metric("es_events_published_total").await, 1.0);
    assert_eq!(app.metric("es_publish_failures_total").await, 0.0);
    assert_eq!(app.metric("es_stream_connections").await, 1.0);
    for name in [
        "es_events_replayed_total",
        "es_stream_resets_total",
        "es_slow_client_disconnects_total",
    ] {
        assert_eq!(app.metric(name).await, 0.0, "{name}");
    }
    assert_eq!(app.metric("es_bus_topics").await, 1.0);
}
