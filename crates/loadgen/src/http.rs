//! Just enough HTTP/1.1 for a load tool, over plain tokio sockets.
//!
//! A general client (reqwest, hyper) costs tens of kilobytes and a few
//! tasks per connection; ten thousand subscribers then load the client as
//! much as the server under test. Here a subscriber is one task, one socket
//! and one read buffer: the request is written by hand, the response head
//! is parsed with `httparse`, and the body goes through [`Chunked`] when
//! the server chunks it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// An `http://host:port/path?query` URL, resolved once.
#[derive(Debug, Clone)]
pub struct Url {
    pub addr: SocketAddr,
    /// What goes into the `Host` header.
    pub authority: String,
    /// Path and query, as sent on the request line.
    pub target: String,
    /// Header lines sent with every publish to this URL, each ending in
    /// CRLF (`--token-env`'s `Authorization`); usually empty.
    pub headers: String,
}

impl Url {
    /// Parses `url`; only `http://` to a loopback address is accepted, since
    /// this tool must never load anything but the machine it runs on unless
    /// told explicitly (`allow_remote`).
    pub fn parse(url: &str, allow_remote: bool) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("{url}: only http:// URLs are supported"))?;
        let (authority, target) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let with_port = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
        if !allow_remote && !addr.ip().is_loopback() {
            bail!("{url}: not a loopback address; pass --allow-remote to load another machine");
        }
        Ok(Self {
            addr,
            authority: authority.to_owned(),
            target: target.to_owned(),
            headers: String::new(),
        })
    }

    /// The same URL, sending `Authorization: Bearer token` when there is one.
    pub fn with_bearer(mut self, token: Option<&str>) -> Self {
        if let Some(token) = token {
            self.headers = format!("Authorization: Bearer {token}\r\n");
        }
        self
    }

    /// The same server with another path and query.
    pub fn with_target(&self, target: String) -> Self {
        Self {
            target,
            ..self.clone()
        }
    }
}

/// Opens a connection from `source` (a loopback alias such as 127.0.0.7,
/// so more than one address's worth of ephemeral ports is available).
pub async fn connect(
    dest: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> anyhow::Result<TcpStream> {
    connect_with_recv_buffer(dest, source, timeout, None).await
}

/// [`connect`], with the socket's receive buffer (SO_RCVBUF) set first when
/// `recv_buffer` is given, so the window the server sees stays that small:
/// a client that never reads then holds the server's data back in the
/// server, where its memory is measured.
pub async fn connect_with_recv_buffer(
    dest: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
    recv_buffer: Option<u32>,
) -> anyhow::Result<TcpStream> {
    let socket = if dest.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(bytes) = recv_buffer {
        socket
            .set_recv_buffer_size(bytes)
            .context("setting SO_RCVBUF")?;
    }
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding source address {ip}"))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(dest))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    Length(u64),
    /// No length: the body runs until the server closes.
    UntilClose,
}

/// The parts of a response head the tool looks at.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// Bytes of the head, including the blank line.
    pub len: usize,
    pub close: bool,
}

impl Head {
    /// Fails unless this is the head of an SSE stream: a `200` whose body
    /// is chunked or runs until close. A gateway refuses a stream for a
    /// passing reason (full, stopping, bus down) to a client that accepts
    /// `text/event-stream`, as this tool does, with a `200` and a whole
    /// body (`retry:` and a comment): counted as a refusal, not a stream.
    pub fn ensure_stream(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.status == 200, "status {}", self.status);
        anyhow::ensure!(
            !matches!(self.framing, Framing::Length(_)),
            "refused with an SSE retry"
        );
        Ok(())
    }
}

/// Parses a response head at the start of `buf`; `None` until it is
/// complete.
pub fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf).context("malformed response head")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.unwrap_or(0);
    let mut framing = Framing::UntilClose;
    let mut close = response.version == Some(0);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        if header.name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if header.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked
        {
            framing = Framing::Length(value.parse().context("bad content-length")?);
        } else if header.name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    // A 204/304 or a HEAD has no body whatever the headers say; the tool
    // sends neither HEAD nor conditional requests, so only 204 matters.
    if status == 204 {
        framing = Framing::Length(0);
    }
    Ok(Some(Head {
        status,
        framing,
        len,
        close,
    }))
}

/// Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    /// Size digits read so far for the current chunk.
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Skipping a chunk extension up to the line end.
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one.
    Trailer {
        empty_line: bool,
    },
    TrailerLf {
        empty_line: bool,
    },
    Done,
}

impl Chunked {
    /// Decodes `input`, handing each piece of payload to `out`. Returns
    /// true once the final chunk and trailer were read.
    pub fn decode(&mut self, input: &[u8], mut out: impl FnMut(&[u8])) -> anyhow::Result<bool> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or(0);
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(digit)))
                            .ok_or_else(|| anyhow!("chunk size overflows"))?;
                    }
                    b';' | b' ' | b'\t' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => bail!("bad byte {b:#x} in chunk size"),
                },
                ChunkState::Extension => {
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        bail!("chunk size line not ended by CRLF");
                    }
                    self.state = if self.size == 0 {
                        ChunkState::Trailer { empty_line: true }
                    } else {
                        ChunkState::Data(self.size)
                    };
                    self.size = 0;
                }
                ChunkState::Data(left) => {
                    let take = (left.min((input.len() - i) as u64)) as usize;
                    out(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        bail!("chunk data not followed by CRLF");
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        bail!("chunk data not followed by CRLF");
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer { empty_line } => {
                    self.state = if b == b'\r' {
                        ChunkState::TrailerLf { empty_line }
                    } else {
                        ChunkState::Trailer { empty_line: false }
                    };
                }
                ChunkState::TrailerLf { empty_line } => {
                    if b != b'\n' {
                        bail!("trailer line not ended by CRLF");
                    }
                    self.state = if empty_line {
                        ChunkState::Done
                    } else {
                        ChunkState::Trailer { empty_line: true }
                    };
                }
                ChunkState::Done => return Ok(true),
            }
            i += 1;
        }
        Ok(self.state == ChunkState::Done)
    }
}

/// One keep-alive connection for request/response exchanges (publishing,
/// fetching /metrics). Reconnects by itself after an error.
#[derive(Debug)]
pub struct Connection {
    url: Url,
    source: Option<IpAddr>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// A complete response to one request.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Connection {
    pub fn new(url: Url, source: Option<IpAddr>) -> Self {
        Self {
            url,
            source,
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends `request` (a whole HTTP/1.1 request) and reads the response.
    /// On any error the connection is dropped, so the next call starts a
    /// fresh one; the caller decides whether to retry.
    pub async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        let result = self.exchange_inner(request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange_inner(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        if self.stream.is_none() {
            self.stream = Some(connect(self.url.addr, self.source, Duration::from_secs(10)).await?);
        }
        let Some(stream) = self.stream.as_mut() else {
            bail!("not connected");
        };
        stream.write_all(request).await?;
        self.buf.clear();
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            if read_more(stream, &mut self.buf).await? == 0 {
                bail!("connection closed before the response head");
            }
        };
        let mut body = Vec::new();
        let mut rest = self.buf[head.len..].to_vec();
        match head.framing {
            Framing::Length(n) => {
                let n = n as usize;
                while rest.len() < n {
                    if read_more(stream, &mut rest).await? == 0 {
                        bail!("connection closed inside the response body");
                    }
                }
                // Anything past the body would be a response to a request
                // never sent: the server is broken, so is this connection.
                if rest.len() > n {
                    bail!("unexpected bytes after the response");
                }
                body = rest;
            }
            Framing::Chunked => {
                let mut decoder = Chunked::default();
                loop {
                    let done = decoder.decode(&rest, |piece| body.extend_from_slice(piece))?;
                    if done {
                        break;
                    }
                    rest.clear();
                    if read_more(stream, &mut rest).await? == 0 {
                        bail!("connection closed inside the response body");
                    }
                }
            }
            Framing::UntilClose => {
                body = rest;
                while read_more(stream, &mut body).await? > 0 {}
                self.stream = None;
            }
        }
        if head.close {
            self.stream = None;
        }
        Ok(Response {
            status: head.status,
            body,
        })
    }
}

/// Appends what the socket has to `buf`; 0 means the peer closed.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    buf.reserve(4096);
    Ok(stream.read_buf(buf).await?)
}

/// A `GET` request for `url`.
pub fn get_request(url: &Url, accept: &str) -> Vec<u8> {
    get_request_with(url, accept, "")
}

/// A `GET` request for `url` with `extra` header lines, each ending in
/// CRLF.
pub fn get_request_with(url: &Url, accept: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\nCache-Control: no-cache\r\nUser-Agent: loadgen\r\n{extra}\r\n",
        url.target, url.authority
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> (Vec<u8>, bool) {
        let mut decoder = Chunked::default();
        let mut out = Vec::new();
        let mut done = decoder
            .decode(&input[..split], |p| out.extend_from_slice(p))
            .unwrap();
        done |= decoder
            .decode(&input[split..], |p| out.extend_from_slice(p))
            .unwrap();
        (out, done)
    }

    #[test]
    fn chunked_bodies_decode_at_every_split() {
        let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for split in 0..=input.len() {
            assert_eq!(
                decode_all(input, split),
                (b"hello, world".to_vec(), true),
                "split at {split}"
            );
        }
    }

    #[test]
    fn an_unfinished_chunked_body_is_not_done() {
        assert_eq!(decode_all(b"A\r\n0123", 2), (b"0123".to_vec(), false));
    }

    #[test]
    fn bad_chunk_sizes_are_errors() {
        let mut decoder = Chunked::default();
        assert!(decoder.decode(b"zz\r\n", |_| {}).is_err());
    }

    #[test]
    fn heads_tell_the_framing() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.status, head.framing, head.len),
            (200, Framing::Chunked, 47)
        );
        let head = parse_head(b"HTTP/1.1 201 Created\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Length(12));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }

    #[test]
    fn only_a_200_without_a_length_is_a_stream() {
        let head = |text: &str| parse_head(text.as_bytes()).unwrap().unwrap();
        let chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(chunked.ensure_stream().is_ok());
        assert!(head("HTTP/1.0 200 OK\r\n\r\n").ensure_stream().is_ok());
        let retry = head("HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n");
        assert_eq!(
            retry.ensure_stream().unwrap_err().to_string(),
            "refused with an SSE retry"
        );
        let full = head("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(full.ensure_stream().unwrap_err().to_string(), "status 503");
    }

    #[test]
    fn only_loopback_unless_allowed() {
        assert!(Url::parse("http://127.0.0.1:9990/event-stream", false).is_ok());
        assert!(Url::parse("http://10.1.2.3:9990/", false).is_err());
        assert!(Url::parse("https://127.0.0.1/", false).is_err());
        let url = Url::parse("http://127.0.0.1:8080/sub?topic=a", false).unwrap();
        assert_eq!(url.target, "/sub?topic=a");
        assert_eq!(url.authority, "127.0.0.1:8080");
    }
}
