//! Test-only helpers shared by the crates' test suites.
//!
//! - [`RedisServer`]: a private `redis-server` on a free port, which a test
//!   can kill, restart, freeze and thaw to act out outages; plain, or TLS
//!   only ([`RedisServer::start_tls`]).
//! - [`RedisCluster`]: a private 3-master, 3-replica Redis Cluster, whose
//!   masters a test can kill and whose slots it can move; plain, or TLS
//!   only.
//! - [`tls`]: [`Certificates`], a throwaway PKI made with `openssl` for
//!   the TLS servers and their clients.
//! - [`unique_prefix`]: a key prefix no other test uses, so tests sharing a
//!   Redis never see each other's data.
//! - [`wait_until`]: polls a condition against a deadline; tests never sleep
//!   to wait for something.
//! - [`raw`]: [`RawClient`], a TCP client that writes bytes and keeps every
//!   byte the server answers, for tests of what is on the wire and when a
//!   connection closes; every read has a deadline.
//! - [`browser`]: [`Browser`], a headless Chromium driven over WebDriver,
//!   with screenshots kept as test artefacts.

pub mod browser;
pub mod cluster;
pub mod raw;
pub mod tls;

pub use browser::Browser;
pub use cluster::RedisCluster;
pub use raw::RawClient;
pub use tls::{Certificates, ClientAuth};

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a fresh `redis-server` gets to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` process owned by one test; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// `None` while killed: [`RedisServer::restart`] starts a new one on the
    /// same port, so clients configured with [`RedisServer::url`] find it.
    child: Option<Child>,
    /// A TLS server's certificates and whether it asks clients for theirs.
    tls: Option<Tls>,
}

/// What makes a server TLS-only.
type Tls = (Certificates, ClientAuth);

impl RedisServer {
    /// Starts a server on a free port, without persistence, and waits until
    /// it answers PING.
    ///
    /// # Panics
    /// If `redis-server` is not installed (`apt-get install -y
    /// redis-server`) or does not come up.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// As [`RedisServer::start`], serving TLS only (no plain port) with
    /// `certificates`' server certificate, trusting their CA for client
    /// certificates as `clients` says. Its [`RedisServer::url`] is
    /// `rediss://127.0.0.1:<port>/`.
    pub fn start_tls(certificates: &Certificates, clients: ClientAuth) -> Self {
        Self::launch(Some((certificates.clone(), clients)))
    }

    fn launch(tls: Option<Tls>) -> Self {
        // Another process may grab the port between our probe and Redis's
        // bind; a few attempts on fresh ports make that harmless.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(port, tls.as_ref()) {
                Ok(child) => {
                    return Self {
                        port,
                        child: Some(child),
                        tls,
                    };
                }
                Err(error) => last_error = error,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// The port clients use: the TLS port of a TLS server.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL: no goodbye to clients, and (without
    /// persistence) every key is lost, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already dead is fine: wait() reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts a fresh, empty one on the
    /// same port.
    ///
    /// # Panics
    /// If the new server does not come up.
    pub fn restart(&mut self) {
        self.kill();
        // The old socket may linger briefly; Redis binds with SO_REUSEADDR,
        // but give it a few tries.
        let mut last_error = String::new();
        for _ in 0..20 {
            match spawn(self.port, self.tls.as_ref()) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(error) => {
                    last_error = error;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!(
            "redis-server did not restart on port {}: {last_error}",
            self.port
        );
    }

    /// Freezes the server with SIGSTOP: connections stay open and nothing
    /// answers, like a hung host. The hardest outage for a client to notice.
    pub fn stop(&self) {
        self.signal("STOP");
    }

    /// Thaws a server frozen by [`RedisServer::stop`].
    pub fn cont(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let Some(pid) = self.pid() else {
            panic!("redis-server on port {} is not running", self.port);
        };
        signal(pid, name);
    }

    /// Whether the server answers PING right now (within `timeout`).
    pub fn answers(&self, timeout: Duration) -> bool {
        answers(self.port, self.tls.as_ref().map(|(c, _)| c), timeout)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A frozen process ignores nothing but SIGKILL, which is what
        // kill() sends, so a test that panicked mid-outage still cleans up.
        self.kill();
    }
}

/// Sends signal `name` (`STOP`, `CONT`, ...) to process `pid`.
pub(crate) fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A port nobody listens on right now, for a server a test starts.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), where
/// client sockets get their local ports: a port from that range (what
/// binding port 0 gives) can be taken by some test's client between this
/// choice and the server's bind, and that client's socket then looks like
/// one of the server's connections. Each call moves on from the last, so
/// the tests of one process never pick the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 10_000;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if low > BASE + 1_000 {
        let span = low - BASE;
        // Processes start at different places, so two test binaries at once
        // rarely walk the same ports.
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (BASE + (start + n) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// Starts `redis-server` on `port` (its TLS port, with `tls`) and waits
/// for its PONG.
fn spawn(port: u16, tls: Option<&Tls>) -> Result<Child, String> {
    let listen = match tls {
        Some((certificates, clients)) => certificates.server_args(port, *clients),
        None => vec!["--port".into(), port.to_string()],
    };
    let mut child = Command::new("redis-server")
        .args(listen)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        // Nothing on disk and no file in the working directory.
        .args(["--dir", &std::env::temp_dir().to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run redis-server (apt-get install -y redis-server): {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server on port {port} exited with {status}"));
        }
        if answers(port, tls.map(|(c, _)| c), Duration::from_millis(200)) {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "redis-server on port {port} did not answer PING within {START_TIMEOUT:?}"
    ))
}

/// Whether the server on `port` answers PING within `timeout`: over plain
/// TCP, or with `certificates` over TLS.
pub(crate) fn answers(port: u16, certificates: Option<&Certificates>, timeout: Duration) -> bool {
    match certificates {
        Some(certificates) => {
            let mut args = certificates.cli_args();
            args.extend(["-p".into(), port.to_string(), "ping".into()]);
            cli_within(&args, timeout).is_some_and(|out| out.trim() == "PONG")
        }
        None => ping(port, timeout),
    }
}

/// `redis-cli <args>`'s output, or `None` if it did not finish within
/// `timeout` (it is killed: redis-cli has no timeout of its own, and a
/// frozen server would hold it for ever) or could not run.
pub(crate) fn cli_within(args: &[String], timeout: Duration) -> Option<String> {
    let mut child = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Sends PING in RESP and expects `+PONG`, with no Redis client library.
pub(crate) fn ping(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A key prefix unique to this call in this process and across processes
/// (pid, time and a counter), made of characters any key scheme accepts.
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes;
/// returns whether it held. Use it with `assert!` and a message saying what
/// was awaited.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_can_be_killed_restarted_frozen_and_thawed() {
        let mut server = RedisServer::start();
        let short = Duration::from_millis(300);
        assert!(server.answers(short));
        server.stop();
        assert!(!server.answers(short), "a frozen server must not answer");
        server.cont();
        assert!(server.answers(Duration::from_secs(2)));
        server.kill();
        assert!(!server.answers(short));
        server.restart();
        assert!(server.answers(short));
    }

    #[test]
    fn a_cluster_forms_with_three_masters_and_moves_a_slot() {
        let cluster = RedisCluster::start();
        let masters = cluster.masters();
        assert_eq!(masters.len(), 3);
        let slot = cluster.keyslot("{probe}");
        let from = cluster.master_of(slot).unwrap();
        let port = from.to_string();
        assert!(
            cluster.cli(from, &["set", "{probe}", "1"]).contains("OK"),
            "{port}"
        );
        let to = masters.iter().map(|m| m.0).find(|p| *p != from).unwrap();
        cluster.move_slot(slot, to);
        assert_eq!(cluster.master_of(slot), Some(to));
        assert_eq!(cluster.cli(to, &["get", "{probe}"]).trim(), "1");
    }

    #[test]
    fn a_tls_server_answers_only_over_tls_through_outages() {
        let certificates = Certificates::generate();
        let mut server = RedisServer::start_tls(&certificates, ClientAuth::Required);
        assert!(server.url().starts_with("rediss://127.0.0.1:"));
        let short = Duration::from_millis(500);
        assert!(server.answers(Duration::from_secs(2)));
        assert!(
            !ping(server.port(), short),
            "plain RESP must not work on the TLS port"
        );
        server.stop();
        assert!(!server.answers(short), "a frozen server must not answer");
        server.cont();
        assert!(server.answers(Duration::from_secs(2)));
        server.restart();
        assert!(server.answers(Duration::from_secs(2)));
    }

    #[test]
    fn a_tls_cluster_forms_with_three_masters() {
        let certificates = Certificates::generate();
        let cluster = RedisCluster::start_tls(&certificates, ClientAuth::Required);
        assert_eq!(cluster.masters().len(), 3);
        assert!(cluster.seeds().iter().all(|s| s.starts_with("rediss://")));
        let port = cluster.running_ports()[0];
        assert!(!ping(port, Duration::from_millis(500)), "TLS only");
    }

    #[test]
    fn prefixes_are_unique() {
        assert_ne!(unique_prefix(), unique_prefix());
    }

    #[tokio::test]
    async fn wait_until_reports_both_outcomes() {
        assert!(wait_until(Duration::from_millis(100), || async { true }).await);
        assert!(!wait_until(Duration::from_millis(50), || async { false }).await);
    }
}
