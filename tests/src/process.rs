//! The project's binaries as child processes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::PATIENCE;

/// The workspace's target directory, where `cargo test` put the binaries.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Builds the service binaries once per test process, in the profile the
/// tests run in, so a test never starts a stale binary.
fn build_binaries() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let release = !cfg!(debug_assertions);
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "ingest",
            "-p",
            "stream-gateway",
            "-p",
            "standalone",
        ]);
        if release {
            command.arg("--release");
        }
        let status = command.status().expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
        target_dir().join(if release { "release" } else { "debug" })
    })
}

pub fn binary(name: &str) -> PathBuf {
    build_binaries().join(name)
}

/// A free TCP port on loopback for a server, outside the range client
/// sockets use (see [`testkit::free_port`]).
pub fn free_port() -> u16 {
    testkit::free_port()
}

/// One running binary on its own port, killed when dropped.
#[derive(Debug)]
pub struct Service {
    name: String,
    port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// Starts `binary` on a free port with `env` on top of test defaults.
    pub fn start(binary_name: &str, env: &[(String, String)]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("es-e2e-{binary_name}-{port}.log"));
        let mut service = Self {
            name: binary_name.to_owned(),
            port,
            env: env.to_vec(),
            log,
            child: None,
        };
        service.spawn();
        service
    }

    fn spawn(&mut self) {
        let log = File::create(&self.log).expect("creating a log file");
        let child = Command::new(binary(&self.name))
            .env("ES__HTTP__HOST", "127.0.0.1")
            .env("ES__HTTP__PORT", self.port.to_string())
            .env("ES__HTTP__WORKERS", "2")
            .env("ES__LOG__LEVEL", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", self.name));
        self.child = Some(child);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id while it runs, to read its `/proc` entries.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the process logged so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = client.get(format!("{}/readyz", self.url())).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The exit status once the process has ended by itself, or `None` if
    /// it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("service not running");
            if let Some(status) = child.try_wait().expect("waiting for the service") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` (a `kill -s` name) to the process.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-s", signal, &child.id().to_string()])
                .status()
                .expect("running kill");
            assert!(status.success(), "kill -s {signal} failed");
        }
    }

    /// SIGTERM, then waits for the exit (killing it after [`PATIENCE`]).
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("service not running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the service") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "{} did not exit after SIGTERM; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the process again on the same port with the same settings.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
