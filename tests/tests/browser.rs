//! The live page (`/`) in real headless Chromium: what a browser's own
//! EventSource receives from the real binaries, directly and through
//! nginx, across restarts and outages.
//!
//! Each test is one scenario and saves a screenshot of the page as
//! `target/browser-artifacts/<test>.png`. The page records what it
//! received in `window.esReceived` (its test hook, see its `app.js`); the
//! tests publish over HTTP and compare. Scenarios run one at a time (each
//! drives a Chromium and often a whole cluster on a small machine), and
//! each is bounded to a minute.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use e2e::check::assert_delivered;
use e2e::cluster::{Cluster, Published, publish};
use e2e::nginx::Nginx;
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

/// One event as the page recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    id: String,
    kind: String,
    data: String,
}

/// Everything the page has received so far, in order.
async fn received(browser: &Browser) -> Vec<Received> {
    let Value::Array(events) = browser.eval("window.esReceived").await else {
        panic!("the page has no window.esReceived");
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

/// The data of the page's events other than `reset`, in order.
async fn messages(browser: &Browser) -> Vec<String> {
    received(browser)
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
    let expected = serde_json::to_string(&published.stored).unwrap();
    let condition = format!(
        "(() => {{ const seen = new Set(window.esReceived.map(e => e.data)); \
         return {expected}.every(m => seen.has(m)); }})()"
    );
    let arrived = browser.wait_for(&condition, PAGE_PATIENCE).await;
    let got = messages(browser).await;
    assert!(
        arrived,
        "{why}: {} of {} acknowledged events reached the page; page: {}",
        published.stored.iter().filter(|m| got.contains(m)).count(),
        published.stored.len(),
        page_state(browser).await
    );
    assert_delivered("the page", &got, published);
}

/// Publishes `count` messages `<label>-<n>` to `topic` at `base`.
async fn publish_some(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    label: &str,
    count: usize,
    published: &mut Published,
) {
    for n in 0..count {
        let message = format!("{label}-{n}");
        let outcome = publish(client, base, topic, &message).await;
        published.record(message, outcome);
    }
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

/// The `es_stream_connections` gauge of a gateway, `None` while it is down.
async fn open_streams(client: &reqwest::Client, gateway: &Service) -> Option<u64> {
    let text = client
        .get(format!("{}/metrics", gateway.url()))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("es_stream_connections "))
        .and_then(|value| value.trim().parse().ok())
}

/// The gateway holding the page's one stream.
async fn serving_gateway(cluster: &Cluster) -> usize {
    let deadline = tokio::time::Instant::now() + PAGE_PATIENCE;
    loop {
        let mut counts = Vec::new();
        for gateway in &cluster.gateways {
            counts.push(open_streams(&cluster.client, gateway).await.unwrap_or(0));
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
    Service::start(
        "event-stream",
        &[("ES__STREAM__RETRY_MS".to_owned(), RETRY_MS.to_owned())],
    )
}

#[tokio::test]
async fn tricky_messages_reach_the_page_exactly_as_published() {
    scenario(async {
        let service = standalone();
        service.wait_ready().await;
        let browser = Browser::start("tricky_messages").await;
        let topic = unique_prefix();
        browser
            .open(&page_url(&service.url(), &topic, "message", false))
            .await;
        assert_open(&browser, "on the standalone binary").await;
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
            let response = client
                .post(format!("{}/event-stream", service.url()))
                .json(&json!({"message": message, "topic": topic}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "publishing {message:?}");
            let id = response.headers()["x-event-id"].to_str().unwrap().to_owned();
            expected.push(Received {
                id,
                kind: "message".to_owned(),
                // SSE has one line break: CRLF and CR arrive as LF.
                data: message.replace("\r\n", "\n").replace('\r', "\n"),
            });
        }

        let all_arrived = browser
            .wait_for(
                &format!("window.esReceived.length >= {}", expected.len()),
                PAGE_PATIENCE,
            )
            .await;
        browser.screenshot().await;
        assert!(all_arrived, "page: {}", page_state(&browser).await);
        assert_eq!(received(&browser).await, expected);

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
        let service = standalone();
        service.wait_ready().await;
        let browser = Browser::start("publish_form").await;
        let topic = unique_prefix();
        browser
            .open(&page_url(&service.url(), &topic, "message,greeting", false))
            .await;
        assert_open(&browser, "on the standalone binary").await;

        let message = "hello from the form\n  indented, with é and 🎉";
        let form = browser.client();
        let field = |id: &'static str| async move {
            let element = form
                .find(fantoccini::Locator::Id(id))
                .await
                .unwrap_or_else(|e| panic!("no #{id}: {e}"));
            element.clear().await.unwrap();
            element
        };
        field("message").await.send_keys(message).await.unwrap();
        field("publish-type")
            .await
            .send_keys("greeting")
            .await
            .unwrap();
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
            "the form got no answer"
        );
        let answer = browser.eval("window.esLastPublish").await;
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
        let service = standalone();
        service.wait_ready().await;
        let browser = Browser::start("spoofed_types").await;
        let topic = unique_prefix();
        browser
            .open(&page_url(
                &service.url(),
                &topic,
                "message,error,open,reset",
                false,
            ))
            .await;
        assert_open(&browser, "on the standalone binary").await;

        let publish_from_form = |kind: &'static str, message: &'static str| {
            let browser = &browser;
            async move {
                let client = browser.client();
                browser.eval("(window.esLastPublish = null)").await;
                for (id, value) in [("message", message), ("publish-type", kind)] {
                    let element = client.find(fantoccini::Locator::Id(id)).await.unwrap();
                    element.clear().await.unwrap();
                    element.send_keys(value).await.unwrap();
                }
                client
                    .find(fantoccini::Locator::Id("publish-button"))
                    .await
                    .unwrap()
                    .click()
                    .await
                    .unwrap();
                assert!(
                    browser
                        .wait_for(
                            "window.esLastPublish !== null && window.esLastPublish.status !== 0",
                            PAGE_PATIENCE
                        )
                        .await,
                    "no answer to publishing type {kind}"
                );
                browser.eval("window.esLastPublish").await
            }
        };
        for kind in ["error", "open", "reset"] {
            let answer = publish_from_form(kind, "spoofed").await;
            assert_eq!(answer["status"], 400, "event type {kind}: {answer}");
            let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["status"], "fail", "event type {kind}: {body}");
        }
        let answer = publish_from_form("message", "after the spoofs").await;
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
        let (mut cluster, nginx) = front_door(&[]).await;
        let browser = Browser::start("gateway_sigterm_sigkill").await;
        let topic = unique_prefix();
        browser
            .open(&page_url(&nginx.url(), &topic, "message", false))
            .await;
        assert_open(&browser, "through nginx").await;

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
        let ids: Vec<String> = received(&browser).await.into_iter().map(|e| e.id).collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "an id arrived twice");
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
        let mut service = standalone();
        service.wait_ready().await;
        let browser = Browser::start("standalone_restart").await;
        let topic = unique_prefix();
        browser
            .open(&page_url(&service.url(), &topic, "message", false))
            .await;
        assert_open(&browser, "on the standalone binary").await;
        let client = reqwest::Client::new();
        let mut published = Published::default();
        publish_some(&client, &service.url(), &topic, "before", 3, &mut published).await;
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
        publish_some(&client, &service.url(), &topic, "after", 3, &mut after).await;
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
        let (mut cluster, nginx) = front_door(&[]).await;
        let browser = Browser::start("every_gateway_down").await;
        let topic = unique_prefix();
        browser
            .open(&page_url(&nginx.url(), &topic, "message", false))
            .await;
        assert_open(&browser, "through nginx").await;
        let mut published = Published::default();
        let ingest = cluster.ingest.url();
        publish_some(
            &cluster.client,
            &ingest,
            &topic,
            "before",
            5,
            &mut published,
        )
        .await;
        assert_all_arrive(&browser, &published, "before the outage").await;

        for gateway in &mut cluster.gateways {
            gateway.kill();
        }
        publish_some(
            &cluster.client,
            &ingest,
            &topic,
            "during",
            5,
            &mut published,
        )
        .await;
        // The outage itself: nginx has no gateway for this long, and the
        // page retries into it several times.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for gateway in &mut cluster.gateways {
            gateway.restart();
        }
        cluster.wait_ready().await;
        assert_open(&browser, "after every gateway came back").await;
        publish_some(&cluster.client, &ingest, &topic, "after", 5, &mut published).await;
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
        let ingest = cluster.ingest.url();
        publish_some(
            &cluster.client,
            &ingest,
            &topic,
            "before",
            3,
            &mut published,
        )
        .await;
        // From the topic's start: what was published before the page could
        // connect is owed to it too.
        browser
            .open(&page_url(&nginx.url(), &topic, "message", true))
            .await;
        assert!(
            browser
                .wait_for(
                    "window.esReconnects > 0 || window.esState === 'CLOSED'",
                    PAGE_PATIENCE
                )
                .await,
            "the page was never refused: {}",
            page_state(&browser).await
        );
        publish_some(
            &cluster.client,
            &ingest,
            &topic,
            "during",
            3,
            &mut published,
        )
        .await;
        drop(holders);
        assert_open(&browser, "after the slots were freed").await;
        publish_some(&cluster.client, &ingest, &topic, "after", 3, &mut published).await;
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
        let ingest = cluster.ingest.url();
        let mut before = Published::default();
        publish_some(&cluster.client, &ingest, &topic, "before", 3, &mut before).await;

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
        assert!(
            browser
                .wait_for(
                    "window.esReconnects > 0 || window.esState === 'CLOSED'",
                    PAGE_PATIENCE
                )
                .await,
            "the page was never refused: {}",
            page_state(&browser).await
        );
        let mut during = Published::default();
        publish_some(&cluster.client, &ingest, &topic, "during", 3, &mut during).await;
        cluster.redis.restart();
        cluster.wait_ready().await;
        assert_open(&browser, "after Redis came back").await;
        let mut after = Published::default();
        publish_some(&cluster.client, &ingest, &topic, "after", 3, &mut after).await;

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
