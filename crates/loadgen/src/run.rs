//! The coordinator: opens the subscriber population, runs the publishing
//! phases, measures memory and churn, then memory per topic and per
//! replaying client, and assembles the report.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::args::Args;
use crate::churn;
use crate::histogram::Histogram;
use crate::http::Url;
use crate::memory::{self, GroupReport};
use crate::payload;
use crate::protocol::{Command, ConnectReport, PhaseReport, Report, StopReport, WorkerConfig};
use crate::publisher::{self, Pace, PhasePlan};
use crate::replay::{self, ReplayPlan};
use crate::report::{
    ChurnSamples, ChurnSummary, CpuUse, DeliverySummary, PhaseSummary, PublishSummary, RunReport,
};
use crate::sweep::{self, SweepPlan};
use crate::worker::WorkerLink;

/// Runs what `args` asks for and returns the report.
pub async fn run(args: &Args) -> anyhow::Result<RunReport> {
    let prefix = args.topic_prefix.clone().unwrap_or_else(|| {
        format!(
            "lg{}-{}",
            std::process::id(),
            payload::now_micros() % 1_000_000
        )
    });
    let topics: Vec<String> = (0..args.topics.max(1))
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    // One subscribe template per server; subscriber i goes to server
    // i % servers (see `WorkerConfig::sub_urls`).
    let sub_templates: Vec<String> = if args.sub_url.is_empty() {
        args.target
            .iter()
            .map(|target| {
                format!(
                    "{}/event-stream?topic={{topic}}",
                    target.trim_end_matches('/')
                )
            })
            .collect()
    } else {
        args.sub_url.clone()
    };
    let first_target = args.target.first().context("--target: none given")?;
    let pub_template = args
        .pub_url
        .clone()
        .unwrap_or_else(|| format!("{}/event-stream", first_target.trim_end_matches('/')));
    let token = match &args.token_env {
        Some(var) => {
            Some(std::env::var(var).with_context(|| format!("--token-env {var}: not set"))?)
        }
        None => None,
    };
    let token = token.as_deref();
    // What the clients send; the report keeps the templates, tokenless.
    let sub_sent: Vec<String> = sub_templates
        .iter()
        .map(|template| with_access_token(template, token))
        .collect();
    let sub_urls: Vec<Vec<String>> = sub_sent
        .iter()
        .map(|template| {
            topics
                .iter()
                .map(|t| template.replace("{topic}", t))
                .collect()
        })
        .collect();
    let publish_url =
        |target: &str| Url::parse(target, args.allow_remote).map(|url| url.with_bearer(token));
    let pub_urls = topics
        .iter()
        .map(|t| publish_url(&pub_template.replace("{topic}", t)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Every server's URL for every topic: churn cycles through them all.
    let sub_parsed = sub_urls
        .iter()
        .flatten()
        .map(|u| Url::parse(u, args.allow_remote))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let source_ips = source_ips(args, &sub_parsed)?;

    let mut report = RunReport {
        label: args.label.clone(),
        started_micros: payload::now_micros(),
        load_average_start: memory::load_average(),
        sub_urls: sub_templates.clone(),
        pub_url: pub_template.clone(),
        topics: topics.clone(),
        ..RunReport::default()
    };

    // Subscribers.
    let baseline: Vec<_> = args.memory.iter().map(|g| g.sample()).collect();
    let per_process = args.per_process.unwrap_or_else(default_per_process).max(1);
    let n = args.subscribers;
    let processes = if n == 0 {
        0
    } else if args.processes > 0 {
        args.processes
    } else {
        n.div_ceil(per_process)
    };
    let mut workers = Vec::new();
    for k in 0..processes {
        let first = k * n / processes;
        let count = (k + 1) * n / processes - first;
        let config = WorkerConfig {
            sub_urls: sub_urls.clone(),
            allow_remote: args.allow_remote,
            first,
            count,
            source_ips: source_ips.clone(),
            ramp_per_sec: args.ramp / processes as f64,
            threads: args.threads,
            connect_timeout_ms: args.connect_timeout.as_millis() as u64,
        };
        workers.push(if processes == 1 && args.processes == 0 {
            WorkerLink::in_process(config)
        } else {
            WorkerLink::child(config)?
        });
    }
    let connect_started = Instant::now();
    let mut connected = ConnectReport::default();
    for worker in &mut workers {
        match worker.recv().await? {
            Report::Connected(c) => connected.merge(&c),
            other => bail!("worker answered {other:?} instead of connecting"),
        }
    }
    report.subscribers = crate::report::SubscriberSummary {
        requested: n as u64,
        connected: connected.connected,
        failed: connected.failed,
        errors: connected.errors.clone(),
        processes,
        threads_per_process: args.threads,
        source_ips: source_ips.len().max(1),
        connect_seconds: connect_started.elapsed().as_secs_f64(),
        disconnected: 0,
    };
    if n > 0 {
        tokio::time::sleep(args.settle).await;
    }
    for (group, before) in args.memory.iter().zip(&baseline) {
        report.memory.push(GroupReport::new(
            group,
            *before,
            group.sample(),
            connected.connected,
        ));
    }

    // Publishing phases.
    let mut paces: Vec<Pace> = args.rate.iter().map(|&r| Pace::Open(r)).collect();
    if args.closed_loop {
        paces.push(Pace::Closed);
    }
    for (index, pace) in paces.iter().enumerate() {
        let phase = index as u32 + 1;
        // Each open-loop publisher sends one request at a time, so keep
        // its pace at 20 msg/s or less: a server may take up to 50 ms per
        // publish before the offered rate falls short.
        let publishers = args.publishers.unwrap_or(match pace {
            Pace::Open(rate) => topics.len().max(4).max((rate / 20.0).ceil() as usize),
            Pace::Closed => 16,
        });
        let plan = PhasePlan {
            phase,
            urls: pub_urls.clone(),
            topic_names: topics.clone(),
            body: args.body,
            publishers: publishers.max(1),
            pace: *pace,
            duration: args.duration,
            message_bytes: args.message_bytes,
            timeout: args.publish_timeout,
            source_ips: source_ips.clone(),
        };
        let summary = run_phase(&plan, &mut workers, args.drain, &args.memory).await?;
        report.phases.push(summary);
    }
    if paces.is_empty() && n > 0 {
        tokio::time::sleep(args.hold).await;
    }

    // Close the subscribers before churning, so the churn starts from an
    // idle server.
    let mut stopped = StopReport::default();
    for worker in &workers {
        worker.send(Command::Stop);
    }
    for mut worker in workers {
        if let Ok(Report::Stopped(s)) = worker.recv().await {
            stopped.merge(&s);
        }
        worker.wait().await;
    }
    report.subscribers.disconnected = stopped.disconnected;

    if args.churn > 0 {
        // Let the server notice the closed subscribers first.
        tokio::time::sleep(args.settle).await;
        let before: Vec<_> = args.memory.iter().map(|g| g.sample()).collect();
        let result = churn::run(
            &sub_parsed,
            &source_ips,
            args.churn,
            args.churn_concurrency,
            args.churn_limit,
        )
        .await;
        let after: Vec<_> = args.memory.iter().map(|g| g.sample()).collect();
        tokio::time::sleep(args.settle).await;
        let samples = args
            .memory
            .iter()
            .zip(before.into_iter().zip(after))
            .map(|(group, (before, after))| ChurnSamples {
                name: group.name.clone(),
                before,
                after,
                settled: group.sample(),
            })
            .collect();
        report.churn = Some(ChurnSummary { result, samples });
    }
    // Each stage below names topics the server has never seen, so what it
    // keeps for them is new and measured from a settled start.
    if args.topic_sweep > 0 {
        let plan = SweepPlan {
            // The first server's: these stages measure one server.
            sub_template: sub_sent[0].clone(),
            pub_url: publish_url(&pub_template)?,
            body: args.body,
            topics_per_get: args.topics_per_get,
            message_bytes: args.message_bytes,
            concurrency: args.sweep_concurrency,
            publish_timeout: args.publish_timeout,
            limit: args.sweep_limit,
            settle: args.settle,
            source_ips: source_ips.clone(),
            allow_remote: args.allow_remote,
        };
        for (pass, by) in args.sweep_by.iter().enumerate() {
            let names = (0..args.topic_sweep)
                .map(|i| format!("{prefix}-s{pass}-{i}"))
                .collect();
            report
                .topic_sweep
                .push(sweep::run(&plan, *by, names, &args.memory).await?);
        }
    }
    if args.replay > 0 {
        let plan = ReplayPlan {
            // The first server's: these stages measure one server.
            sub_template: sub_sent[0].clone(),
            pub_url: publish_url(&pub_template)?,
            body: args.body,
            topics: topics.iter().map(|t| format!("{t}-r")).collect(),
            events_per_topic: args.replay_history,
            message_bytes: args.message_bytes,
            clients: args.replay,
            concurrency: args.replay_concurrency,
            recv_buffer: args.recv_buffer,
            publish_timeout: args.publish_timeout,
            connect_timeout: args.connect_timeout,
            limit: args.sweep_limit,
            settle: args.settle,
            source_ips: source_ips.clone(),
            allow_remote: args.allow_remote,
        };
        report.replay = Some(replay::run(&plan, &args.memory).await?);
    }
    report.load_average_end = memory::load_average();
    Ok(report)
}

async fn run_phase(
    plan: &PhasePlan,
    workers: &mut [WorkerLink],
    drain: Duration,
    measured: &[memory::Group],
) -> anyhow::Result<PhaseSummary> {
    let start_micros = payload::now_micros();
    for worker in workers.iter() {
        worker.send(Command::Phase {
            phase: plan.phase,
            start_micros,
        });
    }
    for worker in workers.iter_mut() {
        match worker.recv().await? {
            Report::PhaseReady { phase } if phase == plan.phase => {}
            other => bail!("worker answered {other:?} to the start of a phase"),
        }
    }
    // CPU over the publishing time, per --mem group and for this tool.
    let mut cpu_sets: Vec<(String, Vec<u32>)> = measured
        .iter()
        .map(|group| (group.name.clone(), group.pids.clone()))
        .collect();
    let mut own = vec![std::process::id()];
    own.extend(workers.iter().filter_map(WorkerLink::pid));
    cpu_sets.push(("loadgen".to_owned(), own));
    let cpu_before: Vec<f64> = cpu_sets
        .iter()
        .map(|(_, pids)| memory::cpu_seconds(pids))
        .collect();
    let started = Instant::now();
    let results = publisher::run_phase(plan).await;
    let publish_seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_sets
        .iter()
        .zip(cpu_before)
        .map(|((name, pids), before)| CpuUse {
            name: name.clone(),
            cores: (memory::cpu_seconds(pids) - before) / publish_seconds.max(1e-9),
        })
        .collect();

    let mut publish = PublishSummary::default();
    let mut latency = Histogram::default();
    for r in &results {
        publish.sent += r.sent;
        publish.ok += r.ok;
        publish.failed += r.failed;
        publish.timeouts += r.timeouts;
        publish.behind_schedule += r.behind_schedule;
        publish.unsent += r.unsent;
        for (status, n) in &r.statuses {
            *publish.statuses.entry(*status).or_default() += n;
        }
        for (error, n) in &r.errors {
            *publish.errors.entry(error.clone()).or_default() += n;
        }
        latency.merge(&r.latency);
    }
    publish.per_second = publish.ok as f64 / plan.duration.as_secs_f64().max(1e-9);
    publish.latency = latency.summary();

    let acked: Vec<_> = results.into_iter().map(|r| r.acked).collect();
    let mut merged = PhaseReport {
        phase: plan.phase,
        ..PhaseReport::default()
    };
    for worker in workers.iter() {
        worker.send(Command::End {
            phase: plan.phase,
            acked: acked.clone(),
            drain_ms: drain.as_millis() as u64,
        });
    }
    for worker in workers.iter_mut() {
        match worker.recv().await.context("waiting for a phase report")? {
            Report::Phase(r) => merged.merge(&r),
            other => bail!("worker answered {other:?} to the end of a phase"),
        }
    }
    let ended_micros = payload::now_micros();
    let seconds = if merged.last_delivery_micros > start_micros {
        (merged.last_delivery_micros - start_micros) as f64 / 1e6
    } else {
        publish_seconds
    };
    let delivery = DeliverySummary {
        subscribers: merged.subscribers,
        expected: (merged.deliveries + merged.lost)
            .saturating_sub(merged.duplicates + merged.unacknowledged),
        deliveries: merged.deliveries,
        per_second: merged.deliveries as f64 / seconds.max(1e-9),
        lost: merged.lost,
        subscribers_with_loss: merged.subscribers_with_loss,
        duplicates: merged.duplicates,
        out_of_order: merged.out_of_order,
        unacknowledged: merged.unacknowledged,
        late: merged.late,
        foreign: merged.foreign,
        disconnected: merged.disconnected,
        seconds,
        latency: Histogram::from_wire(&merged.latency).summary(),
        missing_samples: merged.missing_samples.clone(),
    };
    Ok(PhaseSummary {
        phase: plan.phase,
        pace: match plan.pace {
            Pace::Open(_) => "open".to_owned(),
            Pace::Closed => "closed".to_owned(),
        },
        target_rate: match plan.pace {
            Pace::Open(rate) => Some(rate),
            Pace::Closed => None,
        },
        duration_seconds: plan.duration.as_secs_f64(),
        started_micros: start_micros,
        ended_micros,
        publishers: plan.publishers,
        publish,
        delivery,
        cpu,
    })
}

/// 127.0.0.1 .. 127.0.0.N when every subscribe target is IPv4 loopback.
fn source_ips(args: &Args, targets: &[Url]) -> anyhow::Result<Vec<IpAddr>> {
    if args.source_ips <= 1 {
        return Ok(Vec::new());
    }
    if !targets
        .iter()
        .all(|target| matches!(target.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()))
    {
        bail!("--source-ips needs IPv4 loopback targets");
    }
    Ok((1..=args.source_ips)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect())
}

/// This process's soft open-file limit less room for everything else.
fn default_per_process() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    soft.saturating_sub(512).max(100)
}

/// `template` with `access_token=token` added to its query, when there is
/// a token.
fn with_access_token(template: &str, token: Option<&str>) -> String {
    match token {
        Some(token) => {
            let joiner = if template.contains('?') { '&' } else { '?' };
            format!("{template}{joiner}access_token={token}")
        }
        None => template.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::publisher::BodyFormat;

    #[test]
    fn a_token_goes_in_the_stream_url_and_the_publish_head() {
        assert_eq!(
            with_access_token(
                "http://127.0.0.1:1/event-stream?topic={topic}",
                Some("t.o.k")
            ),
            "http://127.0.0.1:1/event-stream?topic={topic}&access_token=t.o.k"
        );
        assert_eq!(
            with_access_token("http://127.0.0.1:1/sub", Some("t")),
            "http://127.0.0.1:1/sub?access_token=t"
        );
        assert_eq!(with_access_token("http://h/x", None), "http://h/x");
        let url = Url::parse("http://127.0.0.1:1/event-stream", false)
            .unwrap()
            .with_bearer(Some("t.o.k"));
        let mut request = Vec::new();
        publisher::build_request(&url, BodyFormat::Json, "a", "m", &mut request);
        let request = String::from_utf8(request).unwrap();
        assert!(
            request
                .contains("\r\nAuthorization: Bearer t.o.k\r\nContent-Type: application/json\r\n"),
            "{request}"
        );
        let bare = Url::parse("http://127.0.0.1:1/event-stream", false)
            .unwrap()
            .with_bearer(None);
        let mut request = Vec::new();
        publisher::build_request(&bare, BodyFormat::Json, "a", "m", &mut request);
        assert!(
            !String::from_utf8(request)
                .unwrap()
                .contains("Authorization")
        );
    }
}
