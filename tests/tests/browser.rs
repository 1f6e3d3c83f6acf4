//! The live page (`/`) in real headless Chromium: what a browser's own
//! EventSource receives from the real binaries, directly and through
//! nginx, across restarts and outages.
//!
//! Each test is one scenario and saves a screenshot of the page as
//! `target/browser-artifacts/<test>.png`. The page records what it
//! received in `window.esReceived` (its test hook, see its `app.js`); the
//! tests publish over HTTP and compare. The last scenarios use a page on
//! another origin instead (`e2e::other_origin`, hook `window.xo`), its
//! origin allowed by `http.cors` or not. Scenarios run one at a time
//! (each drives a Chromium and often a whole cluster on a small machine),
//! and each is bounded to a minute.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use e2e::check::assert_delivered;
use e2e::cluster::{Cluster, Outcome, Published, publish, publish_numbered};
use e2e::metrics::open_streams;
use e2e::nginx::Nginx;
use e2e::other_origin::OtherOrigin;
use e2e::process::{Service, binary};
use e2e::unique_prefix;
use serde_json::{Value, json};
use testkit::Browser;
use tokio_util::sync::CancellationToken;

/// The most any scenario may take, start to end: a browser test must
/// never hang CI.
const SCENARIO_LIMIT: Duration = Duration::from_secs(60);

/// How long the page gets to reach a state it is expected to reach.
const PAGE_PATIENCE: Duration = Duration::from_secs(20);

/// The browser's reconnect delay in these tests (`stream.retry_ms`): short,
/// so reconnects do not dominate the run time.
const RETRY_MS: &str = "300";

/// Runs one scenario after every other one of this file has finished,
/// within [`SCENARIO_LIMIT`].
async fn scenario(test: impl Future<Output = ()>) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    // Builds the binaries (once per process) outside the time limit.
    binary("event-stream");
    tokio::time::timeout(SCENARIO_LIMIT, test)
        .await
        .expect("the scenario took more than a minute");
}

/// Where the live page records what it received (its test hook).
const LIVE_PAGE: &str = "window.esReceived";

/// Where the page on another origin records it (`e2e::other_origin`).
const OTHER_PAGE: &str = "window.xo.received";

/// One event as the page recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    id: String,
    kind: String,
    data: String,
}

/// Everything the page has received so far, in order.
async fn received(browser: &Browser) -> Vec<Received> {
    received_in(browser, LIVE_PAGE).await
}

/// The events in the page's array `events` (`{id, type, data}` each).
async fn received_in(browser: &Browser, events: &str) -> Vec<Received> {
    let Value::Array(events) = browser.eval(events).await else {
        panic!("the page has no {events}");
    };
    events
        .iter()
        .map(|event| Received {
            id: event["id"].as_str().unwrap_or_default().to_owned(),
            kind: event["type"].as_str().unwrap_or_default().to_owned(),
            data: event["data"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// The data of the events other than `reset` in the page's array
/// `events`, in order.
async fn messages_in(browser: &Browser, events: &str) -> Vec<String> {
    received_in(browser, events)
        .await
        .into_iter()
        .filter(|event| event.kind != "reset")
        .map(|event| event.data)
        .collect()
}

/// What the page says about its connection, for failure messages.
async fn page_state(browser: &Browser) -> String {
    browser
        .eval("JSON.stringify({state: window.esState, reconnects: window.esReconnects, received: window.esReceived.length})")
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The page's address on `base` following `topic`, listening to `types`;
/// `from_start` makes it ask for the topic's retained history.
fn page_url(base: &str, topic: &str, types: &str, from_start: bool) -> String {
    let mut url = format!("{base}/?topics={topic}&types={types}");
    if from_start {
        url.push_str("&lastEventId=0-0");
    }
    url
}

/// Waits until the page's EventSource is OPEN, or fails the test.
async fn assert_open(browser: &Browser, why: &str) {
    assert!(
        browser
            .wait_for("window.esState === 'OPEN'", PAGE_PATIENCE)
            .await,
        "the page did not end OPEN {why}: {}",
        page_state(browser).await
    );
}

/// Waits until the page has received every message of `published.stored`.
async fn assert_all_arrive(browser: &Browser, published: &Published, why: &str) {
    assert_all_arrive_in(browser, LIVE_PAGE, published, why).await;
}

/// The same for the page's array `events`.
async fn assert_all_arrive_in(browser: &Browser, events: &str, published: &Published, why: &str) {
    let expected = serde_json::to_string(&published.stored).unwrap();
    let condition = format!(
        "(() => {{ const seen = new Set({events}.map(e => e.data)); \
         return {expected}.every(m => seen.has(m)); }})()"
    );
    let arrived = browser.wait_for(&condition, PAGE_PATIENCE).await;
    let got = messages_in(browser, events).await;
    let state = state_of(browser, events).await;
    assert!(
        arrived,
        "{why}: {} of {} acknowledged events reached the page; page: {state}",
        published.stored.iter().filter(|m| got.contains(m)).count(),
        published.stored.len(),
    );
    assert_delivered("the page", &got, published);
}

/// What the page holding the array `events` says about its connection,
/// for failure messages.
async fn state_of(browser: &Browser, events: &str) -> String {
    if events == LIVE_PAGE {
        page_state(browser).await
    } else {
        other_page_state(browser).await
    }
}

/// Waits until the page's array `events` holds as many events as
/// `expected`, saves the screenshot, and asserts they are exactly those.
async fn assert_received_exactly(browser: &Browser, events: &str, expected: &[Received]) {
    let arrived = browser
        .wait_for(
            &format!("{events}.length >= {}", expected.len()),
            PAGE_PATIENCE,
        )
        .await;
    browser.screenshot().await;
    assert!(arrived, "page: {}", state_of(browser, events).await);
    assert_eq!(received_in(browser, events).await, expected);
}

/// Waits until the page has been refused at least once (it reconnected,
/// or gave up), or fails the test.
async fn assert_refused(browser: &Browser) {
    assert!(
        browser
            .wait_for(
                "window.esReconnects > 0 || window.esState === 'CLOSED'",
                PAGE_PATIENCE
            )
            .await,
        "the page was never refused: {}",
        page_state(browser).await
    );
}

/// Asserts that no event id appears twice in the page's array `events`.
async fn assert_no_id_twice(browser: &Browser, events: &str) {
    let ids: Vec<String> = received_in(browser, events)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an id arrived twice");
}

/// Publishes `message` to `topic` at `base` as JSON, asserts the 201, and
/// returns the event's id.
async fn publish_expecting_201(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    message: &str,
) -> String {
    let response = client
        .post(format!("{base}/event-stream"))
        .json(&json!({"message": message, "topic": topic}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "publishing {message:?}");
    response.headers()["x-event-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Publishes `message` as event type `kind` with the page's own form and
/// returns the answer the page recorded: `{status, body}`.
async fn publish_from_form(browser: &Browser, kind: &str, message: &str) -> Value {
    let form = browser.client();
    browser.eval("(window.esLastPublish = null)").await;
    for (id, value) in [("message", message), ("publish-type", kind)] {
        let element = form
            .find(fantoccini::Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"));
        element.clear().await.unwrap();
        element.send_keys(value).await.unwrap();
    }
    // The topic field starts as the first followed topic.
    form.find(fantoccini::Locator::Id("publish-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        browser
            .wait_for("window.esLastPublish !== null", PAGE_PATIENCE)
            .await,
        "the form got no answer to publishing type {kind}"
    );
    browser.eval("window.esLastPublish").await
}

/// Publishes `<n>` to `topic` through `base` every 20 ms until stopped;
/// returns the record.
fn publish_continuously(
    client: reqwest::Client,
    base: String,
    topic: String,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Published> {
    tokio::spawn(async move {
        let mut published = Published::default();
        let mut n = 0;
        while !stop.is_cancelled() {
            let message = format!("m{n}");
            let outcome = publish(&client, &base, &topic, &message).await;
            published.record(message, outcome);
            n += 1;
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        published
    })
}

fn address(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Redis, ingest, two gateways (with `extra` settings) and nginx in front.
async fn front_door(extra: &[(&str, &str)]) -> (Cluster, Nginx) {
    let mut settings = vec![("ES__STREAM__RETRY_MS", RETRY_MS)];
    settings.extend_from_slice(extra);
    let cluster = Cluster::start(2, &settings).await;
    let gateways: Vec<String> = cluster.gateway_urls().iter().map(|u| address(u)).collect();
    let nginx = Nginx::start(&[address(&cluster.ingest.url())], &gateways).await;
    (cluster, nginx)
}

/// Kills every gateway, publishes `during-<n>` through ingest while none
/// runs, keeps them down for 3 s, and waits until they are all back.
async fn every_gateway_down_for_three_seconds(
    cluster: &mut Cluster,
    topic: &str,
    published: &mut Published,
) {
    for gateway in &mut cluster.gateways {
        gateway.kill();
    }
    cluster
        .publish_numbered(topic, "during", 5, published)
        .await;
    // The outage itself: nginx has no gateway for this long, and a page
    // retries into it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for gateway in &mut cluster.gateways {
        gateway.restart();
    }
    cluster.wait_ready().await;
}

/// The gateway holding the page's one stream.
async fn serving_gateway(cluster: &Cluster) -> usize {
    let deadline = tokio::time::Instant::now() + PAGE_PATIENCE;
    loop {
        let mut counts = Vec::new();
        for gateway in &cluster.gateways {
            counts.push(
                open_streams(&cluster.client, &gateway.url())
                    .await
                    .unwrap_or(0),
            );
        }
        if counts.iter().sum::<u64>() == 1 {
            return counts.iter().position(|&count| count == 1).unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single gateway holds the page's stream: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The standalone binary, over its in-memory bus.
fn standalone() -> Service {
    standalone_with(&[])
}

/// The standalone binary, ready, and a browser `name` with the live page
/// open and OPEN on it, following a fresh topic (returned) for `types`.
async fn page_on_standalone(name: &str, types: &str) -> (Service, Browser, String) {
    let service = standalone();
    service.wait_ready().await;
    let browser = Browser::start(name).await;
    let topic = unique_prefix();
    browser
        .open(&page_url(&service.url(), &topic, types, false))
        .await;
    assert_open(&browser, "on the standalone binary").await;
    (service, browser, topic)
}

/// [`front_door`] with no extra settings, and a browser `name` with the
/// live page open and OPEN through nginx, following a fresh topic (returned).
async fn page_through_nginx(name: &str) -> (Cluster, Nginx, Browser, String) {
    let (cluster, nginx) = front_door(&[]).await;
    let browser = Browser::start(name).await;
    let topic = unique_prefix();
    browser
        .open(&page_url(&nginx.url(), &topic, "message", false))
        .await;
    assert_open(&browser, "through nginx").await;
    (cluster, nginx, browser, topic)
}

#[tokio::test]
async fn tricky_messages_reach_the_page_exactly_as_published() {
    scenario(async {
        let (service, browser, topic) = page_on_standalone("tricky_messages", "message").await;
        // The page's inline style passed its policy's hash.
        assert_eq!(
            browser
                .eval("getComputedStyle(document.querySelector('section')).borderTopLeftRadius")
                .await,
            "8px"
        );

        let tricky = [
            "two\nlines",
            "windows\r\nline end",
            "old mac\rline end",
            "\nstarts with a newline",
            "ends with a newline\n",
            "  leading and trailing spaces  ",
            "   ",
            "\ttab first",
            "emoji 🎉👩‍💻, é, ß, Ω, 中文, \u{2028} line separator",
            "\u{feff}starts with a byte order mark",
            "data: injected\n\nevent: reset\nid: 9-9\nretry: 1",
            ": a comment line\ndata:no space",
            "<img src=x onerror=\"window.esPwned=1\">",
            "<script>window.esPwned=2</script><b>bold?</b>",
            "&lt;entity&gt; &amp; \"quotes\" 'single'",
        ];
        let client = reqwest::Client::new();
        let mut expected = Vec::new();
        for message in tricky {
            let id = publish_expecting_201(&client, &service.url(), &topic, message).await;
            expected.push(Received {
                id,
                kind: "message".to_owned(),
                // SSE has one line break: CRLF and CR arrive as LF.
                data: message.replace("\r\n", "\n").replace('\r', "\n"),
            });
        }

        assert_received_exactly(&browser, LIVE_PAGE, &expected).await;

        // What the page shows is the same text, not markup.
        let shown = browser
            .eval("Array.from(document.querySelectorAll('#events li pre'), pre => pre.textContent).reverse()")
            .await;
        let data: Vec<&str> = expected.iter().map(|event| event.data.as_str()).collect();
        assert_eq!(shown, json!(data));
        assert_eq!(
            browser
                .eval("[window.esPwned === undefined, document.querySelectorAll('#events img, #events script, #events b').length]")
                .await,
            json!([true, 0]),
            "event data was run or rendered as HTML"
        );
    })
    .await;
}

#[tokio::test]
async fn the_pages_publish_form_publishes_and_the_event_shows_up() {
    scenario(async {
        let (_service, browser, _topic) =
            page_on_standalone("publish_form", "message,greeting").await;

        let message = "hello from the form\n  indented, with é and 🎉";
        let answer = publish_from_form(&browser, "greeting", message).await;
        assert_eq!(answer["status"], 201, "{answer}");
        let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        assert_eq!(body, json!({"status": "success", "data": message}));

        assert!(
            browser
                .wait_for("window.esReceived.length >= 1", PAGE_PATIENCE)
                .await,
            "the published event never showed up: {}",
            page_state(&browser).await
        );
        browser.screenshot().await;
        let events = received(&browser).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, "greeting");
        assert_eq!(events[0].data, message);
        let shown = browser
            .eval("document.querySelector('#answer').textContent")
            .await;
        assert!(
            shown.as_str().unwrap().starts_with("201"),
            "the page shows {shown}"
        );
    })
    .await;
}

#[tokio::test]
async fn spoofed_control_types_from_the_form_get_400_and_never_arrive() {
    scenario(async {
        let (_service, browser, _topic) =
            page_on_standalone("spoofed_types", "message,error,open,reset").await;

        for kind in ["error", "open", "reset"] {
            let answer = publish_from_form(&browser, kind, "spoofed").await;
            assert_eq!(answer["status"], 400, "event type {kind}: {answer}");
            let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["status"], "fail", "event type {kind}: {body}");
        }
        let answer = publish_from_form(&browser, "message", "after the spoofs").await;
        assert_eq!(answer["status"], 201, "{answer}");
        assert!(
            browser
                .wait_for(
                    "window.esReceived.some(e => e.data === 'after the spoofs')",
                    PAGE_PATIENCE
                )
                .await,
            "the ordinary event never arrived: {}",
            page_state(&browser).await
        );
        browser.screenshot().await;
        let events = received(&browser).await;
        assert_eq!(events.len(), 1, "a spoofed event arrived: {events:?}");
        assert_eq!(browser.eval("window.esState").await, "OPEN");
    })
    .await;
}

#[tokio::test]
async fn the_page_reconnects_through_nginx_across_a_gateway_sigterm_and_a_sigkill() {
    scenario(async {
        let (mut cluster, nginx, browser, topic) =
            page_through_nginx("gateway_sigterm_sigkill").await;

        let stop = CancellationToken::new();
        let publisher = publish_continuously(
            cluster.client.clone(),
            nginx.url(),
            topic.clone(),
            stop.clone(),
        );
        for signal in ["TERM", "KILL"] {
            let before = received(&browser).await.len();
            let reconnects = browser.eval("window.esReconnects").await;
            let serving = serving_gateway(&cluster).await;
            let gateway = &mut cluster.gateways[serving];
            if signal == "TERM" {
                assert!(gateway.terminate().await.success(), "SIGTERM exit status");
            } else {
                gateway.kill();
            }
            let resumed = browser
                .wait_for(
                    &format!(
                        "window.esReconnects > {reconnects} && window.esState === 'OPEN' \
                         && window.esReceived.length > {before} + 10"
                    ),
                    PAGE_PATIENCE,
                )
                .await;
            assert!(
                resumed,
                "after SIG{signal} of its gateway the page did not resume: {}",
                page_state(&browser).await
            );
            gateway.restart();
            gateway.wait_ready().await;
        }
        stop.cancel();
        let published = publisher.await.unwrap();
        assert!(
            published.refused.is_empty(),
            "publishes were refused: {:?}",
            published.refused.first()
        );
        assert_all_arrive(&browser, &published, "across SIGTERM and SIGKILL").await;
        browser.screenshot().await;
        assert_no_id_twice(&browser, LIVE_PAGE).await;
    })
    .await;
}

#[tokio::test]
async fn the_page_comes_back_by_itself_after_its_server_is_killed_and_restarted() {
    // Passes without the transient-refusal rule: a server that is gone is a
    // network error, which EventSource always retries. The restarted
    // standalone binary has lost its in-memory history, so the page gets a
    // `reset` before the new events.
    scenario(async {
        let (mut service, browser, topic) =
            page_on_standalone("standalone_restart", "message").await;
        let client = reqwest::Client::new();
        let mut published = Published::default();
        publish_numbered(&client, &service.url(), &topic, "before", 3, &mut published).await;
        assert_all_arrive(&browser, &published, "before the restart").await;

        service.kill();
        assert!(
            browser
                .wait_for("window.esState === 'CONNECTING'", PAGE_PATIENCE)
                .await,
            "the page did not notice its server was gone: {}",
            page_state(&browser).await
        );
        service.restart();
        service.wait_ready().await;
        assert_open(&browser, "after the restart").await;
        let mut after = Published::default();
        publish_numbered(&client, &service.url(), &topic, "after", 3, &mut after).await;
        let condition = "window.esReceived.some(e => e.data === 'after-2')";
        let arrived = browser.wait_for(condition, PAGE_PATIENCE).await;
        browser.screenshot().await;
        assert!(arrived, "page: {}", page_state(&browser).await);
        let events = received(&browser).await;
        let kinds_and_data: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.data.as_str()))
            .filter(|(kind, _)| *kind != "reset")
            .collect();
        assert_eq!(
            kinds_and_data,
            [
                "before-0", "before-1", "before-2", "after-0", "after-1", "after-2"
            ]
            .map(|data| ("message", data))
        );
        // History was lost with the process: the page is told, before
        // anything of the new history.
        let reset = events.iter().position(|e| e.kind == "reset");
        let first_after = events.iter().position(|e| e.data == "after-0").unwrap();
        assert!(
            reset.is_some_and(|reset| reset > 2 && reset < first_after),
            "no reset between the old and the new history: {events:?}"
        );
    })
    .await;
}

// The outages below need the transient-refusal rule (a refused GET
// /event-stream is a `200 text/event-stream` with `retry:` that ends at
// once, never a non-200 that makes EventSource give up).

#[tokio::test]
async fn the_page_survives_every_gateway_down_for_three_seconds() {
    scenario(async {
        let (mut cluster, _nginx, browser, topic) = page_through_nginx("every_gateway_down").await;
        let mut published = Published::default();
        cluster
            .publish_numbered(&topic, "before", 5, &mut published)
            .await;
        assert_all_arrive(&browser, &published, "before the outage").await;

        every_gateway_down_for_three_seconds(&mut cluster, &topic, &mut published).await;
        assert_open(&browser, "after every gateway came back").await;
        cluster
            .publish_numbered(&topic, "after", 5, &mut published)
            .await;
        assert_all_arrive(&browser, &published, "after the outage").await;
        browser.screenshot().await;
    })
    .await;
}

#[tokio::test]
async fn the_page_survives_every_gateway_full_while_it_opens() {
    scenario(async {
        let (cluster, nginx) = front_door(&[("ES__STREAM__MAX_STREAMS", "1")]).await;
        // Another client takes each gateway's one slot (a client without a
        // timeout: the streams stay open until dropped).
        let other_client = reqwest::Client::new();
        let mut holders = Vec::new();
        for gateway in &cluster.gateways {
            let response = other_client
                .get(format!("{}/event-stream?topic=elsewhere", gateway.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "taking {}'s slot", gateway.url());
            holders.push(response);
        }
        let browser = Browser::start("every_gateway_full").await;
        let topic = unique_prefix();
        let mut published = Published::default();
        cluster
            .publish_numbered(&topic, "before", 3, &mut published)
            .await;
        // From the topic's start: what was published before the page could
        // connect is owed to it too.
        browser
            .open(&page_url(&nginx.url(), &topic, "message", true))
            .await;
        assert_refused(&browser).await;
        cluster
            .publish_numbered(&topic, "during", 3, &mut published)
            .await;
        drop(holders);
        assert_open(&browser, "after the slots were freed").await;
        cluster
            .publish_numbered(&topic, "after", 3, &mut published)
            .await;
        assert_all_arrive(&browser, &published, "after the gateways had room").await;
        browser.screenshot().await;
    })
    .await;
}

#[tokio::test]
async fn the_page_survives_redis_down_while_it_opens() {
    scenario(async {
        let (mut cluster, nginx) = front_door(&[]).await;
        let browser = Browser::start("redis_down_while_opening").await;
        let topic = unique_prefix();
        let mut before = Published::default();
        cluster
            .publish_numbered(&topic, "before", 3, &mut before)
            .await;

        cluster.redis.kill();
        // Every gateway knows Redis is gone before the page asks.
        for gateway in &cluster.gateways {
            let url = format!("{}/readyz", gateway.url());
            let client = &cluster.client;
            assert!(
                e2e::wait_until(PAGE_PATIENCE, || async {
                    client
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|response| response.status() == 503)
                })
                .await,
                "{url} never noticed Redis was down"
            );
        }
        browser
            .open(&page_url(&nginx.url(), &topic, "message", true))
            .await;
        assert_refused(&browser).await;
        let mut during = Published::default();
        cluster
            .publish_numbered(&topic, "during", 3, &mut during)
            .await;
        cluster.redis.restart();
        cluster.wait_ready().await;
        assert_open(&browser, "after Redis came back").await;
        let mut after = Published::default();
        cluster
            .publish_numbered(&topic, "after", 3, &mut after)
            .await;

        // Redis lost everything (no persistence): only what was
        // acknowledged after it came back is owed; nothing may be doubled.
        let mut published = Published::default();
        for record in [&before, &during, &after] {
            published.attempted.extend(record.attempted.iter().cloned());
        }
        published.stored = after.stored.clone();
        assert_eq!(
            published.stored.len(),
            3,
            "publishes after Redis came back were refused: {:?}",
            after.refused
        );
        assert_all_arrive(&browser, &published, "after Redis came back").await;
        browser.screenshot().await;
    })
    .await;
}

// A page on another origin (`e2e::other_origin`: `http://localhost:<port>`,
// while the services are `http://127.0.0.1:<port>`), with its own
// EventSource and fetch, allowed by `http.cors` or not.

/// What the page on another origin says about its EventSource and its
/// publishes, for failure messages.
async fn other_page_state(browser: &Browser) -> String {
    browser
        .eval(
            "JSON.stringify({readyState: window.xo.source.readyState, opens: window.xo.opens, \
             errors: window.xo.errors, received: window.xo.received.length, \
             publishes: window.xo.publishes})",
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The page on another origin's `EventSource.readyState`.
async fn ready_state(browser: &Browser) -> Value {
    browser.eval("window.xo.source.readyState").await
}

/// Waits until the page on another origin's EventSource is OPEN.
async fn assert_other_page_open(browser: &Browser, why: &str) {
    assert!(
        browser
            .wait_for("window.xo.source.readyState === 1", PAGE_PATIENCE)
            .await,
        "the page on another origin did not end OPEN {why}: {}",
        other_page_state(browser).await
    );
}

/// Publishes `message` from the page on another origin (`form`: as a form,
/// without a preflight; otherwise as JSON) and returns the outcome it
/// recorded: `{status, eventId, body}`, or `{error}` when fetch failed.
async fn publish_from_other_page(browser: &Browser, message: &str, form: bool) -> Value {
    let before = browser.eval("window.xo.publishes.length").await;
    let message = serde_json::to_string(message).unwrap();
    browser
        .eval(&format!("(window.xoPublish({message}, {form}), true)"))
        .await;
    assert!(
        browser
            .wait_for(
                &format!("window.xo.publishes.length > {before}"),
                PAGE_PATIENCE
            )
            .await,
        "publishing {message} from the page on another origin got no outcome"
    );
    browser.eval("window.xo.publishes.at(-1)").await
}

/// How many `method` requests to `/event-stream` the service at `base` has
/// answered with `status`, from its `/metrics`.
async fn answered(client: &reqwest::Client, base: &str, method: &str, status: u16) -> u64 {
    let text = e2e::metrics::text(client, base).await.unwrap();
    text.lines()
        .filter(|line| {
            line.starts_with("es_http_request_duration_seconds_count{")
                && line.contains("route=\"/event-stream\"")
                && line.contains(&format!("method=\"{method}\""))
                && line.contains(&format!("status=\"{status}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Everything `topic` holds at `base`, read from its start by a plain HTTP
/// subscriber (no browser, no CORS) up to and including `last`.
async fn history_up_to(base: &str, topic: &str, last: &str) -> Vec<String> {
    let response = reqwest::Client::new()
        .get(format!("{base}/event-stream?topic={topic}&lastEventId=0-0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = sse_reader::SseStream::new(response);
    let mut data = Vec::new();
    while data.last().is_none_or(|seen| seen != last) {
        let event = stream
            .next_event_timeout(PAGE_PATIENCE)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{last:?} never arrived; before it: {data:?}"));
        if event.event != "reset" {
            data.push(event.data);
        }
    }
    data
}

/// The standalone binary with `settings` on top of the tests' retry delay.
fn standalone_with(settings: &[(&str, &str)]) -> Service {
    let mut env = vec![("ES__STREAM__RETRY_MS".to_owned(), RETRY_MS.to_owned())];
    env.extend(
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Service::start("event-stream", &env)
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_receives_exactly_and_publishes_through_a_preflight() {
    scenario(async {
        let page = OtherOrigin::start();
        let origin = page.origin();
        let service = standalone_with(&[("ES__HTTP__CORS__ALLOWED_ORIGINS", &origin)]);
        service.wait_ready().await;
        let browser = Browser::start("other_origin_allowed").await;
        let topic = unique_prefix();
        browser
            .open(&page.page_url(&service.url(), &topic, false))
            .await;
        assert_eq!(browser.eval("location.origin").await, origin.as_str());
        assert_other_page_open(&browser, "with its origin allowed").await;

        let client = reqwest::Client::new();
        let mut expected = Vec::new();
        for message in [
            "two\nlines",
            "  leading spaces",
            "emoji 🎉, é, 中文",
            "data: injected\n\nevent: reset",
        ] {
            expected.push(Received {
                id: publish_expecting_201(&client, &service.url(), &topic, message).await,
                kind: "message".to_owned(),
                data: message.to_owned(),
            });
        }
        // From the page itself: JSON, so the browser sends a preflight
        // first; the id comes from X-Event-Id, readable because exposed.
        for message in ["from the page", "from the page\n  again"] {
            let outcome = publish_from_other_page(&browser, message, false).await;
            assert_eq!(outcome["status"], 201, "{outcome}");
            let body: Value = serde_json::from_str(outcome["body"].as_str().unwrap()).unwrap();
            assert_eq!(body, json!({"status": "success", "data": message}));
            let id = outcome["eventId"]
                .as_str()
                .unwrap_or_else(|| panic!("X-Event-Id was not readable: {outcome}"));
            expected.push(Received {
                id: id.to_owned(),
                kind: "message".to_owned(),
                data: message.to_owned(),
            });
        }
        assert!(
            answered(&client, &service.url(), "OPTIONS", 200).await >= 1,
            "the browser sent no preflight, or it was not answered 200"
        );

        assert_received_exactly(&browser, OTHER_PAGE, &expected).await;
        assert_eq!(
            browser
                .eval("[window.xo.source.readyState, window.xo.errors]")
                .await,
            json!([1, 0])
        );
    })
    .await;
}

#[tokio::test]
async fn a_page_on_a_refused_origin_receives_nothing_and_publishes_nothing() {
    scenario(async {
        let page = OtherOrigin::start();
        // No http.cors: only the service's own origin is served to pages.
        let service = standalone();
        service.wait_ready().await;
        let client = reqwest::Client::new();
        let topic = unique_prefix();
        // Retained before the page opens, and the page asks for the
        // topic's start: any answer the browser let through would carry it.
        let outcome = publish(&client, &service.url(), &topic, "before the page").await;
        assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");

        let browser = Browser::start("other_origin_refused").await;
        browser
            .open(&format!(
                "{}&lastEventId=0-0",
                page.page_url(&service.url(), &topic, false)
            ))
            .await;
        assert!(
            browser
                .wait_for(
                    "window.xo.source.readyState === 2 || window.xo.errors >= 3",
                    PAGE_PATIENCE
                )
                .await,
            "the EventSource neither closed nor kept failing: {}",
            other_page_state(&browser).await
        );
        // Chromium takes a CORS failure as fatal: the EventSource closes
        // after one error, having never opened, and does not retry.
        assert_eq!(
            browser
                .eval("[window.xo.source.readyState, window.xo.opens, window.xo.errors, window.xo.received.length]")
                .await,
            json!([2, 0, 1, 0]),
            "page: {}",
            other_page_state(&browser).await
        );

        // JSON needs a preflight, which is refused: the POST is never sent.
        let json_publish = publish_from_other_page(&browser, "json from a refused origin", false).await;
        // A form is sent without one, and refused by the service (403).
        let form_publish = publish_from_other_page(&browser, "form from a refused origin", true).await;
        browser.screenshot().await;
        for outcome in [&json_publish, &form_publish] {
            assert!(
                outcome["error"].as_str().is_some_and(|e| e.contains("TypeError")),
                "the page saw an answer: {outcome}"
            );
        }
        assert_eq!(
            answered(&client, &service.url(), "OPTIONS", 405).await,
            1,
            "the preflight was not refused"
        );
        assert_eq!(
            answered(&client, &service.url(), "POST", 403).await,
            1,
            "the form was not refused"
        );
        let outcome = publish(&client, &service.url(), &topic, "after the page").await;
        assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
        assert_eq!(
            history_up_to(&service.url(), &topic, "after the page").await,
            ["before the page", "after the page"],
            "a publish from the refused origin got through"
        );
        assert_eq!(ready_state(&browser).await, 2);
        assert_eq!(browser.eval("window.xo.received.length").await, 0);
    })
    .await;
}

#[tokio::test]
async fn a_credentialed_event_source_works_when_credentials_are_allowed() {
    scenario(async {
        let page = OtherOrigin::start();
        let origin = page.origin();
        let with_credentials = standalone_with(&[
            ("ES__HTTP__CORS__ALLOWED_ORIGINS", &origin),
            ("ES__HTTP__CORS__ALLOW_CREDENTIALS", "true"),
        ]);
        // The same origin listed, credentials not allowed: the control.
        let without = standalone_with(&[("ES__HTTP__CORS__ALLOWED_ORIGINS", &origin)]);
        with_credentials.wait_ready().await;
        without.wait_ready().await;
        let client = reqwest::Client::new();
        let topic = unique_prefix();

        let browser = Browser::start("other_origin_credentials").await;
        browser
            .open(&page.page_url(&with_credentials.url(), &topic, true))
            .await;
        assert_eq!(browser.eval("window.xo.source.withCredentials").await, true);
        assert_other_page_open(&browser, "with credentials allowed").await;
        let outcome = publish_from_other_page(&browser, "with credentials", false).await;
        assert_eq!(outcome["status"], 201, "{outcome}");
        let mut published = Published::default();
        publish_numbered(
            &client,
            &with_credentials.url(),
            &topic,
            "direct",
            2,
            &mut published,
        )
        .await;
        let mut expected = Published::default();
        expected.record(
            "with credentials".to_owned(),
            Outcome::Stored(String::new()),
        );
        for message in published.stored {
            expected.record(message, Outcome::Stored(String::new()));
        }
        assert_all_arrive_in(&browser, OTHER_PAGE, &expected, "with credentials").await;
        browser.screenshot().await;
        assert_eq!(
            messages_in(&browser, OTHER_PAGE).await,
            ["with credentials", "direct-0", "direct-1"]
        );

        // Without Access-Control-Allow-Credentials the browser refuses a
        // credentialed answer, however exact the origin.
        browser
            .open(&page.page_url(&without.url(), &topic, true))
            .await;
        assert!(
            browser
                .wait_for("window.xo.errors >= 1", PAGE_PATIENCE)
                .await,
            "a credentialed EventSource opened without credentials allowed: {}",
            other_page_state(&browser).await
        );
        let outcome = publish_from_other_page(&browser, "credentials not allowed", false).await;
        assert!(
            outcome["error"]
                .as_str()
                .is_some_and(|e| e.contains("TypeError")),
            "{outcome}"
        );
        assert_eq!(
            browser
                .eval("[window.xo.source.readyState, window.xo.opens, window.xo.received.length]")
                .await,
            json!([2, 0, 0])
        );
    })
    .await;
}

#[tokio::test]
async fn a_page_on_another_origin_survives_every_gateway_down_through_nginx() {
    scenario(async {
        let page = OtherOrigin::start();
        let origin = page.origin();
        // Credentials too: nginx's own answer must then satisfy the
        // stricter check (the exact origin, and credentials allowed).
        let (mut cluster, nginx) = front_door(&[
            ("ES__HTTP__CORS__ALLOWED_ORIGINS", &origin),
            ("ES__HTTP__CORS__ALLOW_CREDENTIALS", "true"),
        ])
        .await;
        let browser = Browser::start("other_origin_every_gateway_down").await;
        let topic = unique_prefix();
        browser
            .open(&page.page_url(&nginx.url(), &topic, true))
            .await;
        assert_other_page_open(&browser, "through nginx").await;

        // Through the front door too, a preflighted publish from the page.
        let mut published = Published::default();
        let outcome = publish_from_other_page(&browser, "from the page", false).await;
        assert_eq!(outcome["status"], 201, "{outcome}");
        published.record("from the page".to_owned(), Outcome::Stored(String::new()));
        cluster
            .publish_numbered(&topic, "before", 4, &mut published)
            .await;
        assert_all_arrive_in(&browser, OTHER_PAGE, &published, "before the outage").await;

        every_gateway_down_for_three_seconds(&mut cluster, &topic, &mut published).await;
        assert_other_page_open(&browser, "after every gateway came back").await;
        cluster
            .publish_numbered(&topic, "after", 5, &mut published)
            .await;
        assert_all_arrive_in(&browser, OTHER_PAGE, &published, "after the outage").await;
        browser.screenshot().await;

        // The page met nginx's own answer (a 200 stream after the last
        // gateway's failure) and took it as a retry, not a CORS failure.
        // nginx logs the path without its query (a token could be there);
        // this page is the only client of this nginx's streams.
        let log = nginx.log();
        let retries = log
            .lines()
            .filter(|line| {
                line.contains("\"GET /event-stream HTTP/1.1\"")
                    && line.contains("\" 200 ")
                    && line.contains("upstream_status=50")
            })
            .count();
        assert!(
            retries >= 1,
            "the page never met @stream_retry; nginx log:\n{log}"
        );
        assert_eq!(
            ready_state(&browser).await,
            1,
            "page: {}",
            other_page_state(&browser).await
        );
        assert_no_id_twice(&browser, OTHER_PAGE).await;
    })
    .await;
}
