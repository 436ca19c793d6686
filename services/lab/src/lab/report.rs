//! The report: what each drain did and what the clients' ledgers say (the
//! model, serialised as `--json`), the rules that turn them into a verdict,
//! and the text on stdout. Nothing here runs a process; it reads what the
//! lab collected.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Affinity, LabConfig, Scenario};
use crate::harness::gsd::percentile;
use crate::harness::{ClientExit, Reconnect};

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
    /// complete | incomplete | sigkilled | killed | partitioned
    pub outcome: String,
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
}

/// How a pod's termination ended, as the kubelet stand-in saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// SIGKILLed at once, with no preStop and no grace (`--scenario kill`).
    Killed,
    /// SIGTERMed, and SIGKILLed when the grace period ran out.
    GraceRanOut,
    /// SIGTERMed, and exited on its own.
    Exited,
}

impl DrainRow {
    /// The row of a deleted pod, from its final `/metrics` account (the
    /// first scrape after its drain, else the last it answered).
    pub fn deleted(round: u32, pod: &str, sessions: u64, ending: Ending, account: &str, drained: bool) -> DrainRow {
        let value = |series: &str| gsd_telemetry::sample(account, series).unwrap_or(0.0);
        let drains = |outcome: &str| value(&format!(r#"gsd_server_drains_total{{outcome="{outcome}"}}"#)) as u64;
        let total: u64 = ["complete", "incomplete", "client_left", "peer_lost"].into_iter().map(drains).sum();
        let outcome = match ending {
            Ending::Killed => "killed",
            Ending::GraceRanOut => "sigkilled",
            Ending::Exited if drained && total == drains("complete") => "complete",
            Ending::Exited => "incomplete",
        };
        DrainRow {
            round,
            pod: pod.to_owned(),
            sessions,
            drained: total,
            messages: value("gsd_server_drain_messages_sum") as u64,
            shutdown_seconds: drained.then(|| value("gsd_server_shutdown_duration_seconds_sum")),
            outcome: outcome.to_owned(),
            sigkilled: ending != Ending::Exited,
            peer_timeouts: drains("peer_lost") + value(r#"gsd_server_sessions_closed_total{reason="timeout"}"#) as u64,
            unacked: (ending != Ending::Killed).then(|| value("gsd_server_data_unacked_total") as u64),
            moved: 0,
        }
    }

    /// The row of a partitioned pod, from its last scrape behind the cut;
    /// `freed_after` is how long it took to give up its sessions.
    pub fn partitioned(round: u32, pod: &str, sessions: u64, freed_after: Duration, account: &str) -> DrainRow {
        let value = |series: &str| gsd_telemetry::sample(account, series).unwrap_or(0.0);
        DrainRow {
            round,
            pod: pod.to_owned(),
            sessions,
            drained: 0,
            messages: 0,
            shutdown_seconds: Some(freed_after.as_secs_f64()),
            outcome: "partitioned".into(),
            sigkilled: true,
            peer_timeouts: value(r#"gsd_server_sessions_closed_total{reason="timeout"}"#) as u64,
            unacked: Some(value("gsd_server_data_unacked_total") as u64),
            moved: 0,
        }
    }

    /// Why this row fails the rehearsal, if it does.
    fn reason(&self, grace: Duration) -> Option<String> {
        let (pod, sessions, moved) = (&self.pod, self.sessions, self.moved);
        match self.outcome.as_str() {
            "complete" if moved < sessions => {
                Some(format!("{pod}: only {moved} of its {sessions} users reconnected to another pod"))
            }
            "complete" | "partitioned" if moved >= sessions => None,
            "partitioned" => Some(format!(
                "{pod}: only {moved} of its {sessions} users reconnected to another pod after the partition"
            )),
            "killed" => Some(format!(
                "{pod} was SIGKILLed: {sessions} sessions cut without a drain. The data it still owed them was \
                 never announced and its own counters died with it, so no one can count that loss: \
                 \"messages lost\" below counts only frames a server announced or sent"
            )),
            "sigkilled" => {
                Some(format!("{pod} was SIGKILLed at the grace period ({grace:?}) before its drain finished"))
            }
            _ => Some(format!("{pod}: drain incomplete")),
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
        let quantile = |q: f64| percentile(&latencies, q).unwrap_or(0.0);
        self.reconnect_latency =
            Latency { p50_ms: quantile(0.5), p95_ms: quantile(0.95), p99_ms: quantile(0.99), max_ms: quantile(1.0) };
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
    /// Every drain complete and nothing lost.
    pub ok: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
}

impl Report {
    /// The verdict on `rows` and `totals`: `findings` (what the lab noticed
    /// on the way) plus a reason per failing row and per kind of loss.
    pub fn new(
        c: &LabConfig,
        rows: Vec<DrainRow>,
        totals: ClientTotals,
        mut findings: Vec<String>,
        elapsed: Duration,
    ) -> Report {
        findings.extend(rows.iter().filter_map(|row| row.reason(c.grace)));
        findings.extend(gsd_client::ledger::loss_reasons(
            totals.messages_lost,
            totals.requests_lost,
            totals.drains_incomplete,
        ));
        Report {
            scenario: c.scenario,
            rounds: c.rounds,
            servers: c.servers,
            clients: c.clients,
            users_per_client: c.users,
            prestop_seconds: c.prestop.as_secs_f64(),
            grace_seconds: c.grace.as_secs_f64(),
            propagation_delay_seconds: c.propagation_delay.as_secs_f64(),
            affinity: c.affinity,
            drains: rows,
            totals,
            elapsed_seconds: elapsed.as_secs_f64(),
            ok: findings.is_empty(),
            reasons: findings,
        }
    }
}

/// The report as text, for stdout.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let secs = |s: f64| humantime::format_duration(Duration::from_millis((s * 1000.0).round() as u64)).to_string();
    out += &format!(
        "gsd-lab: {} | {} round(s) | {} servers | {} client(s) x {} users | preStop {} | grace {} | propagation {}\n\n",
        serde_json::to_value(report.scenario).unwrap().as_str().unwrap(),
        report.rounds,
        report.servers,
        report.clients,
        report.users_per_client,
        secs(report.prestop_seconds),
        secs(report.grace_seconds),
        secs(report.propagation_delay_seconds),
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
            row.outcome,
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
    if t.sessions_cut > 0 {
        out += &format!(
            "         {} session(s) cut with no close and no notice: what their pod sent after the last frame \
             received is UNKNOWN, and not in \"messages lost\"\n",
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
        if let Some(unacked) = row.unacked.filter(|_| row.outcome == "partitioned" || row.peer_timeouts > 0) {
            out += &format!(
                "         {}: gave up {} silent client session(s); {} data frame(s) it sent were never \
                 acknowledged (delivered or lost: the pod cannot tell)\n",
                row.pod, row.peer_timeouts, unacked
            );
        }
    }
    out += "\n";
    if report.ok && t.sessions_cut > 0 {
        out += &format!(
            "PASS: every user recovered on another pod within the liveness bound; nothing known was lost, \
             and loss in the cut sessions is unknown ({:.1}s)\n",
            report.elapsed_seconds
        );
    } else {
        out += &gsd_client::ledger::render_outcome(&report.reasons, report.elapsed_seconds);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A final `/metrics` account with `complete` and `incomplete` drains.
    fn account(complete: u64, incomplete: u64) -> String {
        format!(
            "gsd_server_drains_total{{outcome=\"complete\"}} {complete}\n\
             gsd_server_drains_total{{outcome=\"incomplete\"}} {incomplete}\n\
             gsd_server_drain_messages_sum 12\n\
             gsd_server_shutdown_duration_seconds_sum 0.25\n\
             gsd_server_data_unacked_total 0\n"
        )
    }

    #[test]
    fn a_row_is_complete_only_when_the_pod_drained_every_session_and_exited() {
        let row = DrainRow::deleted(1, "pod-0", 3, Ending::Exited, &account(3, 0), true);
        assert_eq!((row.outcome.as_str(), row.drained, row.messages), ("complete", 3, 12));
        assert_eq!(row.shutdown_seconds, Some(0.25));
        assert!(!row.sigkilled);
        let partial = DrainRow::deleted(1, "pod-0", 3, Ending::Exited, &account(2, 1), true);
        assert_eq!(partial.outcome, "incomplete");
        let unfinished = DrainRow::deleted(1, "pod-0", 3, Ending::Exited, &account(3, 0), false);
        assert_eq!((unfinished.outcome.as_str(), unfinished.shutdown_seconds), ("incomplete", None));
        let late = DrainRow::deleted(1, "pod-0", 3, Ending::GraceRanOut, &account(3, 0), true);
        assert_eq!((late.outcome.as_str(), late.sigkilled), ("sigkilled", true));
        let killed = DrainRow::deleted(1, "pod-0", 3, Ending::Killed, "", false);
        assert_eq!((killed.outcome.as_str(), killed.unacked), ("killed", None));
    }

    #[test]
    fn users_that_moved_are_counted_on_the_pod_they_left_and_only_moves_pass() {
        let mut rows = vec![DrainRow::deleted(1, "pod-0", 2, Ending::Exited, &account(2, 0), true)];
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
        let config = <LabConfig as clap::Parser>::parse_from(["gsd-lab"]);
        let report = Report::new(&config, rows, totals, Vec::new(), Duration::from_secs(1));
        assert!(!report.ok);
        assert_eq!(report.reasons, ["pod-0: only 1 of its 2 users reconnected to another pod"]);
    }

    #[test]
    fn unacked_and_duplicate_frames_are_summed_and_shown_but_are_not_loss() {
        let mut totals = ClientTotals::default();
        for (unacked, duplicate) in [(2, 0), (3, 1)] {
            let exit = serde_json::json!({"users": 1, "data_unacked": unacked, "data_duplicate": duplicate});
            totals.add_exit(&ClientExit(exit));
        }
        assert_eq!((totals.data_unacked, totals.data_duplicate), (5, 1));
        let config = <LabConfig as clap::Parser>::parse_from(["gsd-lab"]);
        let report = Report::new(&config, Vec::new(), totals, Vec::new(), Duration::from_secs(1));
        assert!(report.ok, "{:?}", report.reasons);
        let text = render(&report);
        assert!(text.contains(" 5 data frame(s) received but not acknowledged"), "{text}");
        assert!(text.contains(" 1 data frame(s) arrived below the seq expected"), "{text}");
        assert!(text.ends_with("PASS: every drain completed and nothing was lost (1.0s)\n"), "{text}");
    }
}
