//! The deprecated `--clients`/`CLIENTS` against the real `gsd-client`
//! process: the variable still sets the users and is warned about in the
//! log, the old name beside the new one is refused, garbage in either is
//! refused. (The flag's own cases are unit tests in src/config.rs.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `gsd-client` with a clean environment for the settings under test, its
/// metrics on a free loopback port, and a server that refuses (port 1): the
/// users retry in the background, which is all these tests need.
fn client(envs: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gsd-client"));
    for variable in ["USERS", "CLIENTS", "RUST_LOG"] {
        command.env_remove(variable);
    }
    command
        .envs([("SERVER_URL", "ws://127.0.0.1:1/ws"), ("METRICS_BIND", "127.0.0.1"), ("METRICS_PORT", "0")])
        .env("LOG_FORMAT", "json")
        .envs(envs.iter().copied())
        .args(args);
    command
}

/// Runs the client until it logs `metrics_listening`; every JSON line up to
/// and including it.
fn lines_until_listening(envs: &[(&str, &str)], args: &[&str]) -> Vec<Value> {
    let mut child = client(envs, args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let line: Value = serde_json::from_str(&line.unwrap()).expect("a JSON log line");
        let done = line["message"] == "metrics_listening";
        lines.push(line);
        if done || started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(lines.last().map(|l| l["message"].clone()), Some("metrics_listening".into()), "{lines:?}");
    lines
}

fn deprecations(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["message"] == "deprecated_setting").collect()
}

#[test]
fn the_clients_variable_still_sets_the_users_and_is_warned_about() {
    let lines = lines_until_listening(&[("CLIENTS", "3")], &[]);
    assert_eq!(lines.last().unwrap()["users"], 3, "{lines:?}");
    let warned = deprecations(&lines);
    assert_eq!(warned.len(), 1, "{lines:?}");
    assert_eq!(
        (&warned[0]["level"], &warned[0]["given"], &warned[0]["use_instead"]),
        (&"WARN".into(), &"CLIENTS".into(), &"USERS".into())
    );
    // The flag, likewise.
    let lines = lines_until_listening(&[], &["--clients", "2"]);
    assert_eq!(lines.last().unwrap()["users"], 2);
    assert_eq!(deprecations(&lines)[0]["given"], "--clients");
}

#[test]
fn the_users_variable_is_not_warned_about() {
    let lines = lines_until_listening(&[("USERS", "4")], &[]);
    assert_eq!(lines.last().unwrap()["users"], 4);
    assert!(deprecations(&lines).is_empty(), "{lines:?}");
}

#[test]
fn the_check_prints_the_warning_on_stderr() {
    let out = client(&[("CLIENTS", "2")], &["--check", "--connect-timeout", "1s"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "port 1 refuses: {stderr}");
    assert!(stderr.contains("CLIENTS is deprecated and will be removed in the next release: use USERS"), "{stderr}");
}

#[test]
fn the_old_name_beside_the_new_one_and_garbage_in_either_are_refused() {
    /// Environment, flags, and what stderr must say.
    type Case = (&'static [(&'static str, &'static str)], &'static [&'static str], &'static str);
    let cases: &[Case] = &[
        (&[("USERS", "2"), ("CLIENTS", "2")], &[], "CLIENTS is the deprecated name of USERS: give only USERS"),
        (&[("CLIENTS", "2")], &["--users", "2"], "CLIENTS is the deprecated name of --users: give only --users"),
        (&[("USERS", "2")], &["--clients", "2"], "--clients is the deprecated name of USERS: give only USERS"),
        (&[("USERS", "0")], &[], "--users"),
        (&[("USERS", "ten")], &[], "--users"),
        (&[("CLIENTS", "0")], &[], "--clients <CLIENTS>"),
        (&[("CLIENTS", "-3")], &[], "--clients"),
    ];
    for (envs, args, needle) in cases {
        let out = client(envs, args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{envs:?} {args:?}: {stderr}");
        assert!(stderr.contains(needle), "{envs:?} {args:?}: {stderr:?} lacks {needle:?}");
    }
}
