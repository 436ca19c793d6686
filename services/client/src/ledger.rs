//! What one virtual user saw, kept so that loss is counted, never hidden.

use std::collections::BTreeSet;
use std::ops::AddAssign;
use std::time::Duration;

/// One virtual user's account of its sessions. Summed over users it is the
/// process's account ([`AddAssign`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Sessions started (welcomes received).
    pub sessions: u64,
    /// Every server id that welcomed this user.
    pub server_ids: BTreeSet<String>,
    /// Drains in which every announced frame arrived, was acked, every
    /// request was answered, and close 1001 followed.
    pub drains_complete: u64,
    /// Drains that fell short of that.
    pub drains_incomplete: u64,
    /// Data frames received.
    pub data_received: u64,
    /// Data frames known to exist but never received: seq gaps, and frames a
    /// notice announced that did not arrive before the close.
    pub messages_lost: u64,
    /// Requests sent, counting a re-send once more.
    pub requests_sent: u64,
    /// Responses that matched an outstanding request.
    pub requests_answered: u64,
    /// Requests re-sent on a later session (same id).
    pub requests_resent: u64,
    /// Requests still unanswered when the user stopped.
    pub requests_lost: u64,
    /// Responses for requests already answered, dropped.
    pub duplicate_responses: u64,
    /// Sessions that followed an earlier one.
    pub reconnects: u64,
    /// Sum and maximum of the reconnect latencies.
    pub reconnect_latency_total: Duration,
    pub reconnect_latency_max: Duration,
}

impl Ledger {
    pub fn record_reconnect(&mut self, latency: Duration) {
        self.reconnects += 1;
        self.reconnect_latency_total += latency;
        self.reconnect_latency_max = self.reconnect_latency_max.max(latency);
    }

    /// Whether anything was lost or any drain fell short.
    pub fn clean(&self) -> bool {
        self.messages_lost == 0 && self.requests_lost == 0 && self.drains_incomplete == 0
    }
}

impl AddAssign<&Ledger> for Ledger {
    fn add_assign(&mut self, other: &Ledger) {
        self.sessions += other.sessions;
        self.server_ids.extend(other.server_ids.iter().cloned());
        self.drains_complete += other.drains_complete;
        self.drains_incomplete += other.drains_incomplete;
        self.data_received += other.data_received;
        self.messages_lost += other.messages_lost;
        self.requests_sent += other.requests_sent;
        self.requests_answered += other.requests_answered;
        self.requests_resent += other.requests_resent;
        self.requests_lost += other.requests_lost;
        self.duplicate_responses += other.duplicate_responses;
        self.reconnects += other.reconnects;
        self.reconnect_latency_total += other.reconnect_latency_total;
        self.reconnect_latency_max = self.reconnect_latency_max.max(other.reconnect_latency_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_add_and_maxima_take_the_larger() {
        let mut a = Ledger { sessions: 2, messages_lost: 1, ..Default::default() };
        a.server_ids.insert("s0".into());
        a.record_reconnect(Duration::from_millis(30));
        let mut b = Ledger { sessions: 3, drains_complete: 4, ..Default::default() };
        b.server_ids.insert("s1".into());
        b.record_reconnect(Duration::from_millis(10));
        b.record_reconnect(Duration::from_millis(50));
        let mut total = Ledger::default();
        total += &a;
        total += &b;
        assert_eq!(total.sessions, 5);
        assert_eq!(total.reconnects, 3);
        assert_eq!(total.reconnect_latency_total, Duration::from_millis(90));
        assert_eq!(total.reconnect_latency_max, Duration::from_millis(50));
        assert_eq!(total.server_ids.len(), 2);
        assert!(!total.clean());
        assert!(b.clean());
    }
}
