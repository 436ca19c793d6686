//! The two sides' accounts, each read from one `/metrics` body: what a
//! server pod says of its drain, and what a client process says of what it
//! received. Every series the judge relies on must be there: a missing one
//! is an error naming it, not a zero.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::exposition::{Exposition, ParseError};
use crate::names::{self, Metric};

/// Why a body is no account.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    /// Not an exposition at all.
    #[error("not a /metrics body: {0}")]
    Parse(#[from] ParseError),
    /// A series the judge needs is absent (every gsd counter is exported
    /// from start-up, so its absence means the body is not gsd's, or not
    /// whole).
    #[error("{series} is missing")]
    Missing {
        /// The series, with its labels.
        series: String,
    },
    /// A count that is negative, fractional or not a number: a forged or
    /// corrupted body.
    #[error("{series} is {value}, not a count")]
    NotACount {
        /// The series, with its labels.
        series: String,
        /// What it read.
        value: f64,
    },
    /// A counter lower than before: the process restarted between the two
    /// scrapes, so the difference means nothing.
    #[error("{series} went back from {before} to {after}: the process restarted, its counts cannot be compared")]
    WentBack {
        /// The series, with its labels.
        series: String,
        /// The earlier value.
        before: u64,
        /// The later one.
        after: u64,
    },
}

/// The outcomes every server exports from start-up.
pub const SERVER_DRAIN_OUTCOMES: [&str; 5] = ["complete", "incomplete", "client_left", "peer_lost", "reset"];
/// The outcomes every client exports from start-up.
pub const CLIENT_DRAIN_OUTCOMES: [&str; 3] = ["complete", "incomplete", "client_left"];

/// A count: present, finite, whole and not negative.
fn count(e: &Exposition, metric: Metric, labels: &[(&str, &str)]) -> Result<u64, AccountError> {
    let value = e.get(metric, labels).ok_or_else(|| AccountError::Missing { series: metric.at(labels) })?;
    if !(value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value < u64::MAX as f64) {
        return Err(AccountError::NotACount { series: metric.at(labels), value });
    }
    Ok(value as u64)
}

/// A server pod's account, from one scrape (its last, for a drain).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerAccount {
    /// Sessions open at the scrape.
    pub sessions: u64,
    /// Drained sessions by outcome (`complete`, `incomplete`, `client_left`,
    /// `peer_lost`, and any other the server exports).
    pub drains: BTreeMap<String, u64>,
    /// Data frames sent in the drain phase.
    pub drain_messages: u64,
    /// Data frames sent over the pod's life.
    pub data_sent: u64,
    /// Data frames sent and never acknowledged when their session ended.
    pub unacked: u64,
    /// Signal to last close, in seconds, once the drain ended; `None` while
    /// it has not.
    pub shutdown_seconds: Option<f64>,
    /// Drains ended (observations of the shutdown duration): 0 while
    /// serving, 1 once its one drain ended.
    pub shutdowns: u64,
    /// Sessions closed, by `reason` (`drain_complete`, `client_close`, ...),
    /// as many reasons as the body has.
    pub closed: BTreeMap<String, u64>,
}

impl ServerAccount {
    /// Reads a server's `/metrics` body.
    pub fn parse(body: &str) -> Result<ServerAccount, AccountError> {
        Self::read(&Exposition::parse(body)?)
    }

    /// Reads a parsed server exposition.
    pub fn read(e: &Exposition) -> Result<ServerAccount, AccountError> {
        let mut drains = BTreeMap::new();
        for outcome in SERVER_DRAIN_OUTCOMES {
            drains.insert(outcome.to_owned(), count(e, names::SERVER_DRAINS, &[("outcome", outcome)])?);
        }
        for outcome in e.by_label(names::SERVER_DRAINS, "outcome").into_keys() {
            if let std::collections::btree_map::Entry::Vacant(slot) = drains.entry(outcome) {
                let n = count(e, names::SERVER_DRAINS, &[("outcome", slot.key())])?;
                slot.insert(n);
            }
        }
        let shutdowns = count(e, names::SERVER_SHUTDOWN_DURATION_SECONDS_COUNT, &[])?;
        let ended = shutdowns >= 1;
        let shutdown = e.get(names::SERVER_SHUTDOWN_DURATION_SECONDS_SUM, &[]);
        let series = || names::SERVER_SHUTDOWN_DURATION_SECONDS_SUM.name().to_owned();
        match shutdown {
            None if ended => return Err(AccountError::Missing { series: series() }),
            Some(value) if !(value.is_finite() && value >= 0.0) => {
                return Err(AccountError::NotACount { series: series(), value });
            }
            _ => {}
        }
        let mut closed = BTreeMap::new();
        for reason in e.by_label(names::SERVER_SESSIONS_CLOSED, "reason").into_keys() {
            let n = count(e, names::SERVER_SESSIONS_CLOSED, &[("reason", &reason)])?;
            closed.insert(reason, n);
        }
        Ok(ServerAccount {
            sessions: count(e, names::SERVER_SESSIONS, &[])?,
            drains,
            drain_messages: count(e, names::SERVER_DRAIN_MESSAGES_SUM, &[])?,
            data_sent: count(e, names::SERVER_MESSAGES_SENT, &[("type", "data")])?,
            unacked: count(e, names::SERVER_DATA_UNACKED, &[])?,
            shutdown_seconds: if ended { shutdown } else { None },
            shutdowns,
            closed,
        })
    }

    /// Sessions drained, whatever the outcome.
    pub fn drained(&self) -> u64 {
        self.drains.values().copied().fold(0, u64::saturating_add)
    }

    /// Drained sessions with `outcome`.
    pub fn drains(&self, outcome: &str) -> u64 {
        self.drains.get(outcome).copied().unwrap_or(0)
    }

    /// Sessions closed for `reason` (0 when the body has no such series).
    pub fn closed(&self, reason: &str) -> u64 {
        self.closed.get(reason).copied().unwrap_or(0)
    }
}

/// A client process's account (or the difference of two, or a sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientAccount {
    /// Virtual users (a gauge: the later value in a difference).
    pub users: u64,
    /// Users holding a session (a gauge, likewise).
    pub sessions: u64,
    /// Drains seen complete.
    pub drains_complete: u64,
    /// Drains seen short while the user stayed.
    pub drains_incomplete: u64,
    /// Drains the user cut short by leaving.
    pub drains_client_left: u64,
    /// Data frames received.
    pub received: u64,
    /// Frames announced or sent that never arrived.
    pub lost: u64,
    /// Announced frames a leaving user did not wait for.
    pub skipped: u64,
    /// Frames received whose ack the server never got.
    pub unacked: u64,
    /// Frames received twice or out of order.
    pub duplicate: u64,
    /// Sessions ended with no close and no notice.
    pub cut: u64,
    /// Of those, sessions taken back by a resume (protocol 3): the server
    /// replayed what they missed, and any gap in it is in `lost`.
    pub resumed: u64,
    /// Requests never answered.
    pub requests_lost: u64,
    /// Requests re-sent on a next session.
    pub requests_resent: u64,
    /// Reconnects, every reason.
    pub reconnects: u64,
    /// Reconnects after a drain (`reason="drain"`).
    pub reconnects_drain: u64,
}

/// A counter field of a [`ClientAccount`], its metric and its one label.
type Counter<'a> = (&'a mut u64, Metric, Option<(&'static str, &'static str)>);

/// The counters of a [`ClientAccount`], with their series, in one list:
/// read, subtract and add go through it, so no field is forgotten by one.
fn client_counters(a: &mut ClientAccount) -> [Counter<'_>; 13] {
    [
        (&mut a.drains_complete, names::CLIENT_DRAINS, Some(("outcome", "complete"))),
        (&mut a.drains_incomplete, names::CLIENT_DRAINS, Some(("outcome", "incomplete"))),
        (&mut a.drains_client_left, names::CLIENT_DRAINS, Some(("outcome", "client_left"))),
        (&mut a.received, names::CLIENT_MESSAGES_RECEIVED, Some(("type", "data"))),
        (&mut a.lost, names::CLIENT_MESSAGES_LOST, None),
        (&mut a.skipped, names::CLIENT_MESSAGES_SKIPPED, None),
        (&mut a.unacked, names::CLIENT_DATA_UNACKED, None),
        (&mut a.duplicate, names::CLIENT_DATA_DUPLICATE, None),
        (&mut a.cut, names::CLIENT_SESSIONS_CUT, None),
        (&mut a.resumed, names::CLIENT_SESSIONS_RESUMED, None),
        (&mut a.requests_lost, names::CLIENT_REQUESTS_LOST, None),
        (&mut a.requests_resent, names::CLIENT_REQUESTS_RESENT, None),
        (&mut a.reconnects_drain, names::CLIENT_RECONNECTS, Some(("reason", "drain"))),
    ]
}

impl ClientAccount {
    /// Reads a client's `/metrics` body.
    pub fn parse(body: &str) -> Result<ClientAccount, AccountError> {
        Self::read(&Exposition::parse(body)?)
    }

    /// Reads a parsed client exposition.
    pub fn read(e: &Exposition) -> Result<ClientAccount, AccountError> {
        let mut account = ClientAccount {
            users: count(e, names::CLIENT_USERS, &[])?,
            sessions: count(e, names::CLIENT_SESSIONS, &[])?,
            ..ClientAccount::default()
        };
        for (field, metric, label) in client_counters(&mut account) {
            *field = count(e, metric, label.as_slice())?;
        }
        let mut reconnects = 0u64;
        for (reason, _) in e.by_label(names::CLIENT_RECONNECTS, "reason") {
            reconnects = reconnects.saturating_add(count(e, names::CLIENT_RECONNECTS, &[("reason", &reason)])?);
        }
        account.reconnects = reconnects;
        Ok(account)
    }

    /// Ends of sessions this account saw: drains of any outcome, and cuts.
    pub fn ends(&self) -> u64 {
        [self.drains_complete, self.drains_incomplete, self.drains_client_left, self.cut]
            .into_iter()
            .fold(0, u64::saturating_add)
    }

    /// Cut sessions whose loss is unknown: those no resume took back.
    pub fn unknown_cuts(&self) -> u64 {
        self.cut.saturating_sub(self.resumed)
    }

    /// What happened from `before` to `self`; gauges keep `self`'s value.
    /// A counter that went back means the process restarted.
    pub fn since(&self, before: &ClientAccount) -> Result<ClientAccount, AccountError> {
        let mut delta = *self;
        let mut earlier = *before;
        let pairs = client_counters(&mut delta).into_iter().zip(client_counters(&mut earlier));
        for ((after, metric, label), (before, ..)) in pairs {
            *after = after.checked_sub(*before).ok_or(AccountError::WentBack {
                series: metric.at(label.as_slice()),
                before: *before,
                after: *after,
            })?;
        }
        delta.reconnects = self.reconnects.checked_sub(before.reconnects).ok_or(AccountError::WentBack {
            series: names::CLIENT_RECONNECTS.name().to_owned(),
            before: before.reconnects,
            after: self.reconnects,
        })?;
        Ok(delta)
    }
}

impl std::ops::AddAssign<&ClientAccount> for ClientAccount {
    /// Sums two processes' accounts (saturating).
    fn add_assign(&mut self, other: &ClientAccount) {
        let mut other = *other;
        self.users = self.users.saturating_add(other.users);
        self.sessions = self.sessions.saturating_add(other.sessions);
        self.reconnects = self.reconnects.saturating_add(other.reconnects);
        for ((to, ..), (from, ..)) in client_counters(self).into_iter().zip(client_counters(&mut other)) {
            *to = to.saturating_add(*from);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::fixture::{ClientBody, ServerBody};

    /// A server body with `complete` and `incomplete` drains, ended.
    pub(crate) fn server_body(complete: u64, incomplete: u64, unacked: u64) -> String {
        ServerBody { unacked, ..ServerBody::ended(complete, incomplete, 12) }.render()
    }

    /// A client body; `lost` frames lost, everything else 0 but the users.
    pub(crate) fn client_body(users: u64, complete: u64, lost: u64) -> String {
        let reconnects = ClientBody { reconnects_drain: complete, reconnects_error: 1, ..ClientBody::default() };
        ClientBody { users, complete, received: 100, lost, ..reconnects }.render()
    }

    #[test]
    fn a_server_account_reads_every_outcome_and_the_drain_end() {
        let a = ServerAccount::parse(&server_body(3, 1, 2)).unwrap();
        assert_eq!((a.drained(), a.drains("complete"), a.drains("incomplete")), (4, 3, 1));
        assert_eq!((a.drain_messages, a.data_sent, a.unacked, a.shutdown_seconds), (12, 40, 2, Some(0.25)));
        assert_eq!((a.shutdowns, a.closed("drain_complete"), a.closed("client_close")), (1, 3, 0));
        let extra = server_body(1, 0, 0) + &names::SERVER_DRAINS.at(&[("outcome", "later")]) + " 2\n";
        assert_eq!(ServerAccount::parse(&extra).unwrap().drained(), 3, "an outcome the judge does not know counts");
        let running = server_body(0, 0, 0).replace("seconds_count 1", "seconds_count 0");
        assert_eq!(ServerAccount::parse(&running).unwrap().shutdown_seconds, None);
    }

    #[test]
    fn a_missing_series_or_a_forged_count_is_refused_by_name() {
        let body = server_body(3, 0, 0);
        let peer_lost = names::SERVER_DRAINS.at(&[("outcome", "peer_lost")]);
        let without = body.replace(&format!("{peer_lost} 0\n"), "");
        assert_eq!(ServerAccount::parse(&without), Err(AccountError::Missing { series: peer_lost }));
        for (value, shown) in [("-1", -1.0), ("2.5", 2.5), ("NaN", f64::NAN), ("+Inf", f64::INFINITY)] {
            let unacked = names::SERVER_DATA_UNACKED;
            let forged = body.replace(&format!("{unacked} 0"), &format!("{unacked} {value}"));
            match ServerAccount::parse(&forged) {
                Err(AccountError::NotACount { series, value }) => {
                    assert_eq!(series, names::SERVER_DATA_UNACKED.name());
                    assert!(value == shown || (value.is_nan() && shown.is_nan()), "{value}");
                }
                other => panic!("{value}: {other:?}"),
            }
        }
        assert!(matches!(ServerAccount::parse("502 Bad Gateway"), Err(AccountError::Parse(_))));
        let client = client_body(5, 0, 0).replace(&format!("{} 0\n", names::CLIENT_DATA_UNACKED), "");
        assert_eq!(
            ClientAccount::parse(&client),
            Err(AccountError::Missing { series: names::CLIENT_DATA_UNACKED.at(&[]) })
        );
    }

    #[test]
    fn client_differences_subtract_counters_keep_gauges_and_refuse_a_restart() {
        let before = ClientAccount::parse(&client_body(5, 2, 1)).unwrap();
        let after = ClientAccount::parse(&client_body(6, 7, 4)).unwrap();
        let d = after.since(&before).unwrap();
        assert_eq!(
            (d.users, d.drains_complete, d.lost, d.received, d.reconnects_drain, d.reconnects),
            (6, 5, 3, 0, 5, 5)
        );
        assert_eq!(
            before.since(&after),
            Err(AccountError::WentBack {
                series: names::CLIENT_DRAINS.at(&[("outcome", "complete")]),
                before: 7,
                after: 2
            })
        );
        let mut sum = before;
        sum += &after;
        assert_eq!((sum.users, sum.lost, sum.reconnects), (11, 5, 11));
    }
}
