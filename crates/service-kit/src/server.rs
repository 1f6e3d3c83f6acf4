//! Binds, serves, and stops gracefully.
//!
//! [`serve`] returns an [`App`] that is already bound (port 0 allowed), so
//! tests and binaries start exactly the same code. Shutdown order: readiness
//! turns 503 and the stream token is cancelled (streams end on their own,
//! spread over part of the grace period), the listener closes, and whatever
//! is still open when the grace period ends is cut and logged.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, Service as _};
use actix_web::{HttpServer, web};
use anyhow::Context as _;
use futures_util::FutureExt as _;

use crate::health;
use crate::metrics::RequestLabels;
use crate::settings::HttpSettings;
use crate::shutdown::{self, Shutdown};

/// A bound, not yet running service.
pub struct App {
    port: u16,
    server: Server,
    shutdown: Shutdown,
    grace: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl App {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops this app like a signal would.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, Ctrl-C or [`Shutdown::begin`], then drains.
    pub async fn run(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let shutdown = self.shutdown.clone();
        let grace = self.grace;
        let port = self.port;
        tokio::spawn(async move {
            tokio::select! {
                // An operator or orchestrator asked us to stop.
                _ = shutdown::signal() => tracing::info!(port, "signal received, draining"),
                // Code (a test, or the binary's own logic) asked us to stop.
                _ = shutdown.started() => tracing::info!(port, "shutdown requested, draining"),
            }
            shutdown.begin();
            let started = Instant::now();
            handle.stop(true).await;
            let elapsed = started.elapsed();
            if elapsed >= grace {
                tracing::warn!(
                    port,
                    ?elapsed,
                    "grace period over; remaining connections were cut"
                );
            } else {
                tracing::info!(port, ?elapsed, "drained");
            }
        });
        self.server.await.context("serving HTTP")
    }
}

/// Binds `settings.host:settings.port` and prepares the server.
///
/// `configure` mounts the service's routes; this adds `/healthz`,
/// `/readyz`, `/metrics`, request metrics and JSend 404s.
pub fn serve<F>(
    settings: &HttpSettings,
    health: health::Health,
    configure: F,
) -> anyhow::Result<App>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let address = format!("{}:{}", settings.host, settings.port);
    let listener = TcpListener::bind(&address)
        .with_context(|| format!("binding {address} (http.host, http.port)"))?;
    let port = listener
        .local_addr()
        .context("reading the bound address")?
        .port();
    let shutdown = health.shutdown.clone();
    let metrics = health.metrics.clone();
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    let workers = match settings.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let send_timeout = Duration::from_millis(settings.send_timeout_ms);
    let server = HttpServer::new(move || {
        let metrics = metrics.clone();
        actix_web::App::new()
            .wrap_fn(move |request, service| {
                let started = Instant::now();
                let method = request.method().to_string();
                let metrics = metrics.clone();
                service.call(request).map(move |result| {
                    if let Ok(response) = &result {
                        let labels = RequestLabels {
                            method,
                            route: response
                                .request()
                                .match_pattern()
                                .unwrap_or_else(|| "unmatched".to_owned()),
                            status: response.status().as_u16(),
                        };
                        metrics.observe_request(labels, started.elapsed());
                    }
                    result
                })
            })
            .configure(|cfg| health::configure(cfg, health.clone()))
            .configure(configure.clone())
            .default_service(web::to(health::not_found))
    })
    .on_connect(move |connection, _| {
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>()
            && let Err(error) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(send_timeout))
        {
            tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT");
        }
    })
    .workers(workers)
    .max_connections(settings.max_connections)
    // A client that closes its side is gone: free its stream at once
    // instead of when the next write fails.
    .h1_allow_half_closed(false)
    .disable_signals()
    .shutdown_timeout(grace.as_secs().max(1))
    .listen(listener)
    .with_context(|| format!("listening on {address}"))?
    .run();
    tracing::info!(%address, port, workers, "listening");
    Ok(App {
        port,
        server,
        shutdown,
        grace,
    })
}
