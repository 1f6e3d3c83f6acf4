//! [`RedisCluster`]: a private Redis Cluster of three masters, each with one
//! replica, on free ports, for tests of cluster mode; every process is
//! killed when it is dropped. Driven with `redis-cli`, so it tests the
//! bus against the same tools an operator uses. [`RedisCluster::start_tls`]
//! makes one that speaks TLS only: to clients, between nodes
//! (`tls-cluster`) and to replicas (`tls-replication`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::{Certificates, ClientAuth};

/// How long the cluster gets to reach `cluster_state:ok` everywhere.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// Milliseconds a master may be unreachable before its replica takes over:
/// short, so failover tests are quick.
pub const NODE_TIMEOUT_MS: u64 = 2000;

/// A master as `CLUSTER NODES` shows it: port, node id, slot ranges.
pub type Master = (u16, String, Vec<(u16, u16)>);

/// One node process.
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Six `redis-server --cluster-enabled yes` processes joined by
/// `redis-cli --cluster create --cluster-replicas 1`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Holds each node's cluster config file; removed on drop.
    dir: PathBuf,
    /// A TLS cluster's certificates and whether its nodes ask clients for
    /// theirs; `None` for a plain cluster.
    tls: Option<(Certificates, ClientAuth)>,
}

impl RedisCluster {
    /// Starts the six nodes, creates the cluster and waits until every node
    /// reports `cluster_state:ok`.
    ///
    /// # Panics
    /// If `redis-server`/`redis-cli` are missing or the cluster does not
    /// form in time.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// As [`RedisCluster::start`], every node serving TLS only with
    /// `certificates`' server certificate (no plain port), talking TLS to
    /// the others, and asking clients for a certificate of their CA as
    /// `clients` says. Seeds are `rediss://`.
    pub fn start_tls(certificates: &Certificates, clients: ClientAuth) -> Self {
        Self::launch(Some((certificates.clone(), clients)))
    }

    fn launch(tls: Option<(Certificates, ClientAuth)>) -> Self {
        let dir = std::env::temp_dir().join(format!("es-cluster-{}", crate::unique_prefix()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
        let nodes = (0..6)
            .map(|_| {
                let port = node_port();
                Node {
                    port,
                    child: Some(spawn_node(&dir, port, tls.as_ref())),
                }
            })
            .collect();
        let mut cluster = Self { nodes, dir, tls };
        for i in 0..cluster.nodes.len() {
            let deadline = Instant::now() + FORM_TIMEOUT;
            loop {
                let node = &mut cluster.nodes[i];
                let certificates = cluster.tls.as_ref().map(|(c, _)| c);
                if crate::answers(node.port, certificates, Duration::from_millis(500)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} never answered",
                    node.port
                );
                // A node exits at once when its port or its bus port (the
                // port + 10,000) was taken meanwhile by another process:
                // start it again elsewhere.
                let exited = node
                    .child
                    .as_mut()
                    .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
                if exited {
                    node.port = node_port();
                    node.child = Some(spawn_node(&cluster.dir, node.port, cluster.tls.as_ref()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(cluster.tls_args())
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(cluster.wait_ok(FORM_TIMEOUT), "the cluster did not form");
        cluster
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` for a TLS cluster) of
    /// every node started: the seed list.
    pub fn seeds(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.nodes
            .iter()
            .map(|node| format!("{scheme}://127.0.0.1:{}", node.port))
            .collect()
    }

    /// `redis-cli`'s TLS arguments for a TLS cluster; none for a plain one.
    fn tls_args(&self) -> Vec<String> {
        self.tls
            .as_ref()
            .map(|(certificates, _)| certificates.cli_args())
            .unwrap_or_default()
    }

    /// Ports of the nodes still running.
    pub fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .map(|node| node.port)
            .collect()
    }

    /// Runs `redis-cli -p <port> <args>` and returns its output (empty on
    /// failure).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(self.tls_args())
            .args(["-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Whether every running node reports `cluster_state:ok`, three
    /// masters own slots and each has an online replica (so writes can be
    /// acknowledged by one: `WAIT 1`), within `timeout`.
    pub fn wait_ok(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ok = self.running_ports().iter().all(|port| {
                self.cli(*port, &["cluster", "info"])
                    .contains("cluster_state:ok")
            });
            let masters = self.masters();
            let replicated = masters.iter().all(|(port, _, _)| {
                self.cli(*port, &["info", "replication"])
                    .contains("state=online")
            });
            if ok && masters.len() == 3 && replicated {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        let port = self.running_ports()[0];
        self.cli(port, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no slot for {key}"))
    }

    /// `(port, node id, slot ranges)` of every master that owns slots, as
    /// the first running node sees it.
    pub fn masters(&self) -> Vec<Master> {
        let Some(port) = self.running_ports().first().copied() else {
            return Vec::new();
        };
        let nodes = self.cli(port, &["cluster", "nodes"]);
        let mut masters = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let Some(master_port) = fields[1]
                .split('@')
                .next()
                .and_then(|address| address.rsplit(':').next())
                .and_then(|port| port.parse().ok())
            else {
                continue;
            };
            let ranges = fields[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| {
                    let (start, end) = range.split_once('-').unwrap_or((range, range));
                    Some((start.parse().ok()?, end.parse().ok()?))
                })
                .collect();
            masters.push((master_port, fields[0].to_owned(), ranges));
        }
        masters
    }

    /// Port of the master owning `slot`.
    pub fn master_of(&self, slot: u16) -> Option<u16> {
        self.masters()
            .into_iter()
            .find(|(_, _, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(port, _, _)| port)
    }

    /// Port of an online replica of the master on `master`, as the master's
    /// own `INFO replication` lists it (`slaveN:ip=..,port=..,state=online`):
    /// the replica that acknowledges its writes (`WAIT 1`). Asked of the
    /// master, not read from another node's `CLUSTER NODES`, where gossip
    /// may still show the replica as a master of no slot, or flag it
    /// `fail?` for a moment on a loaded machine.
    pub fn replica_of(&self, master: u16) -> Option<u16> {
        self.cli(master, &["info", "replication"])
            .lines()
            .filter(|line| line.starts_with("slave"))
            .find_map(|line| {
                let (_, fields) = line.split_once(':')?;
                let mut port = None;
                let mut online = false;
                for field in fields.trim().split(',') {
                    match field.split_once('=') {
                        Some(("port", value)) => port = value.parse().ok(),
                        Some(("state", value)) => online = value == "online",
                        _ => {}
                    }
                }
                port.filter(|_| online)
            })
    }

    /// Freezes node `port` with SIGSTOP: its connections stay open and it
    /// answers nothing, replication included, as a hung host would.
    pub fn freeze(&self, port: u16) {
        self.signal(port, "STOP");
    }

    /// Thaws node `port` after [`RedisCluster::freeze`].
    pub fn thaw(&self, port: u16) {
        self.signal(port, "CONT");
    }

    fn signal(&self, port: u16, name: &str) {
        let Some(pid) = self
            .nodes
            .iter()
            .find(|node| node.port == port)
            .and_then(|node| node.child.as_ref())
            .map(Child::id)
        else {
            panic!("node {port} is not running");
        };
        crate::signal(pid, name);
    }

    /// Kills node `port` with SIGKILL, as in a crash.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|node| node.port == port)
            && let Some(mut child) = node.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed node `port` again with its cluster config: it
    /// rejoins, as a replica if its slots were failed over meanwhile.
    pub fn restart(&mut self, port: u16) {
        let dir = self.dir.clone();
        if let Some(node) = self.nodes.iter_mut().find(|node| node.port == port)
            && node.child.is_none()
        {
            node.child = Some(spawn_node(&dir, port, self.tls.as_ref()));
        }
    }

    /// Waits until `gone` owns no slot and three masters hold all of them
    /// with `cluster_state:ok` on every running node: the failover after
    /// `gone` died is done. False after `timeout`.
    pub fn wait_failover(&self, gone: u16, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let masters = self.masters();
            let covered: u32 = masters
                .iter()
                .flat_map(|(_, _, ranges)| ranges)
                .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
                .sum();
            let ok = self.running_ports().iter().all(|port| {
                self.cli(*port, &["cluster", "info"])
                    .contains("cluster_state:ok")
            });
            if ok
                && masters.len() == 3
                && covered == 16_384
                && masters.iter().all(|(port, _, _)| *port != gone)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Moves `slot` and its keys to the master on port `to` by hand, the
    /// steps `redis-cli --cluster reshard` takes: IMPORTING on the target,
    /// MIGRATING on the source, MIGRATE of every key, then the new owner
    /// announced to every master.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let from = self
            .master_of(slot)
            .unwrap_or_else(|| panic!("no owner of {slot}"));
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let masters = self.masters();
        let id = |port: u16| {
            masters
                .iter()
                .find(|(p, _, _)| *p == port)
                .map(|(_, id, _)| id.clone())
                .unwrap_or_else(|| panic!("{port} is not a master"))
        };
        let slot_text = slot.to_string();
        let ok = |out: String, what: &str| assert!(out.contains("OK"), "{what}: {out}");
        ok(
            self.cli(
                to,
                &["cluster", "setslot", &slot_text, "importing", &id(from)],
            ),
            "importing",
        );
        ok(
            self.cli(
                from,
                &["cluster", "setslot", &slot_text, "migrating", &id(to)],
            ),
            "migrating",
        );
        loop {
            let keys = self.cli(from, &["cluster", "getkeysinslot", &slot_text, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|key| !key.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["migrate", "127.0.0.1"];
            let to_text = to.to_string();
            args.extend([to_text.as_str(), "", "0", "5000", "keys"]);
            args.extend(keys);
            let out = self.cli(from, &args);
            assert!(
                out.contains("OK") || out.contains("NOKEY"),
                "migrate: {out}"
            );
        }
        // The new owner first, then the old one, then the rest: the order
        // `redis-cli --cluster reshard` uses, so no node sends a client
        // back to a node that does not serve the slot yet.
        let mut order = vec![to, from];
        order.extend(
            masters
                .iter()
                .map(|(port, _, _)| *port)
                .filter(|port| *port != to && *port != from),
        );
        for port in order {
            ok(
                self.cli(port, &["cluster", "setslot", &slot_text, "node", &id(to)]),
                "node",
            );
        }
    }
}

/// Starts one node on `port`, its cluster config file in `dir` (so a node
/// restarted on the same port rejoins as the node it was); with `tls`,
/// on a TLS port only, TLS between nodes too.
/// A free port whose cluster bus port (the port + 10,000) is free too.
fn node_port() -> u16 {
    loop {
        let port = crate::free_port();
        let bus_free = port
            .checked_add(10_000)
            .is_some_and(|bus| std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok());
        if bus_free {
            return port;
        }
    }
}

fn spawn_node(dir: &std::path::Path, port: u16, tls: Option<&(Certificates, ClientAuth)>) -> Child {
    let listen = match tls {
        Some((certificates, clients)) => {
            let mut args = certificates.server_args(port, *clients);
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned));
            args
        }
        None => vec!["--port".into(), port.to_string()],
    };
    Command::new("redis-server")
        .args(listen)
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        // Replicas sync at once rather than after 5 s.
        .args(["--repl-diskless-sync-delay", "0"])
        .args(["--dir", &dir.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-server: {e}"))
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
