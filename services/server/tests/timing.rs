//! The server's timing rules, in process and on a paused clock: the drain
//! deadline, the drain pacing and the liveness bound. `gsd_server::run` is
//! given in-memory connections, so nothing waits on a real socket and the
//! clock moves only when every task is waiting on a timer: each instant
//! asserted here is exact, and no test sleeps for real.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use gsd_protocol::{ClientMessage, ServerMessage};
use gsd_server::{Config, DrainSummary, Listener, ServerError};
use prometheus::Registry;
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A port whose connections are the server ends of in-memory pipes.
struct Pipes {
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

/// A running `gsd_server::run` on in-memory ports.
struct Server {
    /// Where [`Server::connect`] sends the server end of each new pipe.
    connections: mpsc::UnboundedSender<DuplexStream>,
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
    /// Starts the server with `flags` over quiet defaults: no pushes, no
    /// liveness checks, no linger after the drain.
    fn start(flags: &[&str]) -> Server {
        let quiet = [("--push-interval", "0s"), ("--ping-interval", "0s"), ("--metrics-linger", "0s")];
        let mut args = vec!["gsd-server", "--server-id", "timing"];
        for (flag, value) in quiet.into_iter().filter(|(flag, _)| !flags.contains(flag)) {
            args.extend([flag, value]);
        }
        args.extend(flags);
        let config = Config::try_parse_from(args).expect("valid flags");
        config.validate().expect("a valid configuration");
        let (connections, incoming) = mpsc::unbounded_channel();
        let (admin, admin_incoming) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let registry = Registry::new();
        let task = tokio::spawn(gsd_server::run(
            Pipes { incoming },
            Pipes { incoming: admin_incoming },
            config,
            registry.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Server { connections, registry, stop: Some(stop), task, _admin: admin }
    }

    /// A new session, past its welcome.
    async fn connect(&self) -> WebSocketStream<DuplexStream> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        self.connections.send(server).expect("the server is running");
        let url = format!("ws://gsd.test{}", gsd_protocol::WS_PATH);
        let (mut ws, _) = tokio_tungstenite::client_async(url, client).await.expect("upgrade");
        match next_message(&mut ws).await {
            Some(ServerMessage::Welcome { .. }) => ws,
            other => panic!("expected a welcome, got {other:?}"),
        }
    }

    /// Starts the drain, as SIGTERM does in the binary.
    fn drain(&mut self) {
        self.stop.take();
    }

    /// Waits for `run` to return.
    async fn summary(self) -> DrainSummary {
        self.task.await.expect("the server task").expect("the server ran")
    }

    /// The value of one series of the server's metrics (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        gsd_telemetry::sample(&gsd_telemetry::render(&self.registry), series).unwrap_or(0.0)
    }
}

/// The next gsd message, skipping pings; `None` at a close or the end.
async fn next_message(ws: &mut WebSocketStream<DuplexStream>) -> Option<ServerMessage> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => return Some(ServerMessage::decode(text.as_str()).expect("a gsd message")),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(_) | Err(_) => return None,
        }
    }
}

/// `future`'s output, or a panic if it takes longer than `bound`.
async fn within<F: std::future::Future>(bound: Duration, future: F) -> F::Output {
    tokio::time::timeout(bound, future).await.unwrap_or_else(|_| panic!("still waiting after {bound:?}"))
}

/// What one client saw of a drain.
#[derive(Debug)]
struct Seen {
    /// When the shutdown notice came, and its `remaining` and `deadline_ms`.
    notice: Option<(Instant, u32, u64)>,
    /// Data frames received after the notice.
    data: u32,
    /// When the close came, and its code.
    close: Option<(Instant, u16)>,
}

/// Follows a session through the drain to its close, acking every data frame
/// at once when `ack`, never when not.
async fn follow(mut ws: WebSocketStream<DuplexStream>, ack: bool) -> Seen {
    let mut seen = Seen { notice: None, data: 0, close: None };
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Message::Text(text)) => match ServerMessage::decode(text.as_str()).expect("a gsd message") {
                ServerMessage::ShutdownNotice { remaining, deadline_ms, .. } => {
                    seen.notice = Some((Instant::now(), remaining, deadline_ms));
                }
                ServerMessage::Data { seq, .. } => {
                    seen.data += 1;
                    if ack {
                        let ack = ClientMessage::Ack { seq }.encode();
                        ws.send(Message::Text(ack.into())).await.expect("ack sent");
                    }
                }
                other => panic!("unexpected {other:?}"),
            },
            Ok(Message::Close(frame)) => {
                seen.close = Some((Instant::now(), frame.map_or(1005, |f| f.code.into())));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_acks_is_given_up_at_the_drain_deadline() {
    let timeout = Duration::from_secs(7);
    let mut server = Server::start(&["--drain-timeout", "7s", "--drain-messages", "3"]);
    let acking = tokio::spawn(follow(server.connect().await, true));
    let silent = tokio::spawn(follow(server.connect().await, false));
    let signalled = Instant::now();
    server.drain();
    // Bounded, so that a server that never gives up fails the test rather
    // than hanging it (on the paused clock the bound passes at once).
    let bound = timeout * 2;
    let (acking, silent) = (within(bound, acking).await.unwrap(), within(bound, silent).await.unwrap());

    // The acking client is let go as soon as it has acked; the silent one
    // gets all it is owed, then waits exactly until the deadline.
    let (notice_at, remaining, deadline_ms) = silent.notice.expect("a notice");
    assert_eq!((notice_at, remaining, deadline_ms), (signalled, 3, timeout.as_millis() as u64));
    assert_eq!(silent.data, 3);
    assert_eq!(silent.close, Some((signalled + timeout, gsd_protocol::close::GOING_AWAY)));
    let (acked_close, code) = acking.close.expect("a close");
    assert_eq!(code, gsd_protocol::close::GOING_AWAY);
    assert!(acked_close - signalled < Duration::from_millis(1), "{acking:?}");

    assert_eq!(server.metric(r#"gsd_server_drains_total{outcome="incomplete"}"#), 1.0);
    assert_eq!(server.metric(r#"gsd_server_drains_total{outcome="complete"}"#), 1.0);
    let summary = within(bound, server.summary()).await;
    assert_eq!((summary.sessions, summary.complete, summary.incomplete), (2, 1, 1), "{summary:?}");
    assert_eq!(summary.messages, 6, "{summary:?}");
    assert!(summary.duration >= timeout, "{summary:?}");
}

#[tokio::test(start_paused = true)]
async fn drain_pacing_spreads_the_notices_over_the_window() {
    let pacing = Duration::from_secs(2);
    let mut server = Server::start(&["--drain-pacing", "2s", "--drain-timeout", "5s", "--drain-messages", "1"]);
    let mut users = Vec::new();
    for _ in 0..32 {
        users.push(tokio::spawn(follow(server.connect().await, true)));
    }
    let signalled = Instant::now();
    server.drain();
    let mut offsets = Vec::new();
    for user in users {
        let seen = within(Duration::from_secs(10), user).await.unwrap();
        let (at, ..) = seen.notice.expect("a notice");
        assert_eq!(seen.close.map(|(_, code)| code), Some(gsd_protocol::close::GOING_AWAY));
        offsets.push(at - signalled);
    }
    offsets.sort();
    // Every notice inside the window; spread over it, not all at its start
    // (32 uniform draws all in one half: odds of 2^-31).
    assert!(*offsets.last().unwrap() <= pacing, "{offsets:?}");
    assert!(offsets[0] < pacing / 2 && *offsets.last().unwrap() >= pacing / 2, "{offsets:?}");
    let summary = server.summary().await;
    assert_eq!((summary.complete, summary.incomplete), (32, 0), "{summary:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_pinged_after_the_interval_and_given_up_after_the_timeout() {
    let (interval, timeout) = (Duration::from_secs(10), Duration::from_secs(4));
    let server = Server::start(&["--ping-interval", "10s", "--ping-timeout", "4s"]);
    // Connected, then never read again: no pong, no frame of any kind.
    let _silent = server.connect().await;
    let opened = Instant::now();
    let ping = r#"gsd_server_messages_sent_total{type="ping"}"#;
    let timed_out = r#"gsd_server_sessions_closed_total{reason="timeout"}"#;
    let ms = Duration::from_millis(1);

    tokio::time::sleep_until(opened + interval - ms).await;
    assert_eq!(server.metric(ping), 0.0, "pinged before PING_INTERVAL");
    tokio::time::sleep_until(opened + interval + ms).await;
    assert_eq!(server.metric(ping), 1.0, "no ping at PING_INTERVAL");

    tokio::time::sleep_until(opened + interval + timeout - ms).await;
    assert_eq!(server.metric(timed_out), 0.0, "given up before PING_INTERVAL + PING_TIMEOUT");
    assert_eq!(server.metric("gsd_server_sessions"), 1.0);
    tokio::time::sleep_until(opened + interval + timeout + ms).await;
    assert_eq!(server.metric(timed_out), 1.0, "still open after PING_INTERVAL + PING_TIMEOUT");
    assert_eq!(server.metric("gsd_server_sessions"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_is_never_given_up() {
    let server = Server::start(&["--ping-interval", "10s", "--ping-timeout", "4s"]);
    let mut ws = server.connect().await;
    // Reading is enough: the WebSocket layer answers every ping with a pong.
    let reader = tokio::spawn(async move { next_message(&mut ws).await });
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(server.metric(r#"gsd_server_messages_sent_total{type="ping"}"#) >= 8.0);
    assert_eq!(server.metric("gsd_server_sessions"), 1.0);
    reader.abort();
}
