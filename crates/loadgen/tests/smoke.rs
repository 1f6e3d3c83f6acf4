//! Smoke runs of the real `loadgen` binary against the real `event-stream`
//! binary, and against the distributed topology (redis-server, ingest and
//! two stream-gateways): tiny populations for a few seconds, so the load
//! tool keeps working. Nothing here is timed; only counts are asserted.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use loadgen::report::RunReport;

/// The `event-stream` binary on a free loopback port; killed on drop.
struct Hub {
    child: Child,
    port: u16,
}

impl Hub {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(e2e::process::binary("event-stream"))
            .env("ES__HTTP__HOST", "127.0.0.1")
            .env("ES__HTTP__PORT", port.to_string())
            .env("ES__HTTP__WORKERS", "1")
            .env("ES__LOG__LEVEL", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting event-stream");
        let hub = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !hub.healthy() {
            assert!(
                Instant::now() < deadline,
                "event-stream never became healthy"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        // The probe's connection is closed by the hub just after the client
        // saw the end of the answer; wait for its descriptor to go, so the
        // tests' open-file counts start from the hub at rest.
        let fds =
            || std::fs::read_dir(format!("/proc/{}/fd", hub.pid())).map_or(0, Iterator::count);
        let mut last = fds();
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(20));
            let now = fds();
            if now == last {
                break;
            }
            last = now;
        }
        hub
    }

    fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loadgen(args: &[&str]) -> (RunReport, Output) {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--json", "-"])
        .output()
        .expect("running loadgen");
    assert!(
        output.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: RunReport = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "the JSON report does not parse ({error}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (report, output)
}

#[test]
fn a_small_paced_run_delivers_everything_once_and_in_order() {
    let hub = Hub::start();
    let pid = hub.pid().to_string();
    let (report, output) = loadgen(&[
        "--target",
        &hub.url(),
        "-n",
        "20",
        "--topics",
        "2",
        "--rate",
        "40,80",
        "--duration",
        "1s",
        "--settle",
        "200ms",
        "--mem",
        &format!("hub={pid}"),
    ]);
    let human = String::from_utf8_lossy(&output.stderr);
    assert!(
        human.contains("phase 2"),
        "human summary on stderr:\n{human}"
    );
    assert_eq!(report.subscribers.connected, 20, "{human}");
    assert_eq!(report.phases.len(), 2);
    for phase in &report.phases {
        let (p, d) = (&phase.publish, &phase.delivery);
        assert!(
            p.ok > 0 && p.ok == p.sent,
            "every publish acknowledged: {human}"
        );
        assert_eq!(p.statuses.get(&201), Some(&p.ok), "{human}");
        // Each of the 2 topics has 10 subscribers and gets its publishers'
        // messages only.
        assert_eq!(d.expected, p.ok * 10, "{human}");
        assert_eq!(d.deliveries, d.expected, "{human}");
        assert_eq!(
            (d.lost, d.duplicates, d.out_of_order, d.disconnected),
            (0, 0, 0, 0),
            "{human}"
        );
        assert!(d.latency.count == d.deliveries && d.latency.max_ms >= d.latency.p50_ms);
        // Cores while publishing: the --mem group, then the tool itself.
        let names: Vec<&str> = phase.cpu.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["hub", "loadgen"], "{human}");
        assert!(
            phase.cpu.iter().all(|c| (0.0..64.0).contains(&c.cores)),
            "{human}"
        );
    }
    assert!(human.contains("cores while publishing: hub "), "{human}");
    assert_eq!(report.memory.len(), 1);
    assert!(
        report.memory[0].after.fds >= report.memory[0].before.fds + 20,
        "{human}"
    );
}

#[test]
fn subscribers_spread_over_processes_and_source_addresses_then_churn() {
    // Flat-out publishing can outrun a subscriber process on a busy test
    // machine; a deep queue keeps the hub from cutting it as too slow, which
    // is the hub's business, not the load tool's.
    let hub = Hub::start_with(&[("ES__STREAM__QUEUE_CAPACITY", "100000")]);
    let pid = hub.pid().to_string();
    let (report, output) = loadgen(&[
        "--target",
        &hub.url(),
        "-n",
        "30",
        "--processes",
        "2",
        "--source-ips",
        "3",
        "--closed-loop",
        "--publishers",
        "1",
        "--duration",
        "1s",
        "--settle",
        "200ms",
        "--churn",
        "100",
        "--churn-concurrency",
        "5",
        "--mem",
        &format!("hub={pid}"),
    ]);
    let human = String::from_utf8_lossy(&output.stderr);
    assert_eq!(report.subscribers.processes, 2, "{human}");
    assert_eq!(report.subscribers.connected, 30, "{human}");
    let phase = &report.phases[0];
    assert_eq!(phase.pace, "closed");
    assert!(phase.publish.ok > 0, "{human}");
    assert_eq!(phase.delivery.deliveries, phase.publish.ok * 30, "{human}");
    assert_eq!(phase.delivery.lost, 0, "{human}");
    let churn = report.churn.as_ref().expect("a churn section");
    assert_eq!((churn.result.ok, churn.result.failed), (100, 0), "{human}");
}

#[test]
fn topic_sweeps_and_replayers_report_memory_per_unit() {
    let hub = Hub::start();
    let pid = hub.pid().to_string();
    let (report, output) = loadgen(&[
        "--target",
        &hub.url(),
        "--topic-sweep",
        "64",
        "--sweep-by",
        "subscribe,publish",
        "--topics-per-get",
        "16",
        "--topics",
        "3",
        "--replay",
        "4",
        "--replay-history",
        "20",
        "--message-bytes",
        "100",
        "--settle",
        "200ms",
        "--mem",
        &format!("hub={pid}"),
    ]);
    let human = String::from_utf8_lossy(&output.stderr);
    let [subscribe, publish] = &report.topic_sweep[..] else {
        panic!("two sweep passes expected: {human}");
    };
    // 64 topics, 16 per GET: four GETs, each answered 200.
    assert_eq!((subscribe.requests, subscribe.ok), (4, 4), "{human}");
    assert_eq!(publish.statuses.get(&201), Some(&64), "{human}");
    for pass in [subscribe, publish] {
        assert_eq!(pass.topics, 64, "{human}");
        assert_eq!(pass.memory[0].units, 64, "{human}");
    }
    let replay = report.replay.as_ref().expect("a replay section");
    assert_eq!(replay.history.statuses.get(&201), Some(&60), "{human}");
    assert_eq!((replay.opened, replay.failed), (4, 0), "{human}");
    assert_eq!(replay.last_event_id, "0-0,0-0,0-0");
    let memory = &replay.memory[0];
    // The four streams were open when measured, and gone once closed.
    assert!(memory.after.fds >= memory.before.fds + 4, "{human}");
    let closed = memory.closed.expect("a reading after closing");
    assert!(closed.fds < memory.after.fds, "{human}");
}

#[tokio::test]
async fn subscribers_go_round_robin_over_two_gateways_and_publishes_to_ingest() {
    let cluster = e2e::cluster::Cluster::start(2, &[]).await;
    let gateways = cluster.gateway_urls();
    let publish = format!("{}/event-stream", cluster.ingest.url());
    let mut args: Vec<String> = Vec::new();
    for (i, (url, gateway)) in gateways.iter().zip(&cluster.gateways).enumerate() {
        let pid = gateway.pid().expect("the gateway runs");
        args.extend(["--target".into(), url.clone()]);
        args.extend(["--mem".into(), format!("gateway-{i}={pid}")]);
    }
    args.extend(
        [
            "--pub-url",
            &publish,
            "-n",
            "20",
            "--source-ips",
            "3",
            "--rate",
            "40",
            "--duration",
            "1s",
            "--settle",
            "200ms",
        ]
        .map(String::from),
    );
    let (report, output) = tokio::task::spawn_blocking(move || {
        loadgen(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("running loadgen");
    let human = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        report.sub_urls,
        gateways
            .iter()
            .map(|g| format!("{g}/event-stream?topic={{topic}}"))
            .collect::<Vec<_>>(),
        "{human}"
    );
    assert_eq!(report.pub_url, publish);
    assert_eq!(report.subscribers.connected, 20, "{human}");
    // Published once to ingest, every event reached both gateways through
    // Redis and every subscriber on each.
    let phase = &report.phases[0];
    let (p, d) = (&phase.publish, &phase.delivery);
    assert!(p.ok > 0 && p.ok == p.sent, "{human}");
    assert_eq!(d.deliveries, p.ok * 20, "{human}");
    assert_eq!(
        (d.lost, d.duplicates, d.out_of_order, d.disconnected),
        (0, 0, 0, 0),
        "{human}"
    );
    // Ten streams on each gateway: each wrote every event ten times.
    for (gateway, memory) in cluster.gateways.iter().zip(&report.memory) {
        assert!(
            memory.after.fds >= memory.before.fds + 10,
            "{} got fewer than 10 streams: {human}",
            memory.name
        );
        let delivered = || async {
            e2e::metrics::value(&cluster.client, &gateway.url(), "es_events_delivered_total").await
        };
        // A stream adds its last events to the counter when it closes.
        let expected = (p.ok * 10) as f64;
        e2e::wait_until(e2e::PATIENCE, || async {
            delivered().await == Some(expected)
        })
        .await;
        assert_eq!(
            delivered().await,
            Some(expected),
            "{}: {human}",
            memory.name
        );
    }
}
