//! Every metric gsd exposes, by name: the one place a name is spelled in
//! code. The server and the client register their metrics under these
//! constants (the constructors of [`crate::metrics`] take nothing else); the
//! judge, gsd-lab and the tests read them by the same constants. Label
//! values are the enums of each crate's `labels` module. docs/metrics.md
//! describes every one; the chart's rules and dashboards are checked
//! against this list (tests/chart.rs).

/// A metric's name as exposed (counters with their `_total`; a histogram's
/// three series have constants of their own: `_SUM`, `_COUNT`, `_BUCKET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Metric(&'static str);

impl Metric {
    /// The name as it appears in an exposition.
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// One series of it as exposed: `name{k="v",...}`, labels in name order
    /// (as the exposition writes them), or the bare name with no labels.
    pub fn at(self, labels: &[(&str, &str)]) -> String {
        if labels.is_empty() {
            return self.0.to_owned();
        }
        let mut labels = labels.to_vec();
        labels.sort_unstable();
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{}{{{}}}", self.0, labels.join(","))
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl AsRef<str> for Metric {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// A histogram's constants: its name and its `_sum`, `_count` and
/// `_bucket` series, spelled once.
macro_rules! histogram {
    ($(#[$doc:meta])* $name:ident, $sum:ident, $count:ident, $bucket:ident = $text:literal) => {
        $(#[$doc])*
        pub const $name: Metric = Metric($text);
        #[doc = concat!("`", $text, "_sum`.")]
        pub const $sum: Metric = Metric(concat!($text, "_sum"));
        #[doc = concat!("`", $text, "_count`.")]
        pub const $count: Metric = Metric(concat!($text, "_count"));
        #[doc = concat!("`", $text, "_bucket`.")]
        pub const $bucket: Metric = Metric(concat!($text, "_bucket"));
    };
}

// ---- The server's
/// Frames sent to clients, by type.
pub const SERVER_MESSAGES_SENT: Metric = Metric("gsd_server_messages_sent_total");
/// Frames received from clients, by type.
pub const SERVER_MESSAGES_RECEIVED: Metric = Metric("gsd_server_messages_received_total");
/// Open WebSocket sessions.
pub const SERVER_SESSIONS: Metric = Metric("gsd_server_sessions");
/// Sessions opened (upgraded and admitted).
pub const SERVER_SESSIONS_OPENED: Metric = Metric("gsd_server_sessions_opened_total");
/// Sessions ended, by reason.
pub const SERVER_SESSIONS_CLOSED: Metric = Metric("gsd_server_sessions_closed_total");
/// 1 while the server drains after a signal, else 0.
pub const SERVER_DRAINING: Metric = Metric("gsd_server_draining");
histogram!(
    /// Time from the termination signal to the last session closed.
    SERVER_SHUTDOWN_DURATION_SECONDS, SERVER_SHUTDOWN_DURATION_SECONDS_SUM, SERVER_SHUTDOWN_DURATION_SECONDS_COUNT, SERVER_SHUTDOWN_DURATION_SECONDS_BUCKET = "gsd_server_shutdown_duration_seconds"
);
histogram!(
    /// Data frames sent in the drain phase, one observation per drained session.
    SERVER_DRAIN_MESSAGES, SERVER_DRAIN_MESSAGES_SUM, SERVER_DRAIN_MESSAGES_COUNT, SERVER_DRAIN_MESSAGES_BUCKET = "gsd_server_drain_messages"
);
histogram!(
    /// Time from a session's shutdown notice to its close.
    SERVER_DRAIN_SESSION_DURATION_SECONDS, SERVER_DRAIN_SESSION_DURATION_SECONDS_SUM, SERVER_DRAIN_SESSION_DURATION_SECONDS_COUNT, SERVER_DRAIN_SESSION_DURATION_SECONDS_BUCKET = "gsd_server_drain_session_duration_seconds"
);
/// Drained sessions, by outcome.
pub const SERVER_DRAINS: Metric = Metric("gsd_server_drains_total");
/// Data frames sent but not acknowledged when their session ended.
pub const SERVER_DATA_UNACKED: Metric = Metric("gsd_server_data_unacked_total");
/// Frames rejected as bad input, by kind.
pub const SERVER_PROTOCOL_ERRORS: Metric = Metric("gsd_server_protocol_errors_total");
/// WebSocket upgrades refused, by reason.
pub const SERVER_UPGRADES_REJECTED: Metric = Metric("gsd_server_upgrades_rejected_total");
/// Open HTTP connections not (yet) upgraded, by port.
pub const SERVER_HTTP_CONNECTIONS: Metric = Metric("gsd_server_http_connections");
/// Connections answered 503 because the HTTP connection cap was reached, by port.
pub const SERVER_HTTP_CONNECTIONS_REFUSED: Metric = Metric("gsd_server_http_connections_refused_total");
/// HTTP connections closed for slowness, by port and kind (header|idle).
pub const SERVER_HTTP_TIMEOUTS: Metric = Metric("gsd_server_http_timeouts_total");
/// Failed accepts (descriptor limit and others), by port and kind.
pub const SERVER_ACCEPT_ERRORS: Metric = Metric("gsd_server_accept_errors_total");
/// Open connections, HTTP and sessions (each holds a descriptor), by port.
pub const SERVER_CONNECTIONS: Metric = Metric("gsd_server_connections");
/// Log lines dropped because stdout did not keep up (its reader stopped).
pub const SERVER_LOG_LINES_DROPPED: Metric = Metric("gsd_server_log_lines_dropped_total");
/// Most connections the port holds at once, derived from the descriptor limit, by port.
pub const SERVER_CONNECTIONS_MAX: Metric = Metric("gsd_server_connections_max");
/// Idle admin connections closed to admit one from an address holding fewer.
pub const SERVER_ADMIN_CONNECTIONS_EVICTED: Metric = Metric("gsd_server_admin_connections_evicted_total");
/// Always 1; labels name the replica and the build.
pub const SERVER_INFO: Metric = Metric("gsd_server_info");
/// The configured drain timeout (DRAIN_TIMEOUT).
pub const SERVER_DRAIN_TIMEOUT_SECONDS: Metric = Metric("gsd_server_drain_timeout_seconds");
/// Sessions parked for resume now (ended unannounced, not yet resumed or expired).
pub const SERVER_SESSIONS_PARKED: Metric = Metric("gsd_server_sessions_parked");
/// Parked sessions a client took back, by where they were parked (local|fetched).
pub const SERVER_SESSIONS_RESUMED: Metric = Metric("gsd_server_sessions_resumed_total");
/// Data frames sent again on a resumed session.
pub const SERVER_FRAMES_REPLAYED: Metric = Metric("gsd_server_frames_replayed_total");
/// Parked sessions nobody resumed within RESUME_WINDOW (their frames counted unacked).
pub const SERVER_SESSIONS_EXPIRED: Metric = Metric("gsd_server_sessions_expired_total");
/// Parked sessions handed over to another replica that a client reconnected to.
pub const SERVER_SESSIONS_HANDED_OVER: Metric = Metric("gsd_server_sessions_handed_over_total");
/// Resumes refused with close 4409, by reason.
pub const SERVER_RESUME_REFUSED: Metric = Metric("gsd_server_resume_refused_total");

// ---- The client's
/// Open sessions (welcome received, not ended).
pub const CLIENT_SESSIONS: Metric = Metric("gsd_client_sessions");
/// Log lines dropped because stdout did not keep up (its reader stopped).
pub const CLIENT_LOG_LINES_DROPPED: Metric = Metric("gsd_client_log_lines_dropped_total");
/// Virtual users in this process.
pub const CLIENT_USERS: Metric = Metric("gsd_client_users");
/// Sessions started (welcome received).
pub const CLIENT_SESSIONS_STARTED: Metric = Metric("gsd_client_sessions_started_total");
histogram!(
    /// Time from a session's end to the next welcome.
    CLIENT_RECONNECT_LATENCY_SECONDS, CLIENT_RECONNECT_LATENCY_SECONDS_SUM, CLIENT_RECONNECT_LATENCY_SECONDS_COUNT, CLIENT_RECONNECT_LATENCY_SECONDS_BUCKET = "gsd_client_reconnect_latency_seconds"
);
/// Reconnects, by why the previous session ended.
pub const CLIENT_RECONNECTS: Metric = Metric("gsd_client_reconnects_total");
/// Failed connection attempts, by cause.
pub const CLIENT_CONNECT_FAILURES: Metric = Metric("gsd_client_connect_failures_total");
histogram!(
    /// Data frames received between a shutdown notice and its close.
    CLIENT_DRAIN_MESSAGES, CLIENT_DRAIN_MESSAGES_SUM, CLIENT_DRAIN_MESSAGES_COUNT, CLIENT_DRAIN_MESSAGES_BUCKET = "gsd_client_drain_messages"
);
/// Drains seen, by outcome.
pub const CLIENT_DRAINS: Metric = Metric("gsd_client_drains_total");
/// Data frames the server sent or announced that never arrived (seq gaps, short drains).
pub const CLIENT_MESSAGES_LOST: Metric = Metric("gsd_client_messages_lost_total");
/// Announced data frames not waited for because this client was leaving.
pub const CLIENT_MESSAGES_SKIPPED: Metric = Metric("gsd_client_messages_skipped_total");
/// Sessions ended with no close frame and no notice (crash, kill, dead network).
pub const CLIENT_SESSIONS_CUT: Metric = Metric("gsd_client_sessions_cut_total");
/// Data frames received whose ack the server never got because the session ended first (processed, not lost).
pub const CLIENT_DATA_UNACKED: Metric = Metric("gsd_client_data_unacked_total");
/// Data frames with a seq below the expected one (duplicate or reorder), ignored.
pub const CLIENT_DATA_DUPLICATE: Metric = Metric("gsd_client_data_duplicate_total");
/// Requests never answered, counted when the client gives up on them at exit.
pub const CLIENT_REQUESTS_LOST: Metric = Metric("gsd_client_requests_lost_total");
/// Requests re-sent on a new session because the old one ended before answering.
pub const CLIENT_REQUESTS_RESENT: Metric = Metric("gsd_client_requests_resent_total");
/// Responses to requests already answered, dropped.
pub const CLIENT_DUPLICATE_RESPONSES: Metric = Metric("gsd_client_duplicate_responses_total");
/// Cut sessions taken back by a resume: no longer unknown.
pub const CLIENT_SESSIONS_RESUMED: Metric = Metric("gsd_client_sessions_resumed_total");
/// Resumes asked for and not granted, by reason (the server's refusal, or `ignored`).
pub const CLIENT_RESUME_FAILED: Metric = Metric("gsd_client_resume_failed_total");
/// Frames received from servers, by type.
pub const CLIENT_MESSAGES_RECEIVED: Metric = Metric("gsd_client_messages_received_total");
/// Frames sent to servers, by type.
pub const CLIENT_MESSAGES_SENT: Metric = Metric("gsd_client_messages_sent_total");

/// Every metric's name, the server's then the client's.
pub const ALL: &[Metric] = &[
    SERVER_MESSAGES_SENT,
    SERVER_MESSAGES_RECEIVED,
    SERVER_SESSIONS,
    SERVER_SESSIONS_OPENED,
    SERVER_SESSIONS_CLOSED,
    SERVER_DRAINING,
    SERVER_SHUTDOWN_DURATION_SECONDS,
    SERVER_DRAIN_MESSAGES,
    SERVER_DRAIN_SESSION_DURATION_SECONDS,
    SERVER_DRAINS,
    SERVER_DATA_UNACKED,
    SERVER_PROTOCOL_ERRORS,
    SERVER_UPGRADES_REJECTED,
    SERVER_HTTP_CONNECTIONS,
    SERVER_HTTP_CONNECTIONS_REFUSED,
    SERVER_HTTP_TIMEOUTS,
    SERVER_ACCEPT_ERRORS,
    SERVER_CONNECTIONS,
    SERVER_LOG_LINES_DROPPED,
    SERVER_CONNECTIONS_MAX,
    SERVER_ADMIN_CONNECTIONS_EVICTED,
    SERVER_INFO,
    SERVER_DRAIN_TIMEOUT_SECONDS,
    SERVER_SESSIONS_PARKED,
    SERVER_SESSIONS_RESUMED,
    SERVER_FRAMES_REPLAYED,
    SERVER_SESSIONS_EXPIRED,
    SERVER_SESSIONS_HANDED_OVER,
    SERVER_RESUME_REFUSED,
    CLIENT_SESSIONS,
    CLIENT_LOG_LINES_DROPPED,
    CLIENT_USERS,
    CLIENT_SESSIONS_STARTED,
    CLIENT_RECONNECT_LATENCY_SECONDS,
    CLIENT_RECONNECTS,
    CLIENT_CONNECT_FAILURES,
    CLIENT_DRAIN_MESSAGES,
    CLIENT_DRAINS,
    CLIENT_MESSAGES_LOST,
    CLIENT_MESSAGES_SKIPPED,
    CLIENT_SESSIONS_CUT,
    CLIENT_DATA_UNACKED,
    CLIENT_DATA_DUPLICATE,
    CLIENT_REQUESTS_LOST,
    CLIENT_REQUESTS_RESENT,
    CLIENT_DUPLICATE_RESPONSES,
    CLIENT_SESSIONS_RESUMED,
    CLIENT_RESUME_FAILED,
    CLIENT_MESSAGES_RECEIVED,
    CLIENT_MESSAGES_SENT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_written_as_the_exposition_writes_them() {
        assert_eq!(SERVER_DRAINS.at(&[]), "gsd_server_drains_total");
        assert_eq!(SERVER_DRAINS.at(&[("outcome", "complete")]), r#"gsd_server_drains_total{outcome="complete"}"#);
        let timeouts = SERVER_HTTP_TIMEOUTS.at(&[("port", "ws"), ("kind", "header")]);
        assert_eq!(timeouts, r#"gsd_server_http_timeouts_total{kind="header",port="ws"}"#);
        assert_eq!(SERVER_DRAIN_MESSAGES_SUM.name(), "gsd_server_drain_messages_sum");
    }

    #[test]
    fn every_name_is_gsds_and_is_listed_once() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name()).collect();
        for name in &names {
            assert!(name.starts_with("gsd_server_") || name.starts_with("gsd_client_"), "{name}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name is listed twice");
    }
}
