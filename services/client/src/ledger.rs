//! What one virtual user saw, kept so that loss is counted, never hidden.
//!
//! docs/protocol.md ("What lost means") defines each count for every way a
//! session can end; [`Ledger::settle`] applies those rules to a session that
//! ended, and the [`Book`] keeps the requests that outlive their session.
//! Counts saturate rather than wrap: a hostile server that sends seq 2^64-1
//! must not turn a huge loss into a small one.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::AddAssign;
use std::time::Duration;

use gsd_protocol::close;

use crate::labels::{DrainOutcome, EndReason};

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
    /// Cut sessions taken back by a resume (protocol 3): their cut is
    /// accounted for, frame by frame (a gap in the replay is lost). The
    /// cuts whose loss is unknown are `sessions_cut - sessions_resumed`.
    pub sessions_resumed: u64,
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

/// Requests survive sessions: unanswered ones are re-sent under the same id.
#[derive(Default)]
pub(crate) struct Book {
    /// Requests sent and not yet answered, by id, with their payloads: what
    /// the next session re-sends, and what is lost if the user stops first.
    pub(crate) outstanding: BTreeMap<u64, String>,
    /// Id of the next new request; ids below it have been used, so a response
    /// to one no longer outstanding is a duplicate.
    pub(crate) next_id: u64,
}

/// How one session ended, as much of it as its account needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionEnd {
    /// Why it ended.
    pub(crate) reason: EndReason,
    /// The server's close code, when a close frame came.
    pub(crate) close_code: Option<u16>,
    /// The `last_seq` of the drain's shutdown notice, when one came.
    pub(crate) notice_last_seq: Option<u64>,
    /// The `last_seq` in the server's close reason, when it gave one.
    pub(crate) close_last_seq: Option<u64>,
    /// The seq of the last data frame received in order (0: none).
    pub(crate) received_up_to: u64,
    /// Frames received and not acked when it ended (processed all the same).
    pub(crate) unacked: u64,
    /// Requests unanswered when it ended (the next session re-sends them).
    pub(crate) unanswered: u64,
}

/// A close whose `last_seq` is below its notice's: it tries to take back
/// frames the notice announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Regression {
    pub(crate) notice_last_seq: u64,
    pub(crate) close_last_seq: u64,
}

/// What [`Ledger::settle`] counted for one session, for the metrics and
/// the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settlement {
    /// Announced frames that never arrived, the user staying.
    pub(crate) lost: u64,
    /// Announced frames the user did not wait for because it was leaving.
    pub(crate) skipped: u64,
    /// The close contradicted the notice.
    pub(crate) regression: Option<Regression>,
    /// How the drain ended, when the session had one (a notice came).
    pub(crate) drain: Option<DrainOutcome>,
    /// Neither a close nor a notice: what followed is unknown.
    pub(crate) cut: bool,
}

impl Settlement {
    /// Announced frames that never arrived, lost or skipped.
    pub(crate) fn missing(&self) -> u64 {
        self.lost.saturating_add(self.skipped)
    }
}

impl Ledger {
    /// Counts a session that ended as `end` says, by the rules of
    /// docs/protocol.md ("What lost means"), and returns what it counted.
    pub(crate) fn settle(&mut self, end: &SessionEnd) -> Settlement {
        // Frames received and not acked are processed and counted unacked:
        // the client holds them, so they are not lost.
        add(&mut self.data_processed, end.unacked);
        add(&mut self.data_unacked, end.unacked);
        let leaving = end.reason == EndReason::Shutdown;
        // A frame is owed once any notice or close announced it: the highest
        // last_seq either gave (`None` is below any `Some`). A close cannot
        // take back what the notice announced.
        let last_seq = end.notice_last_seq.max(end.close_last_seq);
        // The close takes back frames the notice announced (sends the drain
        // deadline cut short, or a forged account): they stay owed, and the
        // drain cannot be complete.
        let regression = match (end.notice_last_seq, end.close_last_seq) {
            (Some(notice_last_seq), Some(close_last_seq)) if close_last_seq < notice_last_seq => {
                Some(Regression { notice_last_seq, close_last_seq })
            }
            _ => None,
        };
        let missing = last_seq.map_or(0, |last| last.saturating_sub(end.received_up_to));
        let (lost, skipped) = if leaving { (0, missing) } else { (missing, 0) };
        add(&mut self.messages_lost, lost);
        add(&mut self.messages_skipped, skipped);
        let drain = end.notice_last_seq.map(|_| {
            if leaving {
                DrainOutcome::ClientLeft
            } else if end.close_code == Some(close::GOING_AWAY)
                && missing == 0
                && end.unacked == 0
                && end.unanswered == 0
                && regression.is_none()
            {
                DrainOutcome::Complete
            } else {
                DrainOutcome::Incomplete
            }
        });
        match drain {
            Some(DrainOutcome::Complete) => add(&mut self.drains_complete, 1),
            Some(DrainOutcome::Incomplete) => add(&mut self.drains_incomplete, 1),
            Some(DrainOutcome::ClientLeft) => add(&mut self.drains_client_left, 1),
            None => {}
        }
        let cut = matches!(end.reason, EndReason::Error | EndReason::Timeout)
            && end.close_code.is_none()
            && last_seq.is_none();
        if cut {
            add(&mut self.sessions_cut, 1);
        }
        Settlement { lost, skipped, regression, drain, cut }
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
        add(&mut self.sessions_resumed, other.sessions_resumed);
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

    fn end(
        reason: EndReason,
        close_code: Option<u16>,
        notice: Option<u64>,
        close: Option<u64>,
        got: u64,
    ) -> SessionEnd {
        SessionEnd {
            reason,
            close_code,
            notice_last_seq: notice,
            close_last_seq: close,
            received_up_to: got,
            unacked: 0,
            unanswered: 0,
        }
    }

    #[test]
    fn a_drain_is_complete_only_with_close_1001_and_nothing_owed() {
        let mut ledger = Ledger::default();
        let going_away = Some(close::GOING_AWAY);
        let settled = ledger.settle(&end(EndReason::Drain, going_away, Some(5), Some(5), 5));
        assert_eq!(settled.drain, Some(DrainOutcome::Complete));
        assert_eq!((settled.missing(), settled.cut, settled.regression), (0, false, None));
        // One frame short, one unacked, one unanswered, or another close code: incomplete.
        let short = end(EndReason::Drain, going_away, Some(5), Some(5), 4);
        let unacked = SessionEnd { unacked: 1, ..end(EndReason::Drain, going_away, Some(5), Some(5), 5) };
        let unanswered = SessionEnd { unanswered: 1, ..end(EndReason::Drain, going_away, Some(5), Some(5), 5) };
        let normal = end(EndReason::Drain, Some(close::NORMAL), Some(5), Some(5), 5);
        for case in [short, unacked, unanswered, normal] {
            assert_eq!(ledger.settle(&case).drain, Some(DrainOutcome::Incomplete), "{case:?}");
        }
        assert_eq!((ledger.drains_complete, ledger.drains_incomplete, ledger.messages_lost), (1, 4, 1));
        assert_eq!((ledger.data_unacked, ledger.data_processed), (1, 1));
    }

    #[test]
    fn a_close_cannot_take_back_what_the_notice_announced() {
        let mut ledger = Ledger::default();
        let settled = ledger.settle(&end(EndReason::Drain, Some(close::GOING_AWAY), Some(5), Some(2), 2));
        assert_eq!(settled.regression, Some(Regression { notice_last_seq: 5, close_last_seq: 2 }));
        assert_eq!((settled.lost, settled.skipped, settled.drain), (3, 0, Some(DrainOutcome::Incomplete)));
        assert_eq!((ledger.messages_lost, ledger.drains_incomplete), (3, 1));
        // Without a notice, the close's last_seq alone says what was owed.
        let settled = ledger.settle(&end(EndReason::GoingAway, Some(close::GOING_AWAY), None, Some(9), 7));
        assert_eq!((settled.lost, settled.drain, settled.regression), (2, None, None));
    }

    #[test]
    fn a_leaving_user_skips_what_it_did_not_wait_for_and_only_silence_is_a_cut() {
        let mut ledger = Ledger::default();
        let settled = ledger.settle(&end(EndReason::Shutdown, None, Some(6), None, 2));
        assert_eq!((settled.lost, settled.skipped, settled.drain), (0, 4, Some(DrainOutcome::ClientLeft)));
        assert_eq!((ledger.messages_skipped, ledger.messages_lost, ledger.drains_client_left), (4, 0, 1));
        assert!(ledger.clean());
        for (reason, cut) in [(EndReason::Error, true), (EndReason::Timeout, true), (EndReason::ServerClose, false)] {
            assert_eq!(ledger.settle(&end(reason, None, None, None, 3)).cut, cut, "{reason:?}");
        }
        // A close code or a notice says what the server sent: not a cut.
        assert!(!ledger.settle(&end(EndReason::Error, Some(1011), None, None, 3)).cut);
        assert!(!ledger.settle(&end(EndReason::Timeout, None, Some(3), None, 3)).cut);
        assert_eq!(ledger.sessions_cut, 2);
    }
}
