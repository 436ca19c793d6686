//! `gsd-verdict judge` as a process: real files of saved /metrics bodies
//! in, the report, `--json`, `--junit` and the exit status out (0 PASS,
//! 1 FAIL naming the numbers, 2 bad input naming the file and what is
//! wrong). And the in-cluster run is still what `gsd-verdict` with no
//! subcommand does, options from the environment as the chart gives them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gsd_verdict::fixture::{ClientBody, ServerBody};
use gsd_verdict::names;
use serde_json::Value;

mod common;
use common::Dir;

/// A server's /metrics: `sessions` open; `complete`/`incomplete` drains;
/// `ended`: its drain's shutdown observed. With the HELP and TYPE comments
/// a real exposition has, which the parser skips.
fn server(sessions: u64, complete: u64, incomplete: u64, unacked: u64, ended: bool) -> String {
    let sessions_metric = names::SERVER_SESSIONS;
    let comments = format!("# HELP {sessions_metric} Open sessions.\n# TYPE {sessions_metric} gauge\n");
    let body = ServerBody {
        sessions,
        data_sent: 400,
        unacked,
        shutdown_seconds: ended.then_some(0.042),
        closed: vec![("drain_complete", complete), ("client_close", 0)],
        ..ServerBody::ended(complete, incomplete, 5 * (complete + incomplete))
    };
    comments + &body.render()
}

/// 10 users; 5 of them on the pod before its termination.
fn before() -> ClientBody {
    ClientBody { users: 10, received: 300, ..ClientBody::default() }
}

fn verdict(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gsd-verdict")).args(args).output().expect("run gsd-verdict")
}

/// `gsd-verdict judge ARGS`, the output and the `--json` it wrote (if any).
fn judge(dir: &Dir, args: &[&Path]) -> (Output, Option<Value>) {
    let json = dir.0.join("verdict.json");
    let _ = std::fs::remove_file(&json);
    let mut all: Vec<&std::ffi::OsStr> = vec!["judge".as_ref()];
    all.extend(args.iter().map(|a| a.as_os_str()));
    all.extend(["--json".as_ref(), json.as_os_str()]);
    let out = verdict(&all);
    let written = std::fs::read_to_string(&json).ok().map(|t| serde_json::from_str(&t).expect("--json is JSON"));
    (out, written)
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The reason of `kind` in the JSON, if any.
fn reason<'a>(json: &'a Value, kind: &str) -> Option<&'a Value> {
    json["reasons"].as_array().unwrap().iter().find(|r| r["kind"] == kind)
}

/// The files of one termination: the pod's before and last, one client's
/// before and after.
fn files(dir: &Dir, server_last: &str, client_after: ClientBody) -> [PathBuf; 4] {
    [
        dir.file("server.before.prom", &server(5, 0, 0, 0, false)),
        dir.file("server.last.prom", server_last),
        dir.file("client.before.prom", &before().render()),
        dir.file("client.after.prom", &client_after.render()),
    ]
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// `gsd-verdict judge` on one pod's termination: `pod`, and the files of
/// [`files`].
fn judge_drain(dir: &Dir, pod: &str, [sb, sl, cb, ca]: &[PathBuf; 4]) -> (Output, Option<Value>) {
    let args = [
        p("--pod"),
        p(pod),
        p("--server-before"),
        sb,
        p("--server"),
        sl,
        p("--clients-before"),
        cb,
        p("--clients"),
        ca,
    ];
    judge(dir, &args)
}

#[test]
fn a_clean_drain_passes_with_its_numbers_in_the_json_and_junit() {
    let dir = Dir::new("judge", "clean");
    let after = ClientBody { complete: 5, reconnects_drain: 5, received: 325, ..before() };
    let [sb, sl, cb, ca] = files(&dir, &server(0, 5, 0, 0, true), after);
    let junit = dir.0.join("verdict.xml");
    let (out, json) = judge(
        &dir,
        &[
            p("--pod"),
            p("gsd-server-a"),
            p("--server-before"),
            &sb,
            p("--server"),
            &sl,
            p("--clients-before"),
            &cb,
            p("--clients"),
            &ca,
            p("--grace"),
            p("60"),
            p("--junit"),
            &junit,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("gsd-verdict: judge | saved scrapes | 1 server pod | 1 client process(es)"), "{stdout}");
    assert!(
        stdout.contains("gsd-server-a                            5        5        25     0.042s  complete"),
        "{stdout}"
    );
    assert!(stdout.contains("PASS: every drain completed and nothing was lost"), "{stdout}");
    let json = json.expect("--json written");
    assert_eq!((json["ok"].as_bool(), json["mode"].as_str()), (Some(true), Some("saved_scrapes")));
    assert_eq!(json["held"], 5);
    assert_eq!(json["server"]["drains"]["complete"], 5);
    assert_eq!(json["server"]["shutdowns"], 1);
    assert_eq!(json["server"]["closed"]["drain_complete"], 5);
    assert_eq!(json["server"]["sessions"], 0);
    let c = &json["clients"];
    assert_eq!(
        (c["drains_complete"].as_u64(), c["reconnects_drain"].as_u64(), c["lost"].as_u64()),
        (Some(5), Some(5), Some(0))
    );
    assert_eq!((c["received"].as_u64(), c["users"].as_u64()), (Some(25), Some(10)), "a change, gauges as after");
    let read = &json["client_scrapes"][0];
    assert_eq!((read["before"]["received"].as_u64(), read["after"]["received"].as_u64()), (Some(300), Some(325)));
    assert_eq!(read["after_file"], ca.display().to_string());
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testsuite name=\"gsd-verdict judge\" tests=\"2\" failures=\"0\""), "{xml}");
    assert!(xml.contains("name=\"drain gsd-server-a\"/>"), "{xml}");
}

#[test]
fn users_of_the_drained_pod_that_did_not_come_back_fail_by_number() {
    let dir = Dir::new("judge", "not-back");
    // A clean drain of 5 on the server's side, but only 3 users reconnected
    // and 2 hold no session at the end.
    let after = ClientBody { complete: 5, reconnects_drain: 3, without_session: 2, received: 325, ..before() };
    let (out, json) = judge_drain(&dir, "x", &files(&dir, &server(0, 5, 0, 0, true), after));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("x: only 3 of its 5 users reconnected to another pod"), "{stdout}");
    let json = json.expect("--json written");
    let not_moved = reason(&json, "users_not_moved").unwrap_or_else(|| panic!("{json}"));
    assert_eq!((not_moved["held"].as_u64(), not_moved["moved"].as_u64()), (Some(5), Some(3)));
    // Every user back, 2 of them without a session at the end: still 3.
    let after = ClientBody { complete: 5, reconnects_drain: 5, without_session: 2, received: 325, ..before() };
    let (out, json) = judge_drain(&dir, "x", &files(&dir, &server(0, 5, 0, 0, true), after));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).0);
    assert_eq!(reason(&json.unwrap(), "users_not_moved").unwrap()["moved"], 3);
}

#[test]
fn lost_messages_fail_naming_their_number() {
    let dir = Dir::new("judge", "lost");
    // faults.dropOwed=2 with 5 owed frames: every one of the 5 drains
    // misses 2, and the clients count them lost and the drains incomplete.
    let after = ClientBody { incomplete: 5, lost: 10, reconnects_drain: 5, received: 315, ..before() };
    let drain = files(&dir, &server(0, 5, 0, 0, true), after);
    let (out, json) = judge_drain(&dir, "x", &drain);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("FAIL:\n") && stdout.contains("  - 10 messages lost\n"), "{stdout}");
    assert!(stdout.contains("  - 5 drains incomplete as the clients saw them\n"), "{stdout}");
    let json = json.expect("--json written on FAIL too");
    assert_eq!(json["ok"], false);
    assert_eq!(reason(&json, "messages_lost").unwrap()["messages"], 10);
    assert_eq!(reason(&json, "client_drains_incomplete").unwrap()["drains"], 5);
    // The same clients with no pod: the clients' account alone, the same loss.
    let [_, _, cb, ca] = &drain;
    let (out, json) = judge(&dir, &[p("--clients-before"), cb, p("--clients"), ca]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).0);
    let json = json.unwrap();
    assert_eq!(reason(&json, "messages_lost").unwrap()["messages"], 10);
    assert!(text(&out).0.contains("no server pod"), "{}", text(&out).0);
}

#[test]
fn a_sigkill_at_the_grace_period_is_named_with_the_sessions_and_the_loss() {
    let dir = Dir::new("judge", "sigkill");
    let after = ClientBody { incomplete: 5, lost: 7, unacked: 3, reconnects_drain: 5, received: 320, ..before() };
    let [sb, _, cb, ca] = files(&dir, "unused\n", after);
    let args = [
        p("--pod"),
        p("v"),
        p("--server-before"),
        &sb,
        p("--ending"),
        p("grace-ran-out"),
        p("--grace"),
        p("1"),
        p("--clients-before"),
        &cb,
        p("--clients"),
        &ca,
    ];
    let (out, json) = judge(&dir, &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).0);
    let json = json.unwrap();
    assert_eq!(reason(&json, "grace_ran_out").unwrap()["grace_seconds"], 1.0);
    assert_eq!(reason(&json, "client_drains_incomplete").unwrap()["drains"], json["held"]);
    assert_eq!(reason(&json, "messages_lost").unwrap()["messages"], 7);
    assert!(reason(&json, "no_final_account").is_none(), "a SIGKILLed pod is not expected to have one");
    // The same scrapes called a planned drain: no scrape saw it end.
    let planned: Vec<&Path> =
        args.iter().copied().filter(|a| *a != p("--ending") && *a != p("grace-ran-out")).collect();
    let (_, json) = judge(&dir, &planned);
    assert!(reason(&json.unwrap(), "no_final_account").is_some());
}

#[test]
fn bad_input_exits_2_naming_the_file_and_what_is_wrong() {
    let dir = Dir::new("judge", "bad");
    let after = ClientBody { complete: 5, reconnects_drain: 5, ..before() };
    let [sb, sl, cb, ca] = files(&dir, &server(0, 5, 0, 0, true), after);
    let garbage = dir.file("garbage.prom", "<html><body>502 Bad Gateway</body></html>\n");
    let cut = dir.file("cut.prom", &after.render().replace(&format!("{} 0\n", names::CLIENT_DATA_UNACKED), ""));
    let missing = dir.0.join("nowhere.prom");
    let empty = dir.file("empty.prom", "");
    let cases: [(Vec<&Path>, Vec<String>); 6] = [
        (
            vec![
                p("--pod"),
                p("x"),
                p("--server-before"),
                &sb,
                p("--server"),
                &garbage,
                p("--clients-before"),
                &cb,
                p("--clients"),
                &ca,
            ],
            vec![garbage.display().to_string(), "line 1: no metric name".into()],
        ),
        (
            vec![p("--clients-before"), &cb, p("--clients"), &cut],
            vec![cut.display().to_string(), format!("{} is missing", names::CLIENT_DATA_UNACKED)],
        ),
        (
            vec![
                p("--pod"),
                p("x"),
                p("--server-before"),
                &missing,
                p("--server"),
                &sl,
                p("--clients-before"),
                &cb,
                p("--clients"),
                &ca,
            ],
            vec![missing.display().to_string(), "No such file".into()],
        ),
        (
            vec![p("--clients-before"), &cb, &cb, p("--clients"), &ca],
            vec!["2 --clients-before file(s) and 1 --clients file(s)".into()],
        ),
        (
            vec![p("--clients-before"), &cb, p("--clients"), &empty],
            vec!["empty.prom".into(), "no sample in the body".into()],
        ),
        (
            vec![p("--clients-before"), &cb, &cb, p("--clients"), &ca, &ca],
            vec![ca.display().to_string(), "given twice as --clients".into()],
        ),
    ];
    for (args, says) in cases {
        let (out, json) = judge(&dir, &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}\n{stderr}");
        assert!(stdout.is_empty(), "{args:?}: no report for bad input: {stdout}");
        assert!(json.is_none(), "{args:?}: no --json for bad input");
        for s in says {
            assert!(stderr.contains(&s), "{args:?}: {s:?} not in {stderr:?}");
        }
    }
    // Flags clap refuses (also exit 2): a server file without its pod, a bad grace.
    for args in [
        vec![p("--server"), &sl, p("--clients-before"), &cb, p("--clients"), &ca],
        vec![p("--pod"), p("x"), p("--clients-before"), &cb, p("--clients"), &ca],
        vec![p("--clients-before"), &cb, p("--clients"), &ca, p("--grace"), p("-1")],
        vec![p("--clients-before"), &cb],
    ] {
        let (out, _) = judge(&dir, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {:?}", text(&out));
    }
}

#[test]
fn the_in_cluster_run_stays_the_default_with_its_options_from_the_environment() {
    let help = verdict(&["--help".as_ref()]);
    let (stdout, _) = text(&help);
    assert!(help.status.success(), "{stdout}");
    for want in ["judge", "run", "--server-selector", "SERVER_SELECTOR"] {
        assert!(stdout.contains(want), "{want:?} not in --help:\n{stdout}");
    }
    let judge_help = verdict(&["judge".as_ref(), "--help".as_ref()]);
    let (stdout, _) = text(&judge_help);
    for want in [
        "--server-before",
        "--clients-before",
        "--ending",
        "--grace",
        "--json",
        "--junit",
        "--via",
        "--via-pod",
        "--via-terminated-at",
        "--via-setting",
        "--via-setting-name",
        "--client-log",
    ] {
        assert!(stdout.contains(want), "{want:?} not in judge --help:\n{stdout}");
    }
    // As the chart runs it: no argument, everything in the environment.
    // It gets as far as reading the service account's token.
    for args in [&[][..], &["run"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_gsd-verdict"))
            .args(args)
            .env("SERVER_SELECTOR", "app=gsd,component=server")
            .env("CLIENT_SELECTOR", "app=gsd,component=client")
            .env("POD_NAMESPACE", "gsd")
            .env("KUBE_API", "https://127.0.0.1:1")
            .env("KUBE_TOKEN_FILE", "/nonexistent/token")
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("reading the token /nonexistent/token"), "{args:?}: {stderr}");
    }
    // Without its selectors the run refuses to start.
    let out = Command::new(env!("CARGO_BIN_EXE_gsd-verdict")).env_remove("SERVER_SELECTOR").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--server-selector"), "{}", text(&out).1);
}

/// `gsd-verdict` as the chart runs it (options in the environment, the
/// service account's token nowhere), with `env` more: (exit status, stderr).
fn in_cluster(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gsd-verdict"))
        .args(args)
        .env("SERVER_SELECTOR", "app=gsd,component=server")
        .env("CLIENT_SELECTOR", "app=gsd,component=client")
        .env("POD_NAMESPACE", "gsd")
        .env("KUBE_API", "https://127.0.0.1:1")
        .env("KUBE_TOKEN_FILE", "/nonexistent/token")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), text(&out).1)
}

#[test]
fn the_in_cluster_proxy_phase_takes_its_options_whole_or_exits_2_naming_them() {
    let help = verdict(&["--help".as_ref()]);
    let (stdout, _) = text(&help);
    for want in [
        "--via <NAME>",
        "VERDICT_VIA=",
        "--via-namespace <NS>",
        "VERDICT_VIA_NAMESPACE=",
        "--via-deployment <NAME>",
        "VERDICT_VIA_DEPLOYMENT=",
        "--via-setting <DURATION>",
        "VERDICT_VIA_SETTING=",
        "--via-setting-name <TEXT>",
        "VERDICT_VIA_SETTING_NAME=",
    ] {
        assert!(stdout.contains(want), "{want:?} not in --help:\n{stdout}");
    }
    // Whole, from the environment as the chart gives it, or as flags: it
    // gets as far as the service account's token.
    let whole = [("VERDICT_VIA", "traefik"), ("VERDICT_VIA_NAMESPACE", "edge"), ("VERDICT_VIA_DEPLOYMENT", "traefik")];
    let (code, stderr) = in_cluster(&whole, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("reading the token /nonexistent/token"), "{stderr}");
    let flags = ["--via", "relay", "--via-namespace", "r", "--via-deployment", "relay"];
    let setting = ["--via-setting", "5s", "--via-setting-name", "relay drain"];
    let (code, stderr) = in_cluster(&[], &[&flags[..], &setting[..]].concat());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("reading the token"), "{stderr}");

    // The environment, the flags, and what stderr says.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: [Case; 9] = [
        (&whole[..1], &[], "--via-namespace <NS>"),
        (&whole[..2], &[], "--via-deployment <NAME>"),
        (&whole[1..], &[], "--via <NAME>"),
        (&[("VERDICT_VIA_SETTING", "10s")], &[], "--via <NAME>"),
        (&whole, &["--via-namespace", "Edge"], "`Edge` is not a DNS label"),
        (&whole, &["--via-deployment", "traefik_1"], "`traefik_1` is not a DNS label"),
        (&whole, &["--via-setting", "forever"], "forever"),
        (&whole, &["--via-setting-name", ""], "an empty name"),
        (
            &[("VERDICT_VIA", "haproxy"), ("VERDICT_VIA_NAMESPACE", "h"), ("VERDICT_VIA_DEPLOYMENT", "haproxy")],
            &["--via-setting", "30s"],
            "--via haproxy: not a proxy gsd knows the drain setting of (traefik, envoy-gateway): give \
             --via-setting-name and --via-setting",
        ),
    ];
    for (env, args, says) in cases {
        let (code, stderr) = in_cluster(env, args);
        assert_eq!(code, Some(2), "{env:?} {args:?}: {stderr}");
        assert!(stderr.contains(says), "{env:?} {args:?}: {says:?} not in {stderr:?}");
        assert!(!stderr.contains("reading the token"), "{env:?} {args:?}: it went on: {stderr}");
    }
}

/// The termination of the proxy in the tests below: 2026-01-01T00:00:05Z.
const PROXY_TERMINATED: &str = "1767225605";

/// A client's JSON log line at `second` seconds past 2026-01-01T00:00:00Z,
/// as gsd-client writes it with LOG_FORMAT=json.
fn log_line(second: f64, message: &str, fields: &str) -> String {
    format!(
        "{{\"timestamp\":\"2026-01-01T00:00:{second:09.6}Z\",\"level\":\"INFO\",\"message\":\"{message}\",{fields}}}\n"
    )
}

/// A client's log as `kubectl logs` gives it: a line of its own first, a
/// cut and a reconnect before the proxy's termination (not its), then
/// `cuts` cuts at `first` + 0.1 s apart after it, each followed by its
/// reconnect 50 ms later.
fn client_log(cuts: usize, first: f64) -> String {
    let mut log = "Defaulted container \"client\" out of: client\n".to_owned();
    log += &log_line(1.0, "session_cut", "\"reason\":\"error\",\"received_up_to\":3,\"unacked\":0,\"unanswered\":0");
    log += &log_line(1.2, "reconnected", "\"user\":0,\"to\":\"b\",\"reason\":\"error\",\"latency_us\":200000");
    for i in 0..cuts {
        let at = 5.0 + first + 0.1 * (i % 5) as f64;
        log += &log_line(at, "session_cut", "\"reason\":\"error\",\"received_up_to\":9,\"unacked\":1,\"unanswered\":0");
        let reconnect =
            format!("\"user\":{i},\"from\":\"a\",\"to\":\"b\",\"reason\":\"error\",\"latency_us\":{}", 1000 * (i + 1));
        log += &log_line(at + 0.05, "reconnected", &reconnect);
    }
    log
}

/// One client process's before and after with `cut` sessions cut (each
/// user back after an error), and its log.
fn proxy_files(dir: &Dir, cut: u64, log: &str) -> [PathBuf; 3] {
    let after = ClientBody { cut, reconnects_error: cut, received: 350, ..before() };
    [
        dir.file("client.before.prom", &before().render()),
        dir.file("client.after.prom", &after.render()),
        dir.file("client.log", log),
    ]
}

/// `gsd-verdict judge` on a proxy's termination: the files of
/// [`proxy_files`], `--via-terminated-at` [`PROXY_TERMINATED`], and `via`
/// (the proxy and its options).
fn judge_proxy(dir: &Dir, [cb, ca, log]: &[PathBuf; 3], via: &[&str]) -> (Output, Option<Value>) {
    let mut args =
        vec![p("--clients-before"), cb, p("--clients"), ca, p("--client-log"), log, p("--via-terminated-at")];
    args.push(p(PROXY_TERMINATED));
    args.extend(via.iter().map(|a| p(a)));
    judge(dir, &args)
}

#[test]
fn sessions_a_proxy_cut_at_its_setting_fail_naming_the_setting() {
    let dir = Dir::new("judge", "proxy-cut");
    let files = proxy_files(&dir, 12, &client_log(12, 10.0));
    let (out, json) = judge_proxy(&dir, &files, &["--via", "traefik", "--via-pod", "traefik-abc"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("  - 12 sessions cut 10.0–10.4 s after the proxy's SIGTERM = Traefik graceTimeOut (10s)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "via traefik (pod traefik-abc, Traefik graceTimeOut 10s): 12 sessions cut, 0 resumed; 12 reconnects after its \
             termination\n    cuts 10.0–10.4 s after its termination (median 10.1 s): at the setting (9.5–12.0 s)\n"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("cut with no close and no notice"), "the cut reason is explained, not repeated: {stdout}");
    let json = json.expect("--json written");
    let cut = reason(&json, "cut_by_proxy").unwrap_or_else(|| panic!("{json}"));
    assert_eq!((cut["sessions"].as_u64(), cut["at_setting"].as_bool()), (Some(12), Some(true)));
    assert_eq!((cut["proxy"].as_str(), cut["pod"].as_str()), (Some("traefik"), Some("traefik-abc")));
    assert_eq!(
        (cut["setting_name"].as_str(), cut["setting_seconds"].as_f64()),
        (Some("Traefik graceTimeOut"), Some(10.0))
    );
    assert!(reason(&json, "sessions_cut").is_none(), "{json}");
    let via = &json["via"];
    assert_eq!((via["proxy"].as_str(), via["pod"].as_str()), (Some("traefik"), Some("traefik-abc")));
    assert_eq!(via["terminated_at"].as_f64(), Some(1_767_225_605.0));
    assert_eq!(
        (via["setting_name"].as_str(), via["setting_seconds"].as_f64()),
        (Some("Traefik graceTimeOut"), Some(10.0))
    );
    assert_eq!((via["cuts"].as_u64(), via["at_setting"].as_bool()), (Some(12), Some(true)));
    let delay = |key: &str| via[key].as_f64().unwrap_or_else(|| panic!("no via.{key} in {via}"));
    for (key, want) in [("first_after_seconds", 10.0), ("median_after_seconds", 10.1), ("last_after_seconds", 10.4)] {
        assert!((delay(key) - want).abs() < 1e-3, "via.{key} = {} in {via}", delay(key));
    }
    assert_eq!((via["reconnects"].as_u64(), via["peak_per_second"].as_u64()), (Some(12), Some(12)));
    assert_eq!(
        (via["p50_ms"].as_f64(), via["p99_ms"].as_f64(), via["max_ms"].as_f64()),
        (Some(6.0), Some(12.0), Some(12.0))
    );

    // The same cuts against a longer setting: not the setting's.
    let (out, json) = judge_proxy(&dir, &files, &["--via", "traefik", "--via-setting", "30s"]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "  - 12 sessions cut 10.0–10.4 s after the proxy's SIGTERM, not at Traefik graceTimeOut (30s): something \
             else cut them\n"
        ),
        "{stdout}"
    );
    assert_eq!(reason(&json.unwrap(), "cut_by_proxy").unwrap()["at_setting"], false);
    // Any proxy, with its setting named.
    let (out, _) =
        judge_proxy(&dir, &files, &["--via", "relay", "--via-setting-name", "relay drain", "--via-setting", "10"]);
    assert!(
        text(&out).0.contains("  - 12 sessions cut 10.0–10.4 s after the proxy's SIGTERM = relay drain (10s)\n"),
        "{}",
        text(&out).0
    );
    // Envoy Gateway's default is 60 s.
    let (out, _) = judge_proxy(&dir, &files, &["--via", "envoy-gateway"]);
    assert!(text(&out).0.contains("not at Envoy Gateway shutdown.drainTimeout (60s)"), "{}", text(&out).0);
}

#[test]
fn cuts_the_log_and_the_metrics_count_differently_stay_unexplained_with_both_numbers() {
    let dir = Dir::new("judge", "proxy-mismatch");
    let files = proxy_files(&dir, 12, &client_log(10, 10.0));
    let (out, json) = judge_proxy(&dir, &files, &["--via", "traefik"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("  - 12 session(s) cut with no close and no notice: loss in them is unknown\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  - the client logs show 10 session_cut lines after the termination of traefik, their /metrics count 12 \
             cut sessions: the cuts cannot be put down to Traefik graceTimeOut\n"
        ),
        "{stdout}"
    );
    let json = json.unwrap();
    assert_eq!(reason(&json, "sessions_cut").unwrap()["sessions"], 12);
    assert!(reason(&json, "cut_by_proxy").is_none());
    assert_eq!(json["via"]["cuts"], 10);
}

#[test]
fn a_proxy_termination_that_cut_nothing_passes_with_its_summary() {
    let dir = Dir::new("judge", "proxy-clean");
    let files = proxy_files(&dir, 0, &client_log(0, 0.0));
    let via = ["--via", "traefik", "--via-pod", "traefik-abc", "--via-setting", "30s"];
    let (out, json) = judge_proxy(&dir, &files, &via);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "via traefik (pod traefik-abc, Traefik graceTimeOut 30s): 0 sessions cut; 0 reconnects after its \
             termination\n\nPASS"
        ),
        "{stdout}"
    );
    let via = &json.unwrap()["via"];
    assert_eq!(
        (via["cuts"].as_u64(), via["reconnects"].as_u64(), via["setting_seconds"].as_f64()),
        (Some(0), Some(0), Some(30.0))
    );
    assert!(via["at_setting"].is_null() && via["first_after_seconds"].is_null() && via["p50_ms"].is_null(), "{via}");
}

#[test]
fn garbage_in_the_proxys_flags_or_logs_exits_2_naming_it() {
    let dir = Dir::new("judge", "proxy-bad");
    let files = proxy_files(&dir, 2, &client_log(2, 10.0));
    let [cb, ca, log] = &files;
    let malformed =
        dir.file("malformed.log", &(client_log(1, 10.0) + "{\"timestamp\":\"2026-01-01T00:00:16Z\",\"mess\n"));
    let untimed = dir.file("untimed.log", "{\"timestamp\":\"16:00\",\"message\":\"session_cut\"}\n");
    let missing = dir.0.join("nowhere.log");
    let common = |via: &[&str]| -> Vec<PathBuf> {
        let mut args = vec![PathBuf::from("--clients-before"), cb.clone(), PathBuf::from("--clients"), ca.clone()];
        args.extend(via.iter().map(PathBuf::from));
        args
    };
    let with_log = |via: &[&str], log: &Path| -> Vec<PathBuf> {
        let mut args = common(via);
        args.extend([PathBuf::from("--client-log"), log.to_owned()]);
        args
    };
    let t = ["--via-terminated-at", PROXY_TERMINATED];
    let cases: Vec<(Vec<PathBuf>, Vec<String>)> = vec![
        (with_log(&["--via", "traefik", "--via-terminated-at", "yesterday"], log), vec!["`yesterday` is not a time in Unix seconds".into()]),
        (with_log(&["--via", "traefik", "--via-terminated-at", "-5"], log), vec!["`-5` is not a time in Unix seconds".into()]),
        (with_log(&["--via", "traefik", "--via-terminated-at", "NaN"], log), vec!["`NaN` is not a time".into()]),
        (with_log(&["--via", "traefik", t[0], t[1], "--via-setting", "soon"], log), vec!["--via-setting".into(), "soon".into()]),
        (with_log(&["--via", "", t[0], t[1]], log), vec!["--via".into(), "an empty name".into()]),
        (with_log(&["--via", "traefik", t[0], t[1], "--via-pod", " "], log), vec!["--via-pod".into(), "an empty name".into()]),
        (with_log(&["--via", "relay", t[0], t[1], "--via-setting-name", ""], log), vec!["--via-setting-name".into(), "an empty name".into()]),
        (with_log(&["--via", "traefik"], log), vec!["--via-terminated-at".into()]),
        (common(&["--via", "traefik", t[0], t[1]]), vec!["--client-log".into()]),
        (with_log(&["--via-pod", "traefik-abc", t[0], t[1]], log), vec!["--via".into()]),
        (
            with_log(&["--via", "haproxy", t[0], t[1]], log),
            vec!["--via haproxy: not a proxy gsd knows the drain setting of (traefik, envoy-gateway): give --via-setting-name and --via-setting".into()],
        ),
        (
            with_log(&["--via", "haproxy", t[0], t[1], "--via-setting-name", "hard-stop-after"], log),
            vec!["--via haproxy: not a proxy gsd knows".into()],
        ),
        (with_log(&["--via", "traefik", t[0], t[1]], &missing), vec![missing.display().to_string(), "No such file".into()]),
        (
            with_log(&["--via", "traefik", t[0], t[1]], &malformed),
            vec![format!("{}: line 6: not JSON: ", malformed.display())],
        ),
        (
            with_log(&["--via", "traefik", t[0], t[1]], &untimed),
            vec![format!("{}: line 1: a session_cut line with no RFC 3339 `timestamp`", untimed.display())],
        ),
        (
            {
                let mut args = with_log(&["--via", "traefik", t[0], t[1]], log);
                args.push(untimed.clone());
                args
            },
            vec!["2 --client-log file(s) and 1 --clients file(s)".into()],
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&Path> = args.iter().map(PathBuf::as_path).collect();
        let (out, json) = judge(&dir, &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}\n{stderr}");
        assert!(stdout.is_empty(), "{args:?}: no report for bad input: {stdout}");
        assert!(json.is_none(), "{args:?}: no --json for bad input");
        for s in says {
            assert!(stderr.contains(&s), "{args:?}: {s:?} not in {stderr:?}");
        }
    }
}
