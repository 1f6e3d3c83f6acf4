//! Mounts the stream route and builds the service.

use actix_web::{guard, web};
use operations::Shared;
use service_kit::compose;
use service_kit::settings::HttpSettings;
use service_kit::{Access, App, Part, Settings};

use crate::page;
use crate::routes::{self, GatewayState, LeanSubscribe};
use crate::settings::StreamSettings;

/// The stream part: `GET` and `HEAD /event-stream` over `shared`'s bus (the
/// standalone binary mounts the ingest's POST on the same path), the live
/// page at `/`, and the same `GET` route for the connection layer to serve on the socket itself; its
/// metrics are registered in `shared`'s registry.
pub fn part(
    settings: &StreamSettings,
    http: &HttpSettings,
    access: &Access,
    shared: &Shared,
) -> (Part, LeanSubscribe) {
    let state = GatewayState::new(settings, http, access, shared);
    let lean = LeanSubscribe(state.clone());
    let part = Part::new("GET", move |cfg| {
        cfg.service(
            web::resource(routes::PATH)
                .guard(guard::Any(guard::Get()).or(guard::Head()))
                .app_data(web::Data::new(state.clone()))
                .route(web::get().to(routes::subscribe))
                .route(web::head().to(routes::head)),
        );
        page::configure(cfg);
    });
    (part, lean)
}

/// Builds the gateway over `bus`, bound but not yet running.
pub fn build(settings: &Settings<StreamSettings>, bus: bus::Bus) -> anyhow::Result<App> {
    let shared = Shared::new(bus);
    let (stream, lean) = part(&settings.own, &settings.http, &settings.access, &shared);
    compose::bind(&settings.http, shared, vec![stream], Some(lean))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use service_kit::loader::environment;
    use service_kit::settings::{BinaryDefaults, Engine};

    use super::*;

    #[tokio::test]
    async fn metrics_show_the_stream_part_and_no_publish_counters() {
        let env = environment(&[
            ("ES__HTTP__HOST", "127.0.0.1"),
            ("ES__HTTP__PORT", "0"),
            ("ES__HTTP__WORKERS", "1"),
        ]);
        let defaults = BinaryDefaults {
            name: "stream-gateway",
            port: 8082,
            engine: Engine::Memory,
        };
        let settings = Settings::<StreamSettings>::load_from(defaults, None, Some(env)).unwrap();
        let app = build(&settings, bus::Bus::memory(settings.memory_config())).unwrap();
        let url = format!("http://127.0.0.1:{}/metrics", app.port());
        let shutdown = app.shutdown();
        let server = tokio::spawn(app.run());

        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();

        for name in [
            "es_stream_connections 0",
            "es_events_delivered_total 0",
            "es_events_replayed_total 0",
            "es_stream_resets_total 0",
            "es_slow_client_disconnects_total 0",
            "es_bus_topics 0",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        // Publish counters are registered by the publish part, which a
        // gateway does not run.
        for name in ["es_events_published", "es_publish_failures"] {
            assert!(!text.contains(name), "{name} shown by a gateway:\n{text}");
        }
        shutdown.begin();
        server.await.unwrap().unwrap();
    }
}
