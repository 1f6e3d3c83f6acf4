//! A TCP relay in front of Redis that can lose Redis's replies: commands
//! still reach Redis and run, but their answers never come back. It is how
//! a test makes the case a timeout cannot tell apart from an outage: the
//! event was stored, and the publisher heard nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running relay from a local port to Redis; stops when dropped.
#[derive(Debug)]
pub struct ReplyLoss {
    port: u16,
    losing: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl ReplyLoss {
    /// Relays connections on a free loopback port to `upstream`
    /// (`host:port`), passing everything both ways until told otherwise.
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the relay");
        let port = listener.local_addr().expect("relay address").port();
        let losing = Arc::new(AtomicBool::new(false));
        let flag = losing.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, flag.clone()));
            }
        });
        Self { port, losing, task }
    }

    /// `redis://127.0.0.1:<port>`: give this to the service instead of
    /// Redis's own URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on Redis's replies are read and thrown away (commands
    /// still get through), or, with `false`, passed on again.
    pub fn lose_replies(&self, losing: bool) {
        self.losing.store(losing, Ordering::SeqCst);
    }
}

impl Drop for ReplyLoss {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies commands to Redis as they come, and replies back unless `losing`.
async fn relay(client: TcpStream, server: TcpStream, losing: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let commands = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let replies = async {
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if losing.load(Ordering::SeqCst) {
                continue;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either side closing ends both, as a real connection would.
    tokio::select! {
        () = commands => {}
        () = replies => {}
    }
}
