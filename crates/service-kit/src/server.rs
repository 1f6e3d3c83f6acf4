//! Binds, serves, and stops gracefully.
//!
//! Connections are accepted on actix-server and start in
//! [`crate::connection`], which serves a service's stream route itself and
//! hands everything else to an actix-http service built here the way
//! actix-web's `HttpServer` builds it (same timeouts, half-close and
//! graceful-shutdown settings, same app).
//!
//! [`serve`] returns an [`App`] that is already bound (port 0 allowed), so
//! tests and binaries start exactly the same code. Shutdown order: readiness
//! turns 503 and the stream token is cancelled (streams end on their own,
//! spread over part of the grace period), the listener closes, and whatever
//! is still open when the grace period ends is cut and logged.

use std::net::TcpListener;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_http::{HttpService, KeepAlive, ServiceConfig};
use actix_service::{
    IntoServiceFactory as _, ServiceFactory as _, ServiceFactoryExt as _, fn_factory, fn_service,
    map_config,
};
use actix_web::dev::{AppConfig, Server, Service as _};
use actix_web::rt::net::TcpStream;
use actix_web::web;
use anyhow::Context as _;
use futures_util::FutureExt as _;

use crate::connection::{self, NoStreamRoute, StreamRoute, Worker};
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
    serve_with_stream::<F, NoStreamRoute>(settings, health, configure, None)
}

/// [`serve`], with `stream` served on the connection itself when a request
/// is a plain `GET` of its path (see [`crate::connection`]). `configure`
/// should mount the same route too: actix serves it for every request the
/// fast path hands over.
pub fn serve_with_stream<F, R>(
    settings: &HttpSettings,
    health: health::Health,
    configure: F,
    stream: Option<R>,
) -> anyhow::Result<App>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    R: StreamRoute,
{
    let address = format!("{}:{}", settings.host, settings.port);
    let listener = TcpListener::bind(&address)
        .with_context(|| format!("binding {address} (http.host, http.port)"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let port = local.port();
    let shutdown = health.shutdown.clone();
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    let workers = match settings.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let send_timeout = Duration::from_millis(settings.send_timeout_ms);
    let mut builder = Server::build();
    let graceful = builder.graceful_shutdown_signal();
    builder = builder
        .workers(workers)
        .max_concurrent_connections(settings.max_connections)
        .disable_signals()
        .shutdown_timeout(grace.as_secs().max(1));
    // Called once per worker, on the worker's thread: everything below
    // is that worker's, like actix-web's `HttpServer` builds it.
    let per_worker = move || {
        let health = health.clone();
        let configure = configure.clone();
        let stream = stream.clone();
        let graceful = graceful.clone();
        fn_factory(move || {
            let app = app(health.clone(), configure.clone());
            let stream = stream.clone();
            let graceful = graceful.clone();
            let health = health.clone();
            async move {
                let actix = HttpService::build()
                    // Idle keep-alive connections close when shutdown begins
                    // (hidden in actix-http's docs; actix-web sets it so).
                    .graceful_shutdown_signal(move || {
                        let graceful = graceful.clone();
                        async move { graceful.notified().await }
                    })
                    .keep_alive(KeepAlive::default())
                    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                    // A client that closes its side is gone: free its
                    // stream at once instead of when the next write fails.
                    .h1_allow_half_closed(false)
                    .local_addr(local)
                    .finish(map_config(
                        app.into_factory()
                            .map_err(|error: actix_web::Error| error.error_response()),
                        // The app uses neither the host nor the address it
                        // would carry (no URL generation).
                        |_| AppConfig::default(),
                    ))
                    .new_service(())
                    .await?;
                let worker = Rc::new(Worker {
                    route: stream,
                    config: ServiceConfig::new(
                        KeepAlive::default(),
                        CLIENT_REQUEST_TIMEOUT,
                        CLIENT_DISCONNECT_TIMEOUT,
                        false,
                        Some(local),
                    ),
                    actix: actix_service::boxed::service(actix),
                    shutdown: health.shutdown.clone(),
                    metrics: health.metrics.clone(),
                    send_timeout,
                });
                Ok::<_, ()>(fn_service(move |io: TcpStream| {
                    // Boxed: actix-server moves the future it spawns into an
                    // `async` block, which would hold it twice for the
                    // connection's life.
                    Box::pin(connection::serve(io, worker.clone())).map(Ok::<_, ()>)
                }))
            }
        })
    };
    let server = builder
        .listen("event-stream", listener, per_worker)
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

/// actix-web's defaults, which the server used before it accepted
/// connections itself.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The actix-web app: the service's routes, the operational ones, request
/// metrics and JSend 404s.
fn app<F>(
    health: health::Health,
    configure: F,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
>
where
    F: Fn(&mut web::ServiceConfig),
{
    let metrics = health.metrics.clone();
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
        .configure(configure)
        .default_service(web::to(health::not_found))
}
