//! Binds, serves, and stops gracefully.
//!
//! Connections are accepted by the `connection` crate, which serves a
//! service's stream route itself and hands everything else to the
//! actix-web app built here (routes, health, request metrics, CORS, JSend
//! 404s).
//!
//! [`bind`] returns an [`App`] that is already bound (port 0 allowed), so
//! tests and binaries start exactly the same code. Shutdown order: readiness
//! turns 503 and the stream token is cancelled (streams end on their own,
//! spread over part of the grace period), the listener closes, and whatever
//! is still open when the grace period ends is cut and logged.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_service::{IntoServiceFactory as _, ServiceFactoryExt as _, map_config};
use actix_web::HttpMessage as _;
use actix_web::body::{BodySize, MessageBody as _};
use actix_web::dev::{AppConfig, Server, Service as _};
use actix_web::http::StatusCode;
use actix_web::middleware::Condition;
use actix_web::web;
use anyhow::Context as _;
use connection::{AppFactory, StreamRoute};
use futures_util::FutureExt as _;

use operations::metrics::{OTHER_ROUTE, RequestLabels};
use operations::shutdown::{self, Shutdown};
use operations::{Shared, health};
use shared_types::jsend;

use tracing::Instrument as _;

use crate::access_log::{self, Logged};
use crate::client::{REQUEST_ID, TrustedProxies};
use crate::cors::{self, Policy, Verdict};
use crate::settings::HttpSettings;

/// A bound, not yet running service.
pub struct App {
    port: u16,
    server: Server,
    /// The unix socket's file, removed when the graceful stop begins.
    socket_file: Option<connection::SocketFile>,
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
        let socket_file = self.socket_file;
        // When the stop began, for the line that says how the drain ended:
        // written below, after the server, because the task that stops it
        // does not run again once the server's future is done.
        let began = Arc::new(OnceLock::new());
        let stopping = began.clone();
        tokio::spawn(async move {
            tokio::select! {
                // An operator or orchestrator asked us to stop.
                _ = shutdown::signal() => tracing::info!(port, "signal received, draining"),
                // Code (a test, or the binary's own logic) asked us to stop.
                _ = shutdown.started() => tracing::info!(port, "shutdown requested, draining"),
            }
            shutdown.begin();
            // The unix socket goes as the stop begins, when its listener
            // stops accepting: a new process may then bind the path while
            // this one drains, and this one must not remove that file later.
            drop(socket_file);
            let _ = stopping.set(Instant::now());
            handle.stop(true).await;
        });
        let served = self.server.await.context("serving HTTP");
        if let Some(began) = began.get() {
            // actix-server counts a worker's open connections once a second
            // while it drains: a drain takes a whole second at least when
            // anything was open, and a grace of about 1 s reads as over.
            let elapsed = began.elapsed();
            if elapsed >= grace {
                tracing::warn!(
                    port,
                    ?elapsed,
                    "grace period over; remaining connections were cut"
                );
            } else {
                tracing::info!(port, ?elapsed, "drained");
            }
        }
        served
    }
}

/// Binds `settings.host:settings.port` (and `settings.unix_socket`, when
/// set) and prepares the server.
///
/// `configure` mounts the service's routes; this adds `/healthz`,
/// `/readyz`, `/metrics`, request metrics, CORS (`http.cors`) and JSend
/// 404s. `stream` is
/// served on the connection itself when a request is a plain `GET` of its
/// path (see the `connection` crate); `configure` should mount the same
/// route too: actix serves it for every request the fast path hands over.
/// Services call this through [`crate::compose::bind`].
pub(crate) fn bind<F, R>(
    settings: &HttpSettings,
    health: Shared,
    configure: F,
    stream: Option<R>,
) -> anyhow::Result<App>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    R: StreamRoute,
{
    let workers = settings.workers();
    let config = connection::Config {
        host: settings.host.clone(),
        port: settings.port,
        workers,
        max_connections: settings.max_connections_per_worker(workers),
        max_connections_per_address: settings.max_connections_per_address,
        request_timeout: Duration::from_millis(settings.request_timeout_ms),
        keep_alive: KEEP_ALIVE,
        send_timeout: Duration::from_millis(settings.send_timeout_ms),
        shutdown_grace: Duration::from_millis(settings.shutdown_grace_ms),
        stream_threads: settings.stream_threads(),
        unix_socket: settings.unix_socket()?,
        unix_socket_mode: settings.unix_socket_mode()?,
    };
    let shutdown = health.shutdown.clone();
    let metrics = health.metrics.clone();
    let address = format!("{}:{}", settings.host, settings.port);
    let cors = Policy::new(&settings.cors);
    let proxies = settings.trusted_proxies()?;
    let bound = connection::bind(
        &config,
        move || {
            boxed_app(
                health.clone(),
                configure.clone(),
                cors.clone(),
                proxies.clone(),
            )
        },
        stream,
        metrics,
    )
    .with_context(|| match &config.unix_socket {
        Some(path) => format!(
            "listening on {address} (http.host, http.port) and {} (http.unix_socket)",
            path.display()
        ),
        None => format!("listening on {address} (http.host, http.port)"),
    })?;
    let port = bound.port();
    match bound.unix_socket() {
        Some(path) => {
            let unix_socket = path.display();
            tracing::info!(%address, port, %unix_socket, workers, "listening");
        }
        None => tracing::info!(%address, port, workers, "listening"),
    }
    let (server, socket_file) = bound.into_server();
    Ok(App {
        port,
        server,
        socket_file,
        shutdown,
        grace: config.shutdown_grace,
    })
}

/// actix-web's default keep-alive, which the services have always used.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// [`app`] as the connection layer takes it: actix-http's request and
/// response types, errors rendered as responses, boxed.
fn boxed_app<F>(health: Shared, configure: F, cors: Policy, proxies: TrustedProxies) -> AppFactory
where
    F: Fn(&mut web::ServiceConfig) + 'static,
{
    actix_service::boxed::factory(map_config(
        app(health, configure, cors, proxies)
            .into_factory()
            .map(|response| actix_http::Response::from(response).map_into_boxed_body())
            .map_err(|error: actix_web::Error| actix_http::Response::from(error.error_response())),
        // The app uses neither the host nor the address it would carry
        // (no URL generation).
        |_| AppConfig::default(),
    ))
}

/// The actix-web app: the service's routes, the operational ones, request
/// metrics, request ids and the access log, CORS and JSend 404s.
fn app<F>(
    health: Shared,
    configure: F,
    cors: Policy,
    proxies: TrustedProxies,
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
    let enabled = cors.is_enabled();
    actix_web::App::new()
        // Preflights are answered here, before routing; every other answer
        // gets its headers on the way out.
        .wrap(Condition::new(enabled, cors.middleware()))
        .wrap_fn(move |request, service| {
            // The one log line per refused origin (rate-limited) for
            // everything actix serves.
            let verdict = cors.judge(request.headers(), request.method());
            let preflight = enabled && cors::is_preflight(request.method(), request.headers());
            service.call(request).map(move |result| {
                result.map(|response| {
                    let mut response = if preflight && response.status() == StatusCode::BAD_REQUEST
                    {
                        response.into_response(preflight_refusal(verdict))
                    } else {
                        response.map_into_boxed_body()
                    };
                    if enabled {
                        cors::tidy(response.headers_mut());
                    }
                    response
                })
            })
        })
        .wrap_fn(move |request, service| {
            // Who the request is from, resolved once: handlers read it from
            // the extensions. Everything below runs in the request's span,
            // so each line logged on its way carries its id. The access
            // line and the request metrics share one start time and one
            // layer: each layer and clock read is paid by every request.
            let started = Instant::now();
            let client =
                proxies.client(request.peer_addr().map(|peer| peer.ip()), request.headers());
            request.extensions_mut().insert(client.clone());
            let span = access_log::span(&client);
            // A fixed set of labels: invented methods share `other`, and
            // paths no route matched share `other` too.
            let label = connection::method_label(request.method());
            // Kept for an error no handler rendered (a middleware's), which
            // has no request to read them from. actix renders it later,
            // without the id; handlers' errors and actix-cors' refusals are
            // responses by now. The URI is shared, not copied.
            let method = request.method().clone();
            let uri = request.uri().clone();
            let metrics = metrics.clone();
            service
                .call(request)
                .instrument(span.clone())
                .map(move |result| {
                    let mut response = match result {
                        Ok(response) => response,
                        Err(error) => {
                            let _entered = span.enter();
                            let status = error.as_response_error().status_code();
                            access_log::request(
                                &method,
                                uri.path(),
                                status,
                                started.elapsed(),
                                None,
                                &client,
                            );
                            return Err(error);
                        }
                    };
                    let elapsed = started.elapsed();
                    response
                        .headers_mut()
                        .insert(REQUEST_ID, client.request_id.header_value());
                    if response.response().extensions().get::<Logged>().is_none() {
                        let bytes = match response.response().body().size() {
                            BodySize::Sized(bytes) => Some(bytes),
                            BodySize::None => Some(0),
                            BodySize::Stream => None,
                        };
                        let _entered = span.enter();
                        access_log::request(
                            response.request().method(),
                            response.request().path(),
                            response.status(),
                            elapsed,
                            bytes,
                            &client,
                        );
                    }
                    let labels = RequestLabels {
                        method: label.to_owned(),
                        route: response
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| OTHER_ROUTE.to_owned()),
                        status: response.status().as_u16(),
                    };
                    metrics.observe_request(labels, elapsed);
                    Ok(response)
                })
        })
        .configure(|cfg| health::configure(cfg, health.clone()))
        .configure(configure)
        .default_service(web::to(health::not_found))
}

/// A refused preflight as JSend: actix-cors answers 400 with a bare text
/// body; the browser shows neither and blocks the request, but whoever
/// reads it with curl learns what was refused.
fn preflight_refusal(verdict: Verdict) -> actix_web::HttpResponse {
    let why = match verdict {
        Verdict::NoOrigin => "a preflight needs an Origin header",
        Verdict::Allowed => "method or request headers not allowed",
        Verdict::SameOrigin | Verdict::Refused => "origin not allowed",
    };
    jsend::fail(
        StatusCode::BAD_REQUEST,
        format!("CORS preflight refused: {why}"),
    )
}
