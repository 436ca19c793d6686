//! Sockets every gsd binary opens the same way: listeners with a backlog
//! sized for reconnect storms, TCP keepalive and `TCP_USER_TIMEOUT` matched to
//! the liveness settings, and a tiny HTTP client (GET for scraping and
//! probing, POST for one replica to ask another for a parked session).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Listen backlog of every gsd listener: a failover sends thousands of
/// connects in a moment, and a full backlog drops SYNs, which the client's
/// kernel retries only after a second. (The kernel caps it at somaxconn.)
const BACKLOG: u32 = 8192;

/// A TCP listener on `addr` with a backlog sized for reconnect storms.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Keepalive probes the kernel sends before it gives a silent connection up.
const KEEPALIVE_PROBES: u32 = 3;

/// TCP keepalive and `TCP_USER_TIMEOUT` matched to a session's liveness
/// settings: after `interval` of silence the kernel probes the peer, and
/// data (or probes) left unacknowledged for `interval + timeout` abort the
/// connection. The WebSocket pings notice a dead peer on their own; these
/// cover what they cannot: a send blocked on a full buffer towards a peer
/// that vanished, and sockets waiting in the kernel before a session exists.
/// Set on a listener, Linux hands the options to every accepted connection.
/// A zero `interval` leaves the kernel's defaults.
pub fn set_tcp_liveness<S: std::os::fd::AsFd>(
    socket: &S,
    interval: Duration,
    timeout: Duration,
) -> std::io::Result<()> {
    if interval.is_zero() {
        return Ok(());
    }
    let socket = socket2::SockRef::from(socket);
    let probe_every = (timeout / KEEPALIVE_PROBES).max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(interval.max(Duration::from_secs(1)))
        .with_interval(probe_every)
        .with_retries(KEEPALIVE_PROBES);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(interval.saturating_add(timeout)))
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} http://{addr}{path}: {source}")]
    Io { method: &'static str, addr: String, path: String, source: std::io::Error },
    #[error("{method} http://{addr}{path}: no answer within {timeout:?}")]
    Timeout { method: &'static str, addr: String, path: String, timeout: Duration },
    #[error("{method} http://{addr}{path}: not an HTTP/1.x response, or one over {max_bytes} bytes")]
    Malformed { method: &'static str, addr: String, path: String, max_bytes: u64 },
}

/// `GET http://{addr}{path}` as an HTTP/1.0 request (so the answer is never
/// chunked and the connection closes after it), returning the status code
/// and the body. Enough to scrape `/metrics`, probe `/readyz` and query a
/// local Prometheus or Jaeger without a full HTTP client.
pub async fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), HttpError> {
    exchange("GET", addr, path, &[], u64::MAX, timeout).await
}

/// `POST http://{addr}{path}` with `headers` and no body, the same way as
/// [`http_get`], refusing an answer over `max_bytes` (one replica asking
/// another for a parked session: the answer's size is bounded by the
/// session's).
pub async fn http_post(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    max_bytes: u64,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    exchange("POST", addr, path, headers, max_bytes, timeout).await
}

async fn exchange(
    method: &'static str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    max_bytes: u64,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    let io = |source| HttpError::Io { method, addr: addr.to_owned(), path: path.to_owned(), source };
    let malformed = || HttpError::Malformed { method, addr: addr.to_owned(), path: path.to_owned(), max_bytes };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: gsd\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if method == "POST" {
            request.push_str("Content-Length: 0\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        // One byte more than allowed tells an answer at the bound from one over it.
        (&mut stream).take(max_bytes.saturating_add(1)).read_to_end(&mut raw).await.map_err(io)?;
        Ok(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange).await.map_err(|_| HttpError::Timeout {
        method,
        addr: addr.to_owned(),
        path: path.to_owned(),
        timeout,
    })??;
    if raw.len() as u64 > max_bytes {
        return Err(malformed());
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(malformed)?;
    Ok((status, body.to_owned()))
}
