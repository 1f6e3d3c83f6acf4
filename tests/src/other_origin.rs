//! A page on another origin: a static HTML page served on its own port, as
//! a site that uses the service from elsewhere would serve it.
//!
//! The page is addressed as `http://localhost:<port>` while the services
//! are addressed as `http://127.0.0.1:<port>`: another host as well as
//! another port, so to the browser the page is cross-origin and cross-site
//! to the service, as `app.example.com` is to `events.example.com`. What
//! the page does is in `other_origin.html` (its test hook, `window.xo`).

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::process::free_port;

/// The page: an EventSource and a publish, against the address in its
/// `api` query parameter.
const PAGE: &str = include_str!("other_origin.html");

/// The page's server, stopped when dropped.
#[derive(Debug)]
pub struct OtherOrigin {
    port: u16,
    server: ServerHandle,
}

impl OtherOrigin {
    /// Serves the page on a free port; must run inside a Tokio runtime.
    pub fn start() -> Self {
        let port = free_port();
        let server = HttpServer::new(|| {
            App::new().default_service(web::to(|| async {
                HttpResponse::Ok()
                    .content_type("text/html; charset=utf-8")
                    .insert_header(("Cache-Control", "no-store"))
                    .body(PAGE)
            }))
        })
        .workers(1)
        // The test process's signals are the test harness's business.
        .disable_signals()
        .shutdown_timeout(0)
        .bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("binding the other origin's port {port}: {e}"))
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            port,
            server: handle,
        }
    }

    /// The page's origin, as the browser sends it in `Origin`.
    pub fn origin(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// The page's address, using the service at `api` (`http://host:port`)
    /// and `topic`; with `credentials`, its EventSource and fetch send
    /// credentials (`withCredentials`, `credentials: "include"`).
    pub fn page_url(&self, api: &str, topic: &str, credentials: bool) -> String {
        format!(
            "{}/?api={api}&topic={topic}&credentials={}",
            self.origin(),
            u8::from(credentials)
        )
    }
}

impl Drop for OtherOrigin {
    fn drop(&mut self) {
        // Sends the stop at once; the returned future only reports its end.
        drop(self.server.stop(false));
    }
}
