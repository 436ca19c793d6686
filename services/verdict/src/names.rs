//! The metric names the judge reads, with the label each is split by.
//! docs/metrics.md describes every one; the crates that register them
//! spell the same names (a test there compares the two exposition-side).

/// A metric's name as exposed (counters with their `_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Metric(pub &'static str);

impl Metric {
    /// The name as it appears in an exposition.
    pub const fn name(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Open sessions on a server pod.
pub const SERVER_SESSIONS: Metric = Metric("gsd_server_sessions");
/// Drained sessions by `outcome`.
pub const SERVER_DRAINS: Metric = Metric("gsd_server_drains_total");
/// Data frames sent in the drain phase (a histogram: its `_sum`).
pub const SERVER_DRAIN_MESSAGES_SUM: Metric = Metric("gsd_server_drain_messages_sum");
/// Data frames sent and never acknowledged when their session ended.
pub const SERVER_DATA_UNACKED: Metric = Metric("gsd_server_data_unacked_total");
/// Frames sent by `type`.
pub const SERVER_MESSAGES_SENT: Metric = Metric("gsd_server_messages_sent_total");
/// Signal to last session closed: one observation per drain.
pub const SERVER_SHUTDOWN_COUNT: Metric = Metric("gsd_server_shutdown_duration_seconds_count");
/// The same, its sum in seconds.
pub const SERVER_SHUTDOWN_SUM: Metric = Metric("gsd_server_shutdown_duration_seconds_sum");
/// Sessions closed by `reason`.
pub const SERVER_SESSIONS_CLOSED: Metric = Metric("gsd_server_sessions_closed_total");

/// Virtual users in a client process.
pub const CLIENT_USERS: Metric = Metric("gsd_client_users");
/// Users holding a session now.
pub const CLIENT_SESSIONS: Metric = Metric("gsd_client_sessions");
/// Drains the client saw, by `outcome`.
pub const CLIENT_DRAINS: Metric = Metric("gsd_client_drains_total");
/// Data frames received.
pub const CLIENT_RECEIVED: Metric = Metric("gsd_client_messages_received_total");
/// Frames announced or sent that never arrived.
pub const CLIENT_LOST: Metric = Metric("gsd_client_messages_lost_total");
/// Announced frames a leaving client did not wait for.
pub const CLIENT_SKIPPED: Metric = Metric("gsd_client_messages_skipped_total");
/// Frames received whose ack the server never got.
pub const CLIENT_UNACKED: Metric = Metric("gsd_client_data_unacked_total");
/// Frames received again, or out of order (a seq below the expected one).
pub const CLIENT_DUPLICATE: Metric = Metric("gsd_client_data_duplicate_total");
/// Sessions that ended with no close and no notice.
pub const CLIENT_CUT: Metric = Metric("gsd_client_sessions_cut_total");
/// Requests never answered.
pub const CLIENT_REQUESTS_LOST: Metric = Metric("gsd_client_requests_lost_total");
/// Requests sent again on a next session.
pub const CLIENT_REQUESTS_RESENT: Metric = Metric("gsd_client_requests_resent_total");
/// Reconnects by `reason`.
pub const CLIENT_RECONNECTS: Metric = Metric("gsd_client_reconnects_total");
