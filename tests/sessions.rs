//! Real gsd-server and gsd-client processes on loopback, real signals: the
//! drain, failover, the deadline, bad input, scale and the command line.

mod common;

use gsd_telemetry::names;
use std::time::Duration;

use common::{Proc, Raw, Seen, metric, only, traffic_flows, u, wait_metric};
use gsd_protocol::{ClientMessage, ServerMessage, close};
use nix::sys::signal::Signal;
use tokio::time::Instant;

const SAFETY: Duration = Duration::from_secs(60);

/// The tests of one binary run side by side. The thousand-session test
/// loads both cores, so it runs alone (a write lock) against the tests
/// that assert an upper bound on a time (a read lock each), whose bounds
/// would otherwise measure the machine rather than gsd.
static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Reads a raw session through its drain: after the notice, exactly
/// `remaining` data frames with consecutive seqs, each acked, then close
/// 1001. Returns `remaining`.
async fn follow_drain(raw: &mut Raw, ack: bool) -> u32 {
    let mut last_seq = 0;
    let remaining = loop {
        match raw.next().await {
            Seen::Msg(ServerMessage::Data { seq, .. }) => {
                assert_eq!(seq, last_seq + 1, "seq must rise by exactly 1");
                last_seq = seq;
                if ack {
                    raw.send(ClientMessage::Ack { seq }).await;
                }
            }
            Seen::Msg(ServerMessage::ShutdownNotice { remaining, deadline_ms, last_seq: announced }) => {
                assert!(deadline_ms > 0 && deadline_ms <= 60_000, "deadline_ms {deadline_ms}");
                assert_eq!(announced, Some(last_seq + remaining as u64), "the notice names the last owed seq");
                break remaining;
            }
            Seen::Msg(ServerMessage::Response { .. }) => {}
            other => panic!("before the notice: {other:?}"),
        }
    };
    for _ in 0..remaining {
        match raw.next().await {
            Seen::Msg(ServerMessage::Data { seq, .. }) => {
                assert_eq!(seq, last_seq + 1, "drained seq must continue");
                last_seq = seq;
                if ack {
                    raw.send(ClientMessage::Ack { seq }).await;
                }
            }
            other => panic!("expected {remaining} drained data frames, got {other:?}"),
        }
    }
    remaining
}

#[tokio::test]
async fn sigterm_drains_every_session_and_nothing_is_lost() {
    let _timed = TIMING.read().await;
    let (mut server, addr) = Proc::server("s0", &["--push-interval", "50ms", "--metrics-linger", "0s"]).await;
    let url = format!("ws://{addr}/ws");
    let (mut client, metrics) = Proc::client("client", &url, 6, &["--request-interval", "20ms"]).await;
    // Two hand-driven sessions check the wire frame by frame.
    let mut raws = vec![Raw::connect(addr).await, Raw::connect(addr).await];
    server.wait_count("session_open", 8, SAFETY).await;
    traffic_flows(metrics, 6).await;

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let mut followers = Vec::new();
    for mut raw in raws.drain(..) {
        followers.push(tokio::spawn(async move {
            let remaining = follow_drain(&mut raw, true).await;
            assert_eq!(raw.next().await, Seen::Close(Some(close::GOING_AWAY)));
            remaining
        }));
    }
    for follower in followers {
        let remaining = follower.await.unwrap();
        assert!((1..=10).contains(&remaining), "remaining {remaining} outside the default 1-10");
    }
    let status = server.wait_exit(SAFETY).await;
    assert!(status.success(), "server exit: {status}");
    assert!(signalled.elapsed() < Duration::from_secs(20), "drain outlived DRAIN_TIMEOUT");

    let end = only(&server, "drain_end");
    assert_eq!((u(&end, "sessions"), u(&end, "complete"), u(&end, "incomplete")), (8, 8, 0), "{end}");
    let drained = server.events("session_drained");
    assert_eq!(drained.len(), 8);
    let mut total = 0;
    for d in &drained {
        assert_eq!(d["outcome"], "complete");
        assert_eq!(u(d, "sent"), u(d, "remaining"));
        total += u(d, "sent");
    }
    assert_eq!(u(&end, "messages"), total);

    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    let exit = only(&client, "client_exit");
    assert_eq!(u(&exit, "drains_complete"), 6, "{exit}");
    assert_eq!(u(&exit, "drains_incomplete"), 0, "{exit}");
    assert_eq!(u(&exit, "messages_lost"), 0, "{exit}");
    assert_eq!(u(&exit, "requests_lost"), 0, "{exit}");
    assert!(u(&exit, "requests_answered") > 0, "{exit}");
}

async fn failover(make_before_break: bool) {
    let args = ["--push-interval", "50ms", "--metrics-linger", "0s"];
    let (mut a, _) = Proc::server("a", &args).await;
    let (mut b, _) = Proc::server("b", &args).await;
    let service = common::service(&[&a, &b]).await;
    let mbb = make_before_break.to_string();
    let (mut client, metrics) =
        Proc::client("client", &service.url(), 8, &["--request-interval", "20ms", "--make-before-break", &mbb]).await;
    a.wait_count("session_open", 4, SAFETY).await;
    b.wait_count("session_open", 4, SAFETY).await;
    traffic_flows(metrics, 8).await;

    // A pod deletion: the endpoint goes, then the SIGTERM.
    service.remove("a");
    a.signal(Signal::SIGTERM);
    assert!(a.wait_exit(SAFETY).await.success());
    let end = only(&a, "drain_end");
    assert_eq!((u(&end, "complete"), u(&end, "incomplete")), (4, 0), "{end}");
    // Every user that was on `a` is back, on `b`.
    b.wait_count("session_open", 8, SAFETY).await;
    wait_metric(metrics, names::CLIENT_SESSIONS, 8.0).await;
    traffic_flows(metrics, 8).await; // and carry on there

    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    let exit = only(&client, "client_exit");
    assert_eq!(u(&exit, "reconnects"), 4, "{exit}");
    assert_eq!(u(&exit, "drains_complete"), 4, "{exit}");
    assert_eq!(u(&exit, "drains_incomplete"), 0, "{exit}");
    assert_eq!(u(&exit, "messages_lost"), 0, "{exit}");
    assert_eq!(u(&exit, "requests_lost"), 0, "{exit}");
    assert_eq!(exit["servers"], "a,b");
    // The sessions on `b` were never disturbed, and closed cleanly with 1000.
    // (The client may exit before `b` has logged the last close.)
    b.wait_count("session_close", 8, SAFETY).await;
    let closes = b.events("session_close");
    assert_eq!(closes.len(), 8);
    assert!(closes.iter().all(|c| c["detail"] == "client close code 1000"), "{closes:?}");
    b.signal(Signal::SIGTERM);
    assert!(b.wait_exit(SAFETY).await.success());
}

#[tokio::test]
async fn failover_through_the_service_stand_in_loses_nothing() {
    failover(false).await;
}

#[tokio::test]
async fn make_before_break_failover_loses_nothing() {
    failover(true).await;
}

#[tokio::test]
async fn a_client_that_never_acks_cannot_hold_the_server_past_the_deadline() {
    let _timed = TIMING.read().await;
    let (mut server, addr) =
        Proc::server("s0", &["--drain-timeout", "1500ms", "--push-interval", "0s", "--metrics-linger", "0s"]).await;
    let mut silent = Raw::connect(addr).await;
    let mut polite = Raw::connect(addr).await;
    server.wait_count("session_open", 2, SAFETY).await;

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let polite = tokio::spawn(async move {
        follow_drain(&mut polite, true).await;
        polite.next().await
    });
    follow_drain(&mut silent, false).await;
    // Readiness fails and new upgrades are refused while the drain runs.
    let admin = server.admin();
    let status = |path: &'static str| async move {
        gsd_telemetry::http_get(&admin.to_string(), path, Duration::from_secs(5)).await.unwrap().0
    };
    assert_eq!(status("/readyz").await, 503);
    assert_eq!(status("/healthz").await, 200);
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap_err();
    assert!(refused.to_string().contains("503"), "{refused}");

    assert_eq!(silent.next().await, Seen::Close(Some(close::GOING_AWAY)), "closed with 1001 anyway");
    assert_eq!(polite.await.unwrap(), Seen::Close(Some(close::GOING_AWAY)));
    assert!(server.wait_exit(SAFETY).await.success());
    let took = signalled.elapsed();
    assert!(took >= Duration::from_millis(1400), "the deadline was not waited for: {took:?}");
    assert!(took < Duration::from_secs(6), "the deadline did not bound the drain: {took:?}");
    let end = only(&server, "drain_end");
    assert_eq!((u(&end, "complete"), u(&end, "incomplete")), (1, 1), "{end}");
    let incomplete: Vec<_> =
        server.events("session_drained").into_iter().filter(|d| d["outcome"] == "incomplete").collect();
    assert_eq!(incomplete.len(), 1);
    assert_eq!(incomplete[0]["session_id"], serde_json::Value::from(silent.session_id.clone()));
    assert_eq!(incomplete[0]["reason"], "drain_deadline");
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let _timed = TIMING.read().await;
    let (mut server, addr) = Proc::server("s0", &["--drain-timeout", "60s", "--push-interval", "0s"]).await;
    let mut silent = Raw::connect(addr).await;
    server.signal(Signal::SIGTERM);
    follow_drain(&mut silent, false).await;
    let second = Instant::now();
    server.signal(Signal::SIGINT);
    let status = server.wait_exit(SAFETY).await;
    assert!(second.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(130));
    server.wait_for("second signal log", |e| e["message"] == "second_signal_exit_now", SAFETY).await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_answer_and_disturbs_nobody() {
    // Liveness off: the garbage session never acks nor answers pings, and must
    // meet the drain deadline (incomplete) rather than the liveness bound.
    let (mut server, addr) =
        Proc::server("s0", &["--push-interval", "0s", "--metrics-linger", "0s", "--ping-interval", "0s"]).await;
    let mut bystander = Raw::connect(addr).await;

    // Text that is not a known message: an error frame, and the session goes on.
    let mut garbage = Raw::connect(addr).await;
    for text in ["{not json", "[1,2,3]", r#"{"type":"subscribe","topic":"x"}"#, r#"{"type":"ack","seq":"one"}"#, ""] {
        garbage.send_text(text).await;
        match garbage.next().await {
            Seen::Msg(ServerMessage::Error { message }) => assert!(!message.is_empty()),
            other => panic!("{text:?}: expected an error frame, got {other:?}"),
        }
    }
    garbage.send(ClientMessage::Request { id: 1, payload: "still here?".into() }).await;
    assert_eq!(garbage.next().await, Seen::Msg(ServerMessage::Response { id: 1, payload: "still here?".into() }));

    // A binary frame: close 1003.
    let mut binary = Raw::connect(addr).await;
    binary.send_frame(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(binary.next().await, Seen::Close(Some(close::UNSUPPORTED_DATA)));

    // Over the 64 KiB limit: close 1009.
    let mut big = Raw::connect(addr).await;
    let payload = "x".repeat(gsd_protocol::MAX_FRAME_BYTES);
    big.send(ClientMessage::Request { id: 1, payload }).await;
    assert_eq!(big.next().await, Seen::Close(Some(close::MESSAGE_TOO_BIG)));

    // Over the hard cap: refused from its header, and still a close 1009.
    let mut huge = Raw::connect(addr).await;
    huge.send_frame(tokio_tungstenite::tungstenite::Message::Text("y".repeat(gsd_protocol::MAX_WIRE_BYTES + 1).into()))
        .await;
    assert_eq!(huge.next().await, Seen::Close(Some(close::MESSAGE_TOO_BIG)));

    // An ack for a seq never sent: close 1008.
    let mut liar = Raw::connect(addr).await;
    liar.send(ClientMessage::Ack { seq: 99 }).await;
    assert_eq!(liar.next().await, Seen::Close(Some(close::POLICY_VIOLATION)));

    // An abrupt TCP reset mid-session.
    let reset = Raw::connect(addr).await;
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = reset.ws.get_ref() {
        tcp.set_zero_linger().unwrap();
    }
    drop(reset);

    server.wait_count("session_close", 5, SAFETY).await;
    let errors = server.events("protocol_error");
    let kinds: Vec<&str> = errors.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["not_json", "unknown_type", "malformed", "binary", "too_big", "ack_unsent"] {
        assert!(kinds.contains(&kind), "no `{kind}` in {kinds:?}");
    }
    assert!(errors.iter().all(|e| e["session_id"].as_str().is_some_and(|s| s.len() == 16)), "{errors:?}");

    // The bystander never noticed, the server is healthy, and a later
    // SIGTERM still drains cleanly.
    bystander.send(ClientMessage::Request { id: 7, payload: "ok".into() }).await;
    assert_eq!(bystander.next().await, Seen::Msg(ServerMessage::Response { id: 7, payload: "ok".into() }));
    let (status, _) =
        gsd_telemetry::http_get(&server.admin().to_string(), "/healthz", Duration::from_secs(5)).await.unwrap();
    assert_eq!(status, 200);
    server.signal(Signal::SIGTERM);
    let remaining = follow_drain(&mut bystander, true).await;
    assert!(remaining >= 1);
    assert_eq!(bystander.next().await, Seen::Close(Some(close::GOING_AWAY)));
    assert!(garbage.next().await != Seen::End);
    assert!(server.wait_exit(SAFETY).await.success());
    let end = only(&server, "drain_end");
    assert_eq!(u(&end, "incomplete"), 1, "the garbage session never acks: {end}");
    assert_eq!(u(&end, "complete"), 1, "{end}");
}

#[tokio::test]
async fn one_server_holds_and_drains_a_thousand_sessions() {
    let _alone = TIMING.write().await;
    let (mut server, addr) = Proc::server("s0", &["--push-interval", "500ms", "--metrics-linger", "0s"]).await;
    let url = format!("ws://{addr}/ws");
    let (mut client, _) = Proc::client("client", &url, 1000, &["--request-interval", "500ms"]).await;
    wait_metric(server.admin(), names::SERVER_SESSIONS, 1000.0).await;
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
    let end = only(&server, "drain_end");
    assert_eq!((u(&end, "sessions"), u(&end, "complete"), u(&end, "incomplete")), (1000, 1000, 0), "{end}");
    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    let exit = only(&client, "client_exit");
    assert_eq!(u(&exit, "drains_complete"), 1000, "{exit}");
    assert_eq!(u(&exit, "messages_lost"), 0, "{exit}");
    assert_eq!(u(&exit, "requests_lost"), 0, "{exit}");
}

#[tokio::test]
async fn client_sigterm_closes_sessions_with_1000_and_exits_zero() {
    let (mut server, addr) = Proc::server("s0", &["--push-interval", "20ms", "--metrics-linger", "0s"]).await;
    let (mut client, metrics) =
        Proc::client("client", &format!("ws://{addr}/ws"), 3, &["--request-interval", "10ms"]).await;
    server.wait_count("session_open", 3, SAFETY).await;
    traffic_flows(metrics, 3).await;
    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    server.wait_count("session_close", 3, SAFETY).await;
    for close in server.events("session_close") {
        assert_eq!(close["detail"], "client close code 1000", "{close}");
    }
    let exit = only(&client, "client_exit");
    assert_eq!(u(&exit, "requests_lost"), 0, "{exit}");
    assert!(u(&exit, "data_received") > 0, "{exit}");
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
}

#[tokio::test]
async fn the_client_backs_off_and_retries_until_a_server_appears() {
    // The server must come up at the very address the client knocks at, so
    // this port is chosen before it starts: nothing listens there yet.
    let port = common::free_port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let (mut client, metrics) =
        Proc::client("client", &url, 2, &["--reconnect-backoff-base", "20ms", "--reconnect-backoff-cap", "200ms"])
            .await;
    wait_metric(metrics, names::CLIENT_CONNECT_FAILURES.at(&[("reason", "refused")]), 4.0).await;
    let port = port.to_string();
    let (mut server, _) = Proc::server("late", &["--port", &port, "--metrics-linger", "0s"]).await;
    server.wait_count("session_open", 2, SAFETY).await;
    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
}

#[tokio::test]
async fn garbage_flags_and_environment_fail_with_a_clear_message() {
    /// Program (`server`, `client`, or the lab itself), flags, environment,
    /// and what stderr must say.
    type Case = (&'static str, &'static [&'static str], &'static [(&'static str, &'static str)], &'static str);
    let cases: &[Case] = &[
        ("server", &["--drain-timeout", "banana"], &[], "drain-timeout"),
        ("server", &[], &[("DRAIN_MESSAGES", "10-1")], "MIN 10 is larger than MAX 1"),
        ("server", &[], &[("DRAIN_MESSAGES", "0-3")], "MIN must be at least 1"),
        ("server", &[], &[("PORT", "http")], "port"),
        ("server", &[], &[("LOG_FORMAT", "xml")], "log-format"),
        ("server", &[], &[("PUSH_INTERVAL", "-1s")], "push-interval"),
        ("server", &[], &[("SERVER_ID", "two words")], "not a usable id"),
        ("server", &["--drain-pacing", "30s"], &[], "must be shorter than DRAIN_TIMEOUT"),
        ("server", &["--drain-timeout", "100000h"], &[], "over the 24h limit"),
        ("client", &[], &[("REQUEST_INTERVAL", "9999999h")], "over the 24h limit"),
        ("client", &[], &[("SERVER_URL", "http://example/ws")], "not a ws:// URL"),
        ("client", &[], &[("USERS", "0")], "--users <USERS>"),
        ("client", &[], &[("CLIENTS", "0")], "--clients <CLIENTS>"),
        ("client", &["--users", "3"], &[("CLIENTS", "3")], "CLIENTS is the deprecated name of --users"),
        ("client", &["--reconnect-backoff-cap", "0s"], &[], "larger than 0"),
        ("lab", &["--scenario", "explode"], &[], "scenario"),
        ("lab", &["--grace", "0s"], &[], "--grace must be larger than 0"),
        ("lab", &["--rounds", "0"], &[], "rounds"),
        ("lab", &["--heal-after", "3s"], &[], "--heal-after is for --scenario partition only"),
        ("lab", &["--scenario", "partition", "--heal-after", "0s"], &[], "--heal-after must be larger than 0"),
        ("lab", &["--scenario", "partition", "--heal-after", "soon"], &[], "heal-after"),
        ("lab", &["--resume-window", "2h"], &[], "over the servers' limit of 1h"),
        ("lab", &["--users", "100000", "--clients", "20", "--listen", "127.0.0.1:0"], &[], "raise `ulimit -n`"),
    ];
    for (program, args, envs, needle) in cases {
        let role: &[&str] = if *program == "lab" { &[] } else { &[program] };
        let output = std::process::Command::new(common::lab())
            .args(role)
            .args(*args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{program} {args:?} {envs:?}: {stderr}");
        assert!(stderr.contains(needle), "{program} {args:?} {envs:?}: {stderr:?} lacks {needle:?}");
    }
    // A bad RUST_LOG is refused by the telemetry set-up, before anything runs.
    let output = std::process::Command::new(common::lab()).arg("server").env("RUST_LOG", "gsd=[[[").output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("RUST_LOG"));
    // --help documents the variables.
    let help = std::process::Command::new(common::lab()).args(["server", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in ["PORT", "SERVER_ID", "DRAIN_TIMEOUT", "DRAIN_MESSAGES", "PUSH_INTERVAL", "METRICS_LINGER"] {
        assert!(help.contains(&format!("[env: {var}")), "--help lacks {var}");
    }
    // A flag wins over its variable.
    let (mut server, _) =
        Proc::server_env("from-flag", &["--metrics-linger", "0s"], &[("SERVER_ID", "from-env"), ("PORT", "1")]).await;
    let listening = only(&server, "listening");
    assert_eq!(listening["server_id"], "from-flag");
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
}

#[tokio::test]
async fn client_check_reports_a_welcome_or_its_absence() {
    let (mut server, addr) = Proc::server("checked", &["--metrics-linger", "0s"]).await;
    let check = |url: String| async move {
        tokio::process::Command::new(common::lab())
            .args(["client", "--check", "--connect-timeout", "2s", "--server-url", &url])
            .output()
            .await
            .unwrap()
    };
    let ok = check(format!("ws://{addr}/ws")).await;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok: welcome from checked, session "));
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
    let closed = only(&server, "session_close");
    assert_eq!(closed["detail"], "client close code 1000");

    let refused = check(format!("ws://{addr}/ws")).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no welcome from"));
}

#[tokio::test]
async fn drain_pacing_spreads_the_notices_and_still_drains_everything() {
    let _timed = TIMING.read().await;
    // drain_notice is a debug event (one per session is too many for info).
    let (mut server, addr) = Proc::server_env(
        "paced",
        &["--drain-pacing", "1s", "--push-interval", "50ms", "--metrics-linger", "0s"],
        &[("RUST_LOG", "info,gsd_server::session=debug")],
    )
    .await;
    let (mut client, _) = Proc::client("client", &format!("ws://{addr}/ws"), 8, &["--request-interval", "50ms"]).await;
    server.wait_count("session_open", 8, SAFETY).await;
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
    let end = only(&server, "drain_end");
    assert_eq!((u(&end, "complete"), u(&end, "incomplete")), (8, 0), "{end}");
    // The notices went out over the window, not in one instant.
    let mut at: Vec<String> =
        server.events("drain_notice").iter().map(|e| e["timestamp"].as_str().unwrap().to_owned()).collect();
    at.sort();
    let ms = |t: &str| -> f64 {
        let secs = t.split(':').next_back().unwrap().trim_end_matches('Z');
        let minutes: f64 = t.split(':').nth(1).unwrap().parse().unwrap();
        minutes * 60_000.0 + secs.parse::<f64>().unwrap() * 1000.0
    };
    let spread = ms(at.last().unwrap()) - ms(&at[0]);
    assert!(spread > 200.0 && spread < 1200.0, "notices spread over {spread} ms: {at:?}");
    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    let exit = only(&client, "client_exit");
    assert_eq!((u(&exit, "drains_complete"), u(&exit, "messages_lost")), (8, 0), "{exit}");
}

#[tokio::test]
async fn sessions_over_max_sessions_are_refused_with_1013() {
    let (mut server, addr) =
        Proc::server("full", &["--max-sessions", "2", "--drain-timeout", "1s", "--metrics-linger", "0s"]).await;
    let _first = Raw::connect(addr).await;
    let _second = Raw::connect(addr).await;
    let (mut third, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    let frame = tokio::time::timeout(SAFETY, futures_util::StreamExt::next(&mut third)).await.unwrap();
    match frame {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), close::TRY_AGAIN_LATER)
        }
        other => panic!("expected close 1013 before any welcome, got {other:?}"),
    }
    assert_eq!(metric(server.admin(), names::SERVER_UPGRADES_REJECTED.at(&[("reason", "capacity")])).await, Some(1.0));
    // A client that meets the limit counts it and keeps retrying.
    let (mut client, metrics) =
        Proc::client("client", &format!("ws://{addr}/ws"), 1, &["--reconnect-backoff-cap", "200ms"]).await;
    common::eventually("a capacity refusal counted", SAFETY, || async {
        metric(metrics, names::CLIENT_CONNECT_FAILURES.at(&[("reason", "capacity")])).await.filter(|v| *v >= 1.0)
    })
    .await;
    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
}

/// A log reader that stops (a stuck collector, a full pipe) must not stall
/// a drain: the server's stdout here is a pipe nobody reads. Its session
/// lines fill the pipe before the signal; the drain still completes, the
/// process exits, and it says on stderr that its last lines could not be
/// written.
#[tokio::test]
async fn a_stdout_nobody_reads_does_not_stall_a_drain() {
    let _alone = TIMING.write().await;
    let (port, admin) = (common::free_port(), common::free_port());
    let mut server = std::process::Command::new(common::lab())
        .args(["server", "--bind", "127.0.0.1", "--port", &port.to_string(), "--admin-port", &admin.to_string()])
        .args(["--push-interval", "200ms", "--metrics-linger", "0s"])
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Held, never read: the pipe stays open and fills.
    let _unread = server.stdout.take();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    common::eventually("the server's admin port", Duration::from_secs(20), || async {
        metric(admin, names::SERVER_SESSIONS).await
    })
    .await;
    let users = 400;
    let (mut client, _) =
        Proc::client("client", &format!("ws://127.0.0.1:{port}/ws"), users, &["--request-interval", "100ms"]).await;
    wait_metric(admin, names::SERVER_SESSIONS, users as f64).await;
    // A pipe holds 64 KiB: 400 sessions' lines at debug fill it many times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let signalled = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < SAFETY, "the server is stuck after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("stdout did not take the last log lines"), "{stderr}");
    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    let exit = only(&client, "client_exit");
    assert_eq!(u(&exit, "drains_complete"), u64::from(users), "{exit}");
    assert_eq!((u(&exit, "drains_incomplete"), u(&exit, "messages_lost")), (0, 0), "{exit}");
    assert_eq!(u(&exit, "requests_lost"), 0, "{exit}");
}

#[tokio::test]
async fn a_client_that_answers_pings_is_pinged_every_interval_even_with_a_longer_timeout() {
    // Interval 200 ms, timeout 5 s: once a pong is heard, the next ping is
    // due an interval after it, not when the ping's timeout would end.
    let (_server, addr) =
        Proc::server("s0", &["--ping-interval", "200ms", "--ping-timeout", "5s", "--push-interval", "0s"]).await;
    let mut raw = Raw::connect(addr).await;
    // Reading answers every ping with a pong.
    let (mut pings, until) = (0, Instant::now() + Duration::from_millis(1500));
    while let Ok(frame) = tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut raw.ws)).await {
        match frame {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    // About 7 in 1.5 s; one, if the next ping waited for the timeout.
    assert!(pings >= 4, "{pings} pings in 1.5 s at a 200 ms interval");
}
