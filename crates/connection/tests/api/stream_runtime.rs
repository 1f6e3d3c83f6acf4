//! Streams are written on the shared stream runtime, not on the worker that
//! accepted their connection, and their connection comes back after them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::helpers::{
    BLOCK, BLOCK_PATH, BLOCKING, Bodies, STREAM_REQUEST, chunk, config, spawn_server,
    spawn_server_with, wait_until,
};

#[tokio::test]
async fn a_stream_is_written_on_the_stream_runtime_and_its_connection_serves_the_next_request() {
    let server = spawn_server();
    let mut client = server.connect().await;
    for n in 0..2 {
        client.send(STREAM_REQUEST).await;
        let frames = server.stream(n).await;
        frames.send("data: one\n\n".into()).unwrap();
        client.read_until(&chunk("data: one\n\n")).await;
        drop(frames);
        client.read_until("0\r\n\r\n").await;
    }
    client.send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let text = client.read_until("\r\n\r\nok").await;
    assert!(text.contains("HTTP/1.1 200 OK\r\n"), "{text}");
    let polled_on = server.seen.polled_on.lock().unwrap().clone();
    assert_eq!(
        polled_on,
        ["stream"],
        "every body polled on the stream runtime"
    );
}

#[tokio::test]
async fn a_blocked_worker_does_not_hold_back_the_streams_it_accepted() {
    // One worker: the stream and the blocking request share it.
    let server = spawn_server();
    let mut client = server.connect().await;
    client.send(STREAM_REQUEST).await;
    let frames = server.stream(0).await;
    client.read_until("\r\n\r\n").await;
    let blocked_before = BLOCKING.load(Ordering::SeqCst);
    let mut blocker = server.connect().await;
    blocker
        .send(format!("GET {BLOCK_PATH} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await;
    wait_until(|| (BLOCKING.load(Ordering::SeqCst) > blocked_before).then_some(())).await;
    // The worker's thread is asleep from (at the latest) now until BLOCK
    // from now: a frame that arrives before that was written elsewhere.
    let blocked = Instant::now();
    frames.send("data: meanwhile\n\n".into()).unwrap();
    client.read_until(&chunk("data: meanwhile\n\n")).await;
    let arrived = blocked.elapsed();
    assert!(
        arrived + Duration::from_millis(10) < BLOCK,
        "the frame waited for the worker: {arrived:?}"
    );
    blocker.read_until("unblocked").await;
}

#[tokio::test]
async fn a_stream_still_open_when_the_grace_period_ends_is_cut_and_its_body_dropped() {
    let mut config = config();
    config.shutdown_grace = Duration::from_secs(1);
    let server = spawn_server_with(config, Bodies::Channel);
    let mut client = server.connect().await;
    client.send(STREAM_REQUEST).await;
    let frames = server.stream(0).await;
    client.read_until("\r\n\r\n").await;
    let stopping = tokio::spawn(server.handle.stop(true));
    // The route's body never ends by itself: only the cut closes it.
    client.read_to_end().await;
    wait_until(|| frames.is_closed().then_some(())).await;
    stopping.await.unwrap();
    assert!(
        server.seen.ended.lock().unwrap().is_empty(),
        "a cut stream is not reported as ended"
    );
}
