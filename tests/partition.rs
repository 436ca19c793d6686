//! Partitions for real: a gsd-server in a network namespace this test
//! creates (a veth pair with TEST-NET-3 addresses, 203.0.113.0/24, which
//! never leave the machine), its traffic then dropped silently inside the
//! namespace (iptables DROP: no FIN, no RST), mid-session and mid-drain.
//! Both sides must notice within PING_INTERVAL + PING_TIMEOUT on their own.
//!
//! Needs root (namespaces, veth, iptables); without it the tests say SKIPPED,
//! unless GSD_REQUIRE_TOOLS=1 (scripts/test), where they fail. This file is
//! its own test binary, so cargo runs it alone.

mod common;

use gsd_telemetry::names;
use std::process::Command;
use std::time::Duration;

use common::{Proc, metric, u};
use nix::sys::signal::Signal;
use tokio::time::Instant;

const SAFETY: Duration = Duration::from_secs(60);
/// 400 ms of silence, then a ping, then 400 ms more: the bound is 800 ms.
const LIVENESS: [&str; 4] = ["--ping-interval", "400ms", "--ping-timeout", "400ms"];

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace joined to the host by a veth pair: the host side is
/// `203.0.113.{4n+1}/30`, the namespace side `.{4n+2}`. Deleted on drop.
struct Netns {
    /// The namespace's name, for `ip netns exec` and the deletion on drop.
    name: String,
    /// The namespace side's address: where the far server listens and the
    /// client connects (the partition itself drops everything in the
    /// namespace).
    addr: String,
}

impl Netns {
    /// `None` (and a SKIPPED line) where namespaces cannot be made.
    fn create(n: u8) -> Option<Netns> {
        let root = std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")));
        let tools = ["/usr/sbin/ip", "/usr/sbin/iptables"].iter().all(|p| std::path::Path::new(p).exists());
        if !root || !tools {
            assert!(
                std::env::var("GSD_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "the partition tests need root, ip and iptables (GSD_REQUIRE_TOOLS=1)"
            );
            eprintln!("SKIPPED: partition tests need root, ip and iptables");
            return None;
        }
        let name = format!("gsdpart{}-{n}", std::process::id());
        let (host, inner) = (format!("gph{}{n}", std::process::id() % 100_000), format!("gpn{n}"));
        let base = 4 * n as u32;
        let (host_ip, ns_ip) = (format!("203.0.113.{}", base + 1), format!("203.0.113.{}", base + 2));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name: name.clone(), addr: ns_ip.clone() };
        run(&["ip", "link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", &name]);
        run(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host]);
        run(&["ip", "link", "set", &host, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &name];
            all.extend_from_slice(args);
            run(&all);
        };
        exec(&["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &inner]);
        exec(&["ip", "link", "set", &inner, "up"]);
        exec(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// Drops every packet in and out of the namespace, silently.
    fn cut(&self) {
        for chain in ["INPUT", "OUTPUT"] {
            run(&["ip", "netns", "exec", &self.name, "iptables", "-I", chain, "-j", "DROP"]);
        }
    }

    /// A gsd-server inside the namespace, listening on its address.
    async fn server(&self, id: &str, args: &[&str]) -> (Proc, std::net::SocketAddr) {
        let inside = common::launcher().wrapped(std::path::Path::new("/usr/sbin/ip"), &["netns", "exec", &self.name]);
        Proc::server_with(&inside, id, &self.addr, args, &[]).await
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

#[tokio::test]
async fn a_partition_mid_session_is_noticed_by_both_sides_and_the_users_move() {
    let Some(ns) = Netns::create(0) else { return };
    let mut args = vec!["--push-interval", "100ms", "--metrics-linger", "0s"];
    args.extend(LIVENESS);
    let (mut far, _) = ns.server("far", &args).await;
    let (mut near, _) = Proc::server("near", &args).await;
    let service = common::service(&[&far, &near]).await;
    let mut client_args = vec!["--request-interval", "100ms", "--connect-timeout", "1s"];
    client_args.extend(LIVENESS);
    let users = 6;
    let (mut client, metrics) = Proc::client("client", &service.url(), users, &client_args).await;
    common::eventually("every user connected", SAFETY, || async {
        metric(metrics, names::CLIENT_SESSIONS).await.filter(|n| *n == users as f64)
    })
    .await;
    let on_far = metric(far.admin(), names::SERVER_SESSIONS).await.unwrap_or(0.0) as usize;
    assert!(
        on_far > 0,
        "round robin put no session on the far server: {:?} {}",
        metric(far.admin(), names::SERVER_SESSIONS).await,
        far.tail()
    );

    ns.cut();
    let cut = Instant::now();
    // The far server gives up every session by itself.
    far.wait_count("client_silent", on_far, SAFETY).await;
    let freed = cut.elapsed();
    assert!(freed >= Duration::from_millis(350), "freed after {freed:?}: before any silence could be seen");
    assert!(freed < Duration::from_secs(5), "freed after {freed:?}; the bound is 800 ms");
    let closes = far.events("session_close");
    assert!(closes.iter().all(|c| c["reason"] == "timeout"), "{closes:?}");
    // The users noticed and are all back, on the near server.
    client.wait_count("server_silent", on_far, SAFETY).await;
    assert!(cut.elapsed() < Duration::from_secs(5), "clients noticed after {:?}", cut.elapsed());
    common::eventually("every user back", SAFETY, || async {
        metric(metrics, names::CLIENT_RECONNECTS.at(&[("reason", "timeout")])).await.filter(|n| *n == on_far as f64)
    })
    .await;
    common::eventually("every user on a session", SAFETY, || async {
        metric(metrics, names::CLIENT_SESSIONS).await.filter(|n| *n == users as f64)
    })
    .await;
    assert_eq!(metric(near.admin(), names::SERVER_SESSIONS).await, Some(users as f64), "all on the near server now");
    // The ledger: the cut sessions are counted as cut (their loss unknown),
    // nothing known is lost; the far side knows what it sent unacked.
    assert_eq!(metric(metrics, names::CLIENT_SESSIONS_CUT).await, Some(on_far as f64));
    assert_eq!(metric(metrics, names::CLIENT_MESSAGES_LOST).await, Some(0.0));
    let unacked: u64 = closes.iter().map(|c| u(c, "unacked")).sum();
    let sent: u64 = closes.iter().map(|c| u(c, "data_sent")).sum();
    let acked: u64 = closes.iter().map(|c| u(c, "acked")).sum();
    assert_eq!(unacked, sent - acked);
    assert!(unacked > 0, "pushes every 100 ms went into the void for at least 800 ms");

    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    far.signal(Signal::SIGKILL);
    near.signal(Signal::SIGTERM);
    assert!(near.wait_exit(SAFETY).await.success());
    drop(ns);
}

#[tokio::test]
async fn a_partition_mid_drain_ends_at_the_liveness_bound_not_the_drain_timeout() {
    let Some(ns) = Netns::create(1) else { return };
    let mut args = vec!["--push-interval", "100ms", "--metrics-linger", "0s", "--drain-timeout", "30s"];
    args.extend(LIVENESS);
    let (mut far, far_addr) = ns.server("far", &args).await;
    let mut client_args = vec!["--request-interval", "100ms"];
    client_args.extend(LIVENESS);
    let users = 3;
    let (mut client, metrics) = Proc::client("client", &format!("ws://{far_addr}/ws"), users, &client_args).await;
    far.wait_count("session_open", users as usize, SAFETY).await;

    ns.cut();
    far.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let status = far.wait_exit(SAFETY).await;
    let drained_in = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(drained_in < Duration::from_secs(10), "the drain took {drained_in:?}: it waited for DRAIN_TIMEOUT");
    let end = common::only(&far, "drain_end");
    assert_eq!((u(&end, "peer_lost"), u(&end, "incomplete"), u(&end, "complete")), (users as u64, 0, 0), "{end}");
    // The users never saw the notice: their sessions went silent and were cut.
    client.wait_count("server_silent", users as usize, SAFETY).await;
    assert_eq!(metric(metrics, names::CLIENT_SESSIONS_CUT).await, Some(users as f64));
    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    drop(ns);
}
