//! Resuming with a last event id: replay then live, no gap, no duplicate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::helpers::{PATIENCE, TestApp, data, next_events, spawn_app, spawn_app_with};

#[tokio::test]
async fn resume_replays_what_was_missed_then_continues_live() {
    let app = spawn_app().await;
    for (form, header) in [
        ("", true),
        ("lastEventId=", false),
        ("last_event_id=", false),
    ] {
        let topic = format!("resume{}", form.len());
        let mut stream = app.subscribe(&format!("topic={topic}"), None).await;
        for i in 1..=3 {
            app.publish_to(&topic, &format!("m{i}")).await;
        }
        let seen = next_events(&mut stream, 3).await;
        drop(stream);
        app.publish_to(&topic, "m4").await;
        app.publish_to(&topic, "m5").await;
        let last = &seen[2].id;
        let mut resumed = if header {
            app.subscribe(&format!("topic={topic}"), Some(last)).await
        } else {
            app.subscribe(&format!("topic={topic}&{form}{last}"), None)
                .await
        };
        app.publish_to(&topic, "m6").await;
        let events = next_events(&mut resumed, 3).await;
        assert_eq!(
            data(&events),
            ["m4", "m5", "m6"],
            "resume via {form:?} header={header}"
        );
    }
}

#[tokio::test]
async fn the_header_wins_over_the_query() {
    let app = spawn_app().await;
    let first = app.publish("one").await;
    let second = app.publish("two").await;
    app.publish("three").await;
    let mut stream = app
        .subscribe(&format!("lastEventId={first}"), Some(&second))
        .await;
    assert_eq!(data(&next_events(&mut stream, 1).await), ["three"]);
}

/// Reconnects over and over while a publisher runs; the concatenation of
/// what every connection received must be exactly what was published.
async fn reconnect_while_publishing(
    app: &TestApp,
    query: &str,
    topics: &[&str],
    total: usize,
) -> BTreeMap<String, Vec<String>> {
    // Subscribe before publishing starts, so the first event is covered.
    let mut first = Some(app.subscribe(query, None).await);
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let address = app.address.clone();
        let client = app.client.clone();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let done = done.clone();
        tokio::spawn(async move {
            for i in 0..total {
                let topic = &topics[i % topics.len()];
                let body = serde_json::json!({"message": format!("{topic}:{i}"), "topic": topic});
                let response = client
                    .post(format!("{address}/event-stream"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut last_id: Option<String> = None;
    let mut count = 0;
    let mut connection = 0usize;
    while count < total {
        let mut stream = match first.take() {
            Some(stream) => stream,
            None => app.subscribe(query, last_id.as_deref()).await,
        };
        // Read a varying number of events per connection, then drop it.
        let budget = 1 + (connection * 13) % 29;
        connection += 1;
        for _ in 0..budget {
            if count == total {
                break;
            }
            let event = stream
                .next_event_timeout(PATIENCE)
                .await
                .unwrap()
                .expect("stream ended");
            let topic = event.data.split(':').next().unwrap().to_owned();
            received.entry(topic).or_default().push(event.data.clone());
            last_id = Some(event.id);
            count += 1;
        }
    }
    publisher.await.unwrap();
    assert!(done.load(Ordering::SeqCst));
    received
}

#[tokio::test]
async fn no_gap_and_no_duplicate_at_the_seam_under_concurrent_publishing() {
    let app = spawn_app().await;
    let received = reconnect_while_publishing(&app, "topic=seam", &["seam"], 400).await;
    let expected: Vec<String> = (0..400).map(|i| format!("seam:{i}")).collect();
    assert_eq!(received["seam"], expected);
}

#[tokio::test]
async fn a_multi_topic_subscription_resumes_every_topic_exactly() {
    let app = spawn_app().await;
    // Empty topics have no head yet; resuming covers them from their first event.
    let received = reconnect_while_publishing(
        &app,
        "topic=alpha&topic=beta&topic=gamma",
        &["alpha", "beta", "gamma"],
        450,
    )
    .await;
    for (index, topic) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let expected: Vec<String> = (0..450)
            .filter(|i| i % 3 == index)
            .map(|i| format!("{topic}:{i}"))
            .collect();
        assert_eq!(received[*topic], expected, "topic {topic}");
    }
}

#[tokio::test]
async fn a_multi_topic_id_carries_every_topics_position() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("topic=b&topic=a", None).await;
    let a = app.publish_to("a", "to a").await;
    let b = app.publish_to("b", "to b").await;
    let events = next_events(&mut stream, 2).await;
    // Topics are sorted: a's position first. Order across topics is not
    // promised (a stream takes turns between its topics), so the first id
    // names the topic whose event came first.
    let first = match events[0].data.as_str() {
        "to a" => format!("{a},0-0"),
        _ => format!("0-0,{b}"),
    };
    assert_eq!(events[0].id, first);
    assert_eq!(events[1].id, format!("{a},{b}"));
}

#[tokio::test]
async fn a_cursor_older_than_history_is_announced_with_reset() {
    let app = spawn_app_with(&[("ES__BUS__HISTORY_SIZE", "5")]).await;
    let first = app.publish("m1").await;
    for i in 2..=20 {
        app.publish(&format!("m{i}")).await;
    }
    let mut stream = app.subscribe("", Some(&first)).await;
    let events = next_events(&mut stream, 6).await;
    assert_eq!(events[0].event, "reset");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&events[0].data).unwrap(),
        serde_json::json!({"topic": "default", "reason": "history-trimmed"})
    );
    assert_eq!(data(&events[1..]), ["m16", "m17", "m18", "m19", "m20"]);
    // The reset's id resumes exactly before the oldest retained event.
    let mut again = app.subscribe("", Some(&events[0].id)).await;
    assert_eq!(
        data(&next_events(&mut again, 5).await),
        ["m16", "m17", "m18", "m19", "m20"]
    );
}

#[tokio::test]
async fn a_cursor_from_another_epoch_is_announced_with_reset() {
    let app = spawn_app().await;
    app.publish("current").await;
    let mut stream = app.subscribe("", Some("zzz-3")).await;
    let events = next_events(&mut stream, 2).await;
    assert_eq!(events[0].event, "reset");
    assert!(
        events[0].data.contains("epoch-changed"),
        "{}",
        events[0].data
    );
    assert_eq!(events[1].data, "current");
}

#[tokio::test]
async fn a_cursor_ahead_of_history_is_announced_with_reset() {
    let app = spawn_app().await;
    let id = app.publish("only").await;
    let (epoch, _) = id.rsplit_once('-').unwrap();
    let mut stream = app.subscribe("", Some(&format!("{epoch}-99"))).await;
    let events = next_events(&mut stream, 2).await;
    assert_eq!(events[0].event, "reset");
    assert!(
        events[0].data.contains("cursor-ahead"),
        "{}",
        events[0].data
    );
    assert_eq!(events[1].data, "only");
}

/// An id the server cannot read (stale, foreign, from an older format, or
/// garbage) is not a 400, which would close an EventSource for good: the
/// stream starts at the head, after one `reset` per topic whose id resumes
/// exactly from there. Retained history is not replayed: the server cannot
/// know what the client saw.
#[tokio::test]
async fn an_unreadable_last_event_id_starts_at_the_head_after_a_reset_per_topic() {
    let app = spawn_app().await;
    let too_long = "9".repeat(1121);
    let cases = [
        ("lastEventId=nope", None, "malformed"),
        ("", Some("1-2 3"), "a space"),
        ("lastEventId=x-1", None, "one position for two topics"),
        ("", Some(too_long.as_str()), "1121 characters"),
    ];
    for (n, (query, header, case)) in cases.into_iter().enumerate() {
        let (a, b) = (format!("a{n}"), format!("b{n}"));
        app.publish_to(&a, "old").await;
        let head_a = app.publish_to(&a, "old").await;
        let head_b = app.publish_to(&b, "old").await;
        let topics = format!("topic={a}&topic={b}");
        let mut stream = app.subscribe(&format!("{topics}&{query}"), header).await;
        let resets = next_events(&mut stream, 2).await;
        let head = format!("{head_a},{head_b}");
        for (reset, topic) in resets.iter().zip([&a, &b]) {
            assert_eq!(reset.event, "reset", "{case}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&reset.data).unwrap(),
                serde_json::json!({"topic": topic, "reason": "cursor-invalid"}),
                "{case}"
            );
            assert_eq!(reset.id, head, "{case}: the reset's id is the head");
        }
        app.publish_to(&b, "new").await;
        assert_eq!(
            data(&next_events(&mut stream, 1).await),
            ["new"],
            "{case}: live after the resets, no history"
        );
        // Resuming from the reset's id is exact: the event published
        // since, and no reset.
        let mut again = app.subscribe(&topics, Some(&head)).await;
        let events = next_events(&mut again, 1).await;
        assert_eq!(
            (events[0].event.as_str(), events[0].data.as_str()),
            ("message", "new"),
            "{case}"
        );
    }
    assert_eq!(app.metric("es_stream_resets_total").await, 8.0);
}

#[tokio::test]
async fn a_last_event_id_header_that_is_not_visible_ascii_starts_at_the_head_after_a_reset() {
    let app = spawn_app().await;
    let head = app.publish_to("bytes", "old").await;
    let response = app
        .client
        .get(format!("{}/event-stream?topic=bytes", app.address))
        .header(
            "Last-Event-ID",
            reqwest::header::HeaderValue::from_bytes(b"\xff-1").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = sse_reader::SseStream::new(response);
    let reset = stream.next_event_timeout(PATIENCE).await.unwrap().unwrap();
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.id, head);
    assert!(reset.data.contains("cursor-invalid"), "{}", reset.data);
}

#[tokio::test]
async fn a_long_resume_over_several_topics_arrives_whole_in_slices_then_live() {
    let app = spawn_app().await;
    // 300 events per topic: several slices each (a slice is at most 64).
    let topics = ["sa", "sb", "sc"];
    for i in 0..300 {
        for topic in topics {
            app.bus
                .publish(topic, "message", &format!("{topic}:{i}"))
                .await
                .unwrap();
        }
    }
    let query = "topic=sa&topic=sb&topic=sc";
    let mut stream = app.subscribe(query, Some("0-0,0-0,0-0")).await;
    let replayed = next_events(&mut stream, 900).await;
    // Per topic, everything in order; topics follow one another (a
    // multi-topic replay groups by topic).
    let mut expected = Vec::new();
    for topic in topics {
        expected.extend((0..300).map(|i| format!("{topic}:{i}")));
    }
    assert_eq!(data(&replayed), expected);
    // Then live, with nothing doubled at the seam.
    app.publish_to("sb", "live").await;
    let live = next_events(&mut stream, 1).await;
    assert_eq!(data(&live), ["live"]);
    let last = &live[0].id;
    assert!(last.contains("-300,") && last.contains("-301,"), "{last}");
}
