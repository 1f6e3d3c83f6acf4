//! Logs through `tracing`: human text by default, JSON for log pipelines.
//!
//! Text: `<time> <LEVEL> request{request_id=...}: <target>: <message> <fields>`;
//! the `request{...}` part is the span of the request a line was logged
//! for (see [`crate::access_log`]).
//!
//! JSON: one object per line, every field at the top level:
//! `timestamp`, `level`, `target`, `message`, the line's own fields, and
//! the fields of the spans it was logged in (`request_id`), so a pipeline
//! reads a request's id at the same place on every line.
//!
//! Lines reach stdout through a thread of their own (tracing-appender's
//! lossy non-blocking writer): whoever logs only queues the line. A stdout
//! that takes nothing, a pipe whose reader stalled, would otherwise block
//! every thread that logs, and with them the one that handles SIGTERM; here
//! the queue fills to `log.buffered_lines`, later lines are dropped and
//! counted (`es_log_lines_dropped_total`), and the service keeps serving and
//! still stops on a signal.

use std::time::Duration;

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::settings::{LogFormat, LogSettings};

/// Keeps the log writer's thread; dropping it writes out the lines still
/// queued. Hold it until the process ends.
#[must_use = "dropping it stops the log writer"]
#[derive(Debug)]
pub struct Logging {
    writer: Option<WorkerGuard>,
}

/// How long the end of the process waits for the queued lines to be
/// written: tracing-appender's own waits (100 ms to queue its stop, 1 s for
/// the lines before it) and some room.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(1500);

impl Drop for Logging {
    /// Never blocks longer than [`FLUSH_TIMEOUT`]: when the queue is full
    /// because stdout takes nothing, tracing-appender's guard reports that
    /// with a `println!` to that same stdout, which would block the exit for
    /// ever. It is dropped on a thread of its own; past the timeout the
    /// process ends without it (and without the lines still queued).
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let (finished, done) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                drop(writer);
                let _ = finished.send(());
            });
        if spawned.is_ok() {
            let _ = done.recv_timeout(FLUSH_TIMEOUT);
        }
    }
}

/// The stdout writer: lines queued, written by a thread of its own.
fn stdout_writer(settings: &LogSettings) -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(settings.buffered_lines)
        .thread_name("log-writer")
        .finish(std::io::stdout());
    let dropped = writer.error_counter();
    operations::metrics::count_dropped_log_lines(move || dropped.dropped_lines() as u64);
    (writer, guard)
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the
/// configured level so an operator can turn up one module at a time.
pub fn init(settings: &LogSettings) -> Logging {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.level));
    let (writer, guard) = stdout_writer(settings);
    // A second init (tests) keeps the first subscriber.
    let _ = match settings.format {
        LogFormat::Text => {
            // Colours only for a person at a terminal, never in files or collectors.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_writer(writer)
                .try_init()
                .is_ok()
        }
        LogFormat::Json => {
            let mut json = json_subscriber::JsonLayer::new(writer);
            json.with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
                .with_level("level")
                .with_target("target")
                .with_flattened_event()
                // No span of ours shares a field name with a line logged
                // in it (the close line of a stream, which names its
                // request id, is logged outside any span).
                .with_top_level_flattened_span_list();
            tracing_subscriber::registry()
                .with(filter)
                .with(json)
                .try_init()
                .is_ok()
        }
    };
    Logging {
        writer: Some(guard),
    }
}
