//! The `stream-gateway` binary: the fan-out service over Redis.

use service_kit::binary;
use service_kit::settings::{BinaryDefaults, Engine};

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let defaults = BinaryDefaults {
        name: "stream-gateway",
        port: 8082,
        engine: Engine::Redis,
    };
    binary::run(defaults, bus::Role::Subscriber, stream_gateway::build).await
}
