//! One composition path for every binary.
//!
//! A binary is a set of [`Part`]s over one [`Shared`]: ingest is the publish
//! part, a gateway the stream part, the standalone binary both. [`bind`]
//! mounts them on one actix-web app with the operational routes, answers
//! 405 on the event-stream path with an `Allow` naming exactly the methods
//! its parts serve (`HEAD` with `GET`), serves the stream part's route on the connection itself,
//! and binds the port.

use std::sync::Arc;

use actix_web::web;
use connection::StreamRoute;

use operations::{Shared, health};

use crate::server::{self, App};
use crate::settings::HttpSettings;

pub use connection::NoStreamRoute;

/// The path the API lives on: `POST` publishes, `GET` streams.
pub const EVENT_STREAM_PATH: &str = "/event-stream";

type Mount = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// One service's share of [`EVENT_STREAM_PATH`].
#[derive(Clone)]
pub struct Part {
    /// The method it serves there.
    method: &'static str,
    /// Mounts its resource (guarded by that method) and anything else it owns.
    mount: Mount,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Part {
    pub fn new(
        method: &'static str,
        mount: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> Self {
        Self {
            method,
            mount: Arc::new(mount),
        }
    }
}

/// The `Allow` value for a path served by `parts`: their methods, sorted,
/// once each, with `HEAD` wherever `GET` is (a stream part serves both).
fn allow(parts: &[Part]) -> String {
    let mut methods: Vec<&str> = parts.iter().map(|part| part.method).collect();
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    methods.sort_unstable();
    methods.dedup();
    methods.join(", ")
}

/// Binds `parts` over `shared` on `http.host:http.port`; `stream` is the
/// stream part's route, served on the connection itself (see the
/// `connection` crate), or `None` for a process without one.
pub fn bind<R: StreamRoute>(
    http: &HttpSettings,
    shared: Shared,
    parts: Vec<Part>,
    stream: Option<R>,
) -> anyhow::Result<App> {
    let allow = allow(&parts);
    server::bind(
        http,
        shared,
        move |cfg| {
            for part in &parts {
                (part.mount)(cfg);
            }
            cfg.service(
                web::resource(EVENT_STREAM_PATH).route(health::method_not_allowed(allow.clone())),
            );
        },
        stream,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_names_each_method_of_the_parts_once_in_order() {
        let part = |method| Part::new(method, |_| {});
        assert_eq!(allow(&[part("POST")]), "POST");
        assert_eq!(allow(&[part("POST"), part("GET")]), "GET, HEAD, POST");
        assert_eq!(allow(&[part("GET"), part("GET")]), "GET, HEAD");
    }
}
