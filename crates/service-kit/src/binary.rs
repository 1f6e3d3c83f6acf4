//! The shared `main` of every binary: arguments, settings (the common
//! sections and those of the parts it runs), logs, bus, serve.
//!
//! Start-up order: the bus is created without waiting for its engine, the
//! app is built and listens at once (`/healthz` answers 200, `/readyz` 503
//! until the bus is ready, so an orchestrator sees a live process waiting
//! for Redis), then the bus is waited for. A Redis bus not ready within
//! `redis.startup_timeout_ms` (0: waits for ever) ends the process with an
//! error naming `redis.url`; until then it retries in the background.

use std::process::ExitCode;

use crate::args::{self, Command};
use crate::section::Sections;
use crate::server::App;
use crate::settings::{BinaryDefaults, Engine, Settings};

/// Raises the soft limit on open files to the hard limit, before anything
/// is sized from it (`http.max_connections`, `stream.max_streams`). Every
/// connection is a file, and shells and container runtimes commonly start
/// processes with a soft limit of 1,024 under a hard one of a million; a
/// server holding a file per client raises its own (the Go runtime does
/// the same), so no wrapper script has to.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit raised to the hard limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}

/// Creates the engine the settings name, without waiting for it: a Redis
/// bus connects in the background (see [`wait_for_bus`]). Fails only on a
/// Redis URL that cannot be used.
pub fn open_bus<S: Sections>(settings: &Settings<S>, role: bus::Role) -> anyhow::Result<bus::Bus> {
    match settings.bus.engine {
        Engine::Memory => Ok(bus::Bus::memory(settings.memory_config())),
        Engine::Redis => bus::Bus::redis(settings.redis_config(), role)
            .map_err(|error| anyhow::anyhow!("opening the Redis bus (redis.url): {error}")),
    }
}

/// Waits until `bus` is ready. A Redis bus gives up after its start-up
/// timeout, with an error naming the settings to look at.
pub async fn wait_for_bus(bus: &bus::Bus) -> anyhow::Result<()> {
    bus.wait_ready().await.map_err(|error| {
        anyhow::anyhow!(
            "waiting for Redis at start (check redis.url; redis.startup_timeout_ms \
             bounds the wait, 0 waits for ever): {error}"
        )
    })
}

/// Runs a service binary to completion; the exit code says how it ended.
pub async fn run<S, F>(defaults: BinaryDefaults, role: bus::Role, build: F) -> ExitCode
where
    S: Sections,
    F: FnOnce(&Settings<S>, bus::Bus) -> anyhow::Result<App>,
{
    let file = match args::parse_args(std::env::args().skip(1)) {
        Ok(Command::Run { config_file }) => config_file,
        Ok(Command::Help) => {
            println!(
                "{name}: part of event-stream\n\nUSAGE: {name} [--config FILE] | --version | --help\n       {name} {mint}\n\n\
                 Settings come from built-in defaults, then FILE (TOML), then\n\
                 environment variables ES__<SECTION>__<KEY>, e.g. ES__HTTP__PORT=8080.\n\
                 See README.md for every key.",
                name = defaults.name,
                mint = crate::mint_token::USAGE,
            );
            return ExitCode::SUCCESS;
        }
        Ok(Command::MintToken(mint)) => {
            return match mint.mint(|var| std::env::var(var).ok()) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{} mint-token: {error}", defaults.name);
                    ExitCode::from(2)
                }
            };
        }
        Ok(Command::Version) => {
            println!("{} {}", defaults.name, env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("{}: {error}", defaults.name);
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::<S>::load(defaults, file.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{}: {error}", defaults.name);
            return ExitCode::from(2);
        }
    };
    // Held to the end: the lines still queued are written when it drops.
    let _logging = crate::telemetry::init(&settings.log);
    raise_open_file_limit();
    let result = async {
        let bus = open_bus(&settings, role)?;
        // Built (and listening) before the bus is ready: see the module docs.
        let app = build(&settings, bus.clone())?;
        let startup = async {
            match wait_for_bus(&bus).await {
                Ok(()) => {
                    tracing::info!(engine = bus.engine_name(), "event bus ready");
                    std::future::pending::<anyhow::Error>().await
                }
                Err(error) => error,
            }
        };
        tokio::select! {
            // The server stopped: a signal, a shutdown request or a failure.
            served = app.run() => served,
            // The bus was not ready within the start-up timeout: exit, so
            // that a wrong address shows up as a failed start, not as a
            // process answering 503 for ever.
            error = startup => Err(error),
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "stopped");
            eprintln!("{}: {error:#}", defaults.name);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn a_redis_bus_not_ready_within_the_startup_timeout_fails_naming_the_settings() {
        // A port nobody listens on once the probe is dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = bus::RedisConfig {
            url: format!("redis://user:hunter2@127.0.0.1:{port}/"),
            startup_timeout: Duration::from_secs(1),
            ..bus::RedisConfig::default()
        };
        for role in [bus::Role::Publisher, bus::Role::Subscriber] {
            let bus = bus::Bus::redis(config.clone(), role).unwrap();
            let started = Instant::now();
            let error = format!("{:#}", wait_for_bus(&bus).await.unwrap_err());
            assert!(started.elapsed() >= Duration::from_secs(1), "{role:?}");
            for part in [
                "redis.url",
                "redis.startup_timeout_ms",
                &format!("redis://user:***@127.0.0.1:{port}/"),
            ] {
                assert!(error.contains(part), "{role:?}: {part} missing in {error}");
            }
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[tokio::test]
    async fn a_memory_bus_is_ready_at_once() {
        let bus = bus::Bus::memory(bus::MemoryConfig::default());
        wait_for_bus(&bus).await.unwrap();
    }
}
