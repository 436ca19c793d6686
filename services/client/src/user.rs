//! One virtual user: connect, hold a session, ack, request, follow drains,
//! reconnect, and keep its [`Ledger`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gsd_protocol::{ClientMessage, ServerMessage, close};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Config;
use crate::ledger::Ledger;
use crate::metrics::ClientMetrics;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Data frames a session holds in processing before it stops reading more.
const MAX_PROCESSING: usize = 4096;

/// What every virtual user of the process shares.
pub(crate) struct Shared {
    pub config: Config,
    pub metrics: ClientMetrics,
    /// Cancelled on SIGTERM/SIGINT: users finish and close with 1000.
    pub shutdown: CancellationToken,
}

/// A session that has received its welcome.
struct Connected {
    ws: Ws,
    server_id: String,
    session_id: String,
    welcomed_at: Instant,
}

/// Why a connection attempt failed; the label is the metric's `reason`.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connection refused")]
    Refused,
    #[error("upgrade refused with HTTP {0}")]
    Status(u16),
    #[error("no welcome within the connect timeout")]
    Timeout,
    #[error("server at capacity (close 1013)")]
    Capacity,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(String),
}

impl ConnectError {
    fn label(&self) -> &'static str {
        match self {
            ConnectError::Refused => "refused",
            ConnectError::Status(503) => "http_503",
            ConnectError::Status(_) => "http_other",
            ConnectError::Timeout => "timeout",
            ConnectError::Capacity => "capacity",
            ConnectError::Protocol(_) => "protocol",
            ConnectError::Io(_) => "io",
        }
    }
}

/// Why a session ended; the label is the reconnect metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndReason {
    /// A shutdown notice came first: a planned drain.
    Drain,
    /// Close 1001 without a notice.
    GoingAway,
    /// Another close code from the server.
    ServerClose,
    /// Reset, EOF without close, or a WebSocket error.
    Error,
    /// This client is stopping.
    Shutdown,
}

impl EndReason {
    fn label(self) -> &'static str {
        match self {
            EndReason::Drain => "drain",
            EndReason::GoingAway => "going_away",
            EndReason::ServerClose => "server_close",
            EndReason::Error => "error",
            EndReason::Shutdown => "shutdown",
        }
    }

    fn planned(self) -> bool {
        matches!(self, EndReason::Drain | EndReason::GoingAway)
    }
}

/// Requests survive sessions: unanswered ones are re-sent under the same id.
#[derive(Default)]
struct Book {
    outstanding: BTreeMap<u64, String>,
    next_id: u64,
}

fn full_jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(2u32.saturating_pow(attempt.min(30))).min(cap);
    random_up_to(ceiling)
}

fn random_up_to(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::rng().random_range(0..=max.as_micros() as u64))
}

/// One connection: the welcome's `(server_id, session_id)`, then close 1000.
pub(crate) async fn check(config: &Config) -> Result<(String, String), String> {
    let mut connected = connect_once(config).await.map_err(|e| e.to_string())?;
    let close = connected.ws.send(Message::Close(Some(normal_close())));
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    Ok((connected.server_id, connected.session_id))
}

/// One attempt: TCP (the host resolved afresh), upgrade, welcome.
async fn connect_once(config: &Config) -> Result<Connected, ConnectError> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(gsd_protocol::MAX_WIRE_BYTES))
        .max_frame_size(Some(gsd_protocol::MAX_WIRE_BYTES))
        .read_buffer_size(gsd_protocol::READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(gsd_protocol::MAX_WRITE_BUFFER_BYTES);
    let attempt = async {
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(config.server_url.as_str(), Some(ws_config), true)
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(response) => ConnectError::Status(response.status().as_u16()),
                    tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                        ConnectError::Refused
                    }
                    other => ConnectError::Io(other.to_string()),
                })?;
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match ServerMessage::decode(text.as_str()) {
                Ok(ServerMessage::Welcome { server_id, session_id }) => {
                    Ok(Connected { ws, server_id, session_id, welcomed_at: Instant::now() })
                }
                Ok(other) => Err(ConnectError::Protocol(format!("first frame was `{}`, not `welcome`", other.kind()))),
                Err(e) => Err(ConnectError::Protocol(e.to_string())),
            },
            Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == close::TRY_AGAIN_LATER => {
                Err(ConnectError::Capacity)
            }
            Some(Ok(other)) => Err(ConnectError::Protocol(format!("first frame was not a welcome: {other:?}"))),
            Some(Err(e)) => Err(ConnectError::Io(e.to_string())),
            None => Err(ConnectError::Io("closed before the welcome".into())),
        }
    };
    tokio::time::timeout(config.connect_timeout, attempt).await.map_err(|_| ConnectError::Timeout)?
}

/// Tries until connected (backing off with full jitter between failures) or
/// until the client shuts down (`None`).
async fn connect_loop(shared: Arc<Shared>, first_delay: Duration) -> Option<Connected> {
    let config = &shared.config;
    let mut delay = first_delay;
    let mut attempt = 0u32;
    loop {
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shared.shutdown.cancelled() => return None,
            }
        }
        let result = tokio::select! {
            result = connect_once(config) => result,
            _ = shared.shutdown.cancelled() => return None,
        };
        match result {
            Ok(connected) => return Some(connected),
            Err(e) => {
                shared.metrics.connect_failures.with_label_values(&[e.label()]).inc();
                delay = full_jitter(config.backoff_base, config.backoff_cap, attempt);
                attempt = attempt.saturating_add(1);
                debug!(reason = e.label(), error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "connect_failed");
            }
        }
    }
}

/// Runs virtual user `user` until the client shuts down; returns its ledger.
pub(crate) async fn run(user: u32, shared: Arc<Shared>) -> Ledger {
    let mut ledger = Ledger::default();
    let mut book = Book { next_id: 1, ..Default::default() };
    let config = &shared.config;
    if !config.ramp_up.is_zero() {
        let offset = config.ramp_up.mul_f64(user as f64 / config.clients as f64);
        tokio::select! {
            _ = tokio::time::sleep(offset) => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
    let mut prefetched: Option<JoinHandle<Option<Connected>>> = None;
    let mut first_delay = Duration::ZERO;
    let mut last_end: Option<(Instant, EndReason)> = None;
    let mut last_server: Option<String> = None;
    loop {
        let reconnect_span = match last_end {
            Some((_, reason)) => {
                info_span!(target: "gsd_client::reconnect", "reconnect", user, reason = reason.label(),
                latency_ms = tracing::field::Empty, server_id = tracing::field::Empty)
            }
            None => tracing::Span::none(),
        };
        let connected = match prefetched.take() {
            Some(handle) => handle.await.ok().flatten(),
            None => connect_loop(shared.clone(), first_delay).instrument(reconnect_span.clone()).await,
        };
        let Some(connected) = connected else { break };
        if let Some((ended, reason)) = last_end {
            let latency = connected.welcomed_at.saturating_duration_since(ended);
            ledger.record_reconnect(latency);
            shared.metrics.reconnect_latency.observe(latency.as_secs_f64());
            shared.metrics.reconnects.with_label_values(&[reason.label()]).inc();
            reconnect_span.record("latency_ms", latency.as_millis() as u64);
            reconnect_span.record("server_id", connected.server_id.as_str());
            // One line per reconnect, for gsd-lab's report (debug: thousands
            // of users would flood `kubectl logs` at info).
            debug!(target: "gsd_client::reconnect", user, from = last_server.as_deref(), to = %connected.server_id,
                reason = reason.label(), latency_us = latency.as_micros() as u64, "reconnected");
        }
        last_server = Some(connected.server_id.clone());
        drop(reconnect_span);
        let (reason, ended, next) = Session::run(connected, user, &shared, &mut book, &mut ledger).await;
        prefetched = next;
        last_end = Some((ended, reason));
        if reason == EndReason::Shutdown || shared.shutdown.is_cancelled() {
            break;
        }
        first_delay = if reason.planned() {
            random_up_to(config.reconnect_jitter)
        } else {
            full_jitter(config.backoff_base, config.backoff_cap, 0)
        };
    }
    if let Some(handle) = prefetched.take() {
        // A session opened ahead of time and never used: close it properly.
        // (Its connect loop stops by itself on shutdown.)
        if let Ok(Some(mut connected)) = handle.await {
            let close = connected.ws.send(Message::Close(Some(normal_close())));
            let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
        }
    }
    let unanswered = book.outstanding.len() as u64;
    if unanswered > 0 {
        ledger.requests_lost += unanswered;
        shared.metrics.requests_lost.inc_by(unanswered);
    }
    let fields = (ledger.sessions, ledger.reconnects, ledger.drains_complete, ledger.drains_incomplete);
    let servers = ledger.server_ids.iter().cloned().collect::<Vec<_>>().join(",");
    if ledger.clean() {
        info!(
            user,
            sessions = fields.0,
            reconnects = fields.1,
            drains_complete = fields.2,
            drains_incomplete = fields.3,
            messages_lost = ledger.messages_lost,
            requests_lost = ledger.requests_lost,
            servers,
            "ledger"
        );
    } else {
        warn!(
            user,
            sessions = fields.0,
            reconnects = fields.1,
            drains_complete = fields.2,
            drains_incomplete = fields.3,
            messages_lost = ledger.messages_lost,
            requests_lost = ledger.requests_lost,
            servers,
            "ledger"
        );
    }
    ledger
}

fn normal_close() -> CloseFrame {
    CloseFrame { code: CloseCode::Normal, reason: "client shutting down".into() }
}

/// A drain in progress, as the client sees it.
struct Notice {
    remaining: u32,
    received: u32,
    /// Drained frames already counted lost by a seq gap, so that the
    /// shortfall at the close does not count them twice.
    skipped: u64,
}

/// State of one session, from welcome to end.
struct Session<'a> {
    user: u32,
    shared: &'a Arc<Shared>,
    book: &'a mut Book,
    ledger: &'a mut Ledger,
    sink: futures_util::stream::SplitSink<Ws, Message>,
    /// Seq the next data frame should carry.
    expected: u64,
    /// Received data frames in processing, with when each is done; processing
    /// is serial, so the queue is in seq order.
    processing: VecDeque<(Instant, u64)>,
    notice: Option<Notice>,
    /// The next session, opened at the notice (make-before-break).
    next: Option<JoinHandle<Option<Connected>>>,
}

impl Session<'_> {
    async fn run(
        connected: Connected,
        user: u32,
        shared: &Arc<Shared>,
        book: &mut Book,
        ledger: &mut Ledger,
    ) -> (EndReason, Instant, Option<JoinHandle<Option<Connected>>>) {
        let span = info_span!(target: "gsd_client::session", "session", user,
            server_id = %connected.server_id, session_id = %connected.session_id);
        let metrics = &shared.metrics;
        metrics.sessions.inc();
        metrics.sessions_started.inc();
        ledger.sessions += 1;
        if !ledger.server_ids.contains(&connected.server_id) {
            ledger.server_ids.insert(connected.server_id.clone());
        }
        let (sink, stream) = connected.ws.split();
        let mut session = Session {
            user,
            shared,
            book,
            ledger,
            sink,
            expected: 1,
            processing: VecDeque::new(),
            notice: None,
            next: None,
        };
        let (reason, close_code) = session.serve(stream).instrument(span.clone()).await;
        let ended = Instant::now();
        metrics.sessions.dec();
        let _enter = span.enter();
        session.settle(reason, close_code);
        (reason, ended, session.next.take())
    }

    async fn send(&mut self, message: ClientMessage) -> Result<(), tungstenite::Error> {
        let kind = message.kind();
        self.sink.send(Message::Text(message.encode().into())).await?;
        self.shared.metrics.messages_sent.with_label_values(&[kind]).inc();
        Ok(())
    }

    async fn request(&mut self, id: u64, payload: String) -> Result<(), tungstenite::Error> {
        self.ledger.requests_sent += 1;
        self.send(ClientMessage::Request { id, payload }).await
    }

    /// The session loop; returns why it ended and the server's close code.
    async fn serve(&mut self, mut stream: futures_util::stream::SplitStream<Ws>) -> (EndReason, Option<u16>) {
        let shared = self.shared.clone();
        let config = &shared.config;
        // Requests the last session left unanswered go first, same ids.
        let resend: Vec<(u64, String)> = self.book.outstanding.iter().map(|(id, p)| (*id, p.clone())).collect();
        if !resend.is_empty() {
            self.ledger.requests_resent += resend.len() as u64;
            shared.metrics.requests_resent.inc_by(resend.len() as u64);
            debug!(count = resend.len(), "requests_resent");
        }
        for (id, payload) in resend {
            if self.request(id, payload).await.is_err() {
                return (EndReason::Error, None);
            }
        }
        let period = config.request_interval.max(Duration::from_millis(1));
        let requesting = !config.request_interval.is_zero();
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut exit_by: Option<Instant> = None;
        loop {
            if let Some(by) = exit_by {
                let settled = self.book.outstanding.is_empty() && self.processing.is_empty();
                if settled || Instant::now() >= by {
                    let close = self.sink.send(Message::Close(Some(normal_close())));
                    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
                    // Wait (briefly) for the server's close reply.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(message)) = stream.next().await {
                            if message.is_close() {
                                break;
                            }
                        }
                    })
                    .await;
                    return (EndReason::Shutdown, None);
                }
            }
            let next_done = self.processing.front().map(|(at, _)| *at);
            let outcome: Result<Option<(EndReason, Option<u16>)>, tungstenite::Error> = tokio::select! {
                biased;
                _ = shared.shutdown.cancelled(), if exit_by.is_none() => {
                    exit_by = Some(Instant::now() + config.shutdown_timeout);
                    Ok(None)
                }
                _ = tokio::time::sleep_until(exit_by.unwrap_or_else(Instant::now)), if exit_by.is_some() => Ok(None),
                // A server that floods data waits (TCP backpressure) until
                // processing catches up, rather than growing `processing`.
                frame = stream.next(), if self.processing.len() < MAX_PROCESSING => self.on_frame(frame).await,
                _ = tokio::time::sleep_until(next_done.unwrap_or_else(Instant::now)), if next_done.is_some() => {
                    self.ack_processed().await.map(|_| None)
                }
                _ = ticker.tick(), if requesting && self.notice.is_none() && exit_by.is_none() => {
                    let id = self.book.next_id;
                    self.book.next_id += 1;
                    let payload = format!("u{}-r{id}", self.user);
                    self.book.outstanding.insert(id, payload.clone());
                    self.request(id, payload).await.map(|_| None)
                }
            };
            match outcome {
                Ok(None) => {}
                Ok(Some(end)) => {
                    // Flush the close reply the WebSocket layer queued.
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.sink.close()).await;
                    return end;
                }
                Err(e) => {
                    debug!(error = %e, "session_error");
                    return (if self.notice.is_some() { EndReason::Drain } else { EndReason::Error }, None);
                }
            }
        }
    }

    async fn on_frame(
        &mut self,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<Option<(EndReason, Option<u16>)>, tungstenite::Error> {
        let message = match frame {
            None => return Err(tungstenite::Error::ConnectionClosed),
            Some(frame) => frame?,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                let code = frame.map(|f| u16::from(f.code));
                let reason = match code {
                    _ if self.notice.is_some() => EndReason::Drain,
                    Some(close::GOING_AWAY) => EndReason::GoingAway,
                    _ => EndReason::ServerClose,
                };
                return Ok(Some((reason, code)));
            }
            Message::Binary(_) => {
                warn!("unexpected_binary_frame");
                return Ok(None);
            }
            _ => return Ok(None),
        };
        let metrics = &self.shared.metrics;
        let message = match ServerMessage::decode(text.as_str()) {
            Ok(message) => message,
            Err(e) => {
                warn!(error = %e, "undecodable_server_frame");
                return Ok(None);
            }
        };
        metrics.messages_received.with_label_values(&[message.kind()]).inc();
        match message {
            ServerMessage::Data { seq, .. } => {
                if seq < self.expected {
                    warn!(seq, expected = self.expected, "data_out_of_order");
                    return Ok(None);
                }
                if seq > self.expected {
                    let lost = seq - self.expected;
                    self.ledger.messages_lost += lost;
                    metrics.messages_lost.inc_by(lost);
                    if let Some(notice) = &mut self.notice {
                        notice.skipped = notice.skipped.saturating_add(lost);
                    }
                    warn!(expected = self.expected, received = seq, lost, "data_gap");
                }
                self.expected = seq.saturating_add(1);
                self.ledger.data_received += 1;
                let start = self.processing.back().map_or_else(Instant::now, |(at, _)| (*at).max(Instant::now()));
                self.processing.push_back((start + self.shared.config.processing_time, seq));
                if let Some(notice) = &mut self.notice {
                    notice.received += 1;
                }
            }
            ServerMessage::Response { id, .. } => {
                if self.book.outstanding.remove(&id).is_some() {
                    self.ledger.requests_answered += 1;
                } else if id < self.book.next_id {
                    self.ledger.duplicate_responses += 1;
                    metrics.duplicate_responses.inc();
                    debug!(id, "duplicate_response_dropped");
                } else {
                    warn!(id, "response_to_unknown_request");
                }
            }
            ServerMessage::ShutdownNotice { remaining, deadline_ms } => {
                if self.notice.is_some() {
                    warn!(remaining, "second_shutdown_notice_ignored");
                    return Ok(None);
                }
                info!(remaining, deadline_ms, "shutdown_notice");
                self.notice = Some(Notice { remaining, received: 0, skipped: 0 });
                if self.shared.config.make_before_break && self.next.is_none() {
                    let delay = random_up_to(self.shared.config.reconnect_jitter);
                    let span = info_span!(target: "gsd_client::reconnect", "reconnect", user = self.user,
                        reason = "make_before_break");
                    self.next = Some(tokio::spawn(connect_loop(self.shared.clone(), delay).instrument(span)));
                }
            }
            ServerMessage::Error { message } => warn!(message, "server_error_frame"),
            ServerMessage::Welcome { .. } => warn!("unexpected_second_welcome"),
        }
        Ok(None)
    }

    /// Acks, cumulatively, every data frame whose processing is done.
    async fn ack_processed(&mut self) -> Result<(), tungstenite::Error> {
        let now = Instant::now();
        let mut last = None;
        while let Some(&(at, seq)) = self.processing.front() {
            if at > now {
                break;
            }
            self.processing.pop_front();
            last = Some(seq);
        }
        match last {
            Some(seq) => self.send(ClientMessage::Ack { seq }).await,
            None => Ok(()),
        }
    }

    /// Accounts for the drain (if any) once the session is over.
    fn settle(&mut self, reason: EndReason, close_code: Option<u16>) {
        let metrics = &self.shared.metrics;
        let unacked = self.processing.len();
        let unanswered = self.book.outstanding.len();
        if let Some(notice) = self.notice.take() {
            let missing =
                (notice.remaining as u64).saturating_sub((notice.received as u64).saturating_add(notice.skipped));
            if missing > 0 {
                self.ledger.messages_lost += missing;
                metrics.messages_lost.inc_by(missing);
            }
            let complete = close_code == Some(close::GOING_AWAY)
                && notice.received == notice.remaining
                && unacked == 0
                && unanswered == 0;
            let outcome = if complete { "complete" } else { "incomplete" };
            metrics.drains.with_label_values(&[outcome]).inc();
            metrics.drain_messages.observe(notice.received as f64);
            if complete {
                self.ledger.drains_complete += 1;
                info!(remaining = notice.remaining, received = notice.received, outcome, "drain_end");
            } else {
                self.ledger.drains_incomplete += 1;
                warn!(
                    remaining = notice.remaining,
                    received = notice.received,
                    missing,
                    unacked,
                    unanswered,
                    close_code,
                    outcome,
                    "drain_end"
                );
            }
        } else {
            debug!(reason = reason.label(), close_code, unacked, unanswered, "session_end");
        }
        if reason == EndReason::Error {
            info!(unacked, unanswered, "session_lost_connection");
        }
    }
}
