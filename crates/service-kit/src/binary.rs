//! The shared `main` of every binary: arguments, settings, logs, bus, serve.

use std::process::ExitCode;

use crate::server::App;
use crate::settings::{self, BinaryDefaults, Command, Engine, Settings};

/// What a process does with the bus, which decides how the Redis engine connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusRole {
    /// Only publishes (ingest).
    Publisher,
    /// Subscribes and replays (gateway), or does everything (standalone).
    Subscriber,
}

/// Connects the engine the settings name.
pub async fn connect_bus(settings: &Settings, role: BusRole) -> anyhow::Result<bus::Bus> {
    match settings.bus.engine {
        Engine::Memory => Ok(bus::Bus::memory(settings.memory_config())),
        Engine::Redis => {
            let role = match role {
                BusRole::Publisher => bus::Role::Publisher,
                BusRole::Subscriber => bus::Role::Subscriber,
            };
            bus::Bus::redis(settings.redis_config(), role)
                .await
                .map_err(|error| anyhow::anyhow!("connecting to Redis (redis.url): {error}"))
        }
    }
}

/// Runs a service binary to completion; the exit code says how it ended.
pub async fn run<F>(defaults: BinaryDefaults, role: BusRole, build: F) -> ExitCode
where
    F: FnOnce(&Settings, bus::Bus) -> anyhow::Result<App>,
{
    let file = match settings::parse_args(std::env::args().skip(1)) {
        Ok(Command::Run { config_file }) => config_file,
        Ok(Command::Help) => {
            println!(
                "{name}: part of event-stream\n\nUSAGE: {name} [--config FILE] | --version | --help\n\n\
                 Settings come from built-in defaults, then FILE (TOML), then\n\
                 environment variables ES__<SECTION>__<KEY>, e.g. ES__HTTP__PORT=8080.\n\
                 See README.md for every key.",
                name = defaults.name
            );
            return ExitCode::SUCCESS;
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
    let settings = match Settings::load(defaults, file.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{}: {error}", defaults.name);
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(&settings.log);
    let result = async {
        let bus = connect_bus(&settings, role).await?;
        tracing::info!(engine = bus.engine_name(), "event bus connected");
        build(&settings, bus)?.run().await
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
