//! The report: what each drain did and what the clients' ledgers say (the
//! model, serialised as `--json`), the rules that turn them into a verdict,
//! and the text on stdout. Nothing here runs a process; it reads what the
//! lab collected.

use gsd_telemetry::names;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use gsd_verdict::report::Case;
use gsd_verdict::{ClientAccount, DrainEvidence, Ending, Reason, ServerAccount};

use crate::config::{Affinity, LabConfig, Scenario};
use crate::harness::gsd::percentile;
use crate::harness::{ClientExit, Reconnect};

/// How a row's termination ended, as the lab shows it: the server's own
/// account for a drain, else how the pod ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It drained every session it held, each complete by its account.
    Complete,
    /// It exited, short of that.
    Incomplete,
    /// SIGKILLed at the grace period.
    Sigkilled,
    /// SIGKILLed with no drain.
    Killed,
    /// Its network vanished.
    Partitioned,
}

impl Outcome {
    /// The word in the report's table.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Incomplete => "incomplete",
            Outcome::Sigkilled => "sigkilled",
            Outcome::Killed => "killed",
            Outcome::Partitioned => "partitioned",
        }
    }
}

/// One drain (or kill, or partition) the lab caused.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRow {
    /// Which round of the scenario caused it.
    pub round: u32,
    /// The pod drained.
    pub pod: String,
    /// Sessions the pod held when it was deleted.
    pub sessions: u64,
    /// Sessions the pod drained (`gsd_server_drains_total`, every outcome).
    pub drained: u64,
    /// Data frames sent in its drain phase (`gsd_server_drain_messages_sum`).
    pub messages: u64,
    /// `gsd_server_shutdown_duration_seconds_sum`, when the drain finished;
    /// for a partition, how long the pod took to free its sessions.
    pub shutdown_seconds: Option<f64>,
    /// What the table shows.
    pub outcome: Outcome,
    /// How the termination ended, as the judge takes it.
    pub ending: Ending,
    /// Whether the pod ended by SIGKILL (a kill, a partition's node loss, or
    /// the grace period running out).
    pub sigkilled: bool,
    /// Sessions the pod gave up because the client went silent
    /// (`gsd_server_sessions_closed_total{reason="timeout"}` and drains
    /// `peer_lost`).
    pub peer_timeouts: u64,
    /// Data frames the pod sent that were never acknowledged
    /// (`gsd_server_data_unacked_total`): delivered or lost, the pod cannot
    /// tell. `None` when the pod was killed and its counters died with it.
    pub unacked: Option<u64>,
    /// Users whose next session after this pod was on another pod.
    pub moved: u64,
    /// The pod's own final account, as the judge reads it; `None` when it
    /// was killed or its last body was no account (`account_error`).
    pub server: Option<ServerAccount>,
    /// Its account just before its termination began (its counters cover
    /// its life; the judge takes their change).
    #[serde(skip)]
    pub server_before: Option<ServerAccount>,
    /// Why the pod's last body was refused as an account.
    pub account_error: Option<String>,
    /// What the clients' accounts changed by from just before this pod's
    /// termination until its users were back: the other side of `server`.
    pub clients: Option<ClientAccount>,
}

/// Whether a terminated pod's account says its drain finished: the body
/// that carried its shutdown histogram, or only an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// The pod's final account of its drain was read.
    Finished,
    /// The pod never showed its drain over (killed, cut, or stuck).
    Unfinished,
}

impl DrainRow {
    /// The row of a deleted pod, from its final `/metrics` account (the
    /// first scrape after its drain, else the last it answered).
    pub fn deleted(round: u32, pod: &str, sessions: u64, ending: Ending, account: &str, drain: Drain) -> DrainRow {
        DrainRow::terminated(round, pod, sessions, ending, None, account, drain)
    }

    /// The same, with the pod's account from just before its termination.
    pub fn terminated(
        round: u32,
        pod: &str,
        sessions: u64,
        ending: Ending,
        before: Option<&str>,
        account: &str,
        drain: Drain,
    ) -> DrainRow {
        let drained = drain == Drain::Finished;
        let (server, account_error) = match ending {
            Ending::Killed => (None, None),
            _ => match ServerAccount::parse(account) {
                Ok(a) => (Some(a), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        let server_before = before.and_then(|b| ServerAccount::parse(b).ok());
        let base = server_before.as_ref();
        let total =
            server.as_ref().map_or(0, ServerAccount::drained).saturating_sub(base.map_or(0, ServerAccount::drained));
        let done = |s: &ServerAccount| s.drains("complete").saturating_add(s.drains("client_left"));
        let complete = server.as_ref().map_or(0, done).saturating_sub(base.map_or(0, done));
        let outcome = match ending {
            Ending::Killed => Outcome::Killed,
            Ending::GraceRanOut => Outcome::Sigkilled,
            Ending::Partitioned => Outcome::Partitioned,
            // Drains a leaving client cut short are its choice, not the pod's.
            Ending::Exited if drained && total == complete && total >= sessions => Outcome::Complete,
            Ending::Exited => Outcome::Incomplete,
        };
        let timeouts = gsd_telemetry::sample(account, names::SERVER_SESSIONS_CLOSED.at(&[("reason", "timeout")]));
        DrainRow {
            round,
            pod: pod.to_owned(),
            sessions,
            drained: total,
            messages: server.as_ref().map_or(0, |s| s.drain_messages),
            shutdown_seconds: if drained { server.as_ref().and_then(|s| s.shutdown_seconds) } else { None },
            outcome,
            ending,
            sigkilled: ending != Ending::Exited,
            peer_timeouts: server
                .as_ref()
                .map_or(0, |s| s.drains("peer_lost"))
                .saturating_add(timeouts.unwrap_or(0.0) as u64),
            unacked: server.as_ref().map(|s| s.unacked),
            moved: 0,
            server,
            server_before,
            account_error,
            clients: None,
        }
    }

    /// The row of a partitioned pod, from its last scrape behind the cut;
    /// `freed_after` is how long it took to give up its sessions.
    pub fn partitioned(
        round: u32,
        pod: &str,
        sessions: u64,
        freed_after: Duration,
        before: Option<&str>,
        account: &str,
    ) -> DrainRow {
        let mut row =
            DrainRow::terminated(round, pod, sessions, Ending::Partitioned, before, account, Drain::Unfinished);
        row.drained = 0;
        row.messages = 0;
        row.shutdown_seconds = Some(freed_after.as_secs_f64());
        row
    }

    /// The row as the judge takes it.
    pub fn evidence(&self, grace: Duration) -> DrainEvidence {
        DrainEvidence {
            pod: self.pod.clone(),
            held: self.sessions,
            ending: self.ending,
            server: self.server.clone(),
            server_before: self.server_before.clone(),
            clients: self.clients,
            moved: Some(self.moved),
            grace,
        }
    }
}

/// Reconnect latency quantiles, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest reconnect.
    pub max_ms: f64,
}

/// The clients' ledgers, summed, and their reconnects.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientTotals {
    /// Virtual users, over every client process.
    pub users: u64,
    /// Sessions opened after a previous one ended.
    pub reconnects: u64,
    /// The same, by why the previous session ended (`drain`, `error`,
    /// `timeout`, ...).
    pub reconnects_by_reason: BTreeMap<String, u64>,
    /// From a session's end to the next welcome.
    pub reconnect_latency: Latency,
    /// Drains in which every announced frame arrived.
    pub drains_complete: u64,
    /// Drains in which some announced frame never arrived: loss.
    pub drains_incomplete: u64,
    /// Drains the clients cut short themselves by leaving.
    pub drains_client_left: u64,
    /// Frames a server announced or sent that no user received.
    pub messages_lost: u64,
    /// Announced frames the clients did not wait for because they left.
    pub messages_skipped: u64,
    /// Sessions that ended with no close and no notice: loss in them cannot
    /// be counted by anyone, so it is not in `messages_lost`.
    pub sessions_cut: u64,
    /// Of those, sessions a resume took back (replayed from the client's
    /// last frame): their loss is known, and in `messages_lost`.
    pub sessions_resumed: u64,
    /// Data frames the clients received but whose ack their server never
    /// got, the session having ended first: processed, not lost; the
    /// clients' side of the pods' unacked counts.
    pub data_unacked: u64,
    /// Data frames below the seq a client expected (duplicates, reorders),
    /// ignored: gsd-server sends none, so any is worth a line.
    pub data_duplicate: u64,
    /// Requests never answered, on any session.
    pub requests_lost: u64,
    /// Requests sent again on a next session after theirs ended unanswered.
    pub requests_resent: u64,
}

impl ClientTotals {
    /// Adds one client's `client_exit` ledger.
    pub fn add_exit(&mut self, exit: &ClientExit) {
        self.users += exit.n("users");
        self.reconnects += exit.n("reconnects");
        self.drains_complete += exit.n("drains_complete");
        self.drains_incomplete += exit.n("drains_incomplete");
        self.drains_client_left += exit.n("drains_client_left");
        self.messages_lost += exit.n("messages_lost");
        self.messages_skipped += exit.n("messages_skipped");
        self.sessions_cut += exit.n("sessions_cut");
        self.sessions_resumed += exit.n("sessions_resumed");
        self.data_unacked += exit.n("data_unacked");
        self.data_duplicate += exit.n("data_duplicate");
        self.requests_lost += exit.n("requests_lost");
        self.requests_resent += exit.n("requests_resent");
    }

    /// Counts every client's reconnects by reason, their latency quantiles,
    /// and, on each row, the users that left its pod for another.
    pub fn add_reconnects(&mut self, reconnects: &[Reconnect], rows: &mut [DrainRow]) {
        let mut latencies = Vec::new();
        for r in reconnects {
            *self.reconnects_by_reason.entry(r.reason.clone()).or_default() += 1;
            latencies.push(r.latency_ms);
            if r.to != r.from {
                for row in rows.iter_mut().filter(|row| row.pod == r.from) {
                    row.moved += 1;
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        let quantile = |percent: u64| percentile(&latencies, percent).unwrap_or(0.0);
        self.reconnect_latency =
            Latency { p50_ms: quantile(50), p95_ms: quantile(95), p99_ms: quantile(99), max_ms: quantile(100) };
    }
}

/// What `gsd-lab` prints and writes as `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was rehearsed.
    pub scenario: Scenario,
    /// How many times.
    pub rounds: u32,
    /// Pods behind the Service.
    pub servers: u32,
    /// Client processes.
    pub clients: u32,
    /// Virtual users in each client process.
    pub users_per_client: u32,
    /// The kubelet stand-in's preStop sleep.
    pub prestop_seconds: f64,
    /// Its grace period, counted from the start of preStop.
    pub grace_seconds: f64,
    /// The servers' RESUME_WINDOW (0: resume off).
    pub resume_window_seconds: f64,
    /// `partition`: when the partition healed, after the cut (none: the
    /// pod's node was gone).
    pub heal_after_seconds: Option<f64>,
    /// How long an endpoint removal took to reach the Service.
    pub propagation_delay_seconds: f64,
    /// The Service's session affinity.
    pub affinity: Affinity,
    /// One row per drain, kill or partition.
    pub drains: Vec<DrainRow>,
    /// The clients' ledgers, summed.
    pub totals: ClientTotals,
    /// Wall time of the whole rehearsal.
    pub elapsed_seconds: f64,
    /// The clients' `/metrics` accounts at the end of the rehearsal (before
    /// they were stopped), summed: what the judge holds the run to.
    pub clients_account: Option<ClientAccount>,
    /// Every drain complete and nothing lost.
    pub ok: bool,
    /// Why not, when not: one sentence per reason.
    pub reasons: Vec<String>,
    /// The same reasons with their kind and numbers (gsd-verdict's JSON).
    pub reason_details: serde_json::Value,
    /// Sessions cut in partitions: their loss is unknown, and a PASS says so.
    pub unknown_cuts: u64,
    /// What the lab itself noticed on its way (users not back, a
    /// partitioned pod that kept its sessions, an account it could not read).
    #[serde(skip)]
    findings: Vec<Reason>,
    /// Every reason, typed, for the outcome lines.
    #[serde(skip)]
    judged: Vec<Reason>,
}

impl Report {
    /// The verdict on `rows` and the clients' account: `findings` (what the
    /// lab noticed on the way) plus every reason of gsd-verdict's judge.
    pub fn new(
        c: &LabConfig,
        rows: Vec<DrainRow>,
        totals: ClientTotals,
        clients_account: Result<ClientAccount, String>,
        findings: Vec<String>,
        elapsed: Duration,
    ) -> Report {
        let mut findings: Vec<Reason> = findings.into_iter().map(|what| Reason::Collector { what }).collect();
        for row in &rows {
            if let Some(e) = &row.account_error {
                findings.push(Reason::Collector { what: format!("{}: its last /metrics is no account: {e}", row.pod) });
            }
        }
        let evidence: Vec<DrainEvidence> = rows.iter().map(|r| r.evidence(c.grace)).collect();
        let clients = match &clients_account {
            Ok(account) => *account,
            Err(e) => {
                findings.push(Reason::Collector { what: format!("the clients' /metrics could not be read: {e}") });
                ClientAccount::default()
            }
        };
        let mut reasons = findings.clone();
        reasons.extend(gsd_verdict::judge_all(&evidence, &clients));
        let unknown_cuts = rows
            .iter()
            .filter(|r| r.ending == Ending::Partitioned)
            .filter_map(|r| r.clients)
            .map(|c| c.unknown_cuts())
            .fold(0, u64::saturating_add);
        Report {
            scenario: c.scenario,
            rounds: c.rounds,
            servers: c.servers,
            clients: c.clients,
            users_per_client: c.users,
            prestop_seconds: c.prestop.as_secs_f64(),
            grace_seconds: c.grace.as_secs_f64(),
            resume_window_seconds: c.resume_window.as_secs_f64(),
            heal_after_seconds: c.heal_after.map(|d| d.as_secs_f64()),
            propagation_delay_seconds: c.propagation_delay.as_secs_f64(),
            affinity: c.affinity,
            drains: rows,
            totals,
            elapsed_seconds: elapsed.as_secs_f64(),
            clients_account: clients_account.ok(),
            ok: reasons.is_empty(),
            reason_details: gsd_verdict::reasons_json(&reasons),
            reasons: reasons.iter().map(ToString::to_string).collect(),
            unknown_cuts,
            findings,
            judged: reasons,
        }
    }

    /// The report as JUnit XML: a test case per drained pod, one for the
    /// clients' account and one for what the lab noticed on its way.
    pub fn junit(&self) -> String {
        let grace = Duration::from_secs_f64(self.grace_seconds);
        let mut cases: Vec<Case> = self
            .drains
            .iter()
            .map(|r| Case {
                name: format!("round {} {}", r.round, r.pod),
                reasons: gsd_verdict::judge(&r.evidence(grace)),
            })
            .collect();
        let attributed =
            self.drains.iter().filter_map(|r| r.clients).map(|c| c.unknown_cuts()).fold(0, u64::saturating_add);
        let clients = self.clients_account.unwrap_or_default();
        cases.push(Case { name: "clients".into(), reasons: gsd_verdict::judge_clients(&clients, attributed) });
        cases.push(Case { name: "lab".into(), reasons: self.findings.clone() });
        let scenario = serde_json::to_value(self.scenario).unwrap();
        gsd_verdict::junit(&format!("gsd-lab {}", scenario.as_str().unwrap_or("")), &cases, self.elapsed_seconds)
    }
}

/// The report as text, for stdout.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let secs = |s: f64| humantime::format_duration(Duration::from_millis((s * 1000.0).round() as u64)).to_string();
    out += &format!(
        "gsd-lab: {}{} | {} round(s) | {} servers | {} client(s) x {} users | preStop {} | grace {} | propagation {} \
         | resume {}\n\n",
        serde_json::to_value(report.scenario).unwrap().as_str().unwrap(),
        report.heal_after_seconds.map_or(String::new(), |h| format!(" (heals after {})", secs(h))),
        report.rounds,
        report.servers,
        report.clients,
        report.users_per_client,
        secs(report.prestop_seconds),
        secs(report.grace_seconds),
        secs(report.propagation_delay_seconds),
        if report.resume_window_seconds > 0.0 {
            format!("window {}", secs(report.resume_window_seconds))
        } else {
            "off".to_owned()
        },
    );
    out += &format!(
        "{:<6} {:<8} {:>8} {:>8} {:>9} {:>10}  {:<10} {:<8} {:>6}\n",
        "round", "pod", "sessions", "drained", "messages", "shutdown", "outcome", "SIGKILL", "moved"
    );
    for row in &report.drains {
        let shutdown = row.shutdown_seconds.map_or("-".to_owned(), |s| format!("{:.3}s", s));
        out += &format!(
            "{:<6} {:<8} {:>8} {:>8} {:>9} {:>10}  {:<10} {:<8} {:>6}\n",
            row.round,
            row.pod,
            row.sessions,
            row.drained,
            row.messages,
            shutdown,
            row.outcome.label(),
            if row.sigkilled { "yes" } else { "no" },
            format!("{}/{}", row.moved, row.sessions),
        );
    }
    let t = &report.totals;
    let l = &t.reconnect_latency;
    let reasons: Vec<String> = t.reconnects_by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
    out += &format!(
        "\nclients: {} users | {} reconnects ({}) | reconnect latency p50 {:.1}ms p95 {:.1}ms p99 {:.1}ms max {:.1}ms\n",
        t.users,
        t.reconnects,
        if reasons.is_empty() { "none".to_owned() } else { reasons.join(", ") },
        l.p50_ms,
        l.p95_ms,
        l.p99_ms,
        l.max_ms
    );
    out += &format!(
        "         drains {} complete, {} incomplete, {} cut short by leaving clients | messages lost {} \
         (skipped by leaving clients {}) | requests lost {} (re-sent {})\n",
        t.drains_complete,
        t.drains_incomplete,
        t.drains_client_left,
        t.messages_lost,
        t.messages_skipped,
        t.requests_lost,
        t.requests_resent
    );
    if t.sessions_cut > t.sessions_resumed {
        let resumed = match t.sessions_resumed {
            0 => String::new(),
            n => format!(" ({n} of them resumed, replayed from the client's last frame: known)"),
        };
        out += &format!(
            "         {} session(s) cut with no close and no notice{resumed}: what their pod sent after the last \
             frame received in the other {} is UNKNOWN, and not in \"messages lost\"\n",
            t.sessions_cut,
            t.sessions_cut - t.sessions_resumed
        );
    } else if t.sessions_cut > 0 {
        out += &format!(
            "         {} session(s) cut with no close and no notice, every one resumed (replayed from the client's \
             last frame): any gap is in \"messages lost\"\n",
            t.sessions_cut
        );
    }
    if t.data_unacked > 0 {
        out += &format!(
            "         {} data frame(s) received but not acknowledged when their session ended: processed \
             by the clients, not lost\n",
            t.data_unacked
        );
    }
    if t.data_duplicate > 0 {
        out += &format!(
            "         {} data frame(s) arrived below the seq expected (duplicates or reorders), ignored\n",
            t.data_duplicate
        );
    }
    for row in &report.drains {
        if let Some(unacked) = row.unacked.filter(|_| row.outcome == Outcome::Partitioned || row.peer_timeouts > 0) {
            out += &format!(
                "         {}: gave up {} silent client session(s); {} data frame(s) it sent were never \
                 acknowledged (delivered or lost: the pod cannot tell)\n",
                row.pod, row.peer_timeouts, unacked
            );
        }
    }
    out += "\nboth sides, per pod (the pod's own final account; every client's account, changed from its deletion \
            until its users were back)\n";
    for row in &report.drains {
        out += &format!("  {} round {}: ", row.pod, row.round);
        out += &match &row.server {
            Some(s) => {
                let drains: Vec<String> =
                    s.drains.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
                format!(
                    "server held {}, drained {} ({}), sent {} in the drain, unacked {}",
                    row.sessions,
                    s.drained(),
                    if drains.is_empty() { "none".to_owned() } else { drains.join(", ") },
                    s.drain_messages,
                    s.unacked
                )
            }
            None => format!(
                "server held {}, no account ({})",
                row.sessions,
                row.account_error.as_deref().unwrap_or("killed")
            ),
        };
        out += &match &row.clients {
            Some(c) => format!(
                " | clients: received {}, lost {}, unacked {}, cut {} (resumed {}), skipped {}, drains complete {} \
                 incomplete {}\n",
                c.received, c.lost, c.unacked, c.cut, c.resumed, c.skipped, c.drains_complete, c.drains_incomplete
            ),
            None => " | clients: not read\n".to_owned(),
        };
    }
    out += "\n";
    out + &gsd_verdict::render_outcome(&report.judged, report.unknown_cuts, report.elapsed_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gsd_verdict::fixture::ServerBody;

    /// A final `/metrics` account with `complete` and `incomplete` drains.
    fn account(complete: u64, incomplete: u64) -> String {
        ServerBody { closed: Vec::new(), ..ServerBody::ended(complete, incomplete, 12) }.render()
    }

    fn config() -> LabConfig {
        LabConfig::default()
    }

    #[test]
    fn a_row_is_complete_only_when_the_pod_drained_every_session_and_exited() {
        let row = DrainRow::deleted(1, "pod-0", 3, Ending::Exited, &account(3, 0), Drain::Finished);
        assert_eq!((row.outcome, row.drained, row.messages), (Outcome::Complete, 3, 12));
        assert_eq!(row.shutdown_seconds, Some(0.25));
        assert!(!row.sigkilled);
        let partial = DrainRow::deleted(1, "pod-0", 3, Ending::Exited, &account(2, 1), Drain::Finished);
        assert_eq!(partial.outcome, Outcome::Incomplete);
        let fewer = DrainRow::deleted(1, "pod-0", 4, Ending::Exited, &account(3, 0), Drain::Finished);
        assert_eq!(fewer.outcome, Outcome::Incomplete, "3 drained of 4 held is not complete");
        let unfinished = DrainRow::deleted(1, "pod-0", 3, Ending::Exited, &account(3, 0), Drain::Unfinished);
        assert_eq!((unfinished.outcome, unfinished.shutdown_seconds), (Outcome::Incomplete, None));
        let late = DrainRow::deleted(1, "pod-0", 3, Ending::GraceRanOut, &account(3, 0), Drain::Finished);
        assert_eq!((late.outcome, late.sigkilled), (Outcome::Sigkilled, true));
        let killed = DrainRow::deleted(1, "pod-0", 3, Ending::Killed, "", Drain::Unfinished);
        assert_eq!((killed.outcome, killed.unacked), (Outcome::Killed, None));
        let garbage = DrainRow::deleted(1, "pod-0", 3, Ending::Exited, "<html>502</html>", Drain::Finished);
        assert_eq!((garbage.outcome, garbage.server.is_none()), (Outcome::Incomplete, true));
        assert!(garbage.account_error.as_deref().unwrap().contains("line 1"), "{garbage:?}");
    }

    #[test]
    fn users_that_moved_are_counted_on_the_pod_they_left_and_only_moves_pass() {
        let mut rows = vec![DrainRow::deleted(1, "pod-0", 2, Ending::Exited, &account(2, 0), Drain::Finished)];
        let reconnect = |from: &str, to: &str, ms: f64| Reconnect {
            reason: "drain".into(),
            latency_ms: ms,
            from: from.into(),
            to: to.into(),
        };
        let mut totals = ClientTotals::default();
        totals.add_reconnects(&[reconnect("pod-0", "pod-1", 30.0), reconnect("pod-0", "pod-0", 10.0)], &mut rows);
        assert_eq!(rows[0].moved, 1, "a user back on the same pod did not move");
        assert_eq!(totals.reconnects_by_reason["drain"], 2);
        assert_eq!((totals.reconnect_latency.p50_ms, totals.reconnect_latency.max_ms), (10.0, 30.0));
        let report =
            Report::new(&config(), rows, totals, Ok(ClientAccount::default()), Vec::new(), Duration::from_secs(1));
        assert!(!report.ok);
        assert_eq!(report.reasons, ["pod-0: only 1 of its 2 users reconnected to another pod"]);
        assert_eq!(report.reason_details[0]["kind"], "users_not_moved");
    }

    /// Both sides beside each other: the server's account against the
    /// clients' change over the same drain, each mismatch a reason with its
    /// numbers, in the text, the JSON and the JUnit alike.
    #[test]
    fn both_sides_are_reconciled_and_each_mismatch_is_named() {
        let mut row = DrainRow::deleted(1, "pod-0", 4, Ending::Exited, &account(3, 0), Drain::Finished);
        row.moved = 4;
        row.clients = Some(ClientAccount { cut: 1, drains_complete: 2, received: 9, ..ClientAccount::default() });
        let clients = ClientAccount { cut: 1, duplicate: 2, ..ClientAccount::default() };
        let report =
            Report::new(&config(), vec![row], ClientTotals::default(), Ok(clients), Vec::new(), Duration::from_secs(1));
        assert_eq!(
            report.reasons,
            [
                "pod-0: drained 3 of the 4 sessions it held",
                "pod-0: 1 session(s) cut with no notice and no close during a planned drain",
                "2 data frame(s) received twice or out of order (seq below the expected one)",
            ]
        );
        let text = render(&report);
        assert!(text.contains("  pod-0 round 1: server held 4, drained 3 (complete 3), sent 12 in the drain, unacked 0 | clients: received 9, lost 0, unacked 0, cut 1"), "{text}");
        assert!(
            text.ends_with("  - 2 data frame(s) received twice or out of order (seq below the expected one)\n"),
            "{text}"
        );
        let junit = report.junit();
        assert!(junit.contains("<testcase classname=\"gsd-lab delete-pod\" name=\"round 1 pod-0\">"), "{junit}");
        assert!(junit.contains("<failure type=\"drained_fewer\""), "{junit}");
        assert!(junit.contains("<failure type=\"duplicates\""), "{junit}");
        assert!(junit.contains("name=\"lab\"/>"), "{junit}");
    }

    #[test]
    fn unreadable_clients_fail_the_run_instead_of_reading_as_nothing_lost() {
        let report = Report::new(
            &config(),
            Vec::new(),
            ClientTotals::default(),
            Err("client-0: no answer".into()),
            Vec::new(),
            Duration::from_secs(1),
        );
        assert_eq!(report.reasons, ["the clients' /metrics could not be read: client-0: no answer"]);
    }

    #[test]
    fn unacked_frames_are_summed_and_shown_but_are_not_loss() {
        let mut totals = ClientTotals::default();
        for (unacked, duplicate) in [(2, 0), (3, 1)] {
            let exit = serde_json::json!({"users": 1, "data_unacked": unacked, "data_duplicate": duplicate});
            totals.add_exit(&ClientExit(exit));
        }
        assert_eq!((totals.data_unacked, totals.data_duplicate), (5, 1));
        let clients = ClientAccount { unacked: 5, ..ClientAccount::default() };
        let report = Report::new(&config(), Vec::new(), totals, Ok(clients), Vec::new(), Duration::from_secs(1));
        assert!(report.ok, "{:?}", report.reasons);
        let text = render(&report);
        assert!(text.contains(" 5 data frame(s) received but not acknowledged"), "{text}");
        assert!(text.contains(" 1 data frame(s) arrived below the seq expected"), "{text}");
        assert!(text.ends_with("PASS: every drain completed and nothing was lost (1.0s)\n"), "{text}");
    }
}
