//! The `event-stream` binary: the whole API on one port, no Redis needed.

use service_kit::binary;
use service_kit::settings::{BinaryDefaults, Engine};

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let defaults = BinaryDefaults {
        name: "event-stream",
        port: 9990,
        engine: Engine::Memory,
    };
    binary::run(defaults, bus::Role::Subscriber, standalone::build).await
}
