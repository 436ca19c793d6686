//! scripts/cluster-check asks `gsd-verdict judge` for every count: run here
//! (python3, the real script, this build's gsd-verdict) on one drain's
//! files written as a one-node cluster leaves them: the pod's JSON log, the
//! kubelet's log, the pod and EndpointSlice watches, the /readyz poll, and
//! the saved /metrics bodies. The counts it prints and asserts are the
//! judge's, and the pod's log must agree with them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gsd_verdict::fixture::{ClientBody, ServerBody};
use gsd_verdict::names;

mod common;
use common::Dir;

/// 2026-12-02T10:00:00Z, the deletion.
const T: f64 = 1_796_205_600.0;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster-check")
}

fn check(args: &[&str]) -> Output {
    Command::new("python3")
        .arg(script())
        .args(args)
        .env("GSD_VERDICT", env!("CARGO_BIN_EXE_gsd-verdict"))
        .env("GSD_PRESTOP_SECONDS", "5")
        .output()
        .expect("python3 runs scripts/cluster-check")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// RFC 3339 of `T + s`.
fn at(s: f64) -> String {
    let ms = (s * 1000.0).round() as u64;
    format!("2026-12-02T10:00:{:02}.{:03}000Z", ms / 1000, ms % 1000)
}

/// klog's time of `T + s`.
fn klog(s: f64) -> String {
    let us = (s * 1e6).round() as u64;
    format!("I1202 10:00:{:02}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn server(sessions: u64, complete: u64, ended: bool) -> String {
    let ended = ended.then_some(0.1);
    ServerBody { sessions, data_sent: 400, shutdown_seconds: ended, ..ServerBody::ended(complete, 0, 5 * complete) }
        .render()
}

fn client(complete: u64, incomplete: u64, lost: u64) -> String {
    let drains = ClientBody { complete, incomplete, reconnects_drain: complete + incomplete, ..ClientBody::default() };
    ClientBody { users: 10, received: 100, lost, ..drains }.render()
}

/// One pod's drain of `sessions` (its log says `logged`), as the files say.
struct Drain {
    dir: Dir,
    pod: &'static str,
}

impl Drain {
    /// `exit_code` 0: a clean drain; 137: SIGKILLed at a 1 s grace period.
    fn new(name: &str, logged: u64, exit_code: u32, client_after: &str) -> Drain {
        let dir = Dir::new("cluster-check", name);
        let pod = "gsd-server-a";
        let ev =
            |t: f64, msg: &str, extra: &str| format!("{{\"timestamp\":\"{}\",\"message\":\"{msg}\"{extra}}}\n", at(t));
        let mut log = ev(5.25, "signal_received", ",\"signal\":\"SIGTERM\"");
        log += &ev(5.26, "drain_start", &format!(",\"sessions\":{logged}"));
        if exit_code == 0 {
            for i in 0..logged {
                log += &ev(5.30 + i as f64 * 0.001, "session_drained", ",\"outcome\":\"complete\"");
            }
            log += &ev(5.35, "drain_end", &format!(",\"complete\":{logged},\"incomplete\":0,\"duration_ms\":90"));
            log += &ev(5.5, "metrics_scraped_after_drain", "");
            log += &ev(5.6, "exit", "");
        }
        dir.file("pod.log", &log);
        let kube = |t: f64, text: &str| format!("{} 1234 kuberuntime.go:1] \"{text}\" pod=\"gsd/{pod}\"\n", klog(t));
        let mut kubelet = kube(0.1, "Running preStop hook");
        if exit_code == 0 {
            kubelet += &kube(5.2, "PreStop hook completed");
        } else {
            kubelet += &kube(1.0, "PreStop hook not completed in grace period");
            kubelet += &kube(1.0, "Killing container with a grace period\" gracePeriod=2 x=\"");
        }
        dir.file("kubelet.log", &kubelet);
        dir.file(
            "pods.watch",
            &format!(
                "{} {{\"kind\":\"Pod\",\"name\":\"{pod}\",\"containers\":[{{\"name\":\"server\",\"exitCode\":{exit_code}}}]}}\n",
                T + 6.0
            ),
        );
        dir.file(
            "eps.watch",
            &format!(
                "{} {{\"kind\":\"EndpointSlice\",\"endpoints\":[{{\"pod\":\"{pod}\",\"ready\":false}}]}}\n",
                T + 0.5
            ),
        );
        dir.file("readyz.log", &format!("{:.6} 200\n{:.6} 503\n{:.6} 503\n", T + 5.0, T + 5.27, T + 5.4));
        dir.file("metrics.last", &format!("{:.6}\n{}", T + 5.5, server(0, 5, true)));
        dir.file("server.before.prom", &server(5, 0, false));
        dir.file("client.before.prom", &client(0, 0, 0));
        dir.file("client.after.prom", client_after);
        Drain { dir, pod }
    }

    fn run(&self, mode: &str, grace: &str, last: bool) -> Output {
        let f = |name: &str| self.dir.0.join(name).display().to_string();
        let t_del = format!("{T:.6}");
        let mut args = vec![
            "drain".to_owned(),
            self.pod.to_owned(),
            f("pod.log"),
            f("kubelet.log"),
            f("pods.watch"),
            f("eps.watch"),
            t_del,
            grace.to_owned(),
            mode.to_owned(),
            "--server-before".into(),
            f("server.before.prom"),
            "--clients-before".into(),
            f("client.before.prom"),
            "--clients".into(),
            f("client.after.prom"),
            "--verdict-json".into(),
            f("verdict.json"),
        ];
        if mode == "complete" {
            args.extend(["--readyz".into(), f("readyz.log")]);
        }
        if last {
            args.extend(["--metrics-last".into(), f("metrics.last")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check(&args)
    }
}

#[test]
fn a_clean_drain_is_proven_with_the_judges_counts() {
    let d = Drain::new("clean", 5, 0, &client(5, 0, 0));
    let out = d.run("complete", "60", true);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for want in [
        "ok: gsd-server-a: preStop ran 5.10 s",
        "EndpointSlice ready=false",
        "/readyz 503 from drain_start",
        "ok: gsd-server-a: 5/5 sessions drained complete in 90 ms",
        &format!(
            "final /metrics scraped from the pod IP 0.15 s after drain_end (in METRICS_LINGER): \
             {} 5, incomplete 0, {} 1 (sum 0.100 s)",
            names::SERVER_DRAINS.at(&[("outcome", "complete")]),
            names::SERVER_SHUTDOWN_DURATION_SECONDS_COUNT
        ),
        &format!(
            "{} +0, {} +0, reconnects{{reason=\"drain\"}} +5",
            names::CLIENT_MESSAGES_LOST,
            names::CLIENT_REQUESTS_LOST
        ),
    ] {
        assert!(all.contains(want), "{want:?} not in:\n{all}");
    }
    assert!(all.ends_with("sessions=5\n"), "{all}");
}

#[test]
fn the_judges_fail_fails_the_drain_with_its_numbers() {
    let d = Drain::new("lost", 5, 0, &client(5, 0, 10));
    let out = d.run("complete", "60", true);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("  - 10 messages lost\n") && all.contains("gsd-verdict: judge"), "{all}");
}

#[test]
fn a_log_that_disagrees_with_the_judge_fails() {
    let d = Drain::new("disagree", 6, 0, &client(5, 0, 0));
    let out = d.run("complete", "60", true);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("the judge says it held 5 sessions (its /metrics before the deletion), its drain_start line 6"),
        "{all}"
    );
}

#[test]
fn bad_input_to_the_judge_fails_naming_it() {
    let d = Drain::new("garbage", 5, 0, "<html>502 Bad Gateway</html>\n");
    let out = d.run("complete", "60", true);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("client.after.prom") && all.contains("no metric name") && all.contains("exit 2"), "{all}");
}

#[test]
fn a_sigkill_is_the_judges_fail_and_its_numbers_are_read_from_its_json() {
    let d = Drain::new("sigkill", 5, 137, &client(0, 5, 7));
    let out = d.run("sigkill", "1", false);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("then SIGKILL: exit code 137"), "{all}");
    assert!(all.contains("gsd-verdict judge FAILs it: gsd-server-a was SIGKILLed at the grace period (1s)"), "{all}");
    assert!(all.ends_with("sessions=5\n"), "{all}");
    let json = d.dir.0.join("verdict.json").display().to_string();
    let field = |path: &str, default: Option<&str>| {
        let mut args = vec!["field", json.as_str(), path];
        args.extend(default);
        let out = check(&args);
        assert!(out.status.success(), "{path}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(field("reason:client_drains_incomplete.drains", None), "5");
    assert_eq!(field("reason:messages_lost.messages", Some("0")), "7");
    assert_eq!(field("reason:duplicates.frames", Some("0")), "0", "an absent reason reads its default");
    assert_eq!(field("client_scrapes.0.before.lost", None), "0");
    assert_eq!(field("held", None), "5");
    let absent = check(&["field", json.as_str(), "reason:duplicates.frames"]);
    assert_eq!(absent.status.code(), Some(1), "no default: an absent reason fails");
}

#[test]
fn the_clients_alone_pass_with_exact_drains_or_fail() {
    let dir = Dir::new("cluster-check", "clients");
    let before = dir.file("b.prom", &client(0, 0, 0)).display().to_string();
    let after = dir.file("a.prom", &client(4, 0, 0)).display().to_string();
    let json = dir.0.join("v.json").display().to_string();
    let out = check(&["clients", &before, &after, "4", &json]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("reconnects{reason=\"drain\"} +4 (gsd-verdict judge: PASS)"), "{}", text(&out));
    let out = check(&["clients", &before, &after, "5", &json]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("4 complete drains and 4 drain reconnects, expected 5 each"), "{}", text(&out));
    let lossy = dir.file("l.prom", &client(4, 1, 3)).display().to_string();
    let out = check(&["judge", &json, "--clients-before", &before, "--clients", &lossy]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("  - 3 messages lost\n"), "{}", text(&out));
}
