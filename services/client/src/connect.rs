//! Reaching a server: one connection attempt (TCP, upgrade, welcome), the
//! loop that retries it with full-jitter backoff, the wait between one
//! session and the next ([`Reconnect`]), and `--check`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gsd_protocol::{ServerMessage, close};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::debug;

use crate::config::Config;
use crate::labels::{ConnectError, EndReason};
use crate::shared::Shared;

/// A session's connection: TCP in service; the tests give sessions
/// in-memory pipes, so that they can run on a paused clock.
pub(crate) type Ws<S = MaybeTlsStream<TcpStream>> = WebSocketStream<S>;

/// A session that has received its welcome.
pub(crate) struct Connected<S = MaybeTlsStream<TcpStream>> {
    /// The WebSocket, its welcome already read.
    pub(crate) ws: Ws<S>,
    /// The replica that welcomed this session, for the ledger's list of
    /// servers and the `reconnected` line.
    pub(crate) server_id: String,
    /// The server's id of this session, for the session span.
    pub(crate) session_id: String,
    /// When the welcome arrived: the end of a reconnect's latency, and the
    /// start of the session's length for the backoff.
    pub(crate) welcomed_at: Instant,
    /// The welcome's resume token (protocol 3), for a resume if this
    /// session is cut.
    pub(crate) resume_token: Option<String>,
    /// A session taken back: the last seq the client had received when it
    /// asked (the session's seqs go on above it).
    pub(crate) resumed_after: Option<u64>,
}

/// What a user asks for after a cut: the session of `token` back, having
/// received every frame up to `last_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResumeAsk {
    pub(crate) token: String,
    pub(crate) last_seq: u64,
}

/// The longest wait before connect attempt `attempt` (0 is the first retry):
/// `base` doubled per attempt, never over `cap`. The wait itself is drawn
/// uniformly below it (full jitter), so that users who failed together do
/// not retry together.
fn backoff_ceiling(base: Duration, cap: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.min(30))).min(cap)
}

pub(crate) fn full_jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    random_up_to(backoff_ceiling(base, cap, attempt))
}

/// How long a user waits between one session and the next.
#[derive(Debug, Default)]
pub(crate) struct Reconnect {
    /// Sessions in a row that ended, unplanned, before they had lasted
    /// RECONNECT_BACKOFF_CAP: a server that welcomes and then drops every
    /// connection meets a growing backoff, not a reconnect every few ms.
    /// It is also how many failures the next connect loop starts from.
    pub(crate) short_sessions: u32,
}

impl Reconnect {
    /// After a session that ended for `reason` having lasted `lasted`: the
    /// ceiling of the wait before the next connect (the wait is drawn
    /// uniformly below it).
    pub(crate) fn after(&mut self, reason: EndReason, lasted: Duration, config: &Config) -> Duration {
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

pub(crate) fn random_up_to(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::rng().random_range(0..=max.as_micros() as u64))
}

/// One connection: the welcome's `(server_id, session_id)`, then close 1000.
pub(crate) async fn check(config: &Config) -> Result<(String, String), String> {
    let mut connected = connect_once(config, None).await.map_err(|e| e.to_string())?;
    let close = connected.ws.send(Message::Close(Some(normal_close())));
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    Ok((connected.server_id, connected.session_id))
}

/// One attempt: TCP (the host resolved afresh), upgrade (asking for a
/// session back if `ask` says so), welcome.
async fn connect_once(config: &Config, ask: Option<&ResumeAsk>) -> Result<Connected, ConnectError> {
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
        let mut request =
            config.server_url.as_str().into_client_request().map_err(|e| ConnectError::Io(e.to_string()))?;
        if let Some(ask) = ask {
            // A token is base64url and a seq digits: both always valid header values.
            let headers = request.headers_mut();
            let token = HeaderValue::from_str(&ask.token).map_err(|e| ConnectError::Io(e.to_string()))?;
            headers.insert(gsd_protocol::header::RESUME, token);
            headers.insert(gsd_protocol::header::RESUME_LAST_SEQ, HeaderValue::from(ask.last_seq));
        }
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(request, MaybeTlsStream::Plain(tcp), Some(ws_config))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(response) => ConnectError::Status(response.status().as_u16()),
                    other => ConnectError::Io(other.to_string()),
                })?;
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match ServerMessage::decode(text.as_str()) {
                Ok(ServerMessage::Welcome { server_id, session_id, resume_token, resumed, .. }) => Ok(Connected {
                    ws,
                    server_id,
                    session_id,
                    welcomed_at: Instant::now(),
                    resume_token,
                    resumed_after: ask.filter(|_| resumed).map(|ask| ask.last_seq),
                }),
                Ok(other) => Err(ConnectError::Protocol(format!("first frame was `{}`, not `welcome`", other.kind()))),
                Err(e) => Err(ConnectError::Protocol(e.to_string())),
            },
            Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == close::TRY_AGAIN_LATER => {
                Err(ConnectError::Capacity)
            }
            Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == close::RESUME_REFUSED => {
                // A reason that is not one of the protocol's is still a refusal.
                let reason = gsd_protocol::resume::refused_reason_of(frame.reason.as_str()).unwrap_or("malformed");
                Err(ConnectError::ResumeRefused(reason))
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
/// With `ask`, the first attempts ask for that session back; once a server
/// refuses (close 4409) or welcomes a new session instead, the failure is
/// counted and the loop goes on without it.
pub(crate) async fn connect_loop(
    shared: Arc<Shared>,
    first_delay: Duration,
    mut attempt: u32,
    mut ask: Option<ResumeAsk>,
) -> Option<Connected> {
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
            result = connect_once(config, ask.as_ref()) => result,
            _ = shared.shutdown.cancelled() => return None,
        };
        match result {
            Ok(connected) => {
                if ask.is_some() && connected.resumed_after.is_none() {
                    shared.metrics.resume_failed.with_label_values(&[crate::metrics::RESUME_IGNORED]).inc();
                    debug!(server_id = %connected.server_id, "resume_ignored");
                }
                return Some(connected);
            }
            Err(ConnectError::ResumeRefused(reason)) => {
                // Refused at once, with a reason: a new session now, no backoff.
                shared.metrics.connect_failures.with_label_values(&["resume_refused"]).inc();
                shared.metrics.resume_failed.with_label_values(&[reason]).inc();
                debug!(reason, "resume_refused");
                ask = None;
                delay = Duration::ZERO;
            }
            Err(e) => {
                shared.metrics.connect_failures.with_label_values(&[e.label()]).inc();
                delay = full_jitter(config.backoff_base, config.backoff_cap, attempt);
                attempt = attempt.saturating_add(1);
                debug!(reason = e.label(), error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "connect_failed");
            }
        }
    }
}

/// The close frame of a user that leaves: 1000.
pub(crate) fn normal_close() -> CloseFrame {
    CloseFrame { code: CloseCode::Normal, reason: "client shutting down".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(flags: &[&str]) -> Config {
        crate::config::tests::parse(flags)
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
}
