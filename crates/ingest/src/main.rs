//! The `ingest` binary: the publish service over Redis.

use service_kit::binary;
use service_kit::settings::{BinaryDefaults, Engine};

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let defaults = BinaryDefaults {
        name: "ingest",
        port: 8081,
        engine: Engine::Redis,
    };
    binary::run(defaults, bus::Role::Publisher, ingest::build).await
}
