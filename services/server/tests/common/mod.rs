//! `gsd_server::run` in process, for the tests of this crate: its ports are
//! in-memory pipes ([`Pipes`]), so that a test can run it on a paused clock
//! where every instant is exact, or a real loopback listener where a test
//! needs real sockets; and a raw WebSocket peer that records what it saw of
//! a drain ([`follow`]).
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use gsd_protocol::{ClientMessage, ServerMessage};
use gsd_server::{Config, DrainSummary, Listener, ServerError};
use prometheus::Registry;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

/// A port whose connections are the server ends of in-memory pipes.
pub struct Pipes {
    /// Server ends handed over by [`Server::connect`].
    incoming: mpsc::UnboundedReceiver<DuplexStream>,
}

/// The address every in-memory peer seems to come from.
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

impl Listener for Pipes {
    type Io = DuplexStream;

    async fn accept(&mut self) -> std::io::Result<(DuplexStream, SocketAddr)> {
        match self.incoming.recv().await {
            Some(stream) => Ok((stream, PEER)),
            // No more connections will come; the server stops on its own.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(PEER)
    }

    fn set_liveness(&self, _interval: Duration, _timeout: Duration) -> std::io::Result<()> {
        Ok(())
    }
}

/// A running `gsd_server::run`.
pub struct Server {
    /// Where [`Server::connect`] sends the server end of each new pipe;
    /// `None` when the WebSocket port is a real listener.
    connections: Option<mpsc::UnboundedSender<DuplexStream>>,
    /// The registry the server's metrics are in.
    registry: Registry,
    /// Dropping it (in [`Server::drain`]) is the server's SIGTERM.
    stop: Option<oneshot::Sender<()>>,
    /// The server's own task, which returns the drain summary.
    task: JoinHandle<Result<DrainSummary, ServerError>>,
    /// The admin port's sender, kept so that its accept loop just waits.
    _admin: mpsc::UnboundedSender<DuplexStream>,
}

impl Server {
    /// Starts the server on in-memory pipes with `flags` over quiet
    /// defaults: no pushes, no liveness checks, no linger after the drain.
    pub fn start(flags: &[&str]) -> Server {
        let (connections, incoming) = mpsc::unbounded_channel();
        let mut server = Server::start_on(Pipes { incoming }, flags);
        server.connections = Some(connections);
        server
    }

    /// The same with the WebSocket port on `listener` (the admin port stays
    /// a pipe).
    pub fn start_on(listener: impl Listener, flags: &[&str]) -> Server {
        let quiet = [("--push-interval", "0s"), ("--ping-interval", "0s"), ("--metrics-linger", "0s")];
        let mut args = vec!["gsd-server", "--server-id", "in-process"];
        for (flag, value) in quiet.into_iter().filter(|(flag, _)| !flags.contains(flag)) {
            args.extend([flag, value]);
        }
        args.extend(flags);
        let config = Config::try_parse_from(args).expect("valid flags");
        config.validate().expect("a valid configuration");
        let (admin, admin_incoming) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let registry = Registry::new();
        let task = tokio::spawn(gsd_server::run(
            listener,
            Pipes { incoming: admin_incoming },
            config,
            registry.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Server { connections: None, registry, stop: Some(stop), task, _admin: admin }
    }

    /// A new session over a pipe, past its welcome.
    pub async fn connect(&self) -> WebSocketStream<DuplexStream> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let connections = self.connections.as_ref().expect("a server on pipes");
        connections.send(server).expect("the server is running");
        welcomed(client).await
    }

    /// Starts the drain, as SIGTERM does in the binary.
    pub fn drain(&mut self) {
        self.stop.take();
    }

    /// Waits for `run` to return.
    pub async fn summary(self) -> DrainSummary {
        self.task.await.expect("the server task").expect("the server ran")
    }

    /// The value of one series of the server's metrics (0 when absent).
    pub fn metric(&self, series: impl AsRef<str>) -> f64 {
        gsd_telemetry::sample(&gsd_telemetry::render(&self.registry), series).unwrap_or(0.0)
    }
}

/// A WebSocket session over `io`, past its welcome.
pub async fn welcomed<S: AsyncRead + AsyncWrite + Unpin>(io: S) -> WebSocketStream<S> {
    let url = format!("ws://gsd.test{}", gsd_protocol::WS_PATH);
    let (mut ws, _) = tokio_tungstenite::client_async(url, io).await.expect("upgrade");
    match next_message(&mut ws).await {
        Some(ServerMessage::Welcome { .. }) => ws,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// The next gsd message, skipping pings; `None` at a close or the end.
pub async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Option<ServerMessage> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => return Some(ServerMessage::decode(text.as_str()).expect("a gsd message")),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(_) | Err(_) => return None,
        }
    }
}

/// `future`'s output, or a panic if it takes longer than `bound`.
pub async fn within<F: std::future::Future>(bound: Duration, future: F) -> F::Output {
    tokio::time::timeout(bound, future).await.unwrap_or_else(|_| panic!("still waiting after {bound:?}"))
}

/// A shutdown notice as a client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    /// When it arrived.
    pub at: Instant,
    /// Its `remaining`.
    pub remaining: u32,
    /// Its `deadline_ms`.
    pub deadline_ms: u64,
    /// Its `last_seq`.
    pub last_seq: Option<u64>,
}

/// What one client saw of a drain.
#[derive(Debug)]
pub struct Seen {
    /// The shutdown notice, if one came.
    pub notice: Option<Notice>,
    /// The seqs of the data frames received after the notice.
    pub data: Vec<u64>,
    /// When the close frame came, its code and its reason.
    pub close: Option<(Instant, u16, String)>,
    /// How the connection ended when no close frame came: the WebSocket
    /// layer's error, if it reported one.
    pub cut: Option<Option<tungstenite::Error>>,
}

/// Follows a session through the drain to its end, acking every data frame
/// at once when `ack`, never when not.
pub async fn follow<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>, ack: bool) -> Seen {
    let mut seen = Seen { notice: None, data: Vec::new(), close: None, cut: None };
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match ServerMessage::decode(text.as_str()).expect("a gsd message") {
                ServerMessage::ShutdownNotice { remaining, deadline_ms, last_seq } => {
                    seen.notice = Some(Notice { at: Instant::now(), remaining, deadline_ms, last_seq });
                }
                ServerMessage::Data { seq, .. } => {
                    if seen.notice.is_some() {
                        seen.data.push(seq);
                    }
                    if ack {
                        let ack = ClientMessage::Ack { seq }.encode();
                        ws.send(Message::Text(ack.into())).await.expect("ack sent");
                    }
                }
                other => panic!("unexpected {other:?}"),
            },
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                seen.close = Some((Instant::now(), code, reason));
                return seen;
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                seen.cut = Some(Some(error));
                return seen;
            }
            None => {
                seen.cut = Some(None);
                return seen;
            }
        }
    }
}
