//! The kinds of stream a connection is served on: TCP, and a unix socket
//! (a proxy on the same host, `Config::unix_socket`).
//!
//! The connection code is generic over [`Socket`], so each kind gets its
//! own compiled copy and the TCP path is exactly what it was: no enum tag,
//! no branch per read or write, no byte more per connection.
//!
//! A unix peer has no address: it counts as `127.0.0.1` (port 0), exactly
//! like a proxy on the same host reaching the service over loopback TCP, so
//! `http.trusted_proxies`, the per-address limits and the access log treat
//! both alike.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_codec::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// The address a unix socket's peer is given.
pub const UNIX_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// An accepted stream, as `connection` serves it.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// The stream outside any runtime, as it moves between the worker's
    /// I/O driver and the stream runtime's.
    type Std: Send + 'static;

    /// The client's address as limits, routes and logs see it.
    fn peer(&self) -> Option<SocketAddr>;

    /// Lets the kernel abort a connection whose peer acknowledges nothing
    /// for `timeout`, where the kind of socket has such a thing.
    fn set_send_timeout(&self, timeout: Duration);

    fn into_std(self) -> io::Result<Self::Std>;

    /// Registers `std` with the current runtime's I/O driver.
    fn from_std(std: Self::Std) -> io::Result<Self>;

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;

    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

impl Socket for TcpStream {
    type Std = std::net::TcpStream;

    fn peer(&self) -> Option<SocketAddr> {
        self.peer_addr().ok()
    }

    /// `TCP_USER_TIMEOUT`: a stream client that stops reading entirely
    /// never lets its stream be polled again, so only the kernel can end it.
    fn set_send_timeout(&self, timeout: Duration) {
        #[cfg(target_os = "linux")]
        if let Err(error) = socket2::SockRef::from(self).set_tcp_user_timeout(Some(timeout)) {
            tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT");
        }
        #[cfg(not(target_os = "linux"))]
        let _ = timeout;
    }

    fn into_std(self) -> io::Result<Self::Std> {
        TcpStream::into_std(self)
    }

    fn from_std(std: Self::Std) -> io::Result<Self> {
        TcpStream::from_std(std)
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

impl Socket for UnixStream {
    type Std = std::os::unix::net::UnixStream;

    fn peer(&self) -> Option<SocketAddr> {
        Some(UNIX_PEER)
    }

    /// None: a unix socket has no acknowledgements to time out on. Its peer
    /// is a proxy on this host, whose own client-side timeout (nginx's
    /// `send_timeout`) closes the upstream connection when its client stops
    /// reading, which ends the stream here.
    fn set_send_timeout(&self, _: Duration) {}

    fn into_std(self) -> io::Result<Self::Std> {
        UnixStream::into_std(self)
    }

    fn from_std(std: Self::Std) -> io::Result<Self> {
        UnixStream::from_std(std)
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_read_ready(self, cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        UnixStream::try_read(self, buf)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        UnixStream::try_write(self, buf)
    }
}
