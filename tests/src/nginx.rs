//! Debian's nginx running the repository's own front-door configuration
//! (`deploy/nginx/`), with the upstream list made by its own
//! `make-upstreams` script, on a free port.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::PATIENCE;
use crate::process::free_port;

/// A private nginx process, stopped when dropped.
#[derive(Debug)]
pub struct Nginx {
    port: u16,
    prefix: PathBuf,
    child: Option<Child>,
}

/// Debian's nginx, or whatever `nginx` is on the PATH.
pub fn nginx_binary() -> PathBuf {
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
    .unwrap_or_else(|| PathBuf::from("nginx"))
}

impl Nginx {
    /// Starts nginx in front of `ingest` and `gateways` (host:port each) and
    /// waits until its own /healthz answers.
    pub async fn start(ingest: &[String], gateways: &[String]) -> Self {
        Self::launch(ingest, gateways, None, None, None).await
    }

    /// The same with `limit_req` on publishes at `rate` (`"1r/m"`) with a
    /// burst of `burst` instead of its generous defaults, so that a test
    /// can reach it.
    pub async fn start_with_publish_rate(
        ingest: &[String],
        gateways: &[String],
        rate: &str,
        burst: usize,
    ) -> Self {
        Self::launch(ingest, gateways, None, None, Some((rate, burst))).await
    }

    /// The same with `limit_conn` at `limit` requests per address instead
    /// of 1,000, so that a test can reach it.
    pub async fn start_with_per_address_limit(
        ingest: &[String],
        gateways: &[String],
        limit: usize,
    ) -> Self {
        Self::launch(ingest, gateways, None, Some(limit), None).await
    }

    /// The same with one worker process instead of one per core. nginx keeps
    /// what it learns about an upstream (failures, open connections) per
    /// worker, and a new client connection may land on any worker: with one,
    /// every request of a test meets the same memory.
    pub async fn start_one_worker(ingest: &[String], gateways: &[String]) -> Self {
        Self::launch(ingest, gateways, Some(1), None, None).await
    }

    async fn launch(
        ingest: &[String],
        gateways: &[String],
        workers: Option<usize>,
        per_address: Option<usize>,
        publish_rate: Option<(&str, usize)>,
    ) -> Self {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx");
        let port = free_port();
        let prefix = std::env::temp_dir().join(format!("es-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&prefix).expect("creating the nginx prefix");
        let mut conf =
            std::fs::read_to_string(deploy.join("nginx.conf")).expect("reading nginx.conf");
        if let Some(workers) = workers {
            let auto = "worker_processes auto;";
            assert!(conf.contains(auto), "nginx.conf no longer says {auto:?}");
            conf = conf.replace(auto, &format!("worker_processes {workers};"));
        }
        if let Some(limit) = per_address {
            let default = "limit_conn es_per_address 1000;";
            assert!(
                conf.contains(default),
                "nginx.conf no longer says {default:?}"
            );
            conf = conf.replace(default, &format!("limit_conn es_per_address {limit};"));
        }
        if let Some((rate, burst)) = publish_rate {
            for (default, set) in [
                ("rate=100r/s;", format!("rate={rate};")),
                (
                    "limit_req zone=es_publishes burst=200 nodelay;",
                    format!("limit_req zone=es_publishes burst={burst} nodelay;"),
                ),
            ] {
                assert!(
                    conf.contains(default),
                    "nginx.conf no longer says {default:?}"
                );
                conf = conf.replace(default, &set);
            }
        }
        std::fs::write(prefix.join("nginx.conf"), conf).expect("writing nginx.conf");
        // As deploy/nginx/listen.conf, on loopback and a free port.
        std::fs::write(
            prefix.join("listen.conf"),
            format!("listen 127.0.0.1:{port} backlog=4096 reuseport;\n"),
        )
        .expect("writing listen.conf");
        let mut make = Command::new(deploy.join("make-upstreams"));
        for address in ingest {
            make.args(["--ingest", address]);
        }
        for address in gateways {
            make.args(["--gateway", address]);
        }
        let upstreams = make.output().expect("running make-upstreams");
        assert!(
            upstreams.status.success(),
            "make-upstreams: {}",
            String::from_utf8_lossy(&upstreams.stderr)
        );
        std::fs::write(prefix.join("upstreams.conf"), upstreams.stdout)
            .expect("writing upstreams.conf");

        let log = File::create(prefix.join("nginx.log")).expect("creating the nginx log");
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .args(["-e", "stderr", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .expect("starting nginx (apt-get install nginx-light)");
        let mut nginx = Self {
            port,
            prefix,
            child: Some(child),
        };
        nginx.wait_healthy().await;
        nginx
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("nginx.log")).unwrap_or_default()
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("nginx exited with {status}; log:\n{}", self.log());
            }
            if let Ok(response) = client.get(format!("{}/healthz", self.url())).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx never answered; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL would orphan the workers, which keep the port and run
            // on; SIGTERM makes the master stop them before it exits.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}
