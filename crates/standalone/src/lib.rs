//! The embedded default: publishing and streaming in one process, on one
//! port, over the in-memory bus (or Redis, if configured).
//!
//! It is the ingest's publish part and the gateway's stream part over one
//! shared bus: `POST /event-stream` goes to ingest, `GET /event-stream` to
//! the gateway, exactly as nginx routes them in the distributed deployment.

use service_kit::{App, Settings, Shared, compose};

/// Builds the combined app over `bus`, bound but not yet running.
pub fn build(settings: &Settings, bus: bus::Bus) -> anyhow::Result<App> {
    let shared = Shared::new(bus);
    let publish = ingest::part(settings, &shared);
    let (stream, lean) = stream_gateway::part(settings, &shared);
    compose::bind(&settings.http, shared, vec![publish, stream], Some(lean))
}
