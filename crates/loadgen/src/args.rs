//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::memory::Group;
use crate::publisher::BodyFormat;
use crate::sweep::SweepBy;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for SSE hubs: subscribers, publishers, latency, loss, memory per connection",
    long_about = "Opens N SSE subscribers (ramped, spread over loopback source addresses and, \
past one process's open-file limit, over child processes), then publishes stamped messages \
at fixed rates (open loop) or flat out (closed loop), and reports deliveries/s, end-to-end \
latency percentiles, loss, duplicates and order per subscriber, publish/s and publish \
latency, and the memory per connection of the processes named with --mem.\n\n\
Two more stages measure memory per unit: --topic-sweep (per new topic, by publishing to \
it or only naming it in short GETs) and --replay (per client resuming a full history \
without reading).\n\n\
Defaults speak event-stream's API (--target); --sub-url, --pub-url and --body adapt it to \
any other hub, e.g. Nchan:\n  loadgen --sub-url 'http://127.0.0.1:8080/sub?topic={topic}' \
--pub-url 'http://127.0.0.1:8080/pub?topic={topic}' --body raw -n 1000 --rate 100"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Mode>,

    /// Base URL of an event-stream deployment: subscribe with
    /// GET {target}/event-stream?topic=..., publish with a JSON POST to
    /// {target}/event-stream. Repeatable: subscriber i then goes to target
    /// i % count (round robin over several servers, e.g. gateways past one
    /// process's open-file limit) and publishes go to the first one.
    #[arg(long, default_value = "http://127.0.0.1:9990")]
    pub target: Vec<String>,

    /// Subscribe URL; `{topic}` is replaced by each topic's name.
    /// Repeatable, like --target: subscriber i uses URL i % count. Replaces
    /// the subscribe URLs --target would give.
    #[arg(long)]
    pub sub_url: Vec<String>,

    /// Publish URL; `{topic}` is replaced by the topic's name. Default: the
    /// first --target's.
    #[arg(long)]
    pub pub_url: Option<String>,

    /// How a publish carries its message.
    #[arg(long, value_enum, default_value = "json")]
    pub body: BodyFormat,

    /// Number of topics; subscriber i and publisher i use topic i % topics.
    /// With several subscribe URLs, subscriber i's server is i % servers
    /// too: a topic count sharing a factor with the server count puts only
    /// some topics on each server.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,

    /// Topic names are PREFIX-0, PREFIX-1, ...; default: unique per run.
    #[arg(long)]
    pub topic_prefix: Option<String>,

    /// SSE subscribers to open.
    #[arg(short = 'n', long, default_value_t = 0)]
    pub subscribers: usize,

    /// New subscriber connections per second (0: as fast as possible).
    #[arg(long, default_value_t = 2000.0)]
    pub ramp: f64,

    /// Spread connections over source addresses 127.0.0.1 .. 127.0.0.N
    /// (each has its own ~28k ephemeral ports).
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,

    /// Most subscribers one process holds; past it, child processes each
    /// take a share (default: this process's open-file limit less 512).
    #[arg(long)]
    pub per_process: Option<usize>,

    /// Force this many subscriber processes (0: as few as fit).
    #[arg(long, default_value_t = 0)]
    pub processes: usize,

    /// Threads per subscriber process.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,

    /// Open-loop publish rates, messages/s over all publishers; one phase
    /// per value (`--rate 20,50,100,200` steps through four).
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<f64>,

    /// Add a closed-loop phase: each publisher sends its next message as
    /// soon as the previous one is answered.
    #[arg(long)]
    pub closed_loop: bool,

    /// Publisher connections (default: open loop max(topics, 4, rate/20),
    /// so each sends at most 20 msg/s; closed loop 16).
    #[arg(long)]
    pub publishers: Option<usize>,

    /// Length of each publishing phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// After a phase, how long subscribers may take to receive every
    /// acknowledged message before the rest counts as lost.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Wait after all subscribers connected, before measuring memory.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,

    /// With no publishing phase: keep the subscribers open this long.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub hold: Duration,

    /// Message size in bytes (at least the ~35-byte stamp).
    #[arg(long, default_value_t = 64)]
    pub message_bytes: usize,

    /// A publish not answered within this counts as timed out.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub publish_timeout: Duration,

    /// Bound on a subscriber's connect and response head.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Processes whose memory and open files are measured:
    /// NAME=PID[,PID...]; repeatable.
    #[arg(long = "mem", value_name = "NAME=PIDS")]
    pub memory: Vec<Group>,

    /// After everything else: this many connect/first-bytes/close cycles,
    /// reporting the --mem processes' open files and memory before and after.
    #[arg(long, default_value_t = 0)]
    pub churn: u64,

    /// Concurrent churn loops.
    #[arg(long, default_value_t = 50)]
    pub churn_concurrency: usize,

    /// Upper bound on the churn's duration.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub churn_limit: Duration,

    /// Memory per topic: after everything else, name this many new,
    /// distinct topics in each pass of --sweep-by and report the --mem
    /// processes' RSS growth per topic.
    #[arg(long, default_value_t = 0)]
    pub topic_sweep: usize,

    /// The topic sweep's passes, in order, each over topics of its own:
    /// `publish` (one event to each topic; answers counted by status) and
    /// `subscribe` (GETs naming --topics-per-get unused topics each as
    /// repeated `topic=`, closed at their first body bytes).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "publish")]
    pub sweep_by: Vec<SweepBy>,

    /// Topics per GET in a `subscribe` pass (event-stream's
    /// `stream.max_topics` allows 16 by default).
    #[arg(long, default_value_t = 16)]
    pub topics_per_get: usize,

    /// Concurrent connections of a topic sweep pass and of the replay's
    /// history publishing.
    #[arg(long, default_value_t = 16)]
    pub sweep_concurrency: usize,

    /// Upper bound on each topic sweep pass and on publishing the replay's
    /// history.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub sweep_limit: Duration,

    /// Memory per replaying client: after everything else, publish
    /// --replay-history events (of --message-bytes) to each of the --topics
    /// topics, then open this many streams naming all of them with
    /// `Last-Event-ID: 0-0,...` (resume from the start) that never read,
    /// and report the --mem processes' RSS growth per stream after --settle,
    /// and again once they are closed. Keep --settle well inside the
    /// server's send timeout, which cuts clients that do not read.
    #[arg(long, default_value_t = 0)]
    pub replay: usize,

    /// Replaying clients waiting for their response head at a time (a
    /// server may build the whole replay before it answers).
    #[arg(long, default_value_t = 10)]
    pub replay_concurrency: usize,

    /// Events published to each topic before the replaying clients connect.
    #[arg(long, default_value_t = 1000)]
    pub replay_history: u64,

    /// SO_RCVBUF of each replaying client's socket, in bytes: small, so the
    /// replay waits in the server rather than in the client's kernel.
    #[arg(long, default_value_t = 4096)]
    pub recv_buffer: u32,

    /// Write the JSON report here (`-` for stdout; the human summary then
    /// goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// No human summary.
    #[arg(short, long)]
    pub quiet: bool,

    /// Free text copied into the report.
    #[arg(long)]
    pub label: Option<String>,

    /// An environment variable holding a token for a server in token mode
    /// (`auth.publish = "token"`, private topics): publishes send it as
    /// `Authorization: Bearer`, subscriptions as `access_token=` in the
    /// URL, as an EventSource must. Read from the environment, not the
    /// command line; never written to the report.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,

    /// Allow non-loopback targets (never needed on one machine).
    #[arg(long)]
    pub allow_remote: bool,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Internal: a subscriber process driven by its parent over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

/// `500ms`, `10s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 500ms, 10s or 2m"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?}: must be a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Args::command().debug_assert();
    }
}
