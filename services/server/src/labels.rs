//! The labelled enums of the server's metrics, in a module of their own:
//! the sessions ([`crate::session`]), the HTTP layer and the accept loop
//! produce them, the metrics ([`crate::metrics`]) register one series per
//! value, and none of those imports another for them.

use gsd_telemetry::metric_labels;

metric_labels! {
    /// How one session's drain ended: the `outcome` label of
    /// `gsd_server_drains_total`.
    pub enum DrainOutcome {
        /// Every owed frame acknowledged and every request answered.
        Complete => "complete",
        /// Cut short by the drain deadline or by bad input: the alert's case.
        Incomplete => "incomplete",
        /// The client closed the session itself before the drain was over (a
        /// client that leaves, as in a rollout of the clients): not a fault of
        /// the drain, so not `incomplete`.
        ClientLeft => "client_left",
        /// The client went silent past the liveness bound, or the connection
        /// broke without a close: a dead peer, not a slow drain.
        PeerLost => "peer_lost",
        /// The server itself reset the session at the signal, with no notice
        /// and no close frame (FAULT_RESET_AT_SIGTERM): whatever the client
        /// was owed, it was never told of it.
        Reset => "reset",
    }
}

metric_labels! {
    /// Why an upgrade request was refused: the `reason` label of
    /// `gsd_server_upgrades_rejected_total`.
    pub enum Refusal {
        /// The server is draining: the client should reach another replica.
        Draining => "draining",
        /// Over MAX_SESSIONS (the session is closed with 1013 right after its
        /// upgrade).
        Capacity => "capacity",
        /// No `Sec-WebSocket-Key`, more than one, or one that is not the
        /// base64 of 16 bytes.
        BadKey => "bad_key",
        /// `Sec-WebSocket-Version` or `Host` more than once.
        RepeatedHeader => "repeated_header",
    }
}

metric_labels! {
    /// Which of the server's two ports: the `port` label of its HTTP metrics.
    pub enum Port {
        /// The WebSocket port, the one the Service exposes.
        Ws => "ws",
        /// Probes, `/metrics` and `/prestop`.
        Admin => "admin",
    }
}

metric_labels! {
    /// Why an HTTP connection was closed for slowness: the `kind` label of
    /// `gsd_server_http_timeouts_total`.
    pub enum HttpTimeout {
        /// The request head took over HTTP_HEADER_TIMEOUT.
        Header => "header",
        /// No upgrade within the connection's lifetime.
        Idle => "idle",
    }
}

metric_labels! {
    /// Why an accept failed: the `kind` label of
    /// `gsd_server_accept_errors_total`.
    pub enum AcceptFailure {
        /// Out of descriptors, the process's or the system's.
        FdLimit => "fd_limit",
        /// Out of kernel memory or buffers.
        NoMemory => "no_memory",
        /// Anything else.
        Other => "other",
    }
}

/// Why a session ended: the `reason` label of
/// `gsd_server_sessions_closed_total`.
#[derive(Debug)]
pub(crate) enum End {
    /// Every owed frame acknowledged and every request answered.
    DrainComplete,
    /// The drain deadline passed first.
    DrainDeadline,
    /// The client sent a close frame (with its code, if any).
    ClientClosed(Option<u16>),
    /// The connection ended without a close frame.
    Vanished,
    /// The client stayed silent for PING_INTERVAL + PING_TIMEOUT.
    TimedOut,
    /// The WebSocket layer failed (reset, oversize beyond the hard cap, ...).
    Failed(String),
    /// Bad input the session cannot go on after; closed with `code`.
    Rejected { code: u16, reason: &'static str },
    /// Over `max_sessions`.
    Capacity,
    /// Reset by the server at the signal, with no notice and no close frame
    /// (FAULT_RESET_AT_SIGTERM).
    Reset,
}

impl End {
    /// One of each kind of end, for the metric's label values.
    pub(crate) const ALL: [End; 9] = [
        End::DrainComplete,
        End::DrainDeadline,
        End::ClientClosed(None),
        End::Vanished,
        End::TimedOut,
        End::Failed(String::new()),
        End::Rejected { code: 0, reason: "" },
        End::Capacity,
        End::Reset,
    ];

    /// What the label does not say: the client's close code, the error.
    pub(crate) fn detail(&self) -> Option<String> {
        match self {
            End::ClientClosed(Some(code)) => Some(format!("client close code {code}")),
            End::Failed(error) => Some(error.clone()),
            End::Rejected { code, reason } => Some(format!("closed {code}: {reason}")),
            _ => None,
        }
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            End::DrainComplete => "drain_complete",
            End::DrainDeadline => "drain_deadline",
            End::ClientClosed(_) => "client_close",
            End::Vanished => "vanished",
            End::TimedOut => "timeout",
            End::Failed(_) => "error",
            End::Rejected { .. } => "rejected",
            End::Capacity => "capacity",
            End::Reset => "reset",
        }
    }
}
