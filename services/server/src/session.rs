//! One WebSocket session: pushes, requests, acks, and its part of the drain.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use gsd_protocol::{Beat, ClientMessage, DecodeError, Heartbeat, ServerMessage, close};
use rand::Rng;
use tokio::time::Instant;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::Shared;
use crate::fault::{ResetSwitch, Ticket};
use crate::labels::{DrainOutcome, End, Refusal};
use crate::metrics::{ACK_UNSENT, BINARY_FRAME};
use crate::park::{Frame, Parked};
use crate::resume::Ask;

/// Requests a session holds unanswered before it stops reading more.
const MAX_PENDING_REQUESTS: usize = 1024;

/// Payload bytes of unanswered requests a session holds before it stops
/// reading more: with the frame that crosses it, at most this plus one
/// frame (docs/protocol.md, "Memory per session").
pub(crate) const MAX_PENDING_BYTES: usize = gsd_protocol::MAX_FRAME_BYTES;

/// `protocol_error` lines one session may log per [`LOG_WINDOW`]; the rest
/// are counted (the metric counts every one) and reported with the next line.
const LOG_BURST: u32 = 5;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// The part of a session's state that exists once its drain has begun.
struct Drain {
    /// When this session's notice went out, for its drain duration.
    started: Instant,
    /// Data frames announced in the notice.
    remaining: u32,
    /// Data frames actually sent since the notice.
    sent: u32,
    /// The seq of the last owed frame, as announced.
    last_seq: u64,
    /// The seq the client must acknowledge for the drain to be complete:
    /// `last_seq`, less any frames FAULT_DROP_OWED or
    /// FAULT_CLOSE_LAST_SEQ_LOWER withheld.
    ack_target: u64,
    /// Child of the server's `drain` span.
    span: Span,
}

struct Session {
    /// The server's state: configuration, metrics, the drain's clock.
    shared: Arc<Shared>,
    /// Random id, in the welcome and on every log line of the session.
    session_id: String,
    /// The sending half of the WebSocket (the loop reads the other half).
    tx: SplitSink<WebSocket, Message>,
    /// Seq of the next data frame; the first is 1.
    next_seq: u64,
    /// Highest seq the client has acknowledged (cumulative).
    acked: u64,
    /// Requests waiting out the simulated processing latency, in arrival
    /// order (the latency is constant, so arrival order is answer order).
    pending: VecDeque<(Instant, u64, String)>,
    /// Payload bytes held in `pending`.
    pending_bytes: usize,
    /// Start of the current log window, lines logged in it, and lines not
    /// logged since the last one that was.
    log_window: (Instant, u32, u64),
    /// This session's drain, once its notice has gone out.
    drain: Option<Drain>,
    /// When the client was last heard, to notice a dead one.
    heartbeat: Heartbeat,
    /// The session's place in FAULT_RESET_AT_SIGTERM's order; `None` when
    /// that fault is off.
    reset_ticket: Option<Ticket>,
    /// Makes the connection end with a TCP reset when this session drops it
    /// (FAULT_RESET_AT_SIGTERM).
    reset_switch: ResetSwitch,
    /// With resume on: the data frames sent and not yet acknowledged, oldest
    /// first, within RESUME_MAX_BYTES of payload (past it the oldest go),
    /// for a replay if the session is cut.
    kept: VecDeque<Frame>,
    /// Payload bytes held in `kept`.
    kept_bytes: usize,
    /// The nonce of the token this session's welcome carried.
    nonce: u64,
    /// A session a client took back: the frames to send again after the
    /// welcome, and the seq the welcome says the data goes on from.
    resumed: Option<u64>,
    /// Frames queued and not yet flushed, counted once a flush writes them.
    unflushed: Unflushed,
}

/// The frames [`Session::queue`] buffered since the last flush, by kind: a
/// frame counts as sent (`gsd_server_messages_sent_total`, a drain's
/// `sent`) once the flush that writes it succeeds, not when it is buffered,
/// so that frames stuck in the buffer of a client that stopped reading are
/// never counted as sent.
#[derive(Default)]
struct Unflushed {
    /// Kinds and counts; a flush carries at most three kinds (the welcome
    /// and a replay, or the notice and the owed frames, or answers).
    kinds: [(&'static str, u64); 4],
}

impl Unflushed {
    fn add(&mut self, kind: &'static str, metrics: &crate::metrics::ServerMetrics) {
        for slot in &mut self.kinds {
            if slot.1 == 0 || slot.0 == kind {
                *slot = (kind, slot.1 + 1);
                return;
            }
        }
        // No slot left (never, by the comment above): counted at once.
        metrics.sent.inc(kind);
    }

    /// The frames written: counted, and forgotten. Returns how many were
    /// data frames.
    fn written(&mut self, metrics: &crate::metrics::ServerMetrics) -> u32 {
        let mut data = 0;
        for (kind, n) in self.kinds.iter_mut().take_while(|(_, n)| *n > 0) {
            metrics.sent.inc_by(kind, *n);
            if *kind == "data" {
                data = *n as u32;
            }
            *n = 0;
        }
        data
    }
}

/// The end of a session a client may ask back: nobody announced it (no
/// drain, no close 1000 from the client, no close from the server).
fn unannounced(end: &End) -> bool {
    match end {
        End::Vanished | End::TimedOut | End::Failed(_) => true,
        End::ClientClosed(code) => *code != Some(close::NORMAL),
        End::DrainComplete | End::DrainDeadline | End::Rejected { .. } | End::Capacity | End::Reset => false,
    }
}

/// Answers an upgrade that asked for a session back and cannot have it:
/// close 4409 with the reason, no welcome, counted. The client opens a new
/// session.
async fn refuse_resume(mut socket: WebSocket, shared: &Shared, peer: SocketAddr, reason: &'static str) {
    shared.metrics.resume_refused.with_label_values(&[reason]).inc();
    warn!(%peer, reason, "resume_refused");
    let text = gsd_protocol::resume::refused_reason(reason);
    let frame = Message::Close(Some(CloseFrame { code: close::RESUME_REFUSED, reason: text.into() }));
    let handshake = async {
        if socket.send(frame).await.is_ok() {
            shared.metrics.sent.inc("close");
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(shared.config.close_timeout, handshake).await;
}

/// Runs one upgraded connection to its end: a new session, or, if `ask`
/// asks for a parked one, that session taken back (or the refusal).
pub(crate) async fn run(socket: WebSocket, shared: Arc<Shared>, peer: SocketAddr, reset_switch: ResetSwitch, ask: Ask) {
    let parked = match ask {
        Ask::New => None,
        Ask::Refused(reason) => return refuse_resume(socket, &shared, peer, reason).await,
        Ask::Resume { token, claims, last_seq } => {
            let resume = shared.resume.as_ref().expect("an ask to resume only where resume is on");
            let (taken, place) = if resume.is_here(&claims) || resume.holds(&claims) {
                (resume.take(&claims).await, "local")
            } else {
                (resume.fetch(&token, &claims).await, "fetched")
            };
            match taken {
                // A client that claims more than was sent does not take the
                // session from the real one: it stays parked (here).
                Ok(parked) if last_seq >= parked.next_seq => {
                    let _ = resume.park(parked);
                    shared.metrics.sessions_parked.set(resume.parked() as i64);
                    return refuse_resume(socket, &shared, peer, "last_seq").await;
                }
                Ok(parked) => {
                    shared.metrics.sessions_parked.set(resume.parked() as i64);
                    shared.metrics.sessions_resumed.with_label_values(&[place]).inc();
                    Some((parked, last_seq))
                }
                Err(reason) => return refuse_resume(socket, &shared, peer, reason).await,
            }
        }
    };
    let session_id = match &parked {
        Some((parked, _)) => parked.session_id.clone(),
        None => format!("{:016x}", rand::random::<u64>()),
    };
    let span =
        info_span!(target: "gsd_server::session", "session", server_id = %shared.server_id, session_id = %session_id);
    async move {
        let (tx, rx) = socket.split();
        let heartbeat = Heartbeat::new(shared.config.liveness(), Instant::now().into_std());
        let mut session = Session {
            shared,
            session_id,
            tx,
            next_seq: 1,
            acked: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            log_window: (Instant::now(), 0, 0),
            drain: None,
            heartbeat,
            reset_ticket: None,
            reset_switch,
            kept: VecDeque::new(),
            kept_bytes: 0,
            nonce: 0,
            resumed: None,
            unflushed: Unflushed::default(),
        };
        let max = session.shared.config.max_sessions;
        if max > 0 && session.shared.active.fetch_add(1, Ordering::SeqCst) >= max {
            session.shared.active.fetch_sub(1, Ordering::SeqCst);
            session.shared.metrics.refused(Refusal::Capacity).inc();
            warn!(session_id = %session.session_id, %peer, max_sessions = max, "session_refused_capacity");
            // A session taken back for a client that cannot be served now
            // goes back to the lot, here: the client keeps asking (a 1013
            // before the welcome is a failed connect, retried with its ask).
            if let (Some((parked, _)), Some(resume)) = (parked, session.shared.resume.as_ref()) {
                let _ = resume.park(parked);
                session.shared.metrics.sessions_parked.set(resume.parked() as i64);
            }
            session.finish(End::Capacity, rx).await;
            session.shared.metrics.sessions_closed.with_label_values(&[End::Capacity.label()]).inc();
            return;
        }
        if let Some((parked, last_seq)) = parked {
            session.take_back(parked, last_seq);
        }
        let shared = session.shared.clone();
        session.reset_ticket = shared.reset_pick.as_ref().map(|pick| pick.enter());
        shared.metrics.sessions.inc();
        shared.metrics.sessions_opened.inc();
        let opened = Instant::now();
        info!(session_id = %session.session_id, %peer, "session_open");
        let (end, rx) = session.serve(rx).await;
        let (data_sent, acked) = (session.next_seq - 1, session.acked);
        let unacked = data_sent.saturating_sub(acked);
        // A session cut unannounced waits in the lot for its client; what it
        // did not get acked is counted when it is resumed or expires.
        let parked = unannounced(&end) && !shared.is_draining() && session.park();
        if let Some(resume) = &shared.resume {
            resume.leave(&session.session_id);
        }
        if !parked {
            shared.metrics.data_unacked.inc_by(unacked);
        }
        let label = end.label();
        let detail = end.detail();
        session.finish(end, rx).await;
        shared.metrics.sessions.dec();
        shared.metrics.sessions_closed.with_label_values(&[label]).inc();
        if max > 0 {
            shared.active.fetch_sub(1, Ordering::SeqCst);
        }
        // The id as a str, not through Display: written as it is, with no
        // formatting machinery (two lines per drained session).
        info!(
            session_id = session.session_id.as_str(),
            reason = label,
            detail,
            data_sent,
            acked,
            unacked,
            parked,
            duration_ms = opened.elapsed().as_millis() as u64,
            "session_close"
        );
    }
    .instrument(span)
    .await
}

/// Runs a write to the connection. Almost every write completes at once;
/// only one that has to wait (a client that stopped reading) also watches
/// the drain deadline, so a full buffer cannot hold the server past it, and
/// the common case pays for no deadline future.
async fn within_deadline(shared: &Shared, write: impl Future<Output = Result<(), axum::Error>>) -> Result<(), End> {
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(written) = first {
        return written.map_err(|e| End::Failed(e.to_string()));
    }
    tokio::select! {
        written = &mut write => written.map_err(|e| End::Failed(e.to_string())),
        _ = shared.deadline_passed() => Err(End::DrainDeadline),
    }
}

/// Whether the WebSocket layer refused a frame or message over
/// [`gsd_protocol::MAX_WIRE_BYTES`].
fn is_over_capacity(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if let Some(tungstenite::Error::Capacity(_)) = error.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

impl Session {
    /// Continues a parked session the client asked back, having received
    /// every frame up to `last_seq`: what it received and never acked, and
    /// what no longer fits to be replayed, are counted unacked now (the
    /// client counts the latter lost, from the welcome's `replay_from`).
    fn take_back(&mut self, parked: Parked, last_seq: u64) {
        let from = last_seq.max(parked.acked);
        self.kept = parked.unacked.into_iter().filter(|frame| frame.seq > from).collect();
        self.kept_bytes = self.kept.iter().map(|frame| frame.payload.len()).sum();
        self.next_seq = parked.next_seq;
        let replay_from = self.kept.front().map_or(parked.next_seq, |frame| frame.seq);
        self.acked = replay_from - 1;
        self.shared.metrics.data_unacked.inc_by(self.acked.saturating_sub(parked.acked));
        self.resumed = Some(replay_from);
        info!(session_id = %self.session_id, last_seq, acked = parked.acked, replay_from,
            replayed = self.kept.len(), next_seq = self.next_seq, "session_resumed");
    }

    /// Parks this session (it ended unannounced); whether the lot took it.
    fn park(&mut self) -> bool {
        let Some(resume) = self.shared.resume.as_ref() else { return false };
        let parked = Parked {
            session_id: self.session_id.clone(),
            nonce: self.nonce,
            unacked: std::mem::take(&mut self.kept),
            next_seq: self.next_seq,
            acked: self.acked,
            pending: Vec::new(),
            shed: 0,
        };
        let kept = parked.unacked.len();
        match resume.park(parked) {
            Ok(shed) => {
                self.shared.metrics.sessions_parked.set(resume.parked() as i64);
                debug!(session_id = %self.session_id, kept, shed, next_seq = self.next_seq, acked = self.acked,
                    "session_parked");
                true
            }
            Err(not) => {
                warn!(session_id = %self.session_id, reason = ?not, "session_not_parked");
                false
            }
        }
    }

    /// The session loop, until something ends it.
    async fn serve(&mut self, mut rx: SplitStream<WebSocket>) -> (End, SplitStream<WebSocket>) {
        let shared = self.shared.clone();
        let resume_token = shared.resume.as_ref().map(|resume| {
            let (token, nonce) = resume.issue(&self.session_id);
            self.nonce = nonce;
            resume.enter(&self.session_id);
            token
        });
        let welcome = ServerMessage::Welcome {
            server_id: shared.server_id.clone(),
            session_id: self.session_id.clone(),
            resume_token,
            resumed: self.resumed.is_some(),
            replay_from: self.resumed,
        };
        if let Err(end) = self.queue(welcome).await {
            return (end, rx);
        }
        if self.resumed.is_some() {
            // The replay: every kept frame again, in order, before anything
            // new, written with the welcome.
            for i in 0..self.kept.len() {
                let Frame { seq, payload } = self.kept[i].clone();
                if let Err(end) = self.queue(ServerMessage::Data { seq, payload }).await {
                    return (end, rx);
                }
                shared.metrics.frames_replayed.inc();
            }
        }
        if let Err(end) = self.flush().await {
            return (end, rx);
        }
        let period = shared.config.push_interval;
        let pushing = !period.is_zero();
        let mut push = tokio::time::interval_at(
            Instant::now() + period.max(Duration::from_millis(1)),
            period.max(Duration::from_millis(1)),
        );
        push.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        // With DRAIN_PACING, this session's notice waits for its turn.
        let pacing = shared.config.drain_pacing;
        let offset = if pacing.is_zero() { Duration::ZERO } else { pacing.mul_f64(rand::rng().random_range(0.0..1.0)) };
        // Made once, not on every turn of the loop: each would register a
        // waiter (and, in a drain, a timer) per frame.
        let mut turn = std::pin::pin!(shared.drain_turn(offset));
        // With FAULT_RESET_AT_SIGTERM, this session's number in the order of
        // opening, which decides whether the fault resets it at the signal.
        let reset_number = self.reset_ticket.as_ref().map(|ticket| ticket.number);
        let mut reset = std::pin::pin!(shared.reset_turn(reset_number));
        let mut deadline = std::pin::pin!(shared.deadline_passed());
        // The liveness timer is set again after each check, and earlier on
        // a turn where the due time moved before it: a pong heard after a
        // ping brings the next ping to `interval` from now, which is before
        // the ping's timeout when the timeout is the longer.
        let due = |heartbeat: &gsd_protocol::Heartbeat| heartbeat.next_check().map(Instant::from_std);
        let liveness = due(&self.heartbeat).is_some();
        let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let mut beat_timer = std::pin::pin!(tokio::time::sleep_until(due(&self.heartbeat).unwrap_or(never)));
        let end = loop {
            if let Some(drain) = &self.drain {
                if self.acked >= drain.ack_target && self.pending.is_empty() {
                    break End::DrainComplete;
                }
            }
            let next_answer = self.pending.front().map(|(at, _, _)| *at);
            // Not reading (a full request queue) is this side's choice, not
            // the client's silence: liveness waits while it lasts.
            let reading = self.pending.len() < MAX_PENDING_REQUESTS && self.pending_bytes < MAX_PENDING_BYTES;
            if let Some(due) = due(&self.heartbeat).filter(|due| *due < beat_timer.deadline()) {
                beat_timer.as_mut().reset(due);
            }
            let step = tokio::select! {
                biased;
                _ = &mut deadline, if self.drain.is_some() => Err(End::DrainDeadline),
                // Before `turn`: a session the fault resets gets no notice.
                _ = &mut reset, if reset_number.is_some() && self.drain.is_none() => {
                    warn!(session_id = %self.session_id, number = reset_number, data_sent = self.next_seq - 1,
                        acked = self.acked, "fault_reset_at_sigterm");
                    Err(End::Reset)
                }
                _ = &mut turn, if self.drain.is_none() => self.start_drain().await,
                _ = tokio::time::sleep_until(next_answer.unwrap_or_else(Instant::now)), if next_answer.is_some() => {
                    self.answer_ready().await
                }
                // A client that floods requests waits (TCP backpressure)
                // until the answers catch up, rather than growing `pending`.
                frame = rx.next(), if reading => self.on_frame(frame).await,
                _ = &mut beat_timer, if liveness && reading => {
                    let beat = self.beat().await;
                    beat_timer.as_mut().reset(due(&self.heartbeat).unwrap_or(never));
                    beat
                }
                _ = push.tick(), if pushing && self.drain.is_none() => self.push().await,
            };
            if let Err(end) = step {
                break end;
            }
        };
        (end, rx)
    }

    /// Pings a silent client, or gives it up once it has been silent too long.
    async fn beat(&mut self) -> Result<(), End> {
        let now = Instant::now().into_std();
        match self.heartbeat.check(now) {
            Beat::Wait => Ok(()),
            Beat::Ping => {
                self.send_frame(Message::Ping(Default::default())).await?;
                self.shared.metrics.sent.inc("ping");
                Ok(())
            }
            Beat::Dead => {
                let silent_ms = self.heartbeat.silent_for(now).as_millis() as u64;
                warn!(session_id = %self.session_id, silent_ms, "client_silent");
                Err(End::TimedOut)
            }
        }
    }

    /// Sends one message; during a drain, gives up at the deadline so that a
    /// client that stopped reading cannot hold the server.
    async fn send(&mut self, message: ServerMessage) -> Result<(), End> {
        self.queue(message).await?;
        self.flush().await
    }

    /// Puts one message in the connection's write buffer, unsent until
    /// [`Session::flush`] (or until the buffer holds
    /// [`gsd_protocol::WRITE_BUFFER_BYTES`]): a drain's notice and owed
    /// frames leave in one write.
    async fn queue(&mut self, message: ServerMessage) -> Result<(), End> {
        let kind = message.kind();
        let shared = self.shared.clone();
        within_deadline(&shared, self.tx.feed(Message::Text(message.encode().into()))).await?;
        self.unflushed.add(kind, &shared.metrics);
        Ok(())
    }

    /// Writes what [`Session::queue`] buffered, and counts it sent.
    async fn flush(&mut self) -> Result<(), End> {
        let shared = self.shared.clone();
        within_deadline(&shared, self.tx.flush()).await?;
        let data = self.unflushed.written(&shared.metrics);
        if let Some(drain) = &mut self.drain {
            drain.sent += data;
        }
        Ok(())
    }

    /// Writes one frame at once.
    async fn send_frame(&mut self, frame: Message) -> Result<(), End> {
        let shared = self.shared.clone();
        within_deadline(&shared, self.tx.send(frame)).await
    }

    /// Sends the next data frame.
    async fn push(&mut self) -> Result<(), End> {
        self.queue_data().await?;
        self.flush().await
    }

    /// Queues the next data frame (see [`Session::queue`]).
    async fn queue_data(&mut self) -> Result<(), End> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut payload = String::with_capacity(self.session_id.len() + 21);
        payload.push_str(&self.session_id);
        payload.push(':');
        gsd_protocol::push_decimal(&mut payload, seq);
        if let Some(resume) = &self.shared.resume {
            // Kept before it is sent: a send that fails has still maybe
            // reached the client, and a resume must be able to send it again.
            self.kept_bytes += payload.len();
            self.kept.push_back(Frame { seq, payload: payload.clone() });
            while self.kept_bytes > resume.max_bytes {
                let Some(oldest) = self.kept.pop_front() else { break };
                self.kept_bytes -= oldest.payload.len();
            }
        }
        self.queue(ServerMessage::Data { seq, payload }).await
    }

    async fn answer_ready(&mut self) -> Result<(), End> {
        let now = Instant::now();
        while self.pending.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, id, payload) = self.pending.pop_front().expect("checked");
            self.pending_bytes -= payload.len();
            self.queue(ServerMessage::Response { id, payload }).await?;
        }
        // The answers due together leave in one write.
        self.flush().await
    }

    async fn start_drain(&mut self) -> Result<(), End> {
        let shared = self.shared.clone();
        let range = shared.config.drain_messages;
        let remaining = rand::rng().random_range(range.min..=range.max);
        let now = Instant::now();
        let deadline = *shared.deadline.get().expect("set before the drain starts");
        let deadline_ms = deadline.saturating_duration_since(now).as_millis() as u64;
        let parent = shared.drain_span.lock().expect("not poisoned").clone();
        // A span per drained session is for the trace: made only when spans
        // are exported (it cost a tenth of a drained session's instructions).
        let span = match parent {
            Some(parent) if gsd_telemetry::exporting() => {
                info_span!(target: "gsd_server::drain", parent: &parent, "session_drain",
                server_id = %shared.server_id, session_id = %self.session_id, remaining,
                outcome = tracing::field::Empty, duration_ms = tracing::field::Empty)
            }
            _ => Span::none(),
        };
        let last_seq = self.next_seq - 1 + remaining as u64;
        // The faults withhold the last of the owed frames: FAULT_DROP_OWED's
        // first, then FAULT_CLOSE_LAST_SEQ_LOWER's.
        let dropped = shared.config.fault_drop_owed.min(remaining);
        let lowered = shared.config.fault_close_last_seq_lower.min(remaining - dropped);
        let ack_target = last_seq - (dropped + lowered) as u64;
        // The session's drain lines are logged in its session_drain span
        // (with traces exported, they carry its ids: the drain's trace).
        span.in_scope(|| debug!(session_id = %self.session_id, remaining, last_seq, deadline_ms, "drain_notice"));
        self.drain = Some(Drain { started: now, remaining, sent: 0, last_seq, ack_target, span });
        // The notice and the owed frames leave in one write.
        self.queue(ServerMessage::ShutdownNotice { remaining, deadline_ms, last_seq: Some(last_seq) }).await?;
        for _ in dropped + lowered..remaining {
            self.queue_data().await?;
        }
        self.flush().await?;
        if dropped > 0 {
            // The withheld frames take their seqs, as frames lost on the way
            // would: the close still claims them.
            self.next_seq += dropped as u64;
            warn!(session_id = %self.session_id, dropped, last_seq, "fault_drop_owed");
        }
        if lowered > 0 {
            // These take no seq: the close's last_seq, the last seq sent, is
            // `lowered` below the notice's.
            let close_last_seq = self.next_seq - 1;
            warn!(session_id = %self.session_id, lowered, last_seq, close_last_seq, "fault_close_last_seq_lower");
        }
        Ok(())
    }

    async fn on_frame(&mut self, frame: Option<Result<Message, axum::Error>>) -> Result<(), End> {
        if let Some(Ok(_)) = &frame {
            self.heartbeat.heard(Instant::now().into_std());
        }
        match frame {
            None => Err(End::Vanished),
            // Over the hard cap: refused from the frame header, before its
            // payload was buffered; the connection can still carry a close.
            Some(Err(e)) if is_over_capacity(&e) => {
                self.protocol_error("too_big", &e.to_string(), "close 1009");
                Err(End::Rejected { code: close::MESSAGE_TOO_BIG, reason: "frame over 65536 bytes" })
            }
            Some(Err(e)) => Err(End::Failed(e.to_string())),
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Message::Binary(bytes))) => {
                self.protocol_error(BINARY_FRAME, &format!("{} bytes", bytes.len()), "close 1003");
                Err(End::Rejected { code: close::UNSUPPORTED_DATA, reason: "binary frames are not supported" })
            }
            Some(Ok(Message::Close(frame))) => Err(End::ClientClosed(frame.map(|f| f.code))),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        match ClientMessage::decode(text) {
            Ok(message) => {
                metrics.received.inc(message.kind());
                match message {
                    ClientMessage::Request { id, payload } => {
                        let at = Instant::now() + self.shared.config.processing_latency;
                        self.pending_bytes += payload.len();
                        self.pending.push_back((at, id, payload));
                    }
                    ClientMessage::Ack { seq } if seq < self.next_seq => {
                        self.acked = self.acked.max(seq);
                        while self.kept.front().is_some_and(|frame| frame.seq <= self.acked) {
                            let frame = self.kept.pop_front().expect("checked");
                            self.kept_bytes -= frame.payload.len();
                        }
                    }
                    ClientMessage::Ack { seq } => {
                        let detail = format!("ack for seq {seq}, but the last seq sent is {}", self.next_seq - 1);
                        self.protocol_error(ACK_UNSENT, &detail, "close 1008");
                        return Err(End::Rejected {
                            code: close::POLICY_VIOLATION,
                            reason: "ack for a seq never sent",
                        });
                    }
                }
                Ok(())
            }
            Err(e @ DecodeError::TooBig { .. }) => {
                self.protocol_error(e.kind(), &e.to_string(), "close 1009");
                Err(End::Rejected { code: close::MESSAGE_TOO_BIG, reason: "frame over 65536 bytes" })
            }
            Err(e) => {
                self.protocol_error(e.kind(), &e.to_string(), "error frame");
                self.send(ServerMessage::Error { message: e.to_string() }).await
            }
        }
    }

    /// Counts every protocol error; logs at most [`LOG_BURST`] per
    /// [`LOG_WINDOW`] per session, with `detail` cut to the echo limit.
    fn protocol_error(&mut self, kind: &str, detail: &str, action: &str) {
        self.shared.metrics.protocol_errors.with_label_values(&[kind]).inc();
        let now = Instant::now();
        let (start, logged, suppressed) = &mut self.log_window;
        if now.duration_since(*start) >= LOG_WINDOW {
            (*start, *logged) = (now, 0);
        }
        if *logged >= LOG_BURST {
            *suppressed += 1;
            return;
        }
        *logged += 1;
        let detail = gsd_protocol::truncate(detail, gsd_protocol::MAX_ECHO_BYTES);
        warn!(session_id = %self.session_id, kind, detail, action, suppressed = *suppressed, "protocol_error");
        *suppressed = 0;
    }

    /// Closes the connection as `end` requires, waits briefly for the client's
    /// close reply, and accounts for the drain.
    async fn finish(&mut self, end: End, mut rx: SplitStream<WebSocket>) {
        let shared = self.shared.clone();
        let now = Instant::now();
        let mut close_by = now + shared.config.close_timeout;
        if let Some(deadline) = shared.deadline.get() {
            // A drain must not outlive its deadline by more than a moment.
            close_by = close_by.min((*deadline).max(now + Duration::from_millis(250)));
        }
        let frame = match &end {
            End::DrainComplete | End::DrainDeadline => Some((close::GOING_AWAY, "server draining")),
            End::Rejected { code, reason } => Some((*code, *reason)),
            End::Capacity => Some((close::TRY_AGAIN_LATER, "server at capacity")),
            End::ClientClosed(_) | End::Vanished | End::TimedOut | End::Failed(_) | End::Reset => None,
        };
        if matches!(end, End::Reset) {
            // Dropping the connection, when the session is over, resets it.
            self.reset_switch.arm();
        }
        // Every close the server sends says what it sent, so that the client
        // can count exactly what did not arrive.
        let last_sent = self.next_seq - 1;
        let handshake = async {
            match frame {
                Some((code, reason)) => {
                    let reason = gsd_protocol::close_reason(reason, last_sent);
                    let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
                    if self.tx.send(close).await.is_ok() {
                        shared.metrics.sent.inc("close");
                        // Read until the client's close reply (or the end).
                        while let Some(Ok(message)) = rx.next().await {
                            if matches!(message, Message::Close(_)) {
                                break;
                            }
                        }
                    }
                }
                // The client closed first: flushing sends the reply that the
                // WebSocket layer has queued.
                None if matches!(end, End::ClientClosed(_)) => {
                    let _ = self.tx.flush().await;
                }
                None => {}
            }
        };
        let _ = tokio::time::timeout_at(close_by, handshake).await;

        // A send blocked since before this session's turn can meet the
        // deadline with no notice sent: that is an incomplete drain too. A
        // session the fault resets has no notice either, and is a drain of
        // its own outcome.
        let unannounced = || Drain {
            started: now,
            remaining: 0,
            sent: 0,
            last_seq: last_sent,
            ack_target: last_sent,
            span: Span::none(),
        };
        let drain = match (self.drain.take(), &end) {
            (Some(drain), _) => Some(drain),
            (None, End::DrainDeadline | End::Reset) => Some(unannounced()),
            (None, _) => None,
        };
        if let Some(drain) = drain {
            let outcome = match end {
                End::DrainComplete => DrainOutcome::Complete,
                End::ClientClosed(_) => DrainOutcome::ClientLeft,
                End::TimedOut | End::Vanished | End::Failed(_) => DrainOutcome::PeerLost,
                End::DrainDeadline | End::Rejected { .. } | End::Capacity => DrainOutcome::Incomplete,
                End::Reset => DrainOutcome::Reset,
            };
            shared.drained[outcome as usize].fetch_add(1, Ordering::SeqCst);
            let complete = outcome == DrainOutcome::Complete;
            let outcome = outcome.label();
            let duration = drain.started.elapsed();
            shared.metrics.drains.with_label_values(&[outcome]).inc();
            shared.metrics.drain_messages.observe(drain.sent as f64);
            shared.metrics.drain_session_duration.observe(duration.as_secs_f64());
            shared.drained_messages.fetch_add(drain.sent as u64, Ordering::SeqCst);
            let duration_ms = duration.as_millis() as u64;
            drain.span.record("outcome", outcome);
            drain.span.record("duration_ms", duration_ms);
            let (remaining, sent, acked) = (drain.remaining, drain.sent, self.acked);
            let _in_drain = drain.span.enter();
            if complete {
                info!(
                    session_id = self.session_id.as_str(),
                    remaining, sent, acked, outcome, duration_ms, "session_drained"
                );
            } else {
                warn!(session_id = %self.session_id, remaining, sent, acked, last_seq = drain.last_seq, outcome,
                    reason = end.label(), duration_ms, "session_drained");
            }
        }
    }
}
