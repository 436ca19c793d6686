//! The rules: one drain's evidence from both sides in, every reason it did
//! not prove a lossless drain out, each with its numbers. gsd-lab and the
//! in-cluster verdict ask [`judge`] (per drained pod) and [`judge_clients`]
//! (the clients' whole account); neither has a rule of its own.

use std::time::Duration;

use serde::Serialize;

use crate::account::{ClientAccount, ServerAccount};

/// How the pod's termination ended, as whoever terminated it saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// SIGTERM, and the pod exited on its own: a planned drain.
    Exited,
    /// SIGTERM, then SIGKILL when the grace period ran out.
    GraceRanOut,
    /// SIGKILL at once, no drain (a node crash, `--scenario kill`).
    Killed,
    /// Its network vanished (a partition): no drain either.
    Partitioned,
}

impl Ending {
    /// Whether the pod was asked to drain and had the time to: only then
    /// must every session end with a notice and a complete drain.
    pub fn planned(self) -> bool {
        self == Ending::Exited
    }
}

/// Everything known of one drained (or killed, or cut off) pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrainEvidence {
    /// The pod.
    pub pod: String,
    /// Sessions it held just before its termination began.
    pub held: u64,
    /// How its termination ended.
    pub ending: Ending,
    /// Its own account from the last scrape after its drain ended; `None`
    /// when no scrape saw the drain end (killed, or gone before a scrape).
    pub server: Option<ServerAccount>,
    /// Its account just before the termination began: the server's
    /// counters cover its whole life, and only their change is this
    /// termination's. `None` reads as all zero (a pod that had just started).
    pub server_before: Option<ServerAccount>,
    /// What the clients' accounts changed by over this pod's termination,
    /// until its users were back in sessions; `None` when they could not be
    /// read (the reason is then given by whoever collected).
    pub clients: Option<ClientAccount>,
    /// Users of this pod whose next session was on another pod; `None`
    /// where the collector cannot tell (the in-cluster verdict).
    pub moved: Option<u64>,
    /// The grace period it had.
    pub grace: Duration,
}

/// One reason a rehearsal failed, with the numbers that show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The pod held no session: nothing was proven.
    NothingHeld { pod: String },
    /// No scrape saw the drain end: its account is unknown.
    NoFinalAccount { pod: String },
    /// It drained fewer sessions than it held.
    DrainedFewer { pod: String, held: u64, drained: u64 },
    /// The clients saw fewer ends of sessions (drains of any outcome, and
    /// cuts) than the pod drained: some of its sessions belong to clients
    /// the collector did not read, whose loss is therefore not counted.
    ClientsUnseen { pod: String, drained: u64, seen: u64 },
    /// Drains the server itself counts as incomplete (the deadline, bad
    /// input), or ended some other way than complete/client_left/peer_lost.
    ServerDrainsShort { pod: String, outcome: String, sessions: u64 },
    /// Sessions the server gave up as silent during its drain: delivered or
    /// lost, no one can tell.
    PeerLost { pod: String, sessions: u64 },
    /// Sessions cut with no close and no notice while the pod drained as
    /// planned: a proxy or the server dropped them.
    CutWithoutNotice { pod: String, sessions: u64 },
    /// Frames the server sent and never had acknowledged that the clients
    /// neither hold unacknowledged nor count as lost.
    UnackedUnexplained { pod: String, server_unacked: u64, client_unacked: u64, client_lost: u64 },
    /// Users of the pod that did not come back on another pod.
    UsersNotMoved { pod: String, held: u64, moved: u64 },
    /// SIGKILLed when the grace period ran out, before its drain ended.
    GraceRanOut { pod: String, grace_seconds: f64 },
    /// SIGKILLed without a drain: what it owed was never announced, so no
    /// one can count it.
    Killed { pod: String, sessions: u64 },
    /// Frames announced or sent that never arrived.
    MessagesLost { messages: u64 },
    /// Requests never answered.
    RequestsLost { requests: u64 },
    /// Drains the clients saw end short.
    ClientDrainsIncomplete { drains: u64 },
    /// Frames received twice or out of order: the server broke the seq rule.
    Duplicates { frames: u64 },
    /// Sessions cut with no close and no notice, outside any planned drain:
    /// what was lost in them is unknown.
    SessionsCut { sessions: u64 },
    /// The same cut sessions, explained: the clients' logs show each cut
    /// after the termination of the proxy they went through, and
    /// `at_setting` says whether every one came at the proxy's drain
    /// setting (within [`crate::proxy::window`]). Their loss is still
    /// unknown.
    CutByProxy {
        proxy: String,
        pod: String,
        sessions: u64,
        first_after_seconds: f64,
        last_after_seconds: f64,
        setting_name: String,
        setting_seconds: f64,
        at_setting: bool,
    },
    /// The Eviction API refused to evict the pod (HTTP 429): a
    /// PodDisruptionBudget allows no disruption now. Nothing was rehearsed,
    /// and nothing was deleted around it.
    EvictionRefused { pod: String, message: String },
    /// Something the collector saw on its way (a client pod that came or
    /// went, a scrape that failed, users not back in time).
    Collector { what: String },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NothingHeld { pod } => write!(f, "{pod} held no sessions when it was deleted: nothing was proven"),
            Reason::NoFinalAccount { pod } => {
                write!(f, "{pod}: no scrape saw its drain end (exited or SIGKILLed first?): its account is unknown")
            }
            Reason::DrainedFewer { pod, held, drained } => {
                write!(f, "{pod}: drained {drained} of the {held} sessions it held")
            }
            Reason::ClientsUnseen { pod, drained, seen } => write!(
                f,
                "{pod}: drained {drained} sessions but the clients read saw {seen} end: the others' clients were \
                 not read, and what they lost is not counted"
            ),
            Reason::ServerDrainsShort { pod, outcome, sessions } => {
                write!(f, "{pod}: {sessions} drain(s) {outcome} by its own account")
            }
            Reason::PeerLost { pod, sessions } => write!(
                f,
                "{pod}: gave up {sessions} silent client session(s) in the drain (delivered or lost: unknown)"
            ),
            Reason::CutWithoutNotice { pod, sessions } => {
                write!(f, "{pod}: {sessions} session(s) cut with no notice and no close during a planned drain")
            }
            Reason::UnackedUnexplained { pod, server_unacked, client_unacked, client_lost } => write!(
                f,
                "{pod}: {server_unacked} frame(s) sent and never acknowledged, but the clients hold \
                 {client_unacked} unacknowledged and count {client_lost} lost"
            ),
            Reason::UsersNotMoved { pod, held, moved } => {
                write!(f, "{pod}: only {moved} of its {held} users reconnected to another pod")
            }
            Reason::GraceRanOut { pod, grace_seconds } => {
                write!(f, "{pod} was SIGKILLed at the grace period ({grace_seconds}s) before its drain finished")
            }
            Reason::Killed { pod, sessions } => write!(
                f,
                "{pod} was SIGKILLed: {sessions} sessions cut without a drain. The data it still owed them was \
                 never announced and its own counters died with it, so no one can count that loss: \
                 \"messages lost\" counts only frames a server announced or sent"
            ),
            Reason::MessagesLost { messages } => write!(f, "{messages} messages lost"),
            Reason::RequestsLost { requests } => write!(f, "{requests} requests lost"),
            Reason::ClientDrainsIncomplete { drains } => {
                write!(f, "{drains} drains incomplete as the clients saw them")
            }
            Reason::Duplicates { frames } => {
                write!(f, "{frames} data frame(s) received twice or out of order (seq below the expected one)")
            }
            Reason::SessionsCut { sessions } => {
                write!(f, "{sessions} session(s) cut with no close and no notice: loss in them is unknown")
            }
            Reason::CutByProxy {
                sessions,
                first_after_seconds,
                last_after_seconds,
                setting_name,
                setting_seconds,
                at_setting,
                ..
            } => {
                let when = crate::proxy::span(*first_after_seconds, *last_after_seconds);
                let cut = crate::proxy::count(*sessions, "session");
                let setting = format!("{setting_name} ({})", crate::proxy::seconds(*setting_seconds));
                if *at_setting {
                    write!(f, "{cut} cut {when} s after the proxy's SIGTERM = {setting}")
                } else {
                    write!(f, "{cut} cut {when} s after the proxy's SIGTERM, not at {setting}: something else cut them")
                }
            }
            Reason::EvictionRefused { pod, message } => write!(
                f,
                "{pod}: the eviction was refused ({message}): a PodDisruptionBudget allows no disruption now, \
                 and the verdict does not delete around it"
            ),
            Reason::Collector { what } => f.write_str(what),
        }
    }
}

/// Every reason one pod's termination did not prove a lossless drain.
/// The clients' own loss counters are judged once, over the whole run, by
/// [`judge_clients`]; here they only explain the server's numbers.
pub fn judge(e: &DrainEvidence) -> Vec<Reason> {
    let pod = || e.pod.clone();
    let mut reasons = Vec::new();
    match e.ending {
        Ending::Killed => reasons.push(Reason::Killed { pod: pod(), sessions: e.held }),
        Ending::GraceRanOut => reasons.push(Reason::GraceRanOut { pod: pod(), grace_seconds: e.grace.as_secs_f64() }),
        Ending::Exited | Ending::Partitioned => {}
    }
    if e.held == 0 && e.ending.planned() {
        reasons.push(Reason::NothingHeld { pod: pod() });
    }
    if e.ending.planned() {
        match &e.server {
            None => reasons.push(Reason::NoFinalAccount { pod: pod() }),
            Some(s) if s.shutdown_seconds.is_none() => reasons.push(Reason::NoFinalAccount { pod: pod() }),
            Some(s) => {
                let drained = s.drained().saturating_sub(e.server_before.as_ref().map_or(0, ServerAccount::drained));
                if drained < e.held {
                    reasons.push(Reason::DrainedFewer { pod: pod(), held: e.held, drained });
                }
                if let Some(c) = &e.clients {
                    let seen = c.ends();
                    if seen < drained {
                        reasons.push(Reason::ClientsUnseen { pod: pod(), drained, seen });
                    }
                }
                for (outcome, &n) in &s.drains {
                    match outcome.as_str() {
                        "complete" | "client_left" => {}
                        "peer_lost" if n > 0 => reasons.push(Reason::PeerLost { pod: pod(), sessions: n }),
                        _ if n > 0 => reasons.push(Reason::ServerDrainsShort {
                            pod: pod(),
                            outcome: outcome.clone(),
                            sessions: n,
                        }),
                        _ => {}
                    }
                }
            }
        }
        if let Some(c) = e.clients.filter(|c| c.cut > 0) {
            reasons.push(Reason::CutWithoutNotice { pod: pod(), sessions: c.cut });
        }
    }
    if let (Some(s), Some(c)) = (&e.server, &e.clients) {
        // Each frame the server left unacknowledged in this termination
        // either arrived (the client holds it unacknowledged) or did not
        // (the client counts it lost, once announced). Cut sessions are the
        // unknown: the rule holds only where none was cut.
        let unacked = s.unacked.saturating_sub(e.server_before.as_ref().map_or(0, |b| b.unacked));
        if c.cut == 0 && unacked > c.unacked.saturating_add(c.lost) {
            reasons.push(Reason::UnackedUnexplained {
                pod: pod(),
                server_unacked: unacked,
                client_unacked: c.unacked,
                client_lost: c.lost,
            });
        }
    }
    if let Some(moved) = e.moved.filter(|m| *m < e.held) {
        reasons.push(Reason::UsersNotMoved { pod: pod(), held: e.held, moved });
    }
    reasons
}

/// The whole run: [`judge`] on every termination, then [`judge_clients`]
/// on the clients' account over the run, where the cuts that happened
/// during a termination are that termination's (a reason of its own in a
/// planned drain or a kill; the expected, unknowable end of a partition).
pub fn judge_all(drains: &[DrainEvidence], clients: &ClientAccount) -> Vec<Reason> {
    let mut reasons: Vec<Reason> = drains.iter().flat_map(judge).collect();
    let attributed = drains.iter().filter_map(|d| d.clients).map(|c| c.unknown_cuts()).fold(0u64, u64::saturating_add);
    reasons.extend(judge_clients(clients, attributed));
    reasons
}

/// Every reason in the clients' account over the whole run: loss,
/// unanswered requests, short drains, duplicates, and the cuts beyond the
/// `attributed` ones that a termination already accounts for.
pub fn judge_clients(c: &ClientAccount, attributed: u64) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if c.lost > 0 {
        reasons.push(Reason::MessagesLost { messages: c.lost });
    }
    if c.requests_lost > 0 {
        reasons.push(Reason::RequestsLost { requests: c.requests_lost });
    }
    if c.drains_incomplete > 0 {
        reasons.push(Reason::ClientDrainsIncomplete { drains: c.drains_incomplete });
    }
    if c.duplicate > 0 {
        reasons.push(Reason::Duplicates { frames: c.duplicate });
    }
    // A cut that a resume took back is no longer unknown: what its replay
    // missed is in `lost`.
    if c.unknown_cuts() > attributed {
        reasons.push(Reason::SessionsCut { sessions: c.unknown_cuts() - attributed });
    }
    reasons
}

/// The cuts a proxy's termination explains. `via`: the proxy and what the
/// clients' logs show after its termination; `reasons`: the judge's so far.
/// When the logs show as many cuts as the [`Reason::SessionsCut`] the
/// clients' /metrics count, they are the same sessions, and that reason
/// becomes a [`Reason::CutByProxy`] that says when they were cut and
/// whether at the proxy's setting. When the counts differ, nothing is
/// explained: the cut reason stays, and a [`Reason::Collector`] gives both
/// numbers. With no cut on either side nothing changes. (With a server
/// pod judged too, [`Reason::SessionsCut`] counts only the cuts its
/// termination does not account for; a proxy is judged alone, in its own
/// window.)
pub fn judge_proxy(via: &crate::proxy::Via, mut reasons: Vec<Reason>) -> Vec<Reason> {
    let counted = reasons.iter().find_map(|r| match r {
        Reason::SessionsCut { sessions } => Some(*sessions),
        _ => None,
    });
    // The logs' cuts that a resume took back are no longer unknown; the
    // rest must be the ones the clients' /metrics count.
    let unknown = via.unknown_cuts();
    match (counted.unwrap_or(0), via.first_after_seconds, via.last_after_seconds) {
        (0, ..) if unknown == 0 => {}
        (counted, Some(first), Some(last)) if counted == unknown => {
            for reason in &mut reasons {
                if matches!(reason, Reason::SessionsCut { .. }) {
                    *reason = Reason::CutByProxy {
                        proxy: via.proxy.clone(),
                        pod: via.pod.clone(),
                        sessions: counted,
                        first_after_seconds: first,
                        last_after_seconds: last,
                        setting_name: via.setting_name.clone(),
                        setting_seconds: via.setting_seconds,
                        at_setting: via.at_setting == Some(true),
                    };
                }
            }
        }
        (counted, ..) => {
            let resumed = match via.resumed {
                0 => String::new(),
                n => format!(" and {}", crate::proxy::count(n, "session_resumed line")),
            };
            reasons.push(Reason::Collector {
                what: format!(
                    "the client logs show {}{resumed} after the termination of {}, their /metrics count {}: the \
                     cuts cannot be put down to {}",
                    crate::proxy::count(via.cuts, "session_cut line"),
                    via.proxy,
                    crate::proxy::count(counted, "cut session"),
                    via.setting_name
                ),
            })
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::tests::{client_body, server_body};

    /// A complete, lossless drain of 3 sessions, all moved.
    fn clean() -> DrainEvidence {
        DrainEvidence {
            pod: "pod-0".into(),
            held: 3,
            ending: Ending::Exited,
            server: Some(ServerAccount::parse(&server_body(3, 0, 0)).unwrap()),
            server_before: None,
            clients: Some(ClientAccount::parse(&client_body(3, 3, 0)).unwrap()),
            moved: Some(3),
            grace: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_clean_drain_has_no_reason() {
        assert_eq!(judge(&clean()), []);
        assert_eq!(judge_clients(&clean().clients.unwrap(), 0), []);
    }

    /// Each rule, seen failing alone, with its numbers.
    #[test]
    fn each_rule_fails_alone_with_its_numbers() {
        let pod = || "pod-0".to_owned();
        let server = |complete, incomplete, unacked| {
            Some(ServerAccount::parse(&server_body(complete, incomplete, unacked)).unwrap())
        };
        let cases: Vec<(&str, DrainEvidence, Vec<Reason>)> = vec![
            (
                "nothing held",
                DrainEvidence { held: 0, moved: Some(0), server: server(0, 0, 0), ..clean() },
                vec![Reason::NothingHeld { pod: pod() }],
            ),
            ("no account", DrainEvidence { server: None, ..clean() }, vec![Reason::NoFinalAccount { pod: pod() }]),
            (
                "drained fewer",
                DrainEvidence { held: 5, moved: Some(5), ..clean() },
                vec![Reason::DrainedFewer { pod: pod(), held: 5, drained: 3 }],
            ),
            (
                "server incomplete",
                DrainEvidence { server: server(2, 1, 0), ..clean() },
                vec![Reason::ServerDrainsShort { pod: pod(), outcome: "incomplete".into(), sessions: 1 }],
            ),
            (
                "cut in a planned drain",
                DrainEvidence { clients: Some(ClientAccount { cut: 2, ..clean().clients.unwrap() }), ..clean() },
                vec![Reason::CutWithoutNotice { pod: pod(), sessions: 2 }],
            ),
            (
                "unacked unexplained",
                DrainEvidence {
                    server: server(3, 0, 7),
                    clients: Some(ClientAccount { unacked: 2, lost: 3, ..clean().clients.unwrap() }),
                    ..clean()
                },
                vec![Reason::UnackedUnexplained { pod: pod(), server_unacked: 7, client_unacked: 2, client_lost: 3 }],
            ),
            (
                "users not moved",
                DrainEvidence { moved: Some(1), ..clean() },
                vec![Reason::UsersNotMoved { pod: pod(), held: 3, moved: 1 }],
            ),
            (
                "grace ran out",
                DrainEvidence { ending: Ending::GraceRanOut, ..clean() },
                vec![Reason::GraceRanOut { pod: pod(), grace_seconds: 30.0 }],
            ),
            (
                "killed",
                DrainEvidence { ending: Ending::Killed, server: None, clients: None, moved: None, ..clean() },
                vec![Reason::Killed { pod: pod(), sessions: 3 }],
            ),
        ];
        for (what, evidence, want) in cases {
            assert_eq!(judge(&evidence), want, "{what}");
        }
        let mut peer_lost = ServerAccount::parse(&server_body(1, 0, 0)).unwrap();
        peer_lost.drains.insert("peer_lost".into(), 2);
        let e = DrainEvidence { server: Some(peer_lost.clone()), ..clean() };
        assert_eq!(judge(&e), [Reason::PeerLost { pod: pod(), sessions: 2 }]);
        peer_lost.drains.insert("reset".into(), 0);
        let mut reset = peer_lost;
        reset.drains.insert("peer_lost".into(), 0);
        reset.drains.insert("reset".into(), 2);
        let e = DrainEvidence { server: Some(reset), ..clean() };
        assert_eq!(judge(&e), [Reason::ServerDrainsShort { pod: pod(), outcome: "reset".into(), sessions: 2 }]);
    }

    /// The server's counters cover its life: only their change over the
    /// termination is judged, and every session it drained must have been
    /// seen ending by the clients read.
    #[test]
    fn the_server_side_is_a_change_and_every_drained_session_is_seen_by_a_client() {
        let mut before = ServerAccount::parse(&server_body(0, 0, 6)).unwrap();
        before.drains.insert("complete".into(), 2);
        let after = ServerAccount::parse(&server_body(5, 0, 6)).unwrap();
        let e = DrainEvidence { server_before: Some(before), server: Some(after), ..clean() };
        assert_eq!(judge(&e), [], "6 unacked before the termination are not its own; 3 of 5 drains are");
        let unseen = DrainEvidence {
            clients: Some(ClientAccount { drains_complete: 1, drains_client_left: 1, ..clean().clients.unwrap() }),
            ..clean()
        };
        assert_eq!(judge(&unseen), [Reason::ClientsUnseen { pod: "pod-0".into(), drained: 3, seen: 2 }]);
    }

    #[test]
    fn unacked_frames_the_clients_explain_pass_and_a_cut_session_leaves_them_unknown() {
        let held = ClientAccount { unacked: 4, lost: 1, ..clean().clients.unwrap() };
        let e = DrainEvidence {
            server: Some(ServerAccount::parse(&server_body(3, 0, 5)).unwrap()),
            clients: Some(held),
            ..clean()
        };
        assert_eq!(judge(&e), []);
        let partition = DrainEvidence {
            ending: Ending::Partitioned,
            clients: Some(ClientAccount { cut: 3, unacked: 0, ..held }),
            ..e
        };
        assert_eq!(judge(&partition), [], "a partition's cuts are not a planned drain's, and leave unacked unknown");
    }

    #[test]
    fn the_clients_account_gives_one_reason_per_kind_of_loss() {
        let c = ClientAccount {
            lost: 4,
            requests_lost: 1,
            drains_incomplete: 2,
            duplicate: 3,
            cut: 5,
            ..Default::default()
        };
        assert_eq!(
            judge_clients(&c, 2),
            [
                Reason::MessagesLost { messages: 4 },
                Reason::RequestsLost { requests: 1 },
                Reason::ClientDrainsIncomplete { drains: 2 },
                Reason::Duplicates { frames: 3 },
                Reason::SessionsCut { sessions: 3 },
            ]
        );
        assert_eq!(judge_clients(&ClientAccount { cut: 2, ..Default::default() }, 2), []);
    }

    #[test]
    fn a_proxys_termination_explains_the_cuts_only_when_the_log_and_the_metrics_agree() {
        use crate::proxy::{Seen, Via};
        let via = |cuts: Vec<f64>| {
            let seen = Seen { cuts, reconnects: Vec::new(), resumed: 0 };
            Via::new("traefik", "traefik-abc", 0.0, "Traefik graceTimeOut", Duration::from_secs(10), &seen)
        };
        let two = via(vec![10.4, 10.0]);
        let lost = Reason::MessagesLost { messages: 1 };
        assert_eq!(
            judge_proxy(&two, vec![lost.clone(), Reason::SessionsCut { sessions: 2 }]),
            [
                lost,
                Reason::CutByProxy {
                    proxy: "traefik".into(),
                    pod: "traefik-abc".into(),
                    sessions: 2,
                    first_after_seconds: 10.0,
                    last_after_seconds: 10.4,
                    setting_name: "Traefik graceTimeOut".into(),
                    setting_seconds: 10.0,
                    at_setting: true,
                }
            ]
        );
        let early = judge_proxy(&via(vec![3.1, 3.4]), vec![Reason::SessionsCut { sessions: 2 }]);
        assert!(matches!(early[..], [Reason::CutByProxy { at_setting: false, .. }]), "{early:?}");
        let mismatch = |what: &str| Reason::Collector { what: what.to_owned() };
        assert_eq!(
            judge_proxy(&two, vec![Reason::SessionsCut { sessions: 3 }]),
            [
                Reason::SessionsCut { sessions: 3 },
                mismatch(
                    "the client logs show 2 session_cut lines after the termination of traefik, their /metrics \
                     count 3 cut sessions: the cuts cannot be put down to Traefik graceTimeOut"
                )
            ]
        );
        assert_eq!(
            judge_proxy(&two, Vec::new()),
            [mismatch(
                "the client logs show 2 session_cut lines after the termination of traefik, their /metrics count \
                 0 cut sessions: the cuts cannot be put down to Traefik graceTimeOut"
            )]
        );
        let none = via(Vec::new());
        assert_eq!(
            judge_proxy(&none, vec![Reason::SessionsCut { sessions: 1 }]),
            [
                Reason::SessionsCut { sessions: 1 },
                mismatch(
                    "the client logs show 0 session_cut lines after the termination of traefik, their /metrics \
                     count 1 cut session: the cuts cannot be put down to Traefik graceTimeOut"
                )
            ]
        );
        assert_eq!(judge_proxy(&none, Vec::new()), [], "nothing cut: nothing to explain");
    }

    #[test]
    fn resumed_cuts_are_not_unknown_and_the_rest_still_are_exactly() {
        use crate::proxy::{Seen, Via};
        // 5 cut, 3 taken back by a resume: 2 unknown, the judge names 2.
        let c = ClientAccount { cut: 5, resumed: 3, ..Default::default() };
        assert_eq!(c.unknown_cuts(), 2);
        assert_eq!(judge_clients(&c, 0), [Reason::SessionsCut { sessions: 2 }]);
        let all = ClientAccount { resumed: 5, ..c };
        assert_eq!(judge_clients(&all, 0), [], "every cut resumed and nothing lost: PASS");
        // A resume whose replay missed frames: they are loss, counted exactly.
        let gap = ClientAccount { lost: 4, ..all };
        assert_eq!(judge_clients(&gap, 0), [Reason::MessagesLost { messages: 4 }]);
        // A partition's resumed cuts leave nothing to attribute.
        let partition = DrainEvidence {
            ending: Ending::Partitioned,
            server: None,
            clients: Some(ClientAccount { cut: 3, resumed: 3, ..Default::default() }),
            ..clean()
        };
        let total = ClientAccount { cut: 4, resumed: 3, ..Default::default() };
        assert_eq!(judge_all(&[partition], &total), [Reason::SessionsCut { sessions: 1 }]);
        // Through a proxy: the logs' cuts less their resumes are the unknown
        // ones the metrics count.
        let seen = Seen { cuts: vec![10.0, 10.1, 10.2, 10.3, 10.4], reconnects: Vec::new(), resumed: 3 };
        let via = Via::new("traefik", "", 0.0, "Traefik graceTimeOut", Duration::from_secs(10), &seen);
        let judged = judge_proxy(&via, judge_clients(&c, 0));
        assert!(matches!(judged[..], [Reason::CutByProxy { sessions: 2, at_setting: true, .. }]), "{judged:?}");
        let every = Seen { resumed: 5, ..seen.clone() };
        let via = Via::new("traefik", "", 0.0, "Traefik graceTimeOut", Duration::from_secs(10), &every);
        assert_eq!(judge_proxy(&via, judge_clients(&all, 0)), [], "all 5 cut, all 5 resumed");
        let via = Via::new("traefik", "", 0.0, "Traefik graceTimeOut", Duration::from_secs(10), &seen);
        assert_eq!(
            judge_proxy(&via, judge_clients(&all, 0)),
            [Reason::Collector {
                what: "the client logs show 5 session_cut lines and 3 session_resumed lines after the termination \
                       of traefik, their /metrics count 0 cut sessions: the cuts cannot be put down to Traefik \
                       graceTimeOut"
                    .into()
            }]
        );
    }

    #[test]
    fn cuts_during_a_partition_are_its_own_and_cuts_elsewhere_are_a_reason() {
        let partition = DrainEvidence {
            ending: Ending::Partitioned,
            server: None,
            clients: Some(ClientAccount { cut: 3, ..Default::default() }),
            ..clean()
        };
        let total = ClientAccount { cut: 4, ..Default::default() };
        assert_eq!(judge_all(&[partition], &total), [Reason::SessionsCut { sessions: 1 }]);
    }
}
