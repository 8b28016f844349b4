//! A lean HTTP/1.1 connection for load generation, in the manner of `wrk` or `pgbench`.
//!
//! The purchase benchmark's clients share the machine's two CPUs with the server they measure.
//! Through `reqwest`, a client spent more CPU per request than the server's HTTP side did (URL
//! parsing, header maps, the connection pool, a JSON value built and re-encoded per request), and
//! that CPU was taken from the server. `pgbench`, the peer the benchmark is compared with, is a
//! lean C client. This connection writes a request as bytes, parses the response head with
//! `httparse` and returns the status and the body. It keeps one connection alive, sends one
//! request at a time on it, and accepts only bodies sized by `Content-Length` (which is how the
//! server answers).

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most response bytes accepted (head and body).
const MAX_RESPONSE: usize = 1 << 20;
/// How long one request may take before it counts as a transport error.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One kept-alive HTTP/1.1 connection with a bearer token.
pub struct Conn {
    addr: SocketAddr,
    stream: TcpStream,
    host: String,
    authorization: String,
    request: Vec<u8>,
    buf: Vec<u8>,
}

/// A response: its status and its body.
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

impl Conn {
    pub async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            addr,
            stream,
            host: addr.to_string(),
            authorization: format!("Bearer {token}"),
            request: Vec::with_capacity(512),
            buf: Vec::with_capacity(4_096),
        })
    }

    /// Replaces the connection with a new one, after a transport error left it in an unknown
    /// state.
    pub async fn reconnect(&mut self) -> anyhow::Result<()> {
        self.stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("reconnect to {}", self.addr))?;
        self.stream.set_nodelay(true)?;
        Ok(())
    }

    /// `POST path` with `Idempotency-Key: key` and `body` as JSON (no body when it is empty).
    pub async fn post(
        &mut self,
        path: &str,
        key: &str,
        body: &[u8],
    ) -> anyhow::Result<Response<'_>> {
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/json\r\n"
        };
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nIdempotency-Key: {key}\r\n\
             {content_type}Content-Length: {}\r\n\r\n",
            self.host,
            self.authorization,
            body.len()
        )?;
        self.request.extend_from_slice(body);
        let (status, head, len) = tokio::time::timeout(TIMEOUT, self.exchange())
            .await
            .with_context(|| format!("no answer to POST {path} within {TIMEOUT:?}"))??;
        Ok(Response {
            status,
            body: &self.buf[head..head + len],
        })
    }

    /// Writes the request and reads one whole response into `buf`: (status, head length, body
    /// length).
    async fn exchange(&mut self) -> anyhow::Result<(u16, usize, usize)> {
        self.stream.write_all(&self.request).await?;
        self.buf.clear();
        let (status, head, len) = loop {
            self.read_some().await?;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&self.buf)? {
                let status = response.code.context("a response without a status")?;
                let mut len = None;
                for h in response.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = Some(std::str::from_utf8(h.value)?.trim().parse::<usize>()?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        bail!("a response with Transfer-Encoding, which this client does not read");
                    }
                }
                let len = len.context("a response without Content-Length")?;
                break (status, head, len);
            }
        };
        if head + len > MAX_RESPONSE {
            bail!("a response of {} bytes", head + len);
        }
        while self.buf.len() < head + len {
            self.read_some().await?;
        }
        if self.buf.len() > head + len {
            bail!("bytes after the response, which no request asked for");
        }
        Ok((status, head, len))
    }

    async fn read_some(&mut self) -> anyhow::Result<()> {
        if self.buf.len() >= MAX_RESPONSE {
            bail!("a response head over {MAX_RESPONSE} bytes");
        }
        self.buf.reserve(4_096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }
}
