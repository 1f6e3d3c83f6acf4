//! Binds, starts the workers and builds actix-http's service for them.
//!
//! Connections are accepted on actix-server (a TCP listener, and a unix
//! one when configured: each worker builds its service once per kind of
//! socket) and start in `connection`,
//! which serves the stream route itself and hands everything else to an
//! actix-http service built here the way actix-web's `HttpServer` builds
//! one (half-close ends a connection, idle keep-alive connections close
//! when a graceful stop begins), except for its head timer: the request
//! deadline is enforced by the connection layer instead (`replay`), on
//! every request rather than only the first.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::body::BoxBody;
use actix_http::{HttpService, KeepAlive, Request, Response, ServiceConfig};
use actix_server::{FromStream, GracefulShutdownSignal, Server, ServerServiceFactory};
use actix_service::boxed::BoxServiceFactory;
use actix_service::{ServiceFactory as _, fn_factory, fn_service};
use tokio::net::{TcpStream, UnixStream};

use crate::connection::{self, Worker};
use crate::per_address::PerAddress;
use crate::replay::Replay;
use crate::route::{Observer, StreamRoute};
use crate::socket::Socket;
use crate::unix::{self, SocketFile};

/// How connections are accepted and bounded.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    /// 0 picks a free port (tests do this); [`Bound::port`] tells which.
    pub port: u16,
    /// Worker threads, each with its own connections (at least 1).
    pub workers: usize,
    /// Most simultaneous connections per worker; past it, new ones wait in
    /// the accept queue instead of exhausting file descriptors.
    pub max_connections: usize,
    /// Most simultaneous connections from one client address (an IPv4
    /// address or an IPv6 /64) across all workers; 0 is no limit.
    pub max_connections_per_address: usize,
    /// The longest a request head may take from its first byte (the first
    /// request's from accept); on actix's path, until its response starts.
    pub request_timeout: Duration,
    /// How long a connection may stay idle between requests.
    pub keep_alive: Duration,
    /// A peer that acknowledges nothing this long is aborted by the kernel
    /// (`TCP_USER_TIMEOUT`, Linux only).
    pub send_timeout: Duration,
    /// How long a graceful stop waits before cutting what is left.
    pub shutdown_grace: Duration,
    /// A unix socket to listen on as well (a proxy on the same host);
    /// its peers count as `127.0.0.1` (see `crate::socket`). Bound as
    /// `crate::unix` says; removed when the `SocketFile` that
    /// [`Bound::into_server`] returns is dropped (a service drops it as its
    /// graceful stop begins).
    pub unix_socket: Option<PathBuf>,
    /// The socket file's mode (e.g. `0o660`): who may connect.
    pub unix_socket_mode: u32,
    /// Threads of the runtime the stream route's bodies are written on,
    /// shared by all workers (at least 1; none without a route).
    pub stream_threads: usize,
}

/// The actix-http service for requests the fast path does not answer
/// (for example an actix-web app, mapped and boxed). Built once per worker.
pub type AppFactory = BoxServiceFactory<(), Request, Response<BoxBody>, Response<BoxBody>, ()>;

/// A bound server, not yet running.
pub struct Bound {
    port: u16,
    server: Server,
    socket_file: Option<SocketFile>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Bound {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The unix socket listened on, if any.
    pub fn unix_socket(&self) -> Option<&Path> {
        self.socket_file.as_ref().map(SocketFile::path)
    }

    /// The server (a future that runs it, and its handle) and the unix
    /// socket's file, if any, which is removed when this is dropped: hold
    /// it until the server has stopped.
    pub fn into_server(self) -> (Server, Option<SocketFile>) {
        (self.server, self.socket_file)
    }
}

/// The runtime streams are written on: tokio's multi-thread scheduler, so
/// a stream whose thread is busy, or descheduled by the operating system,
/// is taken up by another; actix-server's workers are single-threaded and
/// keep every connection they accept. Owned by the server's worker
/// factory, which lives as long as the server.
struct StreamRuntime {
    handle: tokio::runtime::Handle,
    /// Taken when dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl StreamRuntime {
    fn new(threads: usize) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("stream")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }
}

impl Drop for StreamRuntime {
    /// The last owner may be dropped on a worker thread, inside its
    /// runtime, where waiting for another runtime's threads is not allowed:
    /// they are told to stop and left to finish.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// actix-http's disconnect timeout, as actix-web sets it: how long a
/// closing connection may take to flush.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds `config.host:config.port` (and `config.unix_socket`, when set)
/// and prepares the workers. `app` is called once per worker and kind of
/// socket, on the worker's thread; `route`, when given, is served on the
/// connection itself (the app should serve the same path too: it gets
/// every request the fast path hands over).
pub fn bind<F, R, O>(config: &Config, app: F, route: Option<R>, observer: O) -> io::Result<Bound>
where
    F: Fn() -> AppFactory + Send + Clone + 'static,
    R: StreamRoute,
    O: Observer,
{
    let address = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&address)
        .map_err(|error| io::Error::new(error.kind(), format!("binding {address}: {error}")))?;
    let local = listener.local_addr()?;
    let unix = match &config.unix_socket {
        Some(path) => Some(unix::bind(path, config.unix_socket_mode)?),
        None => None,
    };
    let mut builder = Server::build();
    let stop = builder.graceful_shutdown_signal();
    builder = builder
        .workers(config.workers.max(1))
        .max_concurrent_connections(config.max_connections)
        .disable_signals()
        .shutdown_timeout(config.shutdown_grace.as_secs().max(1));
    let streams = match route {
        Some(_) => Some(Arc::new(StreamRuntime::new(config.stream_threads.max(1))?)),
        None => None,
    };
    let shared = Shared {
        app,
        route,
        observer,
        stop,
        // One count for both kinds of socket: a unix peer is 127.0.0.1.
        per_address: PerAddress::new(config.max_connections_per_address),
        config: config.clone(),
        streams,
        local,
    };
    builder = builder.listen("http", listener, shared.clone().per_worker::<TcpStream>())?;
    let socket_file = match unix {
        Some((listener, file)) => {
            builder = builder.listen_uds("unix", listener, shared.per_worker::<UnixStream>())?;
            Some(file)
        }
        None => None,
    };
    Ok(Bound {
        port: local.port(),
        server: builder.run(),
        socket_file,
    })
}

/// What the workers of both kinds of socket are built from.
#[derive(Clone)]
struct Shared<F, R, O> {
    app: F,
    route: Option<R>,
    observer: O,
    stop: GracefulShutdownSignal,
    per_address: Option<PerAddress>,
    config: Config,
    streams: Option<Arc<StreamRuntime>>,
    /// The TCP listener's address, which actix-http is given for unix
    /// connections too (the app builds no URLs from it).
    local: SocketAddr,
}

impl<F, R, O> Shared<F, R, O>
where
    F: Fn() -> AppFactory + Send + Clone + 'static,
    R: StreamRoute,
    O: Observer,
{
    /// The factory actix-server calls once per worker, on the worker's
    /// thread, for one listener: everything it builds is that worker's,
    /// like actix-web's `HttpServer` builds it.
    fn per_worker<S: Socket + FromStream>(self) -> impl ServerServiceFactory<S> {
        move || {
            let Shared {
                app,
                route,
                observer,
                stop,
                per_address,
                config,
                streams,
                local,
            } = self.clone();
            fn_factory(move || {
                let app = app();
                let route = route.clone();
                let observer = observer.clone();
                let stop = stop.clone();
                let per_address = per_address.clone();
                let config = config.clone();
                let streams = streams.as_ref().map(|streams| streams.handle());
                async move {
                    let graceful = stop.clone();
                    let actix = HttpService::<Replay<S>, _, _, _, _>::build()
                        // Idle keep-alive connections close when a graceful
                        // stop begins (hidden in actix-http's docs; actix-web
                        // sets it so).
                        .graceful_shutdown_signal(move || {
                            let graceful = graceful.clone();
                            async move { graceful.notified().await }
                        })
                        .keep_alive(KeepAlive::Timeout(config.keep_alive))
                        // Off: `replay` times every request instead.
                        .client_request_timeout(Duration::ZERO)
                        .client_disconnect_timeout(DISCONNECT_TIMEOUT)
                        // A client that closes its side is gone: free its
                        // stream at once instead of when the next write fails.
                        .h1_allow_half_closed(false)
                        .local_addr(local)
                        .finish(app)
                        .new_service(())
                        .await?;
                    let worker = Rc::new(Worker {
                        route,
                        observer,
                        config: ServiceConfig::new(
                            KeepAlive::Timeout(config.keep_alive),
                            Duration::ZERO,
                            DISCONNECT_TIMEOUT,
                            false,
                            Some(local),
                        ),
                        actix: actix_service::boxed::service(actix),
                        stop,
                        per_address,
                        request_timeout: config.request_timeout,
                        keep_alive: config.keep_alive,
                        send_timeout: config.send_timeout,
                        streams,
                    });
                    Ok::<_, ()>(fn_service(move |io: S| {
                        // Boxed: actix-server moves the future it spawns into an
                        // `async` block, which would hold it twice for the
                        // connection's life.
                        let served = Box::pin(connection::serve(io, worker.clone()));
                        async move {
                            served.await;
                            Ok::<_, ()>(())
                        }
                    }))
                }
            })
        }
    }
}
