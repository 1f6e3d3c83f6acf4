//! Hostile clients against the real `event-stream` binary.
//!
//! Each test acts out one finding of a probe that treated the standalone
//! hub as an attacker would, and states what the hub must do instead:
//!
//! - topic names and resumes that make the server allocate for nothing:
//!   GETs of made-up topics, publishes to ever new topics, resumes whose
//!   clients never read the replay;
//! - request heads that never finish: after a first request on either of
//!   the server's two paths (its own stream path and actix's), and a first
//!   head that grows slowly past the size where one path hands over to the
//!   other;
//! - one address holding every connection;
//! - invented methods that each add a label set to `/metrics`;
//! - an HTTP/1.0 stream framed as chunks, a partial request pipelined
//!   behind a stream, shutdown waiting on half-sent heads, and a client
//!   that stops reading without being counted as too slow.
//!
//! Every test starts its own process on loopback (127.0.0.0/8), speaks raw
//! TCP where the bytes on the wire matter, and bounds every wait with a
//! deadline. Memory is the process's `VmRSS`; each limit sits an order of
//! magnitude from both the broken and the intended behaviour, so allocator
//! noise cannot decide a result.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use e2e::cluster::{Outcome, publish};
use e2e::process::Service;
use e2e::{PATIENCE, wait_until};
use testkit::RawClient;

const MIB: u64 = 1024 * 1024;

/// A whole keep-alive request for the liveness route.
const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n";
/// A stream request the stream path itself refuses (400: bad topic).
const BAD_STREAM: &str = "GET /event-stream?topic=bad%20name HTTP/1.1\r\nHost: hub\r\n\r\n";

/// The standalone hub with `env` on top of the harness's defaults, ready.
async fn hub(env: &[(&str, &str)]) -> Service {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let hub = Service::start("event-stream", &env);
    hub.wait_ready().await;
    hub
}

async fn metrics(hub: &Service) -> String {
    reqwest::get(format!("{}/metrics", hub.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled sample (`name value`), if `/metrics` has it.
async fn metric(hub: &Service, name: &str) -> Option<f64> {
    metrics(hub).await.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn wait_for_streams(hub: &Service, count: usize) {
    let reached = wait_until(PATIENCE, || async {
        metric(hub, "es_stream_connections").await == Some(count as f64)
    })
    .await;
    assert!(reached, "es_stream_connections never reached {count}");
}

/// Resident memory of the hub's process.
fn rss(hub: &Service) -> u64 {
    let pid = hub.pid().expect("the hub is not running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("no VmRSS in /proc/<pid>/status");
    kib * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A raw connection to `hub` from 127.0.0.1.
async fn connect(hub: &Service) -> RawClient {
    open(hub, Ipv4Addr::LOCALHOST, None).await
}

/// A raw connection to `hub` from `source`; with `receive_buffer`, the
/// client's window is that small, so a client that reads nothing stalls the
/// server's writes after a few hundred kilobytes instead of megabytes.
/// Reads wait up to [`PATIENCE`].
async fn open(hub: &Service, source: Ipv4Addr, receive_buffer: Option<u32>) -> RawClient {
    RawClient::connect_from(hub.port(), Some(source), receive_buffer)
        .await
        .with_patience(PATIENCE)
}

/// What these tests ask of a raw connection beyond bytes in and out:
/// whole responses, and whether the hub has taken what was sent.
trait HubClient {
    /// Waits until the hub has read everything sent on this connection
    /// (its socket's receive queue is empty), so that a partial head is in
    /// the server's hands, not the kernel's.
    async fn wait_until_taken(&self);

    /// Reads one whole response with a `Content-Length` body, after the
    /// responses already read this way.
    async fn read_response(&mut self) -> String;

    /// The next response head, or whatever came before the server closed.
    async fn read_head_or_close(&mut self) -> String;

    /// The last bytes read, for failure messages.
    fn tail(&self) -> String;
}

impl HubClient for RawClient {
    async fn wait_until_taken(&self) {
        let client = self.socket().local_addr().unwrap();
        let server = self.socket().peer_addr().unwrap();
        let taken = wait_until(PATIENCE, || async {
            server_sockets(server.port())
                .iter()
                .any(|socket| socket.peer == client && socket.unread == 0)
        })
        .await;
        assert!(taken, "the hub never read what was sent on {client}");
    }

    async fn read_response(&mut self) -> String {
        self.read_until("\r\n\r\n").await;
        let start = self.consumed();
        let head_end = start + find(&self.received()[start..], b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&self.received()[start..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap());
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.received().len() < head_end + length {
            let more = tokio::time::timeout_at(deadline, self.read_more()).await;
            assert!(
                more == Ok(true),
                "response body cut short: {:?}",
                self.tail()
            );
        }
        self.consume(head_end + length);
        String::from_utf8_lossy(&self.received()[start..head_end + length]).into_owned()
    }

    async fn read_head_or_close(&mut self) -> String {
        let _ = tokio::time::timeout(PATIENCE, async {
            while find(self.received(), b"\r\n\r\n").is_none() && self.read_more().await {}
        })
        .await;
        let received = self.received();
        let end = find(received, b"\r\n\r\n").map_or(received.len(), |at| at + 4);
        String::from_utf8_lossy(&received[..end]).into_owned()
    }

    fn tail(&self) -> String {
        self.last(300)
    }
}

/// A server-side TCP socket, from `/proc/net/tcp`.
struct ServerSocket {
    peer: SocketAddr,
    /// TCP state as the kernel numbers it: 01 established, 08 close-wait.
    state: u8,
    /// Bytes received that the server has not read yet.
    unread: u64,
}

/// The sockets on loopback whose local port is `port` (the listener's
/// connections), as the kernel sees them.
fn server_sockets(port: u16) -> Vec<ServerSocket> {
    // `0100007F:1F90`: an IPv4 address as a little-endian hex word, a port.
    let address = |text: &str| -> Option<SocketAddr> {
        let (ip, port) = text.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.to_le_bytes();
        Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
    };
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = address(fields.get(1)?)?;
            let peer = address(fields.get(2)?)?;
            let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
            let unread = u64::from_str_radix(fields.get(4)?.split_once(':')?.1, 16).ok()?;
            (local.port() == port && local.ip().is_loopback() && peer.port() != 0).then_some(
                ServerSocket {
                    peer,
                    state,
                    unread,
                },
            )
        })
        .collect()
}

/// Connections the hub still holds open (established, or closed by the
/// client but not yet by the server).
fn held_connections(hub: &Service) -> usize {
    server_sockets(hub.port())
        .iter()
        .filter(|socket| matches!(socket.state, 0x01 | 0x08))
        .count()
}

/// `topic=` parameters for `count` topics named `{prefix}-{n}`.
fn topics_query(prefix: &str, count: usize) -> String {
    (0..count)
        .map(|n| format!("topic={prefix}-{n:02}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Publishes and insists on a 201.
async fn publish_stored(client: &reqwest::Client, hub: &str, topic: &str, message: &str) {
    if let Outcome::Refused(why) = publish(client, hub, topic, message).await {
        panic!("publishing to {topic} failed: {why}");
    }
}

/// A stream of `topic` on a client with a tiny window that reads nothing
/// (with `pipelined` sent in the same packet as its request), flooded with
/// `count` messages of ~`chars` characters: megabytes more than socket
/// buffers hold (tcp_wmem tops out at 4 MB), so the server's writes to it
/// stall. Needs `publish.max_message_chars` ≥ `chars`.
async fn stalled_stream(
    hub: &Service,
    topic: &str,
    pipelined: &str,
    count: usize,
    chars: usize,
) -> RawClient {
    let mut client = open(hub, Ipv4Addr::LOCALHOST, Some(4096)).await;
    client
        .send(format!(
            "GET /event-stream?topic={topic} HTTP/1.1\r\nHost: hub\r\n\r\n{pipelined}"
        ))
        .await;
    wait_for_streams(hub, 1).await;
    let publisher = reqwest::Client::new();
    let filler = "x".repeat(chars - 10);
    for n in 0..count {
        publish_stored(&publisher, &hub.url(), topic, &format!("{n}:{filler}")).await;
    }
    client
}

// Finding 1: topic names cost memory.

/// Every GET created its topics for good (a broadcast ring of
/// `stream.queue_capacity` slots each, kept for `bus.history_ttl_secs`
/// whether or not anything was ever published): 150 requests naming 16
/// made-up topics left ~78 MB behind. A topic that never had an event must
/// be held only while someone subscribes to it.
#[tokio::test]
async fn streams_of_unused_topics_that_close_leave_neither_topics_nor_memory_behind() {
    let hub = hub(&[]).await;
    let open_and_close = |query: String| {
        let hub = &hub;
        async move {
            let mut client = connect(hub).await;
            client
                .send(format!(
                    "GET /event-stream?{query} HTTP/1.1\r\nHost: hub\r\n\r\n"
                ))
                .await;
            client.read_until("retry:").await;
        }
    };
    // A first stream warms every code path up, so what follows measures
    // what a request leaves behind, not what the first one initialises.
    open_and_close(topics_query("warm-up", 16)).await;
    wait_for_streams(&hub, 0).await;
    let before = rss(&hub);
    for request in 0..150 {
        open_and_close(topics_query(&format!("unused-{request}"), 16)).await;
    }
    wait_for_streams(&hub, 0).await;
    let grown = rss(&hub).saturating_sub(before);
    let topics = metric(&hub, "es_bus_topics").await;
    // Kept for good, each request cost ~520 KiB (~78 MB in all); a few MB
    // is allocator slack.
    assert!(
        grown < 20 * MIB,
        "150 closed streams of 16 unused topics each left {:.1} MiB behind \
         (limit 20 MiB); es_bus_topics = {topics:?}",
        mib(grown)
    );
    assert!(
        matches!(topics, Some(held) if held <= 4.0),
        "es_bus_topics = {topics:?} once every stream of unused topics closed \
         (expected a handful at most)"
    );
}

/// Publishing to ever new topics had no limit at all. Past
/// `bus.max_topics` a publish to a new topic is refused with a 503 JSend
/// `error`, and nothing is published.
#[tokio::test]
async fn publishes_to_new_topics_past_the_cap_get_503_and_publish_nothing() {
    let hub = hub(&[("ES__BUS__MAX_TOPICS", "100")]).await;
    let client = reqwest::Client::new();
    let mut stored = 0;
    let mut refusals = Vec::new();
    for n in 0..200 {
        match publish(&client, &hub.url(), &format!("new-{n}"), "hello").await {
            Outcome::Stored(_) => stored += 1,
            Outcome::Refused(why) => refusals.push(why),
        }
    }
    let topics = metric(&hub, "es_bus_topics").await;
    assert!(
        (1..=100).contains(&stored),
        "{stored} of 200 publishes to new topics got 201 with bus.max_topics = 100; \
         es_bus_topics = {topics:?}"
    );
    for why in &refusals {
        assert!(
            why.starts_with("503") && why.contains(r#""status":"error""#),
            "a publish past the topic cap must be a 503 JSend error, got {why}"
        );
    }
    let published = metric(&hub, "es_events_published_total").await;
    assert_eq!(
        published,
        Some(stored as f64),
        "es_events_published_total must count only the 201s"
    );
    assert!(
        matches!(topics, Some(held) if held <= 100.0),
        "es_bus_topics = {topics:?} with bus.max_topics = 100"
    );
}

// Finding 2: a resume built its whole replay in memory.

/// A resume from `0-0` in 16 topics of ~1 MB of history each copied the
/// whole replay (~16 MiB, each event framed with its own id) into the
/// stream before writing a byte, so clients that resume and never read cost
/// the server 16 MiB each. Pulled from history in slices of ~64 KiB, a
/// client that reads nothing holds about a slice per topic: the limit of
/// 5 MiB per client is a third of a whole replay and several times a slice
/// per topic. (250 events of 4000 characters per topic rather than 1000 of
/// 1000: the same bytes in a quarter of the publishes.)
#[tokio::test]
async fn resuming_clients_that_never_read_do_not_each_hold_their_whole_replay() {
    const TOPICS: usize = 16;
    const EVENTS: usize = 250;
    const CLIENTS: usize = 20;
    let hub = hub(&[
        ("ES__PUBLISH__MAX_MESSAGE_CHARS", "4000"),
        ("ES__BUS__HISTORY_SIZE", "1000"),
    ])
    .await;
    let client = reqwest::Client::new();
    let mut publishers = tokio::task::JoinSet::new();
    for topic in 0..TOPICS {
        let (client, url) = (client.clone(), hub.url());
        publishers.spawn(async move {
            let filler = "r".repeat(3996);
            for n in 0..EVENTS {
                let message = format!("{n:04}{filler}");
                publish_stored(&client, &url, &format!("replay-{topic:02}"), &message).await;
            }
        });
    }
    while let Some(done) = publishers.join_next().await {
        done.unwrap();
    }

    let before = rss(&hub);
    let request = format!(
        "GET /event-stream?{} HTTP/1.1\r\nHost: hub\r\nLast-Event-ID: {}\r\n\r\n",
        topics_query("replay", TOPICS),
        vec!["0-0"; TOPICS].join(",")
    );
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = open(&hub, Ipv4Addr::LOCALHOST, Some(4096)).await;
        client.send(&request).await;
        clients.push(client);
    }
    wait_for_streams(&hub, CLIENTS).await;
    // Not a wait for a condition: memory is sampled over a second, while
    // the streams write what the clients' windows take, and the peak kept.
    let mut peak = rss(&hub);
    let window = Instant::now() + Duration::from_secs(1);
    while Instant::now() < window {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(rss(&hub));
    }
    let per_client = peak.saturating_sub(before) / CLIENTS as u64;
    assert!(
        per_client < 5 * MIB,
        "each resuming client that reads nothing costs {:.1} MiB \
         (limit 5 MiB; its whole replay is ~16 MiB)",
        mib(per_client)
    );
    // And the replay is really there: the first client gets the oldest event.
    clients[0].read_until("data: 0000r").await;
}

// Finding 3: an incomplete request head after a first request never timed out.

/// actix-http arms its head timeout for a connection's first request
/// only: a keep-alive connection that starts a second head and stops holds
/// its slot forever.
#[tokio::test]
async fn a_partial_head_after_a_keep_alive_request_is_cut_off() {
    partial_head_after(HEALTHZ, "HTTP/1.1 200", "GET /healthz HTTP/1.1\r\nHost: hu").await;
}

/// The same on the server's own stream path: after a stream request was
/// answered (here refused), a partial next head was read with no deadline.
#[tokio::test]
async fn a_partial_head_after_a_stream_request_is_cut_off() {
    partial_head_after(
        BAD_STREAM,
        "HTTP/1.1 400",
        "GET /event-stream?topic=next HTTP/1.1\r\nHost: hu",
    )
    .await;
}

/// Sends `first`, expects an answer starting with `answer`, then sends
/// `partial` and stops: with a 500 ms request timeout the server must
/// close the connection well within 3 s.
async fn partial_head_after(first: &str, answer: &str, partial: &str) {
    let hub = hub(&[("ES__HTTP__REQUEST_TIMEOUT_MS", "500")]).await;
    let mut client = connect(&hub).await;
    client.send(first).await;
    let response = client.read_response().await;
    assert!(response.starts_with(answer), "{response}");
    client.send(partial).await;
    client.wait_until_taken().await;
    let closed = client.closed_within(Duration::from_secs(3)).await;
    assert!(
        closed.is_some(),
        "a partial head after {first:?} held the connection open for 3 s \
         (http.request_timeout_ms = 500); read: {:?}",
        client.tail()
    );
}

/// A first head that grows past 4 KiB (where the stream path hands the
/// connection to actix) got a fresh timeout at the hand-over. The deadline
/// counts from the head's first byte, whichever path reads the rest.
#[tokio::test]
async fn a_slowly_growing_first_head_is_cut_off_by_the_timeout_from_its_first_byte() {
    let hub = hub(&[("ES__HTTP__REQUEST_TIMEOUT_MS", "2000")]).await;
    let mut client = connect(&hub).await;
    let mut piece = b"GET /healthz HTTP/1.1\r\nHost: hub\r\nX-Filler: ".to_vec();
    let started = Instant::now();
    // 1 KiB every 400 ms: past 4 KiB at ~1.2 s, inside the 2 s timeout. A
    // timeout restarted at the hand-over would end at ~3.2 s or later.
    let closed = loop {
        piece.resize(1024, b'a');
        if client.try_send(&piece).await.is_err() {
            break Some(started.elapsed());
        }
        piece.clear();
        if client
            .closed_within(Duration::from_millis(400))
            .await
            .is_some()
        {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(4) {
            break None;
        }
    };
    assert!(
        matches!(closed, Some(after) if after < Duration::from_millis(2600)),
        "a head growing by 1 KiB every 400 ms was cut {} after its first byte \
         (http.request_timeout_ms = 2000)",
        closed.map_or("not within 4 s".to_owned(), |after| format!("{after:?}"))
    );
}

// Finding 4: one address could hold every connection.

/// Past `http.max_connections_per_address` a connection is answered 503
/// with `Retry-After` and closed; other addresses are served as before.
#[tokio::test]
async fn connections_past_the_per_address_cap_get_503_and_other_addresses_are_served() {
    let hub = hub(&[("ES__HTTP__MAX_CONNECTIONS_PER_ADDRESS", "20")]).await;
    // The readiness check's connection must be gone: the cap counts it.
    assert!(
        wait_until(PATIENCE, || async { held_connections(&hub) == 0 }).await,
        "the hub still holds {} connections before the test starts",
        held_connections(&hub)
    );
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut client = connect(&hub).await;
        client.send(HEALTHZ).await;
        let answer = client.read_response().await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(client);
    }
    assert_eq!(
        held_connections(&hub),
        20,
        "the hub must hold the 20 idle connections"
    );
    let mut extra = connect(&hub).await;
    // The server may answer and close before reading: the write may fail.
    let _ = extra.try_send(HEALTHZ).await;
    let head = extra.read_head_or_close().await;
    assert!(
        head.starts_with("HTTP/1.1 503") && head.to_ascii_lowercase().contains("\r\nretry-after:"),
        "the 21st connection from 127.0.0.1 (cap 20) got {head:?}, not a 503 with Retry-After"
    );
    let mut other = open(&hub, Ipv4Addr::new(127, 0, 0, 2), None).await;
    other.send(HEALTHZ).await;
    let answer = other.read_response().await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "127.0.0.2 must not pay for 127.0.0.1's connections: {answer}"
    );
}

// Finding 5: invented methods became metric labels.

/// Every method string became a label value of
/// `es_http_request_duration_seconds` (a histogram of 20 samples each), so
/// /metrics grew with every invented method, 8 KiB names included.
#[tokio::test]
async fn invented_methods_do_not_become_metric_labels() {
    let hub = hub(&[]).await;
    let long = "X".repeat(8 * 1024);
    for n in 0..300 {
        let method = if n % 60 == 0 {
            format!("LONG{n}{long}")
        } else {
            format!("FOO{n}")
        };
        let mut client = connect(&hub).await;
        // A server may refuse before reading it all: the write may fail.
        let request =
            format!("{method} /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n");
        let _ = client.try_send(&request).await;
        assert!(
            client.closed_within(PATIENCE).await.is_some(),
            "no end to the answer to method {:.16}",
            method
        );
    }
    let text = metrics(&hub).await;
    let invented = text
        .lines()
        .filter(|line| line.contains(r#"method="FOO"#) || line.contains("XXXXXXXX"))
        .count();
    assert_eq!(
        invented,
        0,
        "/metrics ({} bytes) has {invented} lines labelled with invented methods",
        text.len()
    );
    assert!(
        text.len() < 64 * 1024,
        "/metrics is {} bytes after 300 invented methods",
        text.len()
    );
    assert!(
        text.contains(r#"method="other""#),
        "invented methods must be counted as method=\"other\""
    );
}

// Finding 6: smaller ones.

/// RFC 9112 forbids chunked framing in an answer to HTTP/1.0: the stream
/// must be close-delimited, raw SSE after the head.
#[tokio::test]
async fn an_http_1_0_stream_is_close_delimited_not_chunked() {
    let hub = hub(&[("ES__HTTP__SHUTDOWN_GRACE_MS", "1000")]).await;
    let mut client = connect(&hub).await;
    client
        .send("GET /event-stream?topic=old-client HTTP/1.0\r\n\r\n")
        .await;
    client.read_until("retry:").await;
    let text = client.text();
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    let head = text[..head_end].to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.") && head.contains(" 200 "),
        "{head}"
    );
    assert!(
        !head.contains("transfer-encoding"),
        "an HTTP/1.0 stream was framed with Transfer-Encoding:\n{head}"
    );
    assert!(
        text[head_end..].starts_with("retry:"),
        "the body must start with `retry:`, got {:?}",
        &text[head_end..]
    );
    publish_stored(&reqwest::Client::new(), &hub.url(), "old-client", "hello").await;
    client.read_until("data: hello\n\n").await;
    hub.signal("TERM");
    assert!(
        client.closed_within(PATIENCE).await.is_some(),
        "the stream's end must close an HTTP/1.0 connection"
    );
    let text = client.text();
    assert!(
        text.ends_with("\n\n") && !text.ends_with("0\r\n\r\n"),
        "a close-delimited body ends with its last event: {:?}",
        client.tail()
    );
}

/// A partial request pipelined in the same packet as a stream request was
/// kept for after the stream and then read with no deadline: when the
/// stream ended (here: its client fell a queue behind), the connection
/// stayed open forever.
#[tokio::test]
async fn a_partial_request_pipelined_behind_a_stream_is_cut_off_when_the_stream_ends() {
    let hub = hub(&[
        ("ES__HTTP__REQUEST_TIMEOUT_MS", "500"),
        ("ES__STREAM__QUEUE_CAPACITY", "8"),
        ("ES__PUBLISH__MAX_MESSAGE_CHARS", "32000"),
    ])
    .await;
    // ~9.6 MB: the stream falls more than its queue of 8 behind.
    let mut client = stalled_stream(&hub, "lagging", "G", 300, 32_000).await;
    // Reading at last lets the server find the stream behind and end it.
    client.read_until("\r\n0\r\n\r\n").await;
    let closed = client.closed_within(Duration::from_secs(3)).await;
    assert!(
        closed.is_some(),
        "with a partial request pipelined, the connection was still open 3 s after \
         its stream ended (http.request_timeout_ms = 500)"
    );
}

/// Shutdown waited the whole grace period for connections that had sent
/// half a head; idle and half-read connections must close at once.
#[tokio::test]
async fn shutdown_closes_idle_and_half_read_connections_at_once() {
    let mut hub = hub(&[
        ("ES__HTTP__SHUTDOWN_GRACE_MS", "10000"),
        // Long, so that only shutdown can end the half-sent heads.
        ("ES__HTTP__REQUEST_TIMEOUT_MS", "30000"),
    ])
    .await;
    let partial = "GET /healthz HTTP/1.1\r\nHost: hu";
    let mut first_head = connect(&hub).await;
    first_head.send(partial).await;
    let mut after_actix = connect(&hub).await;
    after_actix.send(HEALTHZ).await;
    after_actix.read_response().await;
    after_actix.send(partial).await;
    let mut after_stream = connect(&hub).await;
    after_stream.send(BAD_STREAM).await;
    after_stream.read_response().await;
    after_stream
        .send("GET /event-stream HTTP/1.1\r\nHost: hu")
        .await;
    let mut idle = connect(&hub).await;
    idle.send(HEALTHZ).await;
    idle.read_response().await;
    for half_read in [&first_head, &after_actix, &after_stream] {
        half_read.wait_until_taken().await;
    }

    let started = Instant::now();
    hub.terminate().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "with half-sent heads open the process took {took:?} to exit \
         (http.shutdown_grace_ms = 10000)"
    );
}

/// A client that stops reading entirely is aborted by the kernel
/// (TCP_USER_TIMEOUT); that was counted as too slow only when its queue
/// had overflowed too. With a queue too large to overflow it went uncounted.
#[tokio::test]
async fn a_client_aborted_by_the_send_timeout_counts_as_a_slow_disconnect() {
    let hub = hub(&[
        ("ES__HTTP__SEND_TIMEOUT_MS", "1000"),
        // So large that falling behind cannot be what ends the stream.
        ("ES__STREAM__QUEUE_CAPACITY", "100000"),
        ("ES__PUBLISH__MAX_MESSAGE_CHARS", "60000"),
    ])
    .await;
    // ~12 MB, never read: only the kernel can end this stream.
    let stuck = stalled_stream(&hub, "stuck", "", 200, 60_000).await;
    let freed = wait_until(Duration::from_secs(15), || async {
        metric(&hub, "es_stream_connections").await == Some(0.0)
    })
    .await;
    let counted = metric(&hub, "es_slow_client_disconnects_total").await;
    assert!(
        freed,
        "the stream of a client that reads nothing was not freed within 15 s \
         (http.send_timeout_ms = 1000)"
    );
    assert!(
        matches!(counted, Some(n) if n >= 1.0),
        "a stream aborted by the kernel for a client that stopped reading must count \
         in es_slow_client_disconnects_total; it is {counted:?}"
    );
    drop(stuck);
}
