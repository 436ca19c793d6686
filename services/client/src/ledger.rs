//! What one virtual user saw, kept so that loss is counted, never hidden.
//!
//! docs/protocol.md ("What lost means") defines each count for every way a
//! session can end. Counts saturate rather than wrap: a hostile server that
//! sends seq 2^64-1 must not turn a huge loss into a small one.

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
    /// Drains that fell short of that while this user stayed.
    pub drains_incomplete: u64,
    /// Drains this user cut short itself by leaving (client shutdown).
    pub drains_client_left: u64,
    /// Data frames received.
    pub data_received: u64,
    /// Data frames processed, including those still in processing when
    /// their session ended (the client holds them, so it finishes them):
    /// equal to `data_received` once the user stops, which shows that no
    /// received frame was dropped.
    pub data_processed: u64,
    /// Received frames whose ack the server never got because the session
    /// ended first (still in processing, or the ack could not be sent). Not
    /// lost, the client has them; the server counts them unacked on its
    /// side, and this is the client's half of that reconciliation.
    pub data_unacked: u64,
    /// Data frames with a seq below the one expected (a duplicate or a
    /// reorder), ignored: a server that re-sends must show, not pass unseen.
    pub data_duplicate: u64,
    /// Data frames the server sent or announced that never arrived, in
    /// sessions this user did not leave on its own: seq gaps, and frames up
    /// to the `last_seq` of a notice or a close that did not arrive.
    pub messages_lost: u64,
    /// Announced frames this user did not wait for because it was leaving.
    pub messages_skipped: u64,
    /// Sessions that ended with neither a close frame nor a notice (a crash,
    /// a kill, a dead network): what the server sent after the last frame
    /// received cannot be known, so it is not counted in `messages_lost`.
    pub sessions_cut: u64,
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
    /// Sum of the reconnect latencies, for their mean.
    pub reconnect_latency_total: Duration,
    /// The longest reconnect latency: the `client_exit` line reports it, and
    /// the lab's report shows it as the worst failover a user saw.
    pub reconnect_latency_max: Duration,
}

impl Ledger {
    pub fn record_reconnect(&mut self, latency: Duration) {
        self.reconnects = self.reconnects.saturating_add(1);
        self.reconnect_latency_total += latency;
        self.reconnect_latency_max = self.reconnect_latency_max.max(latency);
    }

    /// Whether anything was lost or any drain fell short.
    pub fn clean(&self) -> bool {
        self.messages_lost == 0 && self.requests_lost == 0 && self.drains_incomplete == 0
    }
}

/// `*to += n`, saturating.
pub(crate) fn add(to: &mut u64, n: u64) {
    *to = to.saturating_add(n);
}

impl AddAssign<&Ledger> for Ledger {
    /// Counts saturate at `u64::MAX`: a total that wrapped would read as
    /// (almost) nothing lost.
    fn add_assign(&mut self, other: &Ledger) {
        add(&mut self.sessions, other.sessions);
        self.server_ids.extend(other.server_ids.iter().cloned());
        add(&mut self.drains_complete, other.drains_complete);
        add(&mut self.drains_incomplete, other.drains_incomplete);
        add(&mut self.drains_client_left, other.drains_client_left);
        add(&mut self.data_received, other.data_received);
        add(&mut self.data_processed, other.data_processed);
        add(&mut self.data_unacked, other.data_unacked);
        add(&mut self.data_duplicate, other.data_duplicate);
        add(&mut self.messages_lost, other.messages_lost);
        add(&mut self.messages_skipped, other.messages_skipped);
        add(&mut self.sessions_cut, other.sessions_cut);
        add(&mut self.requests_sent, other.requests_sent);
        add(&mut self.requests_answered, other.requests_answered);
        add(&mut self.requests_resent, other.requests_resent);
        add(&mut self.requests_lost, other.requests_lost);
        add(&mut self.duplicate_responses, other.duplicate_responses);
        add(&mut self.reconnects, other.reconnects);
        self.reconnect_latency_total = self.reconnect_latency_total.saturating_add(other.reconnect_latency_total);
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

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let mut total = Ledger { messages_lost: u64::MAX - 1, ..Default::default() };
        total += &Ledger { messages_lost: 5, messages_skipped: 3, ..Default::default() };
        assert_eq!(total.messages_lost, u64::MAX);
        assert_eq!(total.messages_skipped, 3);
        assert!(!total.clean());
    }

    #[test]
    fn skipped_unacked_duplicate_frames_and_cut_sessions_are_not_loss() {
        let ledger = Ledger {
            messages_skipped: 7,
            drains_client_left: 2,
            sessions_cut: 1,
            data_unacked: 3,
            data_duplicate: 4,
            ..Default::default()
        };
        assert!(ledger.clean());
        let mut total = Ledger { data_processed: 1, data_unacked: 1, ..Default::default() };
        total += &ledger;
        assert_eq!((total.data_processed, total.data_unacked, total.data_duplicate), (1, 4, 4));
    }
}
