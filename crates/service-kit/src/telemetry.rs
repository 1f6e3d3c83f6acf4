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

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::settings::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the
/// configured level so an operator can turn up one module at a time.
pub fn init(settings: &LogSettings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.level));
    // A second init (tests) keeps the first subscriber.
    let _ = match settings.format {
        LogFormat::Text => {
            // Colours only for a person at a terminal, never in files or collectors.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .try_init()
                .is_ok()
        }
        LogFormat::Json => {
            let mut json = json_subscriber::JsonLayer::stdout();
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
}
