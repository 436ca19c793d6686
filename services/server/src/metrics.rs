//! The server's Prometheus metrics. Names and labels are a contract with the
//! dashboards and alerts; docs/metrics.md describes each one.

use gsd_telemetry::{COUNT_BUCKETS, DURATION_BUCKETS, counter_vec, histogram};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// How one session's drain ended: the `outcome` label of
/// `gsd_server_drains_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every owed frame acknowledged and every request answered.
    Complete,
    /// Cut short by the drain deadline or by bad input: the alert's case.
    Incomplete,
    /// The client closed the session itself before the drain was over (a
    /// client that leaves, as in a rollout of the clients): not a fault of
    /// the drain, so not `incomplete`.
    ClientLeft,
    /// The client went silent past the liveness bound, or the connection
    /// broke without a close: a dead peer, not a slow drain.
    PeerLost,
}

impl DrainOutcome {
    pub const ALL: [DrainOutcome; 4] =
        [DrainOutcome::Complete, DrainOutcome::Incomplete, DrainOutcome::ClientLeft, DrainOutcome::PeerLost];

    pub fn label(self) -> &'static str {
        match self {
            DrainOutcome::Complete => "complete",
            DrainOutcome::Incomplete => "incomplete",
            DrainOutcome::ClientLeft => "client_left",
            DrainOutcome::PeerLost => "peer_lost",
        }
    }
}

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
    /// Drained sessions by outcome (complete|incomplete|client_left|peer_lost).
    pub drains: IntCounterVec,
    /// Data frames sent but never acknowledged when their session ended:
    /// delivered or lost, the server cannot tell; what a client that
    /// vanished may have missed.
    pub data_unacked: IntCounter,
    /// Frames sent, by message type (plus `close`).
    pub messages_sent: IntCounterVec,
    /// Frames received, by message type.
    pub messages_received: IntCounterVec,
    /// `messages_sent` per type in [`FRAMES_SENT`] order (see [`ServerMetrics::sent`]).
    sent: [IntCounter; 7],
    /// `messages_received` per type in [`FRAMES_RECEIVED`] order.
    received: [IntCounter; 2],
    /// Bad input, by kind.
    pub protocol_errors: IntCounterVec,
    /// Upgrade requests refused, by reason (draining|capacity).
    pub upgrades_rejected: IntCounterVec,
    /// Open HTTP connections (not yet upgraded), by port (ws|admin).
    pub http_connections: IntGaugeVec,
    /// Connections answered 503 and closed because MAX_HTTP_CONNECTIONS
    /// (or the admin port's cap) was reached, by port.
    pub http_refused: IntCounterVec,
    /// HTTP connections closed for slowness, by port and kind (header: the
    /// request head took over HTTP_HEADER_TIMEOUT; idle: no upgrade within
    /// HTTP_IDLE_TIMEOUT).
    pub http_timeouts: IntCounterVec,
    /// Failed accepts, by port and kind (fd_limit|no_memory|other).
    pub accept_errors: IntCounterVec,
    /// Constant 1 carrying the server id and version as labels.
    pub info: IntGaugeVec,
    /// The configured DRAIN_TIMEOUT, so alerts can compare shutdown
    /// durations with it.
    pub drain_timeout: prometheus::Gauge,
}

impl ServerMetrics {
    pub fn new(registry: &Registry, server_id: &str) -> Self {
        let messages_sent =
            counter_vec("gsd_server_messages_sent_total", "Frames sent to clients, by type.", &["type"]);
        let messages_received =
            counter_vec("gsd_server_messages_received_total", "Frames received from clients, by type.", &["type"]);
        let m = ServerMetrics {
            sent: FRAMES_SENT.map(|kind| messages_sent.with_label_values(&[kind])),
            received: FRAMES_RECEIVED.map(|kind| messages_received.with_label_values(&[kind])),
            sessions: IntGauge::new("gsd_server_sessions", "Open WebSocket sessions.").unwrap(),
            sessions_opened: IntCounter::new(
                "gsd_server_sessions_opened_total",
                "Sessions opened (upgraded and admitted).",
            )
            .unwrap(),
            sessions_closed: counter_vec("gsd_server_sessions_closed_total", "Sessions ended, by reason.", &["reason"]),
            draining: IntGauge::new("gsd_server_draining", "1 while the server drains after a signal, else 0.")
                .unwrap(),
            shutdown_duration: histogram(
                "gsd_server_shutdown_duration_seconds",
                "Time from the termination signal to the last session closed.",
                DURATION_BUCKETS,
            ),
            drain_messages: histogram(
                "gsd_server_drain_messages",
                "Data frames sent in the drain phase, one observation per drained session.",
                COUNT_BUCKETS,
            ),
            drain_session_duration: histogram(
                "gsd_server_drain_session_duration_seconds",
                "Time from a session's shutdown notice to its close.",
                DURATION_BUCKETS,
            ),
            drains: counter_vec("gsd_server_drains_total", "Drained sessions, by outcome.", &["outcome"]),
            data_unacked: IntCounter::new(
                "gsd_server_data_unacked_total",
                "Data frames sent but not acknowledged when their session ended.",
            )
            .unwrap(),
            messages_sent,
            messages_received,
            protocol_errors: counter_vec(
                "gsd_server_protocol_errors_total",
                "Frames rejected as bad input, by kind.",
                &["kind"],
            ),
            upgrades_rejected: counter_vec(
                "gsd_server_upgrades_rejected_total",
                "WebSocket upgrades refused, by reason.",
                &["reason"],
            ),
            http_connections: IntGaugeVec::new(
                Opts::new("gsd_server_http_connections", "Open HTTP connections not (yet) upgraded, by port."),
                &["port"],
            )
            .unwrap(),
            http_refused: counter_vec(
                "gsd_server_http_connections_refused_total",
                "Connections answered 503 because the HTTP connection cap was reached, by port.",
                &["port"],
            ),
            http_timeouts: counter_vec(
                "gsd_server_http_timeouts_total",
                "HTTP connections closed for slowness, by port and kind (header|idle).",
                &["port", "kind"],
            ),
            accept_errors: counter_vec(
                "gsd_server_accept_errors_total",
                "Failed accepts (descriptor limit and others), by port and kind.",
                &["port", "kind"],
            ),
            info: IntGaugeVec::new(
                Opts::new("gsd_server_info", "Always 1; labels name the replica and the build."),
                &["server_id", "version"],
            )
            .unwrap(),
            drain_timeout: prometheus::Gauge::new(
                "gsd_server_drain_timeout_seconds",
                "The configured drain timeout (DRAIN_TIMEOUT).",
            )
            .unwrap(),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.sessions.clone()),
            Box::new(m.sessions_opened.clone()),
            Box::new(m.sessions_closed.clone()),
            Box::new(m.draining.clone()),
            Box::new(m.shutdown_duration.clone()),
            Box::new(m.drain_messages.clone()),
            Box::new(m.drain_session_duration.clone()),
            Box::new(m.drains.clone()),
            Box::new(m.data_unacked.clone()),
            Box::new(m.messages_sent.clone()),
            Box::new(m.messages_received.clone()),
            Box::new(m.protocol_errors.clone()),
            Box::new(m.upgrades_rejected.clone()),
            Box::new(m.http_connections.clone()),
            Box::new(m.http_refused.clone()),
            Box::new(m.http_timeouts.clone()),
            Box::new(m.accept_errors.clone()),
            Box::new(m.info.clone()),
            Box::new(m.drain_timeout.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("each metric is registered once per registry");
        }
        m.info.with_label_values(&[server_id, env!("CARGO_PKG_VERSION")]).set(1);
        // Zero-initialise the label values dashboards and alerts rely on, so a
        // rate() over them has data before the first drain.
        for outcome in DrainOutcome::ALL {
            m.drains.with_label_values(&[outcome.label()]);
        }
        for reason in
            ["drain_complete", "drain_deadline", "client_close", "vanished", "timeout", "error", "rejected", "capacity"]
        {
            m.sessions_closed.with_label_values(&[reason]);
        }
        for kind in ["not_json", "missing_type", "unknown_type", "malformed", "too_big", "binary", "ack_unsent"] {
            m.protocol_errors.with_label_values(&[kind]);
        }
        for reason in ["draining", "capacity", "bad_key"] {
            m.upgrades_rejected.with_label_values(&[reason]);
        }
        for port in ["ws", "admin"] {
            m.http_connections.with_label_values(&[port]);
            m.http_refused.with_label_values(&[port]);
            for kind in ["header", "idle"] {
                m.http_timeouts.with_label_values(&[port, kind]);
            }
            for kind in ["fd_limit", "no_memory", "other"] {
                m.accept_errors.with_label_values(&[port, kind]);
            }
        }
        m
    }

    /// `gsd_server_messages_sent_total{type=kind}`, resolved once at start-up
    /// (a label lookup per frame was a measurable part of a drain).
    pub fn sent(&self, kind: &str) -> &IntCounter {
        let i = FRAMES_SENT.iter().position(|k| *k == kind).expect("every kind sent is in FRAMES_SENT");
        &self.sent[i]
    }

    /// `gsd_server_messages_received_total{type=kind}`, resolved once.
    pub fn received(&self, kind: &str) -> &IntCounter {
        let i = FRAMES_RECEIVED.iter().position(|k| *k == kind).expect("every kind received is in FRAMES_RECEIVED");
        &self.received[i]
    }
}

/// The `type` label values of `gsd_server_messages_sent_total`: the server
/// message types, and the close and ping frames.
const FRAMES_SENT: [&str; 7] = ["welcome", "data", "response", "shutdown_notice", "error", "close", "ping"];
/// The `type` label values of `gsd_server_messages_received_total`.
const FRAMES_RECEIVED: [&str; 2] = ["request", "ack"];
