//! SIGTERM stops a service at every stage whatever its stdout does: while
//! it waits for a Redis that does not answer and while it serves, with its
//! log lines going to a pipe nobody reads (full after 64 KiB) or to one
//! whose reader is gone. Orchestrators send SIGTERM and wait only a grace
//! period; a process that logs into a stalled pipe must not ignore it.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::PipeReader;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::process::{binary, free_port};
use e2e::{PATIENCE, RedisServer};

/// `http.shutdown_grace_ms` of the services started here.
const GRACE: Duration = Duration::from_millis(1000);

/// How long after SIGTERM a service may take to exit: its grace period,
/// the wait for queued log lines (at most 1.5 s), and ample room for a
/// loaded machine. Without the fix a service with a full stdout never
/// exits.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

/// What happens to the service's stdout.
#[derive(Debug, Clone, Copy)]
enum Stdout {
    /// A pipe kept open and never read: it fills after 64 KiB.
    Full,
    /// A pipe whose read end is closed: every write fails.
    Closed,
}

/// One running binary with its stdout on a pipe; killed when dropped.
struct Service {
    name: &'static str,
    url: String,
    child: Option<Child>,
    /// Kept open (and never read) for [`Stdout::Full`].
    _stdout: Option<PipeReader>,
    stderr: std::path::PathBuf,
}

impl Service {
    fn start(name: &'static str, redis_url: &str, stdout: Stdout) -> Self {
        let port = free_port();
        let (reader, writer) = std::io::pipe().unwrap();
        let stderr = std::env::temp_dir().join(format!("es-sigterm-{name}-{port}.stderr"));
        let child = Command::new(binary(name))
            .env("ES__HTTP__HOST", "127.0.0.1")
            .env("ES__HTTP__PORT", port.to_string())
            .env("ES__HTTP__WORKERS", "2")
            .env("ES__HTTP__SHUTDOWN_GRACE_MS", GRACE.as_millis().to_string())
            .env("ES__REDIS__URL", redis_url)
            // The access log writes a line per request to stdout.
            .env("ES__LOG__LEVEL", "info")
            // A short queue, so that a few hundred lines past a full pipe
            // are dropped (and counted) quickly.
            .env("ES__LOG__BUFFERED_LINES", "16")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name}: {error}"));
        let reader = match stdout {
            Stdout::Full => Some(reader),
            Stdout::Closed => None,
        };
        Self {
            name,
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            _stdout: reader,
            stderr,
        }
    }

    /// SIGTERM; asserts that the service exits within [`EXIT_WITHIN`]
    /// with status 0, a graceful stop. `what` names the case in failures.
    async fn assert_sigterm_stops_it(&mut self, what: &str) {
        let child = self.child.as_mut().unwrap();
        let status = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s TERM {}", self.name);
        let signalled = Instant::now();
        let exit = loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                break status;
            }
            assert!(
                signalled.elapsed() < EXIT_WITHIN,
                "{what}: still running {EXIT_WITHIN:?} after SIGTERM; stderr: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            exit.success(),
            "{what}: exit {exit:?} after {:?}, not a graceful stop; stderr: {}",
            signalled.elapsed(),
            self.stderr()
        );
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// A Redis URL nothing listens on: a service waits for it for ever
/// (`redis.startup_timeout_ms` is 0 by default), retrying and logging.
fn unreachable_redis() -> String {
    format!("redis://127.0.0.1:{}/", free_port())
}

/// Sends requests (each logged on stdout) until the service says it
/// dropped log lines, that is until its stdout took no more; returns how
/// many it dropped, or `None` if a request went unanswered first or the
/// patience ran out.
async fn fill_stdout(client: &reqwest::Client, service: &Service) -> Option<f64> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        for _ in 0..100 {
            let answered = client
                .get(format!("{}/healthz", service.url))
                .send()
                .await
                .is_ok_and(|response| response.status() == 200);
            if !answered {
                return None;
            }
        }
        let dropped = e2e::metrics::value(client, &service.url, "es_log_lines_dropped_total").await;
        if let Some(dropped) = dropped.filter(|dropped| *dropped > 0.0) {
            return Some(dropped);
        }
    }
    None
}

/// Waits until the service answers `/readyz` with `status`: 503 while it
/// waits for Redis, 200 once Redis answered.
async fn wait_readiness(client: &reqwest::Client, service: &Service, status: u16) {
    let answered = e2e::wait_until(PATIENCE, || async {
        client
            .get(format!("{}/readyz", service.url))
            .send()
            .await
            .is_ok_and(|response| response.status() == status)
    })
    .await;
    assert!(
        answered,
        "{} never answered /readyz with {status}; stderr: {}",
        service.name,
        service.stderr()
    );
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

#[tokio::test]
async fn sigterm_stops_a_service_whose_stdout_is_full_waiting_for_redis_or_serving() {
    let redis = RedisServer::start();
    let client = client();
    for name in ["stream-gateway", "ingest"] {
        for (stage, redis_url, ready) in [
            ("waiting for Redis", unreachable_redis(), 503),
            ("serving", redis.url(), 200),
        ] {
            let mut service = Service::start(name, &redis_url, Stdout::Full);
            wait_readiness(&client, &service, ready).await;

            let dropped = fill_stdout(&client, &service).await;

            service
                .assert_sigterm_stops_it(&format!("{name} {stage}, stdout full"))
                .await;
            // The stage was the one meant: stdout had taken no more, the
            // service had counted the lines it dropped and kept answering.
            assert!(
                dropped.is_some(),
                "{name} {stage}: no dropped log line counted, or a request went unanswered while stdout was full"
            );
        }
    }
}

#[tokio::test]
async fn sigterm_stops_a_service_waiting_for_redis_whose_stdout_reader_is_gone() {
    let client = client();
    for name in ["stream-gateway", "ingest"] {
        let mut service = Service::start(name, &unreachable_redis(), Stdout::Closed);
        // Each answer is a line written into the closed pipe, each write
        // failing.
        for _ in 0..50 {
            wait_readiness(&client, &service, 503).await;
        }

        service
            .assert_sigterm_stops_it(&format!("{name}, stdout closed"))
            .await;
    }
}
