//! The byte stream to one Redis in single mode: TCP with Nagle off
//! (commands are small and wait for their answers), TLS over it for
//! `rediss://`, or a Unix socket. The command connections and the relay's
//! pub/sub connection both open theirs here, so both reach Redis the same
//! way, and the caller keeps the connection's driver (the command
//! connections watch it to notice a closed socket).

use ::redis::{
    ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo as _, RedisError, RedisResult,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::RedisConfig;
use super::tls::RedisTls;
use crate::error::Error;

/// What a connection reads and writes: any of the three streams.
pub(super) trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}

/// Single mode's Redis, from `config.url`; `masked` is the URL as errors
/// show it (password hidden).
pub(super) fn address(config: &RedisConfig, masked: &str) -> Result<ConnectionInfo, Error> {
    config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| Error::Unavailable(format!("invalid Redis URL {masked}: {e}")))
}

/// Connects to `info`'s address; for `rediss://`, runs the TLS handshake
/// with `tls`. Callers bound the whole connection (this and Redis's own
/// handshake) by `deadline`; a TLS handshake still unanswered then fails
/// here, first, saying so: a plain Redis port takes a TLS client's hello
/// for the start of a command and waits for the rest for ever.
pub(super) async fn connect(
    info: &ConnectionInfo,
    tls: Option<&RedisTls>,
    deadline: Instant,
) -> RedisResult<Box<dyn Socket>> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => Ok(Box::new(tcp(host, *port).await?)),
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            ..
        } => {
            if *insecure {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "certificate checks cannot be turned off (#insecure); trust the server's CA instead",
                )));
            }
            let Some(tls) = tls else {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "a rediss:// address without TLS material",
                )));
            };
            let stream = tcp(host, *port).await?;
            match tokio::time::timeout_at(deadline, tls.handshake(host, stream)).await {
                Ok(stream) => Ok(Box::new(stream?)),
                Err(_) => Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer to the TLS handshake from {host}:{port} in time: a server \
                         that does not speak TLS on this port (rediss:// needs the server's \
                         tls-port), or one that hangs"
                    ),
                ))),
            }
        }
        #[cfg(unix)]
        ConnectionAddr::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        other => Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "unsupported Redis address (use redis://, rediss:// or unix://)",
            other.to_string(),
        ))),
    }
}

async fn tcp(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
