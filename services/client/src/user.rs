//! One virtual user: connect, hold a session, ack, request, follow drains,
//! reconnect, and keep its [`Ledger`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gsd_protocol::{Beat, ClientMessage, Heartbeat, ServerMessage, close};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite};
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
use crate::labels::{ConnectError, DrainOutcome, EndReason};
use crate::ledger::{Ledger, add};
use crate::metrics::ClientMetrics;

/// A session's connection: TCP in service; the tests give sessions
/// in-memory pipes, so that they can run on a paused clock.
type Ws<S = MaybeTlsStream<TcpStream>> = WebSocketStream<S>;

/// Data frames a session holds in processing before it stops reading more.
const MAX_PROCESSING: usize = 4096;

/// What every virtual user of the process shares.
pub(crate) struct Shared {
    /// The process's configuration, the same for every user.
    pub config: Config,
    /// The process's metrics, which every user adds to.
    pub metrics: ClientMetrics,
    /// Cancelled on SIGTERM/SIGINT: users finish and close with 1000.
    pub shutdown: CancellationToken,
}

/// A session that has received its welcome.
struct Connected<S = MaybeTlsStream<TcpStream>> {
    /// The WebSocket, its welcome already read.
    ws: Ws<S>,
    /// The replica that welcomed this session, for the ledger's list of
    /// servers and the `reconnected` line.
    server_id: String,
    /// The server's id of this session, for the session span.
    session_id: String,
    /// When the welcome arrived: the end of a reconnect's latency, and the
    /// start of the session's length for the backoff.
    welcomed_at: Instant,
}

/// Requests survive sessions: unanswered ones are re-sent under the same id.
#[derive(Default)]
struct Book {
    /// Requests sent and not yet answered, by id, with their payloads: what
    /// the next session re-sends, and what is lost if the user stops first.
    outstanding: BTreeMap<u64, String>,
    /// Id of the next new request; ids below it have been used, so a response
    /// to one no longer outstanding is a duplicate.
    next_id: u64,
}

/// The longest wait before connect attempt `attempt` (0 is the first retry):
/// `base` doubled per attempt, never over `cap`. The wait itself is drawn
/// uniformly below it (full jitter), so that users who failed together do
/// not retry together.
fn backoff_ceiling(base: Duration, cap: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.min(30))).min(cap)
}

fn full_jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    random_up_to(backoff_ceiling(base, cap, attempt))
}

/// How long a user waits between one session and the next.
#[derive(Debug, Default)]
struct Reconnect {
    /// Sessions in a row that ended, unplanned, before they had lasted
    /// RECONNECT_BACKOFF_CAP: a server that welcomes and then drops every
    /// connection meets a growing backoff, not a reconnect every few ms.
    /// It is also how many failures the next connect loop starts from.
    short_sessions: u32,
}

impl Reconnect {
    /// After a session that ended for `reason` having lasted `lasted`: the
    /// ceiling of the wait before the next connect (the wait is drawn
    /// uniformly below it).
    fn after(&mut self, reason: EndReason, lasted: Duration, config: &Config) -> Duration {
        // A drain the server announced is planned however short the session
        // was; anything else must have lasted a while to reset the backoff.
        let stable = lasted >= config.backoff_cap;
        if reason == EndReason::Drain || stable {
            self.short_sessions = 0;
        }
        let ceiling = if reason.planned() && self.short_sessions == 0 {
            config.reconnect_jitter
        } else {
            backoff_ceiling(config.backoff_base, config.backoff_cap, self.short_sessions)
        };
        if reason != EndReason::Drain && !stable {
            self.short_sessions = self.short_sessions.saturating_add(1);
        }
        ceiling
    }
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
        // The host is resolved on every attempt: through a Service, each
        // attempt may reach another replica.
        let tcp = TcpStream::connect(config.server_authority()).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectError::Refused,
            _ => ConnectError::Io(e.to_string()),
        })?;
        tcp.set_nodelay(true).map_err(|e| ConnectError::Io(e.to_string()))?;
        gsd_telemetry::set_tcp_liveness(&tcp, config.ping_interval, config.ping_timeout)
            .map_err(|e| ConnectError::Io(e.to_string()))?;
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(
            config.server_url.as_str(),
            MaybeTlsStream::Plain(tcp),
            Some(ws_config),
        )
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(response) => ConnectError::Status(response.status().as_u16()),
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
/// `attempt` is how many failures precede the first try (sessions that ended
/// too soon count), so that the backoff keeps growing across them.
async fn connect_loop(shared: Arc<Shared>, first_delay: Duration, mut attempt: u32) -> Option<Connected> {
    let config = &shared.config;
    let mut delay = first_delay;
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
    let mut reconnect = Reconnect::default();
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
            None => {
                connect_loop(shared.clone(), first_delay, reconnect.short_sessions)
                    .instrument(reconnect_span.clone())
                    .await
            }
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
        let welcomed_at = connected.welcomed_at;
        let (reason, ended, next) = Session::run(connected, user, &shared, &mut book, &mut ledger).await;
        prefetched = next;
        last_end = Some((ended, reason));
        if reason == EndReason::Shutdown || shared.shutdown.is_cancelled() {
            break;
        }
        first_delay = random_up_to(reconnect.after(reason, ended.saturating_duration_since(welcomed_at), config));
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
        add(&mut ledger.requests_lost, unanswered);
        crate::metrics::add(&shared.metrics.requests_lost, unanswered);
    }
    let fields = (ledger.sessions, ledger.reconnects, ledger.drains_complete, ledger.drains_incomplete);
    let servers = ledger.server_ids.iter().cloned().collect::<Vec<_>>().join(",");
    // One event at two levels: info when nothing was lost, warn otherwise
    // (a tracing level is part of the call site, so a macro picks it).
    macro_rules! ledger_event {
        ($level:ident) => {
            $level!(
                user,
                sessions = fields.0,
                reconnects = fields.1,
                drains_complete = fields.2,
                drains_incomplete = fields.3,
                drains_client_left = ledger.drains_client_left,
                messages_lost = ledger.messages_lost,
                messages_skipped = ledger.messages_skipped,
                sessions_cut = ledger.sessions_cut,
                data_unacked = ledger.data_unacked,
                data_duplicate = ledger.data_duplicate,
                requests_lost = ledger.requests_lost,
                servers,
                "ledger"
            )
        };
    }
    if ledger.clean() {
        ledger_event!(info);
    } else {
        ledger_event!(warn);
    }
    ledger
}

fn normal_close() -> CloseFrame {
    CloseFrame { code: CloseCode::Normal, reason: "client shutting down".into() }
}

/// A drain in progress, as the client sees it.
struct Notice {
    /// Data frames the notice announced.
    remaining: u32,
    /// Data frames received since the notice, for the drain histogram.
    received: u32,
    /// The seq of the last frame owed: the notice's `last_seq`, or, from a
    /// version 1 server, the last seq received plus `remaining`.
    last_seq: u64,
    /// The server's deadline for this drain, as the notice gave it; the
    /// client waits that long (plus a margin) for the close, no longer.
    give_up_at: Instant,
}

/// How long after a notice's deadline the client still waits for the close:
/// the server's clock started a little before the notice arrived, and its
/// close handshake takes a moment.
const NOTICE_DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// State of one session, from welcome to end.
struct Session<'a, S> {
    /// Which virtual user holds the session, for spans and request payloads.
    user: u32,
    /// What every user shares: configuration, metrics, the shutdown token.
    shared: &'a Arc<Shared>,
    /// The user's outstanding requests, which outlive the session.
    book: &'a mut Book,
    /// The user's ledger, which this session adds to.
    ledger: &'a mut Ledger,
    /// The sending half of the WebSocket (the loop reads the other half).
    sink: futures_util::stream::SplitSink<Ws<S>, Message>,
    /// Seq the next data frame should carry.
    expected: u64,
    /// Received data frames not yet acked, with when the processing of each
    /// is done; processing is serial, so the queue is in seq order. A frame
    /// leaves it when its ack is sent, or when the session ends (counted
    /// processed and unacked), never silently.
    processing: VecDeque<(Instant, u64)>,
    /// The drain the server announced, once it has.
    notice: Option<Notice>,
    /// The `last_seq` in the server's close reason, when it gave one.
    close_last_seq: Option<u64>,
    /// When the server was last heard, to notice a dead one.
    heartbeat: Heartbeat,
    /// The next session, opened at the notice (make-before-break).
    next: Option<JoinHandle<Option<Connected>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    async fn run(
        connected: Connected<S>,
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
        add(&mut ledger.sessions, 1);
        if !ledger.server_ids.contains(&connected.server_id) {
            ledger.server_ids.insert(connected.server_id.clone());
        }
        let (sink, stream) = connected.ws.split();
        let heartbeat = Heartbeat::new(shared.config.liveness(), Instant::now().into_std());
        let mut session = Session {
            user,
            shared,
            book,
            ledger,
            sink,
            expected: 1,
            processing: VecDeque::new(),
            notice: None,
            close_last_seq: None,
            heartbeat,
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
        add(&mut self.ledger.requests_sent, 1);
        self.send(ClientMessage::Request { id, payload }).await
    }

    /// The session loop; returns why it ended and the server's close code.
    async fn serve(&mut self, mut stream: futures_util::stream::SplitStream<Ws<S>>) -> (EndReason, Option<u16>) {
        let shared = self.shared.clone();
        let config = &shared.config;
        // Requests the last session left unanswered go first, same ids.
        let resend: Vec<(u64, String)> = self.book.outstanding.iter().map(|(id, p)| (*id, p.clone())).collect();
        if !resend.is_empty() {
            add(&mut self.ledger.requests_resent, resend.len() as u64);
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
                // A drain in progress is waited for (within SHUTDOWN_TIMEOUT):
                // its close 1001 comes once the last owed frame is acked.
                let settled = self.book.outstanding.is_empty() && self.processing.is_empty() && self.notice.is_none();
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
            // Not reading (a full processing queue) is this side's choice,
            // not the server's silence: liveness waits while it lasts.
            let reading = self.processing.len() < MAX_PROCESSING;
            let next_beat = self.heartbeat.next_check().filter(|_| reading).map(Instant::from_std);
            let give_up_at = self.notice.as_ref().map(|n| n.give_up_at);
            let outcome: Result<Option<(EndReason, Option<u16>)>, tungstenite::Error> = tokio::select! {
                biased;
                _ = shared.shutdown.cancelled(), if exit_by.is_none() => {
                    exit_by = Some(Instant::now() + config.shutdown_timeout);
                    Ok(None)
                }
                _ = tokio::time::sleep_until(exit_by.unwrap_or_else(Instant::now)), if exit_by.is_some() => Ok(None),
                // A server that floods data waits (TCP backpressure) until
                // processing catches up, rather than growing `processing`.
                frame = stream.next(), if reading => self.on_frame(frame).await,
                _ = tokio::time::sleep_until(next_done.unwrap_or_else(Instant::now)), if next_done.is_some() => {
                    self.ack_processed().await.map(|_| None)
                }
                _ = tokio::time::sleep_until(next_beat.unwrap_or_else(Instant::now)), if next_beat.is_some() => {
                    self.beat().await
                }
                // The server announced a deadline and let it pass: count what
                // it still owed and move on.
                _ = tokio::time::sleep_until(give_up_at.unwrap_or_else(Instant::now)), if give_up_at.is_some() => {
                    warn!(expected = self.expected, "drain_deadline_passed");
                    Ok(Some((EndReason::Drain, None)))
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

    /// Pings a silent server, or gives the session up once it has been
    /// silent for the liveness bound.
    async fn beat(&mut self) -> Result<Option<(EndReason, Option<u16>)>, tungstenite::Error> {
        let now = Instant::now().into_std();
        match self.heartbeat.check(now) {
            Beat::Wait => Ok(None),
            Beat::Ping => {
                self.sink.send(Message::Ping(Default::default())).await?;
                self.shared.metrics.messages_sent.with_label_values(&["ping"]).inc();
                Ok(None)
            }
            Beat::Dead => {
                let silent_ms = self.heartbeat.silent_for(now).as_millis() as u64;
                warn!(silent_ms, "server_silent");
                Ok(Some((EndReason::Timeout, None)))
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
        self.heartbeat.heard(Instant::now().into_std());
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                self.close_last_seq =
                    frame.as_ref().and_then(|f| gsd_protocol::close_reason_last_seq(f.reason.as_str()));
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
                    add(&mut self.ledger.data_duplicate, 1);
                    metrics.data_duplicate.inc();
                    warn!(seq, expected = self.expected, "data_out_of_order");
                    return Ok(None);
                }
                if seq > self.expected {
                    let lost = seq - self.expected;
                    add(&mut self.ledger.messages_lost, lost);
                    crate::metrics::add(&metrics.messages_lost, lost);
                    warn!(expected = self.expected, received = seq, lost, "data_gap");
                }
                self.expected = seq.saturating_add(1);
                add(&mut self.ledger.data_received, 1);
                let start = self.processing.back().map_or_else(Instant::now, |(at, _)| (*at).max(Instant::now()));
                self.processing.push_back((start + self.shared.config.processing_time, seq));
                if let Some(notice) = &mut self.notice {
                    notice.received = notice.received.saturating_add(1);
                }
            }
            ServerMessage::Response { id, .. } => {
                if self.book.outstanding.remove(&id).is_some() {
                    add(&mut self.ledger.requests_answered, 1);
                } else if id < self.book.next_id {
                    add(&mut self.ledger.duplicate_responses, 1);
                    metrics.duplicate_responses.inc();
                    debug!(id, "duplicate_response_dropped");
                } else {
                    warn!(id, "response_to_unknown_request");
                }
            }
            ServerMessage::ShutdownNotice { remaining, deadline_ms, last_seq } => {
                if self.notice.is_some() {
                    warn!(remaining, "second_shutdown_notice_ignored");
                    return Ok(None);
                }
                let last_seq = last_seq.unwrap_or_else(|| (self.expected - 1).saturating_add(remaining as u64));
                info!(remaining, last_seq, deadline_ms, "shutdown_notice");
                let deadline = Duration::from_millis(deadline_ms).min(MAX_NOTICE_DEADLINE);
                let give_up_at = Instant::now() + deadline + NOTICE_DEADLINE_MARGIN;
                self.notice = Some(Notice { remaining, received: 0, last_seq, give_up_at });
                if self.shared.config.make_before_break && self.next.is_none() {
                    let delay = random_up_to(self.shared.config.reconnect_jitter);
                    let span = info_span!(target: "gsd_client::reconnect", "reconnect", user = self.user,
                        reason = "make_before_break");
                    self.next = Some(tokio::spawn(connect_loop(self.shared.clone(), delay, 0).instrument(span)));
                }
            }
            // In a field of its own, cut: a server's text must never pass for
            // an event (a forged `client_exit`) nor flood the log.
            ServerMessage::Error { message } => {
                let server_message = gsd_protocol::truncate(&message, gsd_protocol::MAX_ECHO_BYTES);
                warn!(server_message, "server_error_frame")
            }
            ServerMessage::Welcome { .. } => warn!("unexpected_second_welcome"),
        }
        Ok(None)
    }

    /// Acks, cumulatively, every data frame whose processing is done.
    async fn ack_processed(&mut self) -> Result<(), tungstenite::Error> {
        let now = Instant::now();
        let done = self.processing.iter().take_while(|(at, _)| *at <= now).count();
        let Some(&(_, seq)) = done.checked_sub(1).and_then(|last| self.processing.get(last)) else {
            return Ok(());
        };
        // The frames leave the queue only once their ack is sent: if the
        // send fails, the session's end counts them unacked.
        self.send(ClientMessage::Ack { seq }).await?;
        self.processing.drain(..done);
        add(&mut self.ledger.data_processed, done as u64);
        Ok(())
    }

    /// Accounts for the session once it is over, by the rules of
    /// docs/protocol.md ("What lost means").
    fn settle(&mut self, reason: EndReason, close_code: Option<u16>) {
        let metrics = &self.shared.metrics;
        // Frames received and not acked are the client's all the same: they
        // are processed (the work is the client's, not the session's), and
        // counted unacked, since the server never got their ack. Not lost.
        let unacked = self.processing.len() as u64;
        self.processing.clear();
        add(&mut self.ledger.data_processed, unacked);
        add(&mut self.ledger.data_unacked, unacked);
        crate::metrics::add(&metrics.data_unacked, unacked);
        let unanswered = self.book.outstanding.len();
        let received_up_to = self.expected - 1;
        let leaving = reason == EndReason::Shutdown;
        // A frame is owed once any notice or close announced it: the highest
        // last_seq either gave (`None` is below any `Some`). A close cannot
        // take back what the notice announced.
        let notice_last_seq = self.notice.as_ref().map(|n| n.last_seq);
        let last_seq = notice_last_seq.max(self.close_last_seq);
        let regressed = match (notice_last_seq, self.close_last_seq) {
            (Some(notice_last_seq), Some(close_last_seq)) if close_last_seq < notice_last_seq => {
                // The close takes back frames the notice announced (sends the
                // drain deadline cut short, or a forged account): they stay
                // owed, and the drain cannot be complete.
                warn!(notice_last_seq, close_last_seq, received_up_to, "last_seq_regressed");
                true
            }
            _ => false,
        };
        let missing = last_seq.map_or(0, |last| last.saturating_sub(received_up_to));
        if missing > 0 {
            if leaving {
                add(&mut self.ledger.messages_skipped, missing);
                crate::metrics::add(&metrics.messages_skipped, missing);
            } else {
                add(&mut self.ledger.messages_lost, missing);
                crate::metrics::add(&metrics.messages_lost, missing);
            }
        }
        if let Some(notice) = self.notice.take() {
            let outcome = if leaving {
                DrainOutcome::ClientLeft
            } else if close_code == Some(close::GOING_AWAY)
                && missing == 0
                && unacked == 0
                && unanswered == 0
                && !regressed
            {
                DrainOutcome::Complete
            } else {
                DrainOutcome::Incomplete
            };
            metrics.drains.with_label_values(&[outcome.label()]).inc();
            metrics.drain_messages.observe(notice.received as f64);
            let (remaining, received) = (notice.remaining, notice.received);
            match outcome {
                DrainOutcome::Complete => {
                    add(&mut self.ledger.drains_complete, 1);
                    info!(remaining, received, outcome = outcome.label(), "drain_end");
                }
                DrainOutcome::ClientLeft => {
                    add(&mut self.ledger.drains_client_left, 1);
                    info!(remaining, received, skipped = missing, outcome = outcome.label(), "drain_end");
                }
                DrainOutcome::Incomplete => {
                    add(&mut self.ledger.drains_incomplete, 1);
                    warn!(
                        remaining,
                        received,
                        missing,
                        unacked,
                        unanswered,
                        last_seq_regressed = regressed,
                        close_code,
                        reason = reason.label(),
                        outcome = outcome.label(),
                        "drain_end"
                    );
                }
            }
        } else {
            debug!(reason = reason.label(), close_code, unacked, unanswered, missing, "session_end");
        }
        if matches!(reason, EndReason::Error | EndReason::Timeout) && close_code.is_none() && last_seq.is_none() {
            // No close, no notice: nobody can tell what the server sent after
            // the last frame that arrived.
            add(&mut self.ledger.sessions_cut, 1);
            metrics.sessions_cut.inc();
            info!(reason = reason.label(), received_up_to, unacked, unanswered, "session_cut");
        }
    }
}

/// Longest drain deadline a notice is taken at: a server cannot make a
/// client wait for a day.
const MAX_NOTICE_DEADLINE: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tokio::io::DuplexStream;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(flags: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("gsd-client").chain(flags.iter().copied())).expect("valid flags")
    }

    fn shared(flags: &[&str]) -> Arc<Shared> {
        let metrics = ClientMetrics::new(&prometheus::Registry::new());
        Arc::new(Shared { config: config(flags), metrics, shutdown: CancellationToken::new() })
    }

    /// A session over an in-memory pipe, as if welcomed now: the client's
    /// end for [`Session::run`], and the server's end for the test to play
    /// the server with (or to leave silent).
    async fn pipe() -> (Connected<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (client, server) = tokio::join!(
            tokio_tungstenite::client_async("ws://gsd.test/ws", client),
            tokio_tungstenite::accept_async(server),
        );
        let ws = client.expect("upgrade").0;
        let connected =
            Connected { ws, server_id: "pod-0".into(), session_id: "s1".into(), welcomed_at: Instant::now() };
        (connected, server.expect("upgrade"))
    }

    async fn send(server: &mut WebSocketStream<DuplexStream>, message: ServerMessage) {
        server.send(Message::Text(message.encode().into())).await.expect("sent");
    }

    fn data(seq: u64) -> ServerMessage {
        ServerMessage::Data { seq, payload: format!("s1:{seq}") }
    }

    /// Plays the server's drain opening: a notice owing seqs 1 to `last_seq`.
    fn notice(last_seq: u64) -> ServerMessage {
        ServerMessage::ShutdownNotice { remaining: last_seq as u32, deadline_ms: 20_000, last_seq: Some(last_seq) }
    }

    /// Reads the client's frames until it acks `seq` or a later one.
    async fn until_acked(server: &mut WebSocketStream<DuplexStream>, seq: u64) {
        while let Some(Ok(message)) = server.next().await {
            let Message::Text(text) = message else { continue };
            if matches!(ClientMessage::decode(text.as_str()), Ok(ClientMessage::Ack { seq: acked }) if acked >= seq) {
                return;
            }
        }
        panic!("the session ended before the client acked seq {seq}");
    }

    /// Closes as gsd-server does: `code`, and `; last_seq=<n>` in the reason.
    async fn close_with(server: &mut WebSocketStream<DuplexStream>, code: u16, last_seq: u64) {
        let reason = gsd_protocol::close_reason("server draining", last_seq);
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        server.send(Message::Close(Some(frame))).await.expect("close sent");
    }

    /// Runs one session against `play` (the server's part) on a paused
    /// clock; the session's end reason and the user's ledger.
    async fn session_against<F: std::future::Future<Output = ()>>(
        shared: &Arc<Shared>,
        connected: Connected<DuplexStream>,
        play: F,
    ) -> (EndReason, Ledger) {
        let (mut book, mut ledger) = (Book { next_id: 1, ..Default::default() }, Ledger::default());
        let session = Session::run(connected, 0, shared, &mut book, &mut ledger);
        let bounded = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(session, play) });
        let ((reason, _, _), ()) = bounded.await.expect("the session ended");
        (reason, ledger)
    }

    #[test]
    fn reconnect_backoff_grows_over_short_sessions_up_to_the_cap_and_a_drain_resets_it() {
        let flags =
            ["--reconnect-backoff-base", "100ms", "--reconnect-backoff-cap", "1s", "--reconnect-jitter", "50ms"];
        let config = config(&flags);
        let mut reconnect = Reconnect::default();
        // Sessions that end unplanned at once: the ceiling doubles per
        // session and stops at the cap.
        let ceilings: Vec<_> = (0..6).map(|_| reconnect.after(EndReason::Error, ms(10), &config)).collect();
        assert_eq!(ceilings, [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        // The connect loop that follows starts from that many failures.
        assert_eq!(reconnect.short_sessions, 6);
        // An announced drain is planned however short: the jitter only, and
        // the count starts again.
        assert_eq!(reconnect.after(EndReason::Drain, ms(10), &config), ms(50));
        assert_eq!(reconnect.after(EndReason::Error, ms(10), &config), ms(100));
        assert_eq!(reconnect.after(EndReason::Error, ms(10), &config), ms(200));
        // A session that lasted the cap resets the count too.
        assert_eq!(reconnect.after(EndReason::Timeout, ms(1000), &config), ms(100));
        assert_eq!(reconnect.short_sessions, 0);
        // Close 1001 without a notice, over and over, each session short:
        // planned the first time only, then backing off like any failure.
        let mut reconnect = Reconnect::default();
        let ceilings: Vec<_> = (0..3).map(|_| reconnect.after(EndReason::GoingAway, ms(10), &config)).collect();
        assert_eq!(ceilings, [ms(50), ms(200), ms(400)]);
    }

    #[test]
    fn full_jitter_draws_below_the_ceiling_and_spreads() {
        let (base, cap) = (ms(100), ms(1000));
        let draws: Vec<_> = (0..1000).map(|_| full_jitter(base, cap, 3)).collect();
        assert!(draws.iter().all(|d| *d <= ms(800)), "over the ceiling");
        assert!(draws.iter().any(|d| *d < ms(200)) && draws.iter().any(|d| *d > ms(600)), "not spread");
        assert!((0..1000).all(|_| full_jitter(base, cap, 30) <= cap), "over the cap");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_whose_close_never_comes_is_given_up_after_the_notice_deadline() {
        let shared = shared(&["--ping-interval", "0s", "--request-interval", "0s"]);
        let (connected, mut server) = pipe().await;
        let (mut book, mut ledger) = (Book { next_id: 1, ..Default::default() }, Ledger::default());
        let session = Session::run(connected, 0, &shared, &mut book, &mut ledger);
        // Two frames owed within 3 s; one sent, then nothing, no close.
        let play = async {
            let notice = ServerMessage::ShutdownNotice { remaining: 2, deadline_ms: 3000, last_seq: Some(2) };
            send(&mut server, notice).await;
            let noticed = Instant::now();
            send(&mut server, ServerMessage::Data { seq: 1, payload: "x".into() }).await;
            noticed
        };
        let bounded = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(session, play) });
        let ((reason, ended, _), noticed) = bounded.await.expect("the session ended");
        assert_eq!(reason, EndReason::Drain);
        assert_eq!(ended - noticed, Duration::from_secs(3) + NOTICE_DEADLINE_MARGIN);
        assert_eq!((ledger.drains_incomplete, ledger.drains_complete), (1, 0));
        assert_eq!(ledger.messages_lost, 1, "seq 2 was announced and never came");
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_whose_last_seq_is_below_the_notices_cannot_take_back_announced_frames() {
        let shared = shared(&["--ping-interval", "0s", "--request-interval", "0s"]);
        let (connected, mut server) = pipe().await;
        // The notice owes seqs 1 to 5; the server sends 1 and 2, waits for
        // their ack, and closes 1001 saying it only ever meant 2.
        let play = async {
            send(&mut server, notice(5)).await;
            send(&mut server, data(1)).await;
            send(&mut server, data(2)).await;
            until_acked(&mut server, 2).await;
            close_with(&mut server, close::GOING_AWAY, 2).await;
        };
        let (reason, ledger) = session_against(&shared, connected, play).await;
        assert_eq!(reason, EndReason::Drain);
        assert_eq!(ledger.messages_lost, 5 - 2, "seqs 3 to 5 were announced and never came");
        assert_eq!(shared.metrics.messages_lost.get(), 3);
        assert_eq!((ledger.drains_incomplete, ledger.drains_complete), (1, 0), "a self-contradicting account");
        assert_eq!(shared.metrics.drains.with_label_values(&["incomplete"]).get(), 1);
        assert_eq!(shared.metrics.drains.with_label_values(&["complete"]).get(), 0);
        assert_eq!((ledger.data_received, ledger.data_unacked), (2, 0), "what came was acked");
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_whose_last_seq_is_below_the_notices_makes_the_drain_incomplete_even_with_nothing_missing() {
        let shared = shared(&["--ping-interval", "0s", "--request-interval", "0s"]);
        let (connected, mut server) = pipe().await;
        // Every owed frame arrives and is acked; only the close's account,
        // last_seq 1 after a notice of 3, is wrong.
        let play = async {
            send(&mut server, notice(3)).await;
            for seq in 1..=3 {
                send(&mut server, data(seq)).await;
            }
            until_acked(&mut server, 3).await;
            close_with(&mut server, close::GOING_AWAY, 1).await;
        };
        let (reason, ledger) = session_against(&shared, connected, play).await;
        assert_eq!(reason, EndReason::Drain);
        assert_eq!((ledger.messages_lost, ledger.data_unacked), (0, 0));
        assert_eq!((ledger.drains_incomplete, ledger.drains_complete), (1, 0));
        assert_eq!(shared.metrics.drains.with_label_values(&["complete"]).get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn frames_in_processing_when_the_session_ends_are_processed_and_counted_unacked_not_lost() {
        let shared = shared(&["--ping-interval", "0s", "--request-interval", "0s", "--processing-time", "1s"]);
        let (connected, mut server) = pipe().await;
        // All three owed frames arrive at once; seq 1 is acked after 1 s and
        // the server closes at once, with seqs 2 and 3 still in processing.
        let play = async {
            send(&mut server, notice(3)).await;
            for seq in 1..=3 {
                send(&mut server, data(seq)).await;
            }
            until_acked(&mut server, 1).await;
            close_with(&mut server, close::GOING_AWAY, 3).await;
        };
        let (reason, ledger) = session_against(&shared, connected, play).await;
        assert_eq!(reason, EndReason::Drain);
        assert_eq!((ledger.data_received, ledger.data_processed), (3, 3), "no received frame is dropped");
        assert_eq!(ledger.data_unacked, 2, "the server never got the ack of seqs 2 and 3");
        assert_eq!(shared.metrics.data_unacked.get(), 2);
        assert_eq!(ledger.messages_lost, 0, "the client holds them: not lost");
        assert_eq!(shared.metrics.messages_lost.get(), 0);
        assert_eq!(ledger.drains_incomplete, 1, "received frames went unacked");
    }

    #[tokio::test(start_paused = true)]
    async fn data_frames_below_the_expected_seq_are_counted_duplicate_and_ignored() {
        let shared = shared(&["--ping-interval", "0s", "--request-interval", "0s"]);
        let (connected, mut server) = pipe().await;
        // Seq 2 twice (a duplicate) and seq 1 after it (a reorder).
        let play = async {
            for seq in [1, 2, 2, 1, 3] {
                send(&mut server, data(seq)).await;
            }
            until_acked(&mut server, 3).await;
            close_with(&mut server, close::NORMAL, 3).await;
        };
        let (reason, ledger) = session_against(&shared, connected, play).await;
        assert_eq!(reason, EndReason::ServerClose);
        assert_eq!(ledger.data_duplicate, 2);
        assert_eq!(shared.metrics.data_duplicate.get(), 2);
        assert_eq!((ledger.data_received, ledger.data_processed, ledger.data_unacked), (3, 3, 0));
        assert_eq!(ledger.messages_lost, 0);
        assert_eq!(shared.metrics.messages_received.with_label_values(&["data"]).get(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_pinged_then_given_up_after_the_liveness_bound() {
        let shared = shared(&["--ping-interval", "10s", "--ping-timeout", "4s", "--request-interval", "0s"]);
        // The server's end is never read: no pong, no frame of any kind.
        let (connected, _server) = pipe().await;
        let opened = Instant::now();
        let (mut book, mut ledger) = (Book { next_id: 1, ..Default::default() }, Ledger::default());
        let session = Session::run(connected, 0, &shared, &mut book, &mut ledger);
        let (reason, ended, _) =
            tokio::time::timeout(Duration::from_secs(60), session).await.expect("the session ended");
        assert_eq!(reason, EndReason::Timeout);
        assert_eq!(ended - opened, Duration::from_secs(14));
        assert_eq!(shared.metrics.messages_sent.with_label_values(&["ping"]).get(), 1);
        assert_eq!(ledger.sessions_cut, 1, "no close, no notice: what followed is unknown");
    }
}
