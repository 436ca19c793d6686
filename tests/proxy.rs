//! A proxy's cut, judged for real. A real gsd-client (its JSON log written
//! to a file, as `kubectl logs` would give it) reaches a real gsd-server
//! through a loopback TCP relay written here: the stand-in of a proxy whose
//! pod is terminated. A termination instant is recorded; `DRAIN` later the
//! relay drops every connection it holds at once, as Traefik does at its
//! graceTimeOut, while new connections pass (the proxy's replacement). The
//! real gsd-verdict then reads the client's /metrics from before and after
//! and its log, and must put every cut down to the relay's drain setting,
//! and say "not at" a setting that does not fit.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Proc, metric};
use gsd_lab::harness::metrics::scrape_within;
use gsd_telemetry::names;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bound on every wait: the test ends by itself, passed or not.
const SAFETY: Duration = Duration::from_secs(60);
/// The relay's drain setting: how long after the termination it cuts.
const DRAIN: Duration = Duration::from_millis(1500);
/// The users, each with one session through the relay.
const USERS: u32 = 8;

/// A loopback TCP relay to one backend. [`Relay::cut`] drops every
/// connection open at that moment (the client sees its TCP connection
/// closed, with no WebSocket close and no notice); the connections that
/// come after pass as before.
struct Relay {
    /// Where the client connects.
    addr: SocketAddr,
    /// How many cuts so far; each connection is cut by the first one after
    /// it was accepted.
    cuts: watch::Sender<u64>,
    /// The accept loop, stopped with the relay.
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(backend: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cuts, watching) = watch::channel(0u64);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mut cut = watching.clone();
                let accepted_after = *cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(backend).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|n| *n > accepted_after) => {}
                    }
                    // Both sockets are dropped here, closed with nothing said.
                });
            }
        });
        Relay { addr, cuts, accept }
    }

    /// Drops every connection open now.
    fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The events named `message` in the JSON log at `path`, so far.
fn events(path: &Path, message: &str) -> Vec<Value> {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|e| e["message"] == message).collect()
}

/// Now, in Unix seconds.
fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The client's /metrics, saved to `path`.
async fn save_metrics(metrics: SocketAddr, path: &Path) {
    let body = scrape_within(metrics, SAFETY).await.expect("the client's /metrics");
    std::fs::write(path, body).unwrap();
}

/// `gsd-verdict judge` on the relay's termination with `setting`: the
/// output and its `--json`.
fn judge(dir: &Path, terminated_at: f64, setting: &str) -> (Output, Value) {
    let json = dir.join(format!("verdict-{setting}.json"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gsd-tests-verdict"))
        .args(["judge", "--via", "other", "--via-setting-name", "relay drain", "--via-setting", setting])
        .args(["--via-terminated-at", &format!("{terminated_at:.6}")])
        .arg("--client-log")
        .arg(dir.join("client.log"))
        .arg("--clients-before")
        .arg(dir.join("client.before.prom"))
        .arg("--clients")
        .arg(dir.join("client.after.prom"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run gsd-verdict");
    let written = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!("no --json ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out, serde_json::from_str(&written).expect("--json is JSON"))
}

#[tokio::test]
async fn the_judge_puts_a_relays_cut_down_to_its_drain_setting() {
    relay_cut(false).await;
}

#[tokio::test]
async fn with_resume_on_a_relays_cut_is_resumed_and_the_judge_passes() {
    relay_cut(true).await;
}

/// A relay in front of one server cuts every session at its drain setting;
/// the client logs and counts the cuts, and gsd-verdict judges them. With
/// resume off each cut's loss is unknown and the judge names the setting;
/// with it on each cut session is resumed, 0 lost, and the judge passes.
async fn relay_cut(resume: bool) {
    let dir = std::env::temp_dir().join(format!("gsd-tests-proxy-{}-{resume}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let window = if resume { "30s" } else { "0s" };
    let args = ["--push-interval", "100ms", "--metrics-linger", "0s", "--resume-window", window];
    let (mut server, addr) = Proc::server("s0", &args).await;
    let relay = Relay::start(addr).await;

    // The client as a cluster runs it, its log (stdout and stderr) to a file.
    let log = dir.join("client.log");
    let file = || std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let url = format!("ws://{}/ws", relay.addr);
    let mut client = tokio::process::Command::new(common::lab())
        .args(["client", "--server-url", &url, "--users", &USERS.to_string(), "--request-interval", "100ms"])
        .args(["--metrics-bind", "127.0.0.1", "--metrics-port", "0", "--log-format", "json"])
        .env("RUST_LOG", "info,gsd_client::reconnect=debug")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(file())
        .stderr(file())
        .kill_on_drop(true)
        .spawn()
        .expect("start gsd-client");
    let metrics: SocketAddr = common::eventually("the client's metrics listener", SAFETY, || async {
        events(&log, "metrics_listening").first()?["metrics_addr"].as_str()?.parse().ok()
    })
    .await;
    common::eventually("every user in a session through the relay", SAFETY, || async {
        metric(metrics, names::CLIENT_SESSIONS).await.filter(|n| *n == f64::from(USERS))
    })
    .await;
    common::traffic_flows(metrics, USERS).await;
    save_metrics(metrics, &dir.join("client.before.prom")).await;

    // The relay's "pod" is terminated now; it cuts at its drain setting.
    let terminated_at = now();
    tokio::time::sleep(DRAIN).await;
    relay.cut();
    common::wait_metric(metrics, names::CLIENT_SESSIONS_CUT.name(), f64::from(USERS)).await;
    common::eventually("every user reconnected after the cut", SAFETY, || async {
        let back = events(&log, "reconnected").len();
        (back >= USERS as usize).then_some(())
    })
    .await;
    common::eventually("every user in a session again", SAFETY, || async {
        metric(metrics, names::CLIENT_SESSIONS).await.filter(|n| *n == f64::from(USERS))
    })
    .await;
    save_metrics(metrics, &dir.join("client.after.prom")).await;
    let pid = Pid::from_raw(client.id().expect("running") as i32);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(SAFETY, client.wait()).await.expect("the client exits").unwrap();
    assert!(status.success(), "{status}");
    let cuts = events(&log, "session_cut");
    assert_eq!(cuts.len(), USERS as usize, "{cuts:?}");

    let (out, json) = judge(&dir, terminated_at, "1.5s");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let users = Some(u64::from(USERS));
    if resume {
        // Every cut session taken back: nothing lost, nothing unknown.
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(json["reasons"].as_array().map(Vec::len), Some(0), "{stdout}");
        assert_eq!((json["via"]["cuts"].as_u64(), json["via"]["resumed"].as_u64()), (users, users), "{stdout}");
        let clients = &json["clients"];
        assert_eq!((clients["cut"].as_u64(), clients["resumed"].as_u64()), (users, users), "{stdout}");
        assert_eq!((clients["lost"].as_u64(), clients["duplicate"].as_u64()), (Some(0), Some(0)), "{stdout}");
        assert!(stdout.contains(&format!("{USERS} sessions cut, {USERS} resumed;")), "{stdout}");
        let resumed = metric(server.admin(), names::SERVER_SESSIONS_RESUMED.at(&[("where", "local")])).await;
        assert_eq!(resumed, Some(f64::from(USERS)));
        server.signal(Signal::SIGTERM);
        assert!(server.wait_exit(SAFETY).await.success());
        drop(relay);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    // At the setting: exactly the users' sessions, cut by the relay.
    assert_eq!(json["clients"]["resumed"].as_u64(), Some(0), "resume off: {stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let reasons = json["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "the relay's cut and nothing else: {stdout}");
    let cut = &reasons[0];
    assert_eq!(cut["kind"], "cut_by_proxy", "{stdout}");
    assert_eq!((cut["sessions"].as_u64(), cut["at_setting"].as_bool()), (Some(u64::from(USERS)), Some(true)), "{cut}");
    let message = cut["message"].as_str().unwrap();
    let said = format!("{USERS} sessions cut ");
    assert!(
        message.starts_with(&said) && message.ends_with(" s after the proxy's SIGTERM = relay drain (1.5s)"),
        "{message}"
    );
    assert!(stdout.contains(&format!("  - {message}\n")), "{stdout}");
    let via = &json["via"];
    let first = via["first_after_seconds"].as_f64().unwrap();
    let last = via["last_after_seconds"].as_f64().unwrap();
    let latest = (DRAIN + gsd_verdict::proxy::AFTER_SETTING).as_secs_f64();
    assert!(first >= DRAIN.as_secs_f64() && last <= latest, "cut {first}–{last} s after: {via}");
    assert_eq!((via["cuts"].as_u64(), via["reconnects"].as_u64()), (Some(u64::from(USERS)), Some(u64::from(USERS))));
    assert!(via["peak_per_second"].as_u64().unwrap() >= 1 && via["max_ms"].as_f64().is_some(), "{via}");

    // The same cuts against a setting they do not fit.
    let (out, json) = judge(&dir, terminated_at, "10s");
    assert_eq!(out.status.code(), Some(1));
    let message = json["reasons"][0]["message"].as_str().unwrap();
    assert!(message.ends_with(", not at relay drain (10s): something else cut them"), "{message}");
    assert_eq!(json["reasons"][0]["at_setting"], false);

    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}
