//! One session, from welcome to end: the loop that reads frames, acks them
//! once processed, sends requests, pings a silent server, follows a drain,
//! and closes with 1000 on shutdown; then its account ([`Ledger::settle`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gsd_protocol::{Beat, ClientMessage, Heartbeat, ServerMessage, close};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::connect::{Connected, ResumeAsk, Ws, connect_loop, normal_close, random_up_to};
use crate::labels::{DrainOutcome, EndReason};
use crate::ledger::{Book, Ledger, Regression, SessionEnd, add};
use crate::shared::Shared;

/// Data frames a session holds in processing before it stops reading more.
const MAX_PROCESSING: usize = 4096;

/// Most processed frames one ack waits for. An ack is cumulative and goes
/// when every frame received is processed, or when this many are: a drain's
/// owed frames, which arrive together, cost one ack (one write on each
/// side), not one each, and a steady stream is still acked every this many.
const ACK_BATCH: usize = 32;

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
pub(crate) struct Session<'a, S> {
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
    /// Seq of the last data frame received in order (0: none yet); the next
    /// one should carry this plus one. Kept as the last seen rather than the
    /// next expected so that 2^64-1, the largest seq, can be seen once and a
    /// second one recognised as the duplicate it is (there is no next seq to
    /// expect after it).
    received_up_to: u64,
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
    pub(crate) async fn run(
        connected: Connected<S>,
        user: u32,
        shared: &Arc<Shared>,
        book: &mut Book,
        ledger: &mut Ledger,
    ) -> (EndReason, Instant, Option<JoinHandle<Option<Connected>>>, Option<ResumeAsk>) {
        let span = info_span!(target: "gsd_client::session", "session", user,
            server_id = %connected.server_id, session_id = %connected.session_id);
        let metrics = &shared.metrics;
        metrics.sessions.inc();
        metrics.sessions_started.inc();
        add(&mut ledger.sessions, 1);
        if !ledger.server_ids.contains(&connected.server_id) {
            ledger.server_ids.insert(connected.server_id.clone());
        }
        if let Some(last_seq) = connected.resumed_after {
            // The cut this session continues is accounted for: not unknown.
            add(&mut ledger.sessions_resumed, 1);
            metrics.sessions_resumed.inc();
            info!(user, last_seq, server_id = %connected.server_id, session_id = %connected.session_id, "session_resumed");
        }
        let resume_token = connected.resume_token;
        let (sink, stream) = connected.ws.split();
        let heartbeat = Heartbeat::new(shared.config.liveness(), Instant::now().into_std());
        let mut session = Session {
            user,
            shared,
            book,
            ledger,
            sink,
            // A resumed session's seqs go on from where the cut left them;
            // a gap to its first frame is loss, counted as any gap.
            received_up_to: connected.resumed_after.unwrap_or(0),
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
        let cut = session.settle(reason, close_code);
        // A cut session is asked back on the next connect, with its token.
        let ask = resume_token.filter(|_| cut).map(|token| ResumeAsk { token, last_seq: session.received_up_to });
        (reason, ended, session.next.take(), ask)
    }

    async fn send(&mut self, message: ClientMessage) -> Result<(), tungstenite::Error> {
        let kind = message.kind();
        self.sink.send(Message::Text(message.encode().into())).await?;
        self.shared.metrics.sent.inc(kind);
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
        // The timers are made once and moved, not made anew on every turn of
        // the loop (each would be registered with the runtime's timer wheel
        // and taken out again): a drained session turns the loop for every
        // frame it reads.
        let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let mut exit_timer = std::pin::pin!(tokio::time::sleep_until(never));
        let mut ack_timer = std::pin::pin!(tokio::time::sleep_until(never));
        let mut ack_due: Option<Instant> = None;
        let mut give_up_timer = std::pin::pin!(tokio::time::sleep_until(never));
        let mut give_up_armed: Option<Instant> = None;
        // The liveness timer is set again after each check, and earlier on
        // a turn where the due time moved before it: a pong heard after a
        // ping brings the next ping to `interval` from now, which is before
        // the ping's timeout when the timeout is the longer.
        let liveness = self.heartbeat.next_check().is_some();
        let beat_due = |heartbeat: &Heartbeat| heartbeat.next_check().map_or(never, Instant::from_std);
        let mut beat_timer = std::pin::pin!(tokio::time::sleep_until(beat_due(&self.heartbeat)));
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
            // When the next ack is due: every frame received processed, or
            // the first ACK_BATCH of them.
            let next_done = self.processing.get(ACK_BATCH - 1).or(self.processing.back()).map(|(at, _)| *at);
            if next_done != ack_due {
                ack_due = next_done;
                ack_timer.as_mut().reset(next_done.unwrap_or(never));
            }
            // Not reading (a full processing queue) is this side's choice,
            // not the server's silence: liveness waits while it lasts.
            let reading = self.processing.len() < MAX_PROCESSING;
            let give_up_at = self.notice.as_ref().map(|n| n.give_up_at);
            if liveness {
                let due = beat_due(&self.heartbeat);
                if due < beat_timer.deadline() {
                    beat_timer.as_mut().reset(due);
                }
            }
            if give_up_at != give_up_armed {
                give_up_armed = give_up_at;
                give_up_timer.as_mut().reset(give_up_at.unwrap_or(never));
            }
            let outcome: Result<Option<(EndReason, Option<u16>)>, tungstenite::Error> = tokio::select! {
                biased;
                _ = shared.shutdown.cancelled(), if exit_by.is_none() => {
                    let by = Instant::now() + config.shutdown_timeout;
                    exit_by = Some(by);
                    exit_timer.as_mut().reset(by);
                    Ok(None)
                }
                _ = &mut exit_timer, if exit_by.is_some() => Ok(None),
                // A server that floods data waits (TCP backpressure) until
                // processing catches up, rather than growing `processing`.
                frame = stream.next(), if reading => self.on_frame(frame).await,
                _ = &mut ack_timer, if ack_due.is_some() => {
                    // Set again on the next turn, from what is left.
                    ack_due = None;
                    self.ack_processed().await.map(|_| None)
                }
                _ = &mut beat_timer, if liveness && reading => {
                    let beat = self.beat().await;
                    beat_timer.as_mut().reset(beat_due(&self.heartbeat));
                    beat
                }
                // The server announced a deadline and let it pass: count what
                // it still owed and move on.
                _ = &mut give_up_timer, if give_up_armed.is_some() => {
                    warn!(received_up_to = self.received_up_to, "drain_deadline_passed");
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
                self.shared.metrics.sent.inc("ping");
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
        metrics.received.inc(message.kind());
        match message {
            ServerMessage::Data { seq, .. } => {
                if seq <= self.received_up_to {
                    add(&mut self.ledger.data_duplicate, 1);
                    metrics.data_duplicate.inc();
                    warn!(seq, received_up_to = self.received_up_to, "data_out_of_order");
                    return Ok(None);
                }
                // Above `received_up_to`, so neither this nor the sum can overflow.
                let lost = seq - self.received_up_to - 1;
                if lost > 0 {
                    add(&mut self.ledger.messages_lost, lost);
                    crate::metrics::add(&metrics.messages_lost, lost);
                    warn!(received_up_to = self.received_up_to, received = seq, lost, "data_gap");
                }
                self.received_up_to = seq;
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
                let last_seq = last_seq.unwrap_or_else(|| self.received_up_to.saturating_add(remaining as u64));
                info!(remaining, last_seq, deadline_ms, "shutdown_notice");
                let deadline = Duration::from_millis(deadline_ms).min(MAX_NOTICE_DEADLINE);
                let give_up_at = Instant::now() + deadline + NOTICE_DEADLINE_MARGIN;
                self.notice = Some(Notice { remaining, received: 0, last_seq, give_up_at });
                if self.shared.config.make_before_break && self.next.is_none() {
                    let delay = random_up_to(self.shared.config.reconnect_jitter);
                    let span = info_span!(target: "gsd_client::reconnect", "reconnect", user = self.user,
                        reason = "make_before_break");
                    self.next = Some(tokio::spawn(connect_loop(self.shared.clone(), delay, 0, None).instrument(span)));
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

    /// Acks, cumulatively, every data frame whose processing is done, once
    /// that is all of them or [`ACK_BATCH`] of them.
    async fn ack_processed(&mut self) -> Result<(), tungstenite::Error> {
        let now = Instant::now();
        let done = self.processing.iter().take_while(|(at, _)| *at <= now).count();
        if done < self.processing.len().min(ACK_BATCH) {
            return Ok(());
        }
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
    /// docs/protocol.md ("What lost means"): the ledger's counts are
    /// [`Ledger::settle`]'s, the metrics and the log lines are here.
    /// Whether the session was cut (what followed it is unknown unless a
    /// resume takes it back).
    fn settle(&mut self, reason: EndReason, close_code: Option<u16>) -> bool {
        let metrics = &self.shared.metrics;
        // Frames received and not acked are the client's all the same: they
        // are processed (the work is the client's, not the session's), and
        // counted unacked, since the server never got their ack. Not lost.
        let unacked = self.processing.len() as u64;
        self.processing.clear();
        let end = SessionEnd {
            reason,
            close_code,
            notice_last_seq: self.notice.as_ref().map(|n| n.last_seq),
            close_last_seq: self.close_last_seq,
            received_up_to: self.received_up_to,
            unacked,
            unanswered: self.book.outstanding.len() as u64,
        };
        let settled = self.ledger.settle(&end);
        crate::metrics::add(&metrics.data_unacked, unacked);
        let (received_up_to, unanswered, missing) = (end.received_up_to, end.unanswered, settled.missing());
        if let Some(Regression { notice_last_seq, close_last_seq }) = settled.regression {
            warn!(notice_last_seq, close_last_seq, received_up_to, "last_seq_regressed");
        }
        if settled.skipped > 0 {
            crate::metrics::add(&metrics.messages_skipped, settled.skipped);
        }
        if settled.lost > 0 {
            crate::metrics::add(&metrics.messages_lost, settled.lost);
        }
        if let (Some(notice), Some(outcome)) = (self.notice.take(), settled.drain) {
            metrics.drains.with_label_values(&[outcome.label()]).inc();
            metrics.drain_messages.observe(notice.received as f64);
            let (remaining, received) = (notice.remaining, notice.received);
            match outcome {
                DrainOutcome::Complete => {
                    info!(remaining, received, outcome = outcome.label(), "drain_end");
                }
                DrainOutcome::ClientLeft => {
                    info!(remaining, received, skipped = missing, outcome = outcome.label(), "drain_end");
                }
                DrainOutcome::Incomplete => {
                    warn!(
                        remaining,
                        received,
                        missing,
                        unacked,
                        unanswered,
                        last_seq_regressed = settled.regression.is_some(),
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
        if settled.cut {
            // No close, no notice: nobody can tell what the server sent after
            // the last frame that arrived.
            metrics.sessions_cut.inc();
            info!(reason = reason.label(), received_up_to, unacked, unanswered, "session_cut");
        }
        settled.cut
    }
}

/// Longest drain deadline a notice is taken at: a server cannot make a
/// client wait for a day.
const MAX_NOTICE_DEADLINE: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::ClientMetrics;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_util::sync::CancellationToken;

    fn config(flags: &[&str]) -> Config {
        crate::config::tests::parse(flags)
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
        let connected = Connected {
            ws,
            server_id: "pod-0".into(),
            session_id: "s1".into(),
            welcomed_at: Instant::now(),
            resume_token: None,
            resumed_after: None,
        };
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
        let ((reason, _, _, _), ()) = bounded.await.expect("the session ended");
        (reason, ledger)
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
        let ((reason, ended, _, _), noticed) = bounded.await.expect("the session ended");
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
        // Seq 1 is acked after 1 s; seqs 2 and 3 follow, and the server
        // closes at once, with them still in processing.
        let play = async {
            send(&mut server, notice(3)).await;
            send(&mut server, data(1)).await;
            until_acked(&mut server, 1).await;
            for seq in 2..=3 {
                send(&mut server, data(seq)).await;
            }
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

    /// The seqs of the acks the client sends until it acks `seq` or later.
    async fn acks_until(server: &mut WebSocketStream<DuplexStream>, seq: u64) -> Vec<u64> {
        let mut acks = Vec::new();
        while let Some(Ok(message)) = server.next().await {
            let Message::Text(text) = message else { continue };
            if let Ok(ClientMessage::Ack { seq: acked }) = ClientMessage::decode(text.as_str()) {
                acks.push(acked);
                if acked >= seq {
                    return acks;
                }
            }
        }
        panic!("the session ended before the client acked seq {seq}; acks: {acks:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn owed_frames_that_arrive_together_are_acked_once_and_a_long_run_every_ack_batch() {
        let shared = shared(&["--ping-interval", "0s", "--request-interval", "0s"]);
        let (connected, mut server) = pipe().await;
        let mut acks = (Vec::new(), Vec::new());
        // A notice and its 10 owed frames at once: one ack, of seq 10. Then
        // 70 frames at once: acks at every 32 processed, then the rest.
        let play = async {
            send(&mut server, notice(80)).await;
            for seq in 1..=10 {
                send(&mut server, data(seq)).await;
            }
            acks.0 = acks_until(&mut server, 10).await;
            for seq in 11..=80 {
                send(&mut server, data(seq)).await;
            }
            acks.1 = acks_until(&mut server, 80).await;
            close_with(&mut server, close::GOING_AWAY, 80).await;
        };
        let (reason, ledger) = session_against(&shared, connected, play).await;
        assert_eq!(reason, EndReason::Drain);
        assert_eq!(acks.0, [10], "one cumulative ack for the frames that came together");
        assert_eq!(acks.1, [42, 74, 80], "every {ACK_BATCH} processed, then the rest");
        assert_eq!((ledger.data_processed, ledger.data_unacked, ledger.messages_lost), (80, 0, 0));
        assert_eq!(ledger.drains_complete, 1);
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
    async fn a_second_data_frame_with_the_largest_seq_is_a_duplicate_not_processed_nor_acked_again() {
        let shared = shared(&["--ping-interval", "0s", "--request-interval", "0s"]);
        let (connected, mut server) = pipe().await;
        let mut acks = Vec::new();
        // 2^64-1 twice, then 1 (a reorder). Processed again, the second
        // would be acked on its own 5 ms after the first: a second of quiet
        // leaves time for any such ack before the close.
        let play = async {
            for seq in [u64::MAX, u64::MAX, 1] {
                send(&mut server, data(seq)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            close_with(&mut server, close::NORMAL, u64::MAX).await;
            while let Some(Ok(message)) = server.next().await {
                match message {
                    Message::Text(text) => {
                        if let Ok(ClientMessage::Ack { seq }) = ClientMessage::decode(text.as_str()) {
                            acks.push(seq);
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        };
        let (reason, ledger) = session_against(&shared, connected, play).await;
        assert_eq!(reason, EndReason::ServerClose);
        assert_eq!(acks, [u64::MAX], "one ack for the one frame processed");
        assert_eq!((ledger.data_received, ledger.data_processed, ledger.data_unacked), (1, 1, 0));
        assert_eq!(ledger.data_duplicate, 2, "the second 2^64-1 and the late 1");
        assert_eq!(shared.metrics.data_duplicate.get(), 2);
        assert_eq!(ledger.messages_lost, u64::MAX - 1, "seqs 1 to 2^64-2 never came before the largest");
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumed_session_goes_on_from_the_last_seq_and_a_gap_in_the_replay_is_lost_exactly() {
        let shared = shared(&["--ping-interval", "0s", "--request-interval", "0s"]);
        let (mut connected, mut server) = pipe().await;
        connected.resumed_after = Some(5);
        connected.resume_token = Some("t2".into());
        // The replay starts at 9: seqs 6 to 8 were no longer kept.
        let play = async {
            for seq in [9, 10] {
                send(&mut server, data(seq)).await;
            }
            until_acked(&mut server, 10).await;
            close_with(&mut server, close::NORMAL, 10).await;
        };
        let (reason, ledger) = session_against(&shared, connected, play).await;
        assert_eq!(reason, EndReason::ServerClose);
        assert_eq!(ledger.sessions_resumed, 1);
        assert_eq!(shared.metrics.sessions_resumed.get(), 1);
        assert_eq!(ledger.messages_lost, 3, "seqs 6, 7 and 8");
        assert_eq!(shared.metrics.messages_lost.get(), 3);
        assert_eq!((ledger.data_received, ledger.data_duplicate), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_session_with_a_token_asks_for_itself_back_and_one_without_does_not() {
        for token in [Some("tok".to_owned()), None] {
            let shared = shared(&["--ping-interval", "0s", "--request-interval", "0s"]);
            let (mut connected, mut server) = pipe().await;
            connected.resume_token = token.clone();
            let (mut book, mut ledger) = (Book { next_id: 1, ..Default::default() }, Ledger::default());
            let session = Session::run(connected, 0, &shared, &mut book, &mut ledger);
            // Seqs 1 to 3, then the connection ends with no close: a cut.
            let play = async move {
                for seq in 1..=3 {
                    send(&mut server, data(seq)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(server);
            };
            let ((reason, _, _, ask), ()) = tokio::join!(session, play);
            assert_eq!(reason, EndReason::Error);
            assert_eq!(ledger.sessions_cut, 1);
            let want = token.map(|token| ResumeAsk { token, last_seq: 3 });
            assert_eq!(ask, want, "the ask carries the token and the last seq received");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_pinged_then_given_up_after_the_liveness_bound() {
        let shared = shared(&["--ping-interval", "10s", "--ping-timeout", "4s", "--request-interval", "0s"]);
        // The server's end is never read: no pong, no frame of any kind.
        let (connected, _server) = pipe().await;
        let opened = Instant::now();
        let (mut book, mut ledger) = (Book { next_id: 1, ..Default::default() }, Ledger::default());
        let session = Session::run(connected, 0, &shared, &mut book, &mut ledger);
        let (reason, ended, _, _) =
            tokio::time::timeout(Duration::from_secs(60), session).await.expect("the session ended");
        assert_eq!(reason, EndReason::Timeout);
        assert_eq!(ended - opened, Duration::from_secs(14));
        assert_eq!(shared.metrics.messages_sent.with_label_values(&["ping"]).get(), 1);
        assert_eq!(ledger.sessions_cut, 1, "no close, no notice: what followed is unknown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_answers_pings_is_pinged_every_interval_even_with_a_longer_timeout() {
        // Interval 1 s, timeout 10 s: once a pong is heard, the next ping is
        // due an interval after it, not when the ping's timeout would end.
        let shared = shared(&["--ping-interval", "1s", "--ping-timeout", "10s", "--request-interval", "0s"]);
        let (connected, mut server) = pipe().await;
        let (mut book, mut ledger) = (Book { next_id: 1, ..Default::default() }, Ledger::default());
        let session = Session::run(connected, 0, &shared, &mut book, &mut ledger);
        // The server reads (which answers every ping with a pong) for 5.5 s,
        // then closes.
        let play = async move {
            let mut pings = 0;
            let until = tokio::time::sleep(Duration::from_millis(5500));
            tokio::pin!(until);
            loop {
                tokio::select! {
                    frame = server.next() => match frame {
                        Some(Ok(Message::Ping(_))) => pings += 1,
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    _ = &mut until => break,
                }
            }
            server.close(None).await.expect("closed");
            while server.next().await.is_some() {}
            pings
        };
        let ((reason, _, _, _), pings) =
            tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(session, play) }).await.expect("ended");
        assert_eq!(reason, EndReason::ServerClose, "{reason:?}");
        assert_eq!(pings, 5, "a ping at 1, 2, 3, 4 and 5 s");
    }
}
