//! A population of subscribers in one process, split over shard threads,
//! and the link that drives it from the coordinator: in-process or as a
//! child process speaking JSON lines.

use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;

use crate::http::Url;
use crate::protocol::{Command, ConnectReport, PhaseReport, Report, StopReport, WorkerConfig};
use crate::subscriber::{self, Plan};

/// Runs `config`'s subscribers until [`Command::Stop`], answering on
/// `reports` with one merged report per step (never one per shard).
pub async fn serve(
    config: WorkerConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<Report>,
) -> anyhow::Result<()> {
    let threads = config.threads.clamp(1, 64).min(config.count.max(1));
    let mut shard_commands = Vec::new();
    let (shard_reports_tx, mut shard_reports) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for shard in 0..threads {
        let indices: Vec<usize> = (0..config.count).filter(|i| i % threads == shard).collect();
        let config = config.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        shard_commands.push(tx);
        let reports = shard_reports_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-shard-{shard}"))
            .spawn(move || -> anyhow::Result<()> {
                // Urls are parsed per thread: `Rc` keeps the hot path free
                // of atomic reference counts.
                let urls = config
                    .sub_urls
                    .iter()
                    .map(|server| {
                        server
                            .iter()
                            .map(|u| Url::parse(u, config.allow_remote).map(Rc::new))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                anyhow::ensure!(
                    urls.first().is_some_and(|topics| !topics.is_empty()),
                    "no subscribe URL"
                );
                let plans = indices
                    .iter()
                    .map(|&local| {
                        let global = config.first + local;
                        let server = &urls[global % urls.len()];
                        let topic = global % server.len();
                        Plan {
                            index: global as u64,
                            url: server[topic].clone(),
                            topic: topic as u32,
                            source: (!config.source_ips.is_empty())
                                .then(|| config.source_ips[global % config.source_ips.len()]),
                        }
                    })
                    .collect();
                subscriber::run_shard(
                    plans,
                    config.ramp_per_sec / threads as f64,
                    Duration::from_millis(config.connect_timeout_ms),
                    rx,
                    reports,
                )
            })
            .context("starting a shard thread")?;
        handles.push(handle);
    }
    drop(shard_reports_tx);

    let mut connected = ConnectReport::default();
    for _ in 0..threads {
        match shard_reports.recv().await {
            Some(Report::Connected(report)) => connected.merge(&report),
            Some(other) => bail!("shard answered {other:?} before connecting"),
            None => bail!("a shard thread died while connecting"),
        }
    }
    let _ = reports.send(Report::Connected(connected));

    while let Some(command) = commands.recv().await {
        for shard in &shard_commands {
            let _ = shard.send(command.clone());
        }
        match command {
            Command::Phase { phase, .. } => {
                for _ in 0..threads {
                    match shard_reports.recv().await {
                        Some(Report::PhaseReady { phase: ready }) if ready == phase => {}
                        other => bail!("shard answered {other:?} to the start of a phase"),
                    }
                }
                let _ = reports.send(Report::PhaseReady { phase });
            }
            Command::End { phase, .. } => {
                let mut merged = PhaseReport {
                    phase,
                    ..PhaseReport::default()
                };
                for _ in 0..threads {
                    match shard_reports.recv().await {
                        Some(Report::Phase(report)) => merged.merge(&report),
                        other => bail!("shard answered {other:?} to the end of a phase"),
                    }
                }
                let _ = reports.send(Report::Phase(merged));
            }
            Command::Stop => {
                let mut stopped = StopReport::default();
                for _ in 0..threads {
                    if let Some(Report::Stopped(report)) = shard_reports.recv().await {
                        stopped.merge(&report);
                    }
                }
                for handle in handles {
                    let _ = handle.join();
                }
                let _ = reports.send(Report::Stopped(stopped));
                return Ok(());
            }
        }
    }
    Ok(())
}

/// `loadgen worker`: a child process serving one [`WorkerConfig`] read
/// from the first line of stdin, then commands line by line; reports go to
/// stdout, one JSON object per line.
pub async fn child_main() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow!("no worker config on stdin"))?;
    let config: WorkerConfig = serde_json::from_str(&first).context("parsing the worker config")?;
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Command>(&line) {
                Ok(command) => {
                    if command_tx.send(command).is_err() {
                        break;
                    }
                }
                Err(error) => eprintln!("loadgen worker: bad command {line:?}: {error}"),
            }
        }
        // The coordinator went away: stop rather than hold sockets forever.
        let _ = command_tx.send(Command::Stop);
    });
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(report) = report_rx.recv().await {
            let mut line = serde_json::to_vec(&report)?;
            line.push(b'\n');
            stdout.write_all(&line).await?;
            stdout.flush().await?;
        }
        anyhow::Ok(())
    });
    serve(config, command_rx, report_tx).await?;
    writer.await??;
    Ok(())
}

/// The coordinator's handle on one worker, wherever it runs.
#[derive(Debug)]
pub struct WorkerLink {
    commands: mpsc::UnboundedSender<Command>,
    reports: mpsc::UnboundedReceiver<Report>,
    child: Option<tokio::process::Child>,
    pub subscribers: usize,
}

impl WorkerLink {
    /// Runs the worker on threads of this process.
    pub fn in_process(config: WorkerConfig) -> Self {
        let subscribers = config.count;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (report_tx, reports) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            if let Err(error) = serve(config, command_rx, report_tx).await {
                eprintln!("loadgen: worker failed: {error:#}");
            }
        });
        Self {
            commands,
            reports,
            child: None,
            subscribers,
        }
    }

    /// The child process running this worker, if it runs in one.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|child| child.id())
    }

    /// Runs the worker as `loadgen worker`, a child of this process, so it
    /// has its own open-file limit.
    pub fn child(config: WorkerConfig) -> anyhow::Result<Self> {
        let subscribers = config.count;
        let exe = std::env::current_exe().context("finding the loadgen executable")?;
        let mut child = tokio::process::Command::new(exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (commands, mut command_rx) = mpsc::unbounded_channel::<Command>();
        let (report_tx, reports) = mpsc::unbounded_channel();
        let mut first = serde_json::to_vec(&config)?;
        first.push(b'\n');
        tokio::spawn(async move {
            if stdin.write_all(&first).await.is_err() {
                return;
            }
            while let Some(command) = command_rx.recv().await {
                let Ok(mut line) = serde_json::to_vec(&command) else {
                    continue;
                };
                line.push(b'\n');
                if stdin.write_all(&line).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Report>(&line) {
                    Ok(report) => {
                        if report_tx.send(report).is_err() {
                            return;
                        }
                    }
                    Err(error) => eprintln!("loadgen: bad worker report {line:?}: {error}"),
                }
            }
        });
        Ok(Self {
            commands,
            reports,
            child: Some(child),
            subscribers,
        })
    }

    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    pub async fn recv(&mut self) -> anyhow::Result<Report> {
        self.reports
            .recv()
            .await
            .ok_or_else(|| anyhow!("a worker exited early"))
    }

    /// Waits for a child worker to exit (it does after `Stop`).
    pub async fn wait(mut self) {
        if let Some(mut child) = self.child.take()
            && tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
        {
            let _ = child.kill().await;
        }
    }
}
