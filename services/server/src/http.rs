//! The server's own HTTP/1 accept loop, for both listeners (the WebSocket
//! port and the admin port).
//!
//! axum's `serve` runs hyper without a timer and without a connection limit,
//! so a client that sends its headers one byte a second holds a descriptor
//! for ever. Here every connection has:
//! - a header read timeout (hyper's, with a tokio timer): the request line and
//!   headers must arrive within `HTTP_HEADER_TIMEOUT`;
//! - a lifetime bound while it is plain HTTP (`HTTP_IDLE_TIMEOUT`, plus the
//!   longest `/prestop` wait on the admin port): a connection that never
//!   upgrades is closed after that bound whatever it does, idle keep-alive
//!   or a slow reader of a response. (Keep-alive stays on on the WebSocket
//!   port: hyper answers an upgrade with `Connection: close` otherwise.);
//! - a place under caps: beyond `max_http` open HTTP connections, or
//!   `max_connections` open connections of any kind (HTTP and the sessions
//!   they became, each holding a descriptor: [`crate::descriptors`] derives
//!   this cap from the descriptor limit), a new one is answered `503` and
//!   closed. Upgraded sessions leave the first cap (hyper's connection
//!   future ends at the upgrade) but not the second; MAX_SESSIONS bounds
//!   them too. On the admin port the cap is shared fairly between addresses
//!   ([`crate::fair`]), and a connection carries one request (no
//!   keep-alive), so that it holds its place no longer than that request.
//!
//! Accept errors (the descriptor limit above all) are logged, counted in
//! `gsd_server_accept_errors_total` and followed by a growing pause, so that
//! the loop neither dies nor spins on a listener that stays readable; it
//! accepts again once descriptors are free.
//!
//! Each connection is wrapped so that the session on it can make it end with
//! a TCP reset (FAULT_RESET_AT_SIGTERM): the request carries the switch as an
//! extension, and nothing changes unless a session arms it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::fair::{Share, Shares, Slot};
use crate::fault::{ResetSwitch, Resettable};
use crate::metrics::{AcceptFailure, HttpTimeout, ServerMetrics};

/// Largest buffer hyper keeps for one request head (its minimum): gsd's
/// requests are a GET with a handful of headers.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Most headers in one request.
const MAX_HEADERS: usize = 64;

/// Pause after an accept error grows from the first to the last of these.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a refusal waits for the peer to read its 503 before closing.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Where a port's connections come from: a TCP listener in the binary. The
/// server needs nothing more of a connection than bytes both ways and the
/// peer's address, so tests can hand it in-memory streams and run it on a
/// paused clock, where real sockets would let time jump while they wait.
pub trait Listener: Send + 'static {
    /// One accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection and its peer's address. An error of one peer's
    /// (a reset before the accept) is skipped; any other is the listener's
    /// (the descriptor limit, say): counted, logged and waited out.
    fn accept(&mut self) -> impl Future<Output = std::io::Result<(Self::Io, SocketAddr)>> + Send;

    /// The address the `listening` log line shows.
    fn local_addr(&self) -> std::io::Result<SocketAddr>;

    /// Applies the liveness settings to every connection this listener will
    /// accept (see [`gsd_telemetry::set_tcp_liveness`]).
    fn set_liveness(&self, interval: Duration, timeout: Duration) -> std::io::Result<()>;

    /// Makes `io` end with a reset rather than an orderly close when it is
    /// dropped, for FAULT_RESET_AT_SIGTERM. By default nothing: a connection
    /// that has no such thing (an in-memory pipe) just ends when dropped.
    fn reset_on_close(_io: &Self::Io) -> std::io::Result<()> {
        Ok(())
    }
}

impl Listener for TcpListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }

    fn set_liveness(&self, interval: Duration, timeout: Duration) -> std::io::Result<()> {
        // Accepted connections inherit these from the listener.
        gsd_telemetry::set_tcp_liveness(self, interval, timeout)
    }

    /// SO_LINGER 0: the close sends a RST and discards what is unsent.
    fn reset_on_close(io: &TcpStream) -> std::io::Result<()> {
        io.set_zero_linger()
    }
}

/// One listener's limits.
#[derive(Clone)]
pub(crate) struct Limits {
    /// `ws` or `admin`: the `port` label of the metrics and logs.
    pub port: &'static str,
    /// How long a connection may take to send its request head.
    pub header_timeout: Duration,
    /// Longest life of a connection that has not upgraded.
    pub lifetime: Duration,
    /// Most HTTP connections (not upgraded) open at once.
    pub max_http: usize,
    /// Most connections open at once, HTTP and sessions: each holds a
    /// descriptor.
    pub max_connections: usize,
    /// Refusals (503 then close) in flight at once; past it a connection
    /// over the cap is closed unanswered, so that refusing costs bounded
    /// descriptors too.
    pub max_refusals: usize,
    /// The fair share between addresses that admits connections instead of
    /// the caps above (the admin port); `None` on the WebSocket port, whose
    /// peers are mostly a proxy or a Service's few addresses.
    pub shares: Option<Arc<Shares>>,
    /// Whether a connection may carry a second request after the first.
    pub keep_alive: bool,
}

/// Serves `router` on `listener` until `stop` is cancelled, then lets the
/// requests in flight finish (bounded by their lifetime).
pub(crate) async fn serve<L: Listener>(
    mut listener: L,
    router: Router,
    limits: Limits,
    metrics: ServerMetrics,
    stop: CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(AtomicUsize::new(0));
    let connections = TaskTracker::new();
    let gauge = metrics.http_connections.with_label_values(&[limits.port]);
    let held_gauge = metrics.connections.with_label_values(&[limits.port]);
    let mut backoff = Duration::ZERO;
    let mut last_logged: Option<tokio::time::Instant> = None;
    let mut unlogged = 0u64;
    loop {
        if let Some(shares) = &limits.shares {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = shares.room() => {}
            }
        }
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            // The peer gave up between its SYN and our accept: nothing to do.
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                let kind = AcceptFailure::of(&e).label();
                metrics.accept_errors.with_label_values(&[limits.port, kind]).inc();
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                // One line a second at most; the metric counts every error.
                let now = tokio::time::Instant::now();
                if last_logged.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
                    warn!(port = limits.port, kind, error = %e, retry_in_ms = backoff.as_millis() as u64,
                        open = open.load(Ordering::Relaxed), suppressed = unlogged, "accept_failed");
                    last_logged = Some(now);
                    unlogged = 0;
                } else {
                    unlogged += 1;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        let admitted = match &limits.shares {
            Some(shares) => shares.admit(peer.ip()).map(Some),
            None => (open.load(Ordering::SeqCst) < limits.max_http
                && held.load(Ordering::SeqCst) < limits.max_connections)
                .then_some(None),
        };
        let Some(share) = admitted else {
            metrics.http_refused.with_label_values(&[limits.port]).inc();
            if refusing.fetch_add(1, Ordering::SeqCst) < limits.max_refusals {
                let refusing = refusing.clone();
                tokio::spawn(async move {
                    refuse(stream).await;
                    refusing.fetch_sub(1, Ordering::SeqCst);
                });
            } else {
                refusing.fetch_sub(1, Ordering::SeqCst);
                drop(stream);
            }
            continue;
        };
        open.fetch_add(1, Ordering::SeqCst);
        gauge.inc();
        let stream = Counted::new(stream, held.clone(), held_gauge.clone());
        let (stream, switch) = Resettable::new(stream, |io: &Counted<L::Io>| L::reset_on_close(&io.inner));
        let (router, limits, metrics, stop, open, gauge) =
            (router.clone(), limits.clone(), metrics.clone(), stop.clone(), open.clone(), gauge.clone());
        connections.spawn(async move {
            connection(stream, peer, switch, share, router, &limits, &metrics, stop).await;
            open.fetch_sub(1, Ordering::SeqCst);
            gauge.dec();
        });
    }
    connections.close();
    connections.wait().await;
}

/// Errors of one connection that `accept` reports: not the listener's.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock)
}

#[allow(clippy::too_many_arguments)] // one connection's whole context, passed once
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    switch: ResetSwitch,
    share: Option<Share>,
    router: Router,
    limits: &Limits,
    metrics: &ServerMetrics,
    stop: CancellationToken,
) {
    let slot = share.as_ref().map(Share::slot);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(switch.clone());
        // In a handler (a preStop wait), the connection is not evicted.
        let busy = slot.as_ref().map(Slot::busy);
        let mut router = router.clone();
        async move {
            let _busy = busy;
            // Router is always ready (its poll_ready returns Ready at once).
            tower_service::Service::call(&mut router, request).await
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(limits.keep_alive)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    let evicted = async {
        match &share {
            Some(share) => share.evicted().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                if e.is_timeout() {
                    metrics.http_timeouts.with_label_values(&[limits.port, HttpTimeout::Header.label()]).inc();
                }
                debug!(port = limits.port, %peer, error = %e, "http_connection_error");
            }
        }
        _ = tokio::time::sleep(limits.lifetime) => {
            metrics.http_timeouts.with_label_values(&[limits.port, HttpTimeout::Idle.label()]).inc();
            debug!(port = limits.port, %peer, lifetime_ms = limits.lifetime.as_millis() as u64, "http_connection_expired");
        }
        _ = evicted => {
            metrics.admin_evicted.inc();
            debug!(port = limits.port, %peer, "http_connection_evicted");
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

/// A connection that counts itself among its port's open ones for as long
/// as its descriptor is open: as an HTTP connection, then as the session
/// it may become (the upgrade hands this very object to the session).
struct Counted<S> {
    /// The connection itself.
    inner: S,
    /// The port's count of open connections.
    count: Arc<AtomicUsize>,
    /// The same count as exposed (`gsd_server_connections{port}`).
    gauge: IntGauge,
}

impl<S> Counted<S> {
    fn new(inner: S, count: Arc<AtomicUsize>, gauge: IntGauge) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        gauge.inc();
        Counted { inner, count, gauge }
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.gauge.dec();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Answers a connection over the cap with 503 and closes it, after reading
/// what it sent (closing with unread data would reset the connection and
/// could destroy the answer before the peer reads it).
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    const BODY: &str = "too many connections: try again later\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Retry-After: 1\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let exchange = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, exchange).await;
}
