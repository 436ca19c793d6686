//! gsd-lab end to end: the rehearsals a user runs, their verdicts, and no
//! process left behind.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Runs `gsd-lab args` on a free port with short timings; returns its output
/// and the JSON report.
fn rehearse(args: &[&str]) -> (Output, Value) {
    let (output, report, _) = rehearse_junit(args);
    (output, report)
}

/// The lab's run with its `--json` report and its `--junit` XML.
fn rehearse_junit(args: &[&str]) -> (Output, Value, String) {
    let base = std::env::temp_dir().join(format!("gsd-lab-report-{}-{}", std::process::id(), args.join("_").len()));
    let (json, junit) = (base.with_extension("json"), base.with_extension("xml"));
    let output = std::process::Command::new(common::lab())
        .args(["--listen", "127.0.0.1:0", "--prestop", "300ms", "--propagation-delay", "100ms", "--settle", "500ms"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&json)
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap_or_else(|_| panic!("no report; stderr:\n{}", String::from_utf8_lossy(&output.stderr)));
    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|_| panic!("no JUnit report"));
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&junit);
    (output, report, xml)
}

fn rows(report: &Value) -> &Vec<Value> {
    report["drains"].as_array().unwrap()
}

#[test]
fn a_rolling_restart_of_2_servers_with_50_users_loses_nothing() {
    let (output, report, junit) =
        rehearse_junit(&["--scenario", "rolling-restart", "--servers", "2", "--users", "50", "--rounds", "2"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("PASS"), "{stdout}");
    assert_eq!(rows(&report).len(), 4, "2 rounds x 2 replicas: {report}");
    let mut moved = 0;
    for row in rows(&report) {
        assert_eq!(row["outcome"], "complete", "{row}");
        assert_eq!(row["sigkilled"], false);
        assert!(row["sessions"].as_u64().unwrap() > 0, "every drained pod held sessions: {row}");
        assert_eq!(row["drained"], row["sessions"], "{row}");
        // Every user that was on the drained pod moved to another pod.
        assert_eq!(row["moved"], row["sessions"], "{row}");
        assert!(row["shutdown_seconds"].as_f64().unwrap() > 0.0);
        // Both sides: the pod's own account and the clients' over its drain.
        assert_eq!(row["server"]["drains"]["complete"], row["sessions"], "{row}");
        assert_eq!(row["server"]["unacked"], 0, "{row}");
        let clients = &row["clients"];
        assert_eq!(
            (clients["lost"].as_u64(), clients["cut"].as_u64(), clients["unacked"].as_u64()),
            (Some(0), Some(0), Some(0)),
            "{row}"
        );
        assert_eq!(clients["drains_complete"], row["sessions"], "{row}");
        assert_eq!(clients["reconnects_drain"], row["sessions"], "{row}");
        moved += row["moved"].as_u64().unwrap();
    }
    assert!(junit.contains("tests=\"6\" failures=\"0\""), "4 drains, the clients and the lab: {junit}");
    let totals = &report["totals"];
    assert_eq!(totals["users"], 50);
    assert_eq!(totals["messages_lost"], 0);
    assert_eq!(totals["requests_lost"], 0);
    assert_eq!(totals["drains_incomplete"], 0);
    assert_eq!(totals["reconnects"].as_u64(), Some(moved));
    assert_eq!(totals["drains_complete"].as_u64(), Some(moved));
    assert!(report["ok"].as_bool().unwrap());
}

#[test]
fn a_kill_is_reported_as_loss_and_fails() {
    let (output, report) = rehearse(&["--scenario", "kill", "--users", "10"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL") && stdout.contains("SIGKILLed"), "{stdout}");
    let row = &rows(&report)[0];
    assert_eq!(row["outcome"], "killed");
    assert_eq!(row["sigkilled"], true);
    assert_eq!(row["drained"], 0, "a killed pod drains nothing: {row}");
    // The users were cut, not drained: they came back after an error.
    assert_eq!(report["totals"]["reconnects_by_reason"]["error"], row["sessions"], "{report}");
    assert_eq!(report["totals"]["drains_complete"], 0);
    // "messages lost 0" must not read as "nothing lost": the cut sessions are
    // counted apart and the words say their loss is unknown.
    assert_eq!(report["totals"]["sessions_cut"], row["sessions"], "{report}");
    assert!(stdout.contains("no one can count that loss") && stdout.contains("UNKNOWN"), "{stdout}");
    assert!(!report["ok"].as_bool().unwrap());
}

#[test]
fn owed_frames_withheld_by_a_faulty_server_are_reported_lost_exactly_and_fail() {
    let (output, report, junit) = rehearse_junit(&["--fault-drop-owed", "2", "--drain-messages", "5", "--users", "10"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let row = &rows(&report)[0];
    let drained = row["drained"].as_u64().unwrap();
    assert!(drained > 0, "{row}");
    // The pod believes every drain complete and sent 3 of 5 frames each.
    assert_eq!(row["outcome"], "complete", "{row}");
    assert_eq!(row["messages"].as_u64(), Some(3 * drained), "{row}");
    let totals = &report["totals"];
    assert_eq!(totals["messages_lost"].as_u64(), Some(2 * drained), "{totals}");
    assert_eq!(totals["drains_incomplete"].as_u64(), Some(drained), "{totals}");
    assert!(stdout.contains(&format!("messages lost {}", 2 * drained)), "{stdout}");
    assert!(stdout.contains(&format!("- {} messages lost", 2 * drained)), "{stdout}");
    assert!(!report["ok"].as_bool().unwrap());
    // The clients' side of that pod's drain holds the same numbers.
    assert_eq!(row["clients"]["lost"].as_u64(), Some(2 * drained), "{row}");
    assert_eq!(row["clients"]["drains_incomplete"].as_u64(), Some(drained), "{row}");
    let details = report["reason_details"].as_array().unwrap();
    let lost = details.iter().find(|r| r["kind"] == "messages_lost").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(lost["messages"].as_u64(), Some(2 * drained), "{lost}");
    assert!(
        junit.contains(&format!("<failure type=\"messages_lost\" message=\"{} messages lost\"/>", 2 * drained)),
        "{junit}"
    );
}

#[test]
fn sessions_a_faulty_server_resets_at_sigterm_are_named_on_both_sides_and_fail() {
    let (output, report) = rehearse(&["--fault-reset-at-sigterm", "2", "--users", "10"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let row = &rows(&report)[0];
    assert!(row["sessions"].as_u64().unwrap() > 2, "{row}");
    // The pod's own account: 2 reset, the rest drained, the pod not complete.
    assert_eq!(row["server"]["drains"]["reset"], 2, "{row}");
    assert_eq!(row["drained"], row["sessions"], "{row}");
    assert_eq!(row["outcome"], "incomplete", "{row}");
    // The users' account: 2 sessions cut with no notice, their loss unknown.
    assert_eq!(row["clients"]["cut"], 2, "{row}");
    let details = report["reason_details"].as_array().unwrap();
    let reset = details.iter().find(|r| r["kind"] == "server_drains_short").unwrap_or_else(|| panic!("{report}"));
    assert_eq!((&reset["outcome"], &reset["sessions"]), (&"reset".into(), &2.into()), "{reset}");
    let cut = details.iter().find(|r| r["kind"] == "cut_without_notice").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(cut["sessions"], 2, "{cut}");
    assert!(stdout.contains("2 drain(s) reset by its own account"), "{stdout}");
    assert!(!report["ok"].as_bool().unwrap());
}

#[test]
fn a_partition_is_noticed_by_both_sides_within_the_liveness_bound() {
    // Resume off: every cut is unknown (with it on, see the tests below).
    let (output, report) = rehearse(&[
        "--scenario",
        "partition",
        "--users",
        "10",
        "--ping-interval",
        "500ms",
        "--ping-timeout",
        "500ms",
        "--resume-window",
        "0s",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let row = &rows(&report)[0];
    let sessions = row["sessions"].as_u64().unwrap();
    assert!(sessions > 0, "{row}");
    assert_eq!(row["outcome"], "partitioned");
    // The pod, still running behind the cut, gave up every session by itself.
    assert_eq!(row["peer_timeouts"].as_u64(), Some(sessions), "{row}");
    let freed = row["shutdown_seconds"].as_f64().unwrap();
    assert!(freed < 6.0, "sessions freed {freed} s after the cut; bound 1 s");
    // Every user noticed the silence and moved.
    assert_eq!(row["moved"].as_u64(), Some(sessions), "{row}");
    let totals = &report["totals"];
    assert_eq!(totals["reconnects_by_reason"]["timeout"].as_u64(), Some(sessions), "{totals}");
    assert_eq!(totals["sessions_cut"].as_u64(), Some(sessions), "{totals}");
    assert_eq!(totals["messages_lost"], 0);
    assert!(stdout.contains("UNKNOWN") && stdout.contains("never acknowledged"), "{stdout}");
    // The cuts are the partition's own: counted on its row, unknown, no reason.
    assert_eq!(row["clients"]["cut"].as_u64(), Some(sessions), "{row}");
    assert_eq!(report["unknown_cuts"].as_u64(), Some(sessions), "{report}");
    assert!(stdout.contains(&format!("loss in the {sessions} cut session(s) is unknown")), "{stdout}");
}

/// A partition healed inside the resume window: the users notice the
/// silence, reconnect through the Service to the other pod and resume there
/// (fetched from the partitioned pod, which the pods still reach); nothing
/// is lost and nothing is unknown, and the pod comes back into service.
#[test]
fn a_partition_healed_inside_the_window_is_resumed_with_nothing_lost() {
    let partition = ["--scenario", "partition", "--users", "10", "--ping-interval", "500ms", "--ping-timeout", "500ms"];
    let (output, report) = rehearse(&[&partition[..], &["--heal-after", "3s"]].concat());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let row = &rows(&report)[0];
    let sessions = row["sessions"].as_u64().unwrap();
    assert!(sessions > 0, "{row}");
    assert_eq!((row["outcome"].as_str(), row["sigkilled"].as_bool()), (Some("partitioned"), Some(false)), "{row}");
    assert_eq!(row["peer_timeouts"].as_u64(), Some(sessions), "the pod freed them by itself: {row}");
    let clients = &row["clients"];
    assert_eq!((clients["cut"].as_u64(), clients["resumed"].as_u64()), (Some(sessions), Some(sessions)), "{row}");
    assert_eq!((clients["lost"].as_u64(), clients["duplicate"].as_u64()), (Some(0), Some(0)), "{row}");
    assert_eq!(row["moved"].as_u64(), Some(sessions), "resumed on the other pod: {row}");
    assert_eq!(report["unknown_cuts"].as_u64(), Some(0), "{report}");
    assert_eq!(report["heal_after_seconds"].as_f64(), Some(3.0));
    let totals = &report["totals"];
    assert_eq!(
        (totals["sessions_cut"].as_u64(), totals["sessions_resumed"].as_u64()),
        (Some(sessions), Some(sessions))
    );
    assert!(stdout.contains("PASS: every drain completed and nothing was lost"), "{stdout}");
    assert!(stdout.contains("every one resumed") && !stdout.contains("UNKNOWN"), "{stdout}");
    assert!(stdout.contains("partition (heals after 3s)") && stdout.contains("resume window 30s"), "{stdout}");

    // The node gone (no heal): the pod is SIGKILLed once it has freed its
    // sessions. A resume that reached the other pod before that was fetched
    // (known); the rest are refused `origin_gone` (unknown). Either way each
    // cut is counted once, and nothing is counted lost.
    let (output, report) = rehearse(&partition);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let row = &rows(&report)[0];
    let sessions = row["sessions"].as_u64().unwrap();
    let clients = &row["clients"];
    let (cut, resumed) = (clients["cut"].as_u64().unwrap(), clients["resumed"].as_u64().unwrap());
    assert_eq!(cut, sessions, "{row}");
    assert_eq!(report["unknown_cuts"].as_u64(), Some(cut - resumed), "{report}");
    assert_eq!(clients["lost"].as_u64(), Some(0), "{row}");
    assert_eq!(row["sigkilled"].as_bool(), Some(true));
}

#[test]
fn a_grace_period_shorter_than_prestop_plus_drain_ends_in_sigkill() {
    // Clients that process slower than the server pushes build a backlog the
    // drain must wait for; 1.5 s of grace cannot cover it.
    let (output, report) = rehearse(&[
        "--scenario",
        "delete-pod",
        "--grace",
        "1500ms",
        "--processing-time",
        "400ms",
        "--settle",
        "2s",
        "--reconnect-timeout",
        "20s",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let row = &rows(&report)[0];
    assert_eq!(row["outcome"], "sigkilled", "{stdout}");
    assert_eq!(row["sigkilled"], true);
    assert!(stdout.contains("SIGKILLed at the grace period"), "{stdout}");
}

/// Pids of processes whose environment carries `tag`.
fn tagged(tag: &str) -> Vec<u32> {
    let needle = format!("GSD_LAB_TEST_TAG={tag}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn sigterm_to_the_lab_ends_every_process_it_started() {
    let tag = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let mut lab = std::process::Command::new(common::lab())
        .args(["--listen", "127.0.0.1:0", "--settle", "60s", "--users", "5"])
        .env("GSD_LAB_TEST_TAG", &tag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The lab, two pods and a client.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while tagged(&tag).len() < 4 {
        assert!(std::time::Instant::now() < deadline, "the lab did not start its processes");
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(lab.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = lab.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = tagged(&tag).into_iter().filter(|pid| !is_zombie(*pid)).collect();
        if left.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
}

#[test]
fn the_benchmark_command_runs_every_scenario_in_its_quick_form() {
    let json = std::env::temp_dir().join(format!("gsd-bench-{}.json", std::process::id()));
    let output =
        std::process::Command::new(common::lab()).args(["bench", "--quick", "--json"]).arg(&json).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for table in
        ["### Drain time", "### Failover", "### Memory per idle session", "### Steady throughput", "### Session resume"]
    {
        assert!(stdout.contains(table), "{stdout}");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    for drain in report["drain"].as_array().unwrap() {
        assert_eq!(drain["complete"], drain["sessions"], "{drain}");
        assert_eq!(drain["incomplete"], 0);
        assert_eq!(drain["messages_lost"], 0);
        assert!(drain["shutdown_seconds"].as_f64().unwrap() > 0.0);
        // Both processes did work in the drain window.
        assert!(drain["server_cpu_us_per_session"].as_f64().unwrap() > 0.0, "{drain}");
        assert!(drain["client_cpu_us_per_session"].as_f64().unwrap() > 0.0, "{drain}");
        // To the exit, the whole cost: at least the drain window's.
        let (window, exit) =
            (drain["server_cpu_us_per_session"].as_f64().unwrap(), drain["server_exit_cpu_us_per_session"].as_f64());
        assert!(exit.is_some_and(|exit| exit >= window), "{drain}");
    }
    // strace counted the drain: every session drained, and at least a read,
    // a write and a close each on both sides.
    let syscalls = &report["syscalls"];
    assert_eq!(
        (syscalls["sessions"].as_u64(), syscalls["drains_complete"].as_u64()),
        (Some(20), Some(20)),
        "{syscalls}"
    );
    assert_eq!(syscalls["messages_lost"], 0, "{syscalls}");
    assert!(syscalls["server_per_session"].as_f64().unwrap() >= 3.0, "{syscalls}");
    assert!(syscalls["client_per_session"].as_f64().unwrap() >= 3.0, "{syscalls}");
    let close = |side: &str| {
        syscalls[side].as_array().unwrap().iter().find(|row| row[0] == "close").and_then(|row| row[1].as_f64())
    };
    assert!(close("server").is_some_and(|n| n >= 1.0), "every session's descriptor closed: {syscalls}");
    // callgrind counted a drain: thousands of instructions per session at least.
    let instructions = &report["instructions"];
    assert_eq!(instructions["sessions"], 20, "{instructions}");
    assert!(instructions["server_instructions_per_session"].as_f64().unwrap() > 1000.0, "{instructions}");
    assert!(instructions["client_instructions_per_session"].as_f64().unwrap() > 1000.0, "{instructions}");
    let failover = report["failover"].as_array().unwrap();
    assert_eq!(failover.len(), 4);
    for f in failover {
        assert!(f["reconnects"].as_u64().unwrap() > 0, "{f}");
        assert_eq!(f["drains_incomplete"], 0, "{f}");
        assert_eq!((f["messages_lost"].as_u64(), f["requests_lost"].as_u64()), (Some(0), Some(0)), "{f}");
        assert!(f["all_back_seconds"].as_f64().unwrap() > 0.0, "{f}");
    }
    assert!(report["memory"]["server_kib_per_session"].as_f64().unwrap() > 0.0);
    assert!(report["throughput"]["messages_per_cpu_second"].as_f64().unwrap() > 0.0);
    // 200 sessions reset at once, all resumed; then all parked at once, and
    // resumed again: 400 cuts, 400 resumes, nothing lost.
    let resume = &report["resume"];
    assert_eq!((resume["users"].as_u64(), resume["resumed_first"].as_u64()), (Some(200), Some(200)), "{resume}");
    assert_eq!(
        (resume["sessions_cut"].as_u64(), resume["sessions_resumed"].as_u64()),
        (Some(400), Some(400)),
        "{resume}"
    );
    assert_eq!(
        (resume["all_parked"].as_bool(), resume["resumed_again"].as_bool()),
        (Some(true), Some(true)),
        "{resume}"
    );
    assert_eq!((resume["messages_lost"].as_u64(), resume["requests_lost"].as_u64()), (Some(0), Some(0)), "{resume}");
    assert!(resume["server_cpu_us_per_resume"].as_f64().unwrap() > 0.0, "{resume}");
    assert!(resume["server_rss_parked_kib"].as_u64().unwrap() > 0, "{resume}");
    assert!(resume["all_resumed_seconds"].as_f64().unwrap() > 0.0, "{resume}");
}

/// `gsd-lab bench` refuses, before starting anything, what it cannot
/// measure: sizes past the descriptors a process may open here, a build to
/// measure that does not exist, and malformed flags.
#[test]
fn the_benchmark_command_refuses_what_it_cannot_measure_with_a_clear_error() {
    let run = |args: &[&str]| {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(common::lab()).arg("bench").args(args).output().unwrap();
        assert!(started.elapsed() < Duration::from_secs(30), "{args:?} started measuring");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let too_many = run(&["--scenarios", "drain", "--drain-sizes", "100000000"]);
    assert!(too_many.contains("100000200 open files") && too_many.contains("ulimit -Hn"), "{too_many}");
    let missing = run(&["--measure", "/nonexistent/gsd-lab", "--scenarios", "drain"]);
    assert!(missing.contains("--measure /nonexistent/gsd-lab: no such file"), "{missing}");
    for garbage in [
        &["--drain-sizes", "ten"][..],
        &["--drain-sizes", "-5"],
        &["--scenarios", "everything"],
        &["--syscalls-sessions", "1e3"],
        &["--throughput-window", "forever"],
    ] {
        let said = run(garbage);
        assert!(
            said.contains("error: invalid value") || said.contains("error: unexpected argument"),
            "{garbage:?}: {said}"
        );
    }
}
