//! The server's Prometheus metrics. Names and labels are a contract with the
//! dashboards and alerts; docs/metrics.md describes each one.

use gsd_protocol::{ClientMessage, DecodeError, ServerMessage};
use gsd_telemetry::names;
use gsd_telemetry::{
    ByLabel, COUNT_BUCKETS, DURATION_BUCKETS, counter, counter_vec, float_gauge, gauge, gauge_vec, histogram,
};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

// The labelled enums live apart, so that the sessions and the metrics
// both import them and not each other; re-exported where they always were.
use crate::labels::End;
pub use crate::labels::{AcceptFailure, DrainOutcome, HttpTimeout, Port, Refusal};

impl AcceptFailure {
    /// The kind of a failed accept's error.
    pub fn of(error: &std::io::Error) -> Self {
        // Linux errno values: EMFILE, ENFILE; ENOMEM, ENOBUFS.
        match error.raw_os_error() {
            Some(24 | 23) => AcceptFailure::FdLimit,
            Some(12 | 105) => AcceptFailure::NoMemory,
            _ => AcceptFailure::Other,
        }
    }
}

/// The `kind` of a protocol error found by the session rather than by
/// decoding: a binary frame.
pub(crate) const BINARY_FRAME: &str = "binary";
/// The `kind` of an ack for a seq the server never sent.
pub(crate) const ACK_UNSENT: &str = "ack_unsent";

/// Handles on every server metric, registered in one registry.
#[derive(Clone)]
pub struct ServerMetrics {
    /// Open WebSocket sessions.
    pub sessions: IntGauge,
    /// Sessions ever opened (upgraded and admitted under MAX_SESSIONS).
    pub sessions_opened: IntCounter,
    /// Sessions ended, by why they ended.
    pub sessions_closed: IntCounterVec,
    /// 1 from the signal until exit, else 0.
    pub draining: IntGauge,
    /// Signal to last session closed.
    pub shutdown_duration: Histogram,
    /// Data frames sent in the drain phase, one observation per drained session.
    pub drain_messages: Histogram,
    /// Per-session drain duration, notice to close.
    pub drain_session_duration: Histogram,
    /// Drained sessions by outcome (complete|incomplete|client_left|peer_lost|reset).
    pub drains: IntCounterVec,
    /// Data frames sent but never acknowledged when their session ended:
    /// delivered or lost, the server cannot tell; what a client that
    /// vanished may have missed.
    pub data_unacked: IntCounter,
    /// Frames sent, by message type (plus `close`).
    pub messages_sent: IntCounterVec,
    /// Frames received, by message type.
    pub messages_received: IntCounterVec,
    /// `messages_sent` for every frame type, resolved once at start-up (a
    /// label lookup per frame was a measurable part of a drain).
    pub sent: ByLabel,
    /// `messages_received` for every frame type, resolved once.
    pub received: ByLabel,
    /// Bad input, by kind.
    pub protocol_errors: IntCounterVec,
    /// Upgrade requests refused, by reason (draining|capacity).
    pub upgrades_rejected: IntCounterVec,
    /// Open HTTP connections (not yet upgraded), by port (ws|admin).
    pub http_connections: IntGaugeVec,
    /// Connections answered 503 and closed because a cap was reached
    /// (MAX_HTTP_CONNECTIONS, the descriptor share, the admin port's fair
    /// share), by port.
    pub http_refused: IntCounterVec,
    /// HTTP connections closed for slowness, by port and kind (header: the
    /// request head took over HTTP_HEADER_TIMEOUT; idle: no upgrade within
    /// HTTP_IDLE_TIMEOUT).
    pub http_timeouts: IntCounterVec,
    /// Failed accepts, by port and kind (fd_limit|no_memory|other).
    pub accept_errors: IntCounterVec,
    /// Open connections, HTTP and sessions (each holds a descriptor), by port.
    pub connections: IntGaugeVec,
    /// The most connections each port holds at once, from the descriptor
    /// limit (docs/protocol.md, "Limits on HTTP connections").
    pub connections_max: IntGaugeVec,
    /// Admin connections closed to make room for an address holding fewer.
    pub admin_evicted: IntCounter,
    /// Constant 1 carrying the server id and version as labels.
    pub info: IntGaugeVec,
    /// The configured DRAIN_TIMEOUT, so alerts can compare shutdown
    /// durations with it.
    pub drain_timeout: prometheus::Gauge,
    /// Sessions parked for resume now.
    pub sessions_parked: IntGauge,
    /// Parked sessions taken back, by where they were parked.
    pub sessions_resumed: IntCounterVec,
    /// Data frames sent again on resumed sessions.
    pub frames_replayed: IntCounter,
    /// Parked sessions nobody resumed in time (or given up at the drain).
    pub sessions_expired: IntCounter,
    /// Parked sessions handed over to another replica.
    pub sessions_handed_over: IntCounter,
    /// Resumes refused with close 4409, by reason.
    pub resume_refused: IntCounterVec,
}

impl ServerMetrics {
    pub fn new(registry: &Registry, server_id: &str) -> Self {
        gsd_telemetry::register_log_lines_dropped(registry, names::SERVER_LOG_LINES_DROPPED);
        let messages_sent =
            counter_vec(registry, names::SERVER_MESSAGES_SENT, "Frames sent to clients, by type.", &["type"]);
        let messages_received =
            counter_vec(registry, names::SERVER_MESSAGES_RECEIVED, "Frames received from clients, by type.", &["type"]);
        let m = ServerMetrics {
            sent: ByLabel::new(&messages_sent, frames_sent()),
            received: ByLabel::new(&messages_received, ClientMessage::TYPES.iter().copied()),
            sessions: gauge(registry, names::SERVER_SESSIONS, "Open WebSocket sessions."),
            sessions_opened: counter(
                registry,
                names::SERVER_SESSIONS_OPENED,
                "Sessions opened (upgraded and admitted).",
            ),
            sessions_closed: counter_vec(
                registry,
                names::SERVER_SESSIONS_CLOSED,
                "Sessions ended, by reason.",
                &["reason"],
            ),
            draining: gauge(registry, names::SERVER_DRAINING, "1 while the server drains after a signal, else 0."),
            shutdown_duration: histogram(
                registry,
                names::SERVER_SHUTDOWN_DURATION_SECONDS,
                "Time from the termination signal to the last session closed.",
                DURATION_BUCKETS,
            ),
            drain_messages: histogram(
                registry,
                names::SERVER_DRAIN_MESSAGES,
                "Data frames sent in the drain phase, one observation per drained session.",
                COUNT_BUCKETS,
            ),
            drain_session_duration: histogram(
                registry,
                names::SERVER_DRAIN_SESSION_DURATION_SECONDS,
                "Time from a session's shutdown notice to its close.",
                DURATION_BUCKETS,
            ),
            drains: counter_vec(registry, names::SERVER_DRAINS, "Drained sessions, by outcome.", &["outcome"]),
            data_unacked: counter(
                registry,
                names::SERVER_DATA_UNACKED,
                "Data frames sent but not acknowledged when their session ended.",
            ),
            messages_sent,
            messages_received,
            protocol_errors: counter_vec(
                registry,
                names::SERVER_PROTOCOL_ERRORS,
                "Frames rejected as bad input, by kind.",
                &["kind"],
            ),
            upgrades_rejected: counter_vec(
                registry,
                names::SERVER_UPGRADES_REJECTED,
                "WebSocket upgrades refused, by reason.",
                &["reason"],
            ),
            http_connections: gauge_vec(
                registry,
                names::SERVER_HTTP_CONNECTIONS,
                "Open HTTP connections not (yet) upgraded, by port.",
                &["port"],
            ),
            http_refused: counter_vec(
                registry,
                names::SERVER_HTTP_CONNECTIONS_REFUSED,
                "Connections answered 503 because the HTTP connection cap was reached, by port.",
                &["port"],
            ),
            http_timeouts: counter_vec(
                registry,
                names::SERVER_HTTP_TIMEOUTS,
                "HTTP connections closed for slowness, by port and kind (header|idle).",
                &["port", "kind"],
            ),
            accept_errors: counter_vec(
                registry,
                names::SERVER_ACCEPT_ERRORS,
                "Failed accepts (descriptor limit and others), by port and kind.",
                &["port", "kind"],
            ),
            connections: gauge_vec(
                registry,
                names::SERVER_CONNECTIONS,
                "Open connections, HTTP and sessions (each holds a descriptor), by port.",
                &["port"],
            ),
            connections_max: gauge_vec(
                registry,
                names::SERVER_CONNECTIONS_MAX,
                "Most connections the port holds at once, derived from the descriptor limit, by port.",
                &["port"],
            ),
            admin_evicted: counter(
                registry,
                names::SERVER_ADMIN_CONNECTIONS_EVICTED,
                "Idle admin connections closed to admit one from an address holding fewer.",
            ),
            info: gauge_vec(
                registry,
                names::SERVER_INFO,
                "Always 1; labels name the replica and the build.",
                &["server_id", "version"],
            ),
            drain_timeout: float_gauge(
                registry,
                names::SERVER_DRAIN_TIMEOUT_SECONDS,
                "The configured drain timeout (DRAIN_TIMEOUT).",
            ),
            sessions_parked: gauge(registry, names::SERVER_SESSIONS_PARKED, "Sessions parked for resume now."),
            sessions_resumed: counter_vec(
                registry,
                names::SERVER_SESSIONS_RESUMED,
                "Parked sessions a client took back, by where they were parked.",
                &["where"],
            ),
            frames_replayed: counter(
                registry,
                names::SERVER_FRAMES_REPLAYED,
                "Data frames sent again on a resumed session.",
            ),
            sessions_expired: counter(
                registry,
                names::SERVER_SESSIONS_EXPIRED,
                "Parked sessions not resumed within RESUME_WINDOW (or given up when the server stopped).",
            ),
            sessions_handed_over: counter(
                registry,
                names::SERVER_SESSIONS_HANDED_OVER,
                "Parked sessions handed over to another replica that a client reconnected to.",
            ),
            resume_refused: counter_vec(
                registry,
                names::SERVER_RESUME_REFUSED,
                "Resumes refused with close 4409, by reason.",
                &["reason"],
            ),
        };
        m.info.with_label_values(&[server_id, env!("CARGO_PKG_VERSION")]).set(1);
        for place in ["local", "fetched"] {
            m.sessions_resumed.with_label_values(&[place]);
        }
        for reason in gsd_protocol::resume::REFUSAL_REASONS {
            m.resume_refused.with_label_values(&[reason]);
        }
        // Zero-initialise the label values dashboards and alerts rely on, so a
        // rate() over them has data before the first drain.
        for outcome in DrainOutcome::ALL {
            m.drains.with_label_values(&[outcome.label()]);
        }
        for end in &End::ALL {
            m.sessions_closed.with_label_values(&[end.label()]);
        }
        for kind in DecodeError::kinds().chain([BINARY_FRAME, ACK_UNSENT]) {
            m.protocol_errors.with_label_values(&[kind]);
        }
        for refusal in Refusal::ALL {
            m.upgrades_rejected.with_label_values(&[refusal.label()]);
        }
        for port in Port::ALL.map(Port::label) {
            m.http_connections.with_label_values(&[port]);
            m.connections.with_label_values(&[port]);
            m.connections_max.with_label_values(&[port]);
            m.http_refused.with_label_values(&[port]);
            for timeout in HttpTimeout::ALL {
                m.http_timeouts.with_label_values(&[port, timeout.label()]);
            }
            for failure in AcceptFailure::ALL {
                m.accept_errors.with_label_values(&[port, failure.label()]);
            }
        }
        m
    }

    /// `gsd_server_upgrades_rejected_total{reason}`.
    pub fn refused(&self, refusal: Refusal) -> IntCounter {
        self.upgrades_rejected.with_label_values(&[refusal.label()])
    }
}

/// The `type` label values of `gsd_server_messages_sent_total`: the server
/// message types, and the close and ping frames.
fn frames_sent() -> impl Iterator<Item = &'static str> {
    ServerMessage::TYPES.iter().copied().chain(["close", "ping"])
}
