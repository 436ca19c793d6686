//! The labelled enums of the client's metrics, in a module of their own:
//! the connections and sessions ([`crate::connect`], [`crate::session`])
//! produce them and the metrics ([`crate::metrics`]) register one series per
//! value, and neither imports the other for them.

/// Why a connection attempt failed; the label is the metric's `reason`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connection refused")]
    Refused,
    #[error("upgrade refused with HTTP {0}")]
    Status(u16),
    #[error("no welcome within the connect timeout")]
    Timeout,
    #[error("server at capacity (close 1013)")]
    Capacity,
    #[error("resume refused: {0} (close 4409)")]
    ResumeRefused(&'static str),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(String),
}

impl ConnectError {
    /// One of each label, for the metric's label values.
    pub(crate) const ALL: [ConnectError; 8] = [
        ConnectError::Refused,
        ConnectError::Status(503),
        ConnectError::Status(0),
        ConnectError::Timeout,
        ConnectError::Capacity,
        ConnectError::ResumeRefused(""),
        ConnectError::Protocol(String::new()),
        ConnectError::Io(String::new()),
    ];

    pub(crate) fn label(&self) -> &'static str {
        match self {
            ConnectError::Refused => "refused",
            ConnectError::Status(503) => "http_503",
            ConnectError::Status(_) => "http_other",
            ConnectError::Timeout => "timeout",
            ConnectError::Capacity => "capacity",
            ConnectError::ResumeRefused(_) => "resume_refused",
            ConnectError::Protocol(_) => "protocol",
            ConnectError::Io(_) => "io",
        }
    }
}

gsd_telemetry::metric_labels! {
    /// Why a session ended; the label is the reconnect metric's `reason`.
    pub(crate) enum EndReason {
        /// A shutdown notice came first: a planned drain.
        Drain => "drain",
        /// Close 1001 without a notice.
        GoingAway => "going_away",
        /// Another close code from the server.
        ServerClose => "server_close",
        /// Reset, EOF without close, or a WebSocket error.
        Error => "error",
        /// The server stayed silent for PING_INTERVAL + PING_TIMEOUT.
        Timeout => "timeout",
        /// This client is stopping.
        Shutdown => "shutdown",
    }
}

impl EndReason {
    /// Every reason a reconnect can follow (all but `Shutdown`).
    pub(crate) const RECONNECT_REASONS: [EndReason; 5] =
        [EndReason::Drain, EndReason::GoingAway, EndReason::ServerClose, EndReason::Error, EndReason::Timeout];

    pub(crate) fn planned(self) -> bool {
        matches!(self, EndReason::Drain | EndReason::GoingAway)
    }
}

gsd_telemetry::metric_labels! {
    /// How a drain ended, as this client saw it: the `outcome` label of
    /// `gsd_client_drains_total`.
    pub(crate) enum DrainOutcome {
        /// Close 1001, every announced frame received and acked, nothing unanswered.
        Complete => "complete",
        /// Anything short of that while this client stayed.
        Incomplete => "incomplete",
        /// This client was stopping and closed the session before the drain was
        /// over: what it did not wait for is skipped, not lost.
        ClientLeft => "client_left",
    }
}
