//! The embedded default: publishing and streaming in one process, on one
//! port, over the in-memory bus (or Redis, if configured).
//!
//! It is the ingest's publish part and the gateway's stream part over one
//! shared bus: `POST /event-stream` goes to ingest, `GET /event-stream` to
//! the gateway, exactly as nginx routes them in the distributed deployment.

use ingest::PublishSettings;
use operations::Shared;
use service_kit::{App, Settings, compose};
use stream_gateway::StreamSettings;

/// The sections the standalone binary runs: ingest's and the gateway's.
pub type Sections = (PublishSettings, StreamSettings);

/// Builds the combined app over `bus`, bound but not yet running.
pub fn build(settings: &Settings<Sections>, bus: bus::Bus) -> anyhow::Result<App> {
    let shared = Shared::new(bus);
    let (publish_settings, stream_settings) = &settings.own;
    let publish = ingest::part(publish_settings, &settings.http, &settings.access, &shared);
    let (stream, lean) =
        stream_gateway::part(stream_settings, &settings.http, &settings.access, &shared);
    compose::bind(&settings.http, shared, vec![publish, stream], Some(lean))
}

#[cfg(test)]
mod tests {
    use service_kit::Section as _;
    use service_kit::section::SERVICE_SECTIONS;

    use super::*;

    #[test]
    fn the_service_sections_service_kit_knows_are_exactly_the_services() {
        assert_eq!(
            SERVICE_SECTIONS,
            [PublishSettings::NAME, StreamSettings::NAME],
            "service-kit ignores another service's section only if it knows its name"
        );
    }
}
