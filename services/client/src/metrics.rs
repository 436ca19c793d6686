//! The client's Prometheus metrics; docs/metrics.md describes each one.

use gsd_protocol::{ClientMessage, ServerMessage};
use gsd_telemetry::names;
use gsd_telemetry::{ByLabel, COUNT_BUCKETS, DURATION_BUCKETS, counter, counter_vec, gauge, histogram};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

#[derive(Clone)]
pub struct ClientMetrics {
    /// Sessions currently open (welcome received, not yet ended).
    pub sessions: IntGauge,
    /// Virtual users configured in this process.
    pub users: IntGauge,
    /// Welcomes received.
    pub sessions_started: IntCounter,
    /// Session end to next welcome.
    pub reconnect_latency: Histogram,
    /// Reconnects, by why the previous session ended.
    pub reconnects: IntCounterVec,
    /// Failed connection attempts, by cause.
    pub connect_failures: IntCounterVec,
    /// Data frames received between a notice and its close, per drain.
    pub drain_messages: Histogram,
    /// Drains by outcome (complete|incomplete|client_left).
    pub drains: IntCounterVec,
    /// Data frames the server sent (or announced) that never arrived, in
    /// sessions this client did not leave on its own.
    pub messages_lost: IntCounter,
    /// Announced frames this client did not wait for because it was leaving.
    pub messages_skipped: IntCounter,
    /// Sessions that ended with no close frame and no notice: whatever the
    /// server sent after the last frame received is unknown.
    pub sessions_cut: IntCounter,
    /// Received data frames whose ack the server never got because the
    /// session ended first: processed all the same, not lost; the client's
    /// side of `gsd_server_data_unacked_total`.
    pub data_unacked: IntCounter,
    /// Data frames with a seq below the one expected (a duplicate or a
    /// reorder), ignored: counted so that a server that re-sends shows.
    pub data_duplicate: IntCounter,
    /// Requests never answered, counted when a user gives up on them at exit.
    pub requests_lost: IntCounter,
    /// Requests re-sent on a new session because the old one ended first.
    pub requests_resent: IntCounter,
    /// Responses to requests already answered (a re-sent request answered
    /// twice), dropped: proof that re-sending never double-counts.
    pub duplicate_responses: IntCounter,
    /// Cut sessions a resume took back: their cut is no longer unknown.
    pub sessions_resumed: IntCounter,
    /// Resumes asked for and not granted, by reason.
    pub resume_failed: IntCounterVec,
    /// Frames received from servers, by message type.
    pub messages_received: IntCounterVec,
    /// Frames sent to servers, by message type (plus `ping`).
    pub messages_sent: IntCounterVec,
    /// `messages_received` for every type a session reads, resolved once.
    pub received: ByLabel,
    /// `messages_sent` for every type a session writes, resolved once.
    pub sent: ByLabel,
}

/// The `reason` of `gsd_client_resume_failed_total` when the server
/// welcomed a new session instead (resume off there, or a version 2 server).
pub(crate) const RESUME_IGNORED: &str = "ignored";

impl ClientMetrics {
    pub fn new(registry: &Registry) -> Self {
        gsd_telemetry::register_log_lines_dropped(registry, names::CLIENT_LOG_LINES_DROPPED);
        let messages_received =
            counter_vec(registry, names::CLIENT_MESSAGES_RECEIVED, "Frames received from servers, by type.", &["type"]);
        let messages_sent =
            counter_vec(registry, names::CLIENT_MESSAGES_SENT, "Frames sent to servers, by type.", &["type"]);
        let m = ClientMetrics {
            sessions: gauge(registry, names::CLIENT_SESSIONS, "Open sessions (welcome received, not ended)."),
            users: gauge(registry, names::CLIENT_USERS, "Virtual users in this process."),
            sessions_started: counter(registry, names::CLIENT_SESSIONS_STARTED, "Sessions started (welcome received)."),
            reconnect_latency: histogram(
                registry,
                names::CLIENT_RECONNECT_LATENCY_SECONDS,
                "Time from a session's end to the next welcome.",
                DURATION_BUCKETS,
            ),
            reconnects: counter_vec(
                registry,
                names::CLIENT_RECONNECTS,
                "Reconnects, by why the previous session ended.",
                &["reason"],
            ),
            connect_failures: counter_vec(
                registry,
                names::CLIENT_CONNECT_FAILURES,
                "Failed connection attempts, by cause.",
                &["reason"],
            ),
            drain_messages: histogram(
                registry,
                names::CLIENT_DRAIN_MESSAGES,
                "Data frames received between a shutdown notice and its close.",
                COUNT_BUCKETS,
            ),
            drains: counter_vec(registry, names::CLIENT_DRAINS, "Drains seen, by outcome.", &["outcome"]),
            messages_lost: counter(
                registry,
                names::CLIENT_MESSAGES_LOST,
                "Data frames the server sent or announced that never arrived (seq gaps, short drains).",
            ),
            messages_skipped: counter(
                registry,
                names::CLIENT_MESSAGES_SKIPPED,
                "Announced data frames not waited for because this client was leaving.",
            ),
            sessions_cut: counter(
                registry,
                names::CLIENT_SESSIONS_CUT,
                "Sessions ended with no close frame and no notice (crash, kill, dead network).",
            ),
            data_unacked: counter(
                registry,
                names::CLIENT_DATA_UNACKED,
                "Data frames received whose ack the server never got because the session ended first (processed, not lost).",
            ),
            data_duplicate: counter(
                registry,
                names::CLIENT_DATA_DUPLICATE,
                "Data frames with a seq below the expected one (duplicate or reorder), ignored.",
            ),
            requests_lost: counter(
                registry,
                names::CLIENT_REQUESTS_LOST,
                "Requests never answered, counted when the client gives up on them at exit.",
            ),
            requests_resent: counter(
                registry,
                names::CLIENT_REQUESTS_RESENT,
                "Requests re-sent on a new session because the old one ended before answering.",
            ),
            duplicate_responses: counter(
                registry,
                names::CLIENT_DUPLICATE_RESPONSES,
                "Responses to requests already answered, dropped.",
            ),
            sessions_resumed: counter(
                registry,
                names::CLIENT_SESSIONS_RESUMED,
                "Cut sessions taken back by a resume: no longer unknown.",
            ),
            resume_failed: counter_vec(
                registry,
                names::CLIENT_RESUME_FAILED,
                "Resumes asked for and not granted, by reason (the server's refusal, or ignored).",
                &["reason"],
            ),
            // The welcome is read while connecting, before a session counts
            // frames: its series appears only for an unexpected second one.
            received: ByLabel::new(
                &messages_received,
                ServerMessage::TYPES.iter().copied().filter(|k| *k != "welcome"),
            ),
            sent: ByLabel::new(&messages_sent, ClientMessage::TYPES.iter().copied().chain(["ping"])),
            messages_received,
            messages_sent,
        };
        // Every known label value exists from the start, so increase() and
        // the dashboards see a zero rather than nothing.
        for outcome in crate::labels::DrainOutcome::ALL {
            m.drains.with_label_values(&[outcome.label()]);
        }
        for reason in crate::labels::EndReason::RECONNECT_REASONS {
            m.reconnects.with_label_values(&[reason.label()]);
        }
        for failure in &crate::labels::ConnectError::ALL {
            m.connect_failures.with_label_values(&[failure.label()]);
        }
        for reason in gsd_protocol::resume::REFUSAL_REASONS.iter().chain(&[RESUME_IGNORED]) {
            m.resume_failed.with_label_values(&[reason]);
        }
        m
    }
}

/// Adds `n` to `counter`, stopping at `u64::MAX` instead of wrapping to a
/// small number: a hostile server's huge seq gap must not read as no loss.
pub fn add(counter: &IntCounter, n: u64) {
    counter.inc_by(n.min(u64::MAX - counter.get()));
}
