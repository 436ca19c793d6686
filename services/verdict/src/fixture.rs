//! `/metrics` bodies written from chosen counts, for the tests of the judge,
//! of gsd-lab's report and of scripts/cluster-check: one writer, with the
//! names of [`crate::names`], so that no test spells a metric by hand and a
//! renamed metric breaks no fixture silently. Every series the accounts
//! require is written; what a test does not set is 0.

use crate::account::{CLIENT_DRAIN_OUTCOMES, SERVER_DRAIN_OUTCOMES};
use crate::names::{self, Metric};

/// One line: `series value`.
fn line(body: &mut String, metric: Metric, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    body.push_str(&format!("{} {value}\n", metric.at(labels)));
}

/// A server pod's /metrics.
#[derive(Debug, Clone, Default)]
pub struct ServerBody {
    /// Open sessions.
    pub sessions: u64,
    /// Drains by outcome (`complete`, `incomplete`, ...); unnamed ones 0.
    pub drains: Vec<(&'static str, u64)>,
    /// Data frames sent in the drain phase.
    pub drain_messages: u64,
    /// Data frames sent, in all.
    pub data_sent: u64,
    /// Data frames never acknowledged.
    pub unacked: u64,
    /// The shutdown's duration, once it ended (`None`: not ended yet).
    pub shutdown_seconds: Option<f64>,
    /// Sessions closed by reason.
    pub closed: Vec<(&'static str, u64)>,
}

impl ServerBody {
    /// A pod that drained `complete` sessions fully and `incomplete` not,
    /// `drain_messages` frames in all, and ended in 0.25 s.
    pub fn ended(complete: u64, incomplete: u64, drain_messages: u64) -> Self {
        ServerBody {
            drains: vec![("complete", complete), ("incomplete", incomplete)],
            drain_messages,
            data_sent: 40,
            shutdown_seconds: Some(0.25),
            closed: vec![("drain_complete", complete)],
            ..ServerBody::default()
        }
    }

    /// The exposition.
    pub fn render(&self) -> String {
        let mut body = String::new();
        line(&mut body, names::SERVER_SESSIONS, &[], self.sessions);
        for outcome in SERVER_DRAIN_OUTCOMES {
            let n = self.drains.iter().find(|(o, _)| *o == outcome).map_or(0, |(_, n)| *n);
            line(&mut body, names::SERVER_DRAINS, &[("outcome", outcome)], n);
        }
        line(&mut body, names::SERVER_DRAIN_MESSAGES_SUM, &[], self.drain_messages);
        line(&mut body, names::SERVER_MESSAGES_SENT, &[("type", "data")], self.data_sent);
        line(&mut body, names::SERVER_DATA_UNACKED, &[], self.unacked);
        let (count, sum) = self.shutdown_seconds.map_or((0, 0.0), |s| (1, s));
        line(&mut body, names::SERVER_SHUTDOWN_DURATION_SECONDS_COUNT, &[], count);
        line(&mut body, names::SERVER_SHUTDOWN_DURATION_SECONDS_SUM, &[], sum);
        for (reason, n) in &self.closed {
            line(&mut body, names::SERVER_SESSIONS_CLOSED, &[("reason", reason)], n);
        }
        body
    }
}

/// A client process's /metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientBody {
    /// Virtual users.
    pub users: u64,
    /// Users holding no session (the rest hold one).
    pub without_session: u64,
    /// Drains seen complete.
    pub complete: u64,
    /// Drains seen incomplete.
    pub incomplete: u64,
    /// Data frames received.
    pub received: u64,
    /// Frames lost.
    pub lost: u64,
    /// Frames received whose ack the server never got.
    pub unacked: u64,
    /// Sessions cut with no close and no notice.
    pub cut: u64,
    /// Cut sessions taken back by a resume.
    pub resumed: u64,
    /// Reconnects after a drain.
    pub reconnects_drain: u64,
    /// Reconnects after an error.
    pub reconnects_error: u64,
}

impl ClientBody {
    /// The exposition.
    pub fn render(&self) -> String {
        let mut body = String::new();
        line(&mut body, names::CLIENT_USERS, &[], self.users);
        line(&mut body, names::CLIENT_SESSIONS, &[], self.users.saturating_sub(self.without_session));
        for outcome in CLIENT_DRAIN_OUTCOMES {
            let n = match outcome {
                "complete" => self.complete,
                "incomplete" => self.incomplete,
                _ => 0,
            };
            line(&mut body, names::CLIENT_DRAINS, &[("outcome", outcome)], n);
        }
        line(&mut body, names::CLIENT_MESSAGES_RECEIVED, &[("type", "data")], self.received);
        line(&mut body, names::CLIENT_MESSAGES_LOST, &[], self.lost);
        line(&mut body, names::CLIENT_DATA_UNACKED, &[], self.unacked);
        line(&mut body, names::CLIENT_SESSIONS_CUT, &[], self.cut);
        line(&mut body, names::CLIENT_SESSIONS_RESUMED, &[], self.resumed);
        for zero in [
            names::CLIENT_MESSAGES_SKIPPED,
            names::CLIENT_DATA_DUPLICATE,
            names::CLIENT_REQUESTS_LOST,
            names::CLIENT_REQUESTS_RESENT,
        ] {
            line(&mut body, zero, &[], 0);
        }
        line(&mut body, names::CLIENT_RECONNECTS, &[("reason", "drain")], self.reconnects_drain);
        line(&mut body, names::CLIENT_RECONNECTS, &[("reason", "error")], self.reconnects_error);
        body
    }
}
