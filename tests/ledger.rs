//! The loss ledger and liveness, proven with faults: every count that reads 0
//! in a good run is shown here to read the exact N when N are lost, and a
//! dead peer is noticed within PING_INTERVAL + PING_TIMEOUT on both sides.
//! The peers that misbehave are real WebSocket servers on loopback, written
//! for each case; the gsd side is always the real binary.

mod common;

use gsd_telemetry::names;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Proc, Raw, Seen, metric, only, u};
use futures_util::{SinkExt, StreamExt};
use gsd_protocol::{ClientMessage, ServerMessage, close};
use nix::sys::signal::Signal;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};

const SAFETY: Duration = Duration::from_secs(60);

/// SIGTERM to a client and its `client_exit` event.
async fn client_exit(client: &mut Proc) -> serde_json::Value {
    client.signal(Signal::SIGTERM);
    let status = client.wait_exit(SAFETY).await;
    assert!(status.success(), "client exit: {status}");
    only(client, "client_exit")
}

#[tokio::test]
async fn owed_frames_the_server_withholds_are_counted_lost_exactly() {
    withheld_frames_are_counted_lost_exactly("--fault-drop-owed", "fault_drop_owed").await;
}

#[tokio::test]
async fn owed_frames_withheld_under_a_close_with_a_lower_last_seq_are_counted_lost_exactly() {
    // The close says last_seq 3 after a notice that said 5: the client
    // counts up to the higher of the two.
    withheld_frames_are_counted_lost_exactly("--fault-close-last-seq-lower", "fault_close_last_seq_lower").await;
}

/// Each session is owed 5 frames at the drain; the server's `fault` flag
/// withholds the last 2 of them (logging `event` once per session) while the
/// server believes the drain complete. The client must count exactly 2 lost
/// per session.
async fn withheld_frames_are_counted_lost_exactly(fault: &str, event: &str) {
    let users = 4u64;
    let (mut server, addr) =
        Proc::server("s0", &["--drain-messages", "5", fault, "2", "--push-interval", "0s", "--metrics-linger", "0s"])
            .await;
    let (mut client, metrics) =
        Proc::client("client", &format!("ws://{addr}/ws"), users as u32, &["--request-interval", "0s"]).await;
    server.wait_count("session_open", users as usize, SAFETY).await;
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
    // The server saw nothing wrong: the fault is invisible to it.
    let end = only(&server, "drain_end");
    assert_eq!((u(&end, "complete"), u(&end, "incomplete")), (users, 0), "{end}");
    assert_eq!(server.count(event), users as usize);

    client.wait_count("drain_end", users as usize, SAFETY).await;
    assert_eq!(metric(metrics, names::CLIENT_MESSAGES_LOST).await, Some((2 * users) as f64));
    assert_eq!(metric(metrics, names::CLIENT_DRAINS.at(&[("outcome", "incomplete")])).await, Some(users as f64));
    assert_eq!(metric(metrics, names::CLIENT_DRAINS.at(&[("outcome", "complete")])).await, Some(0.0));
    for drain in client.events("drain_end") {
        assert_eq!((u(&drain, "remaining"), u(&drain, "received"), u(&drain, "missing")), (5, 3, 2), "{drain}");
    }
    let exit = client_exit(&mut client).await;
    assert_eq!(u(&exit, "messages_lost"), 2 * users, "{exit}");
    assert_eq!(u(&exit, "drains_incomplete"), users, "{exit}");
    assert_eq!(u(&exit, "messages_skipped"), 0, "{exit}");
    assert_eq!(exit["level"], "WARN", "a lossy exit is a warning: {exit}");
}

/// Reads a raw session through its drain, acking every frame: the notice,
/// the seqs of the data frames after it, and the close's code and reason.
async fn drain_of(raw: &mut Raw) -> (ServerMessage, Vec<u64>, Option<(u16, String)>) {
    let notice = match raw.next().await {
        Seen::Msg(notice @ ServerMessage::ShutdownNotice { .. }) => notice,
        other => panic!("{}: expected a notice, got {other:?}", raw.session_id),
    };
    let mut seqs = Vec::new();
    loop {
        let frame = tokio::time::timeout(SAFETY, raw.ws.next()).await.expect("a frame");
        match frame {
            Some(Ok(Message::Text(text))) => match ServerMessage::decode(text.as_str()).expect("a gsd message") {
                ServerMessage::Data { seq, .. } => {
                    seqs.push(seq);
                    raw.send(ClientMessage::Ack { seq }).await;
                }
                other => panic!("{}: unexpected {other:?}", raw.session_id),
            },
            Some(Ok(Message::Close(frame))) => {
                return (notice, seqs, frame.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (notice, seqs, None),
        }
    }
}

#[tokio::test]
async fn sessions_the_server_resets_at_sigterm_end_with_a_reset_and_are_counted_reset() {
    // Set from the environment, as the chart's faults.resetAtSigterm does.
    let (mut server, addr) = Proc::server_env(
        "s0",
        &["--drain-messages", "3", "--push-interval", "0s", "--metrics-linger", "20s"],
        &[("FAULT_RESET_AT_SIGTERM", "2")],
    )
    .await;
    // Opened one after the other: the first two are the ones reset.
    let mut raws = Vec::new();
    for _ in 0..4 {
        raws.push(Raw::connect(addr).await);
    }
    server.signal(Signal::SIGTERM);
    for raw in &mut raws[..2] {
        let frame = tokio::time::timeout(SAFETY, raw.ws.next()).await.expect("an end");
        match frame {
            Some(Err(Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{}: expected a TCP reset and nothing before it, got {other:?}", raw.session_id),
        }
    }
    for raw in &mut raws[2..] {
        let (notice, seqs, close) = drain_of(raw).await;
        assert!(matches!(notice, ServerMessage::ShutdownNotice { remaining: 3, .. }), "{notice:?}");
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(close.map(|(code, _)| code), Some(close::GOING_AWAY));
    }

    // The server's own account: the two resets under their own outcome.
    let end = server.wait_for("drain_end", |e| e["message"] == "drain_end", SAFETY).await;
    assert_eq!((u(&end, "reset"), u(&end, "complete"), u(&end, "incomplete")), (2, 2, 0), "{end}");
    let reset: Vec<String> =
        server.events("fault_reset_at_sigterm").iter().map(|e| e["session_id"].as_str().unwrap().to_owned()).collect();
    let first_two: Vec<String> = raws[..2].iter().map(|raw| raw.session_id.clone()).collect();
    assert_eq!(reset.len(), 2, "{reset:?}");
    assert!(reset.iter().all(|id| first_two.contains(id)), "reset {reset:?}, opened first {first_two:?}");
    // One scrape: the first after the drain ends the linger.
    let account = gsd_lab::harness::metrics::scrape_within(server.admin(), SAFETY).await.expect("a last scrape");
    assert_eq!(common::sample(&account, names::SERVER_DRAINS.at(&[("outcome", "reset")])), Some(2.0));
    assert_eq!(common::sample(&account, names::SERVER_SESSIONS_CLOSED.at(&[("reason", "reset")])), Some(2.0));
    assert!(server.wait_exit(SAFETY).await.success());
}

#[tokio::test]
async fn a_close_can_say_a_lower_last_seq_than_the_notice_announced() {
    let (mut server, addr) = Proc::server_env(
        "s0",
        &["--drain-messages", "5", "--push-interval", "0s", "--metrics-linger", "0s"],
        &[("FAULT_CLOSE_LAST_SEQ_LOWER", "2")],
    )
    .await;
    let mut raws = Vec::new();
    for _ in 0..3 {
        raws.push(Raw::connect(addr).await);
    }
    server.signal(Signal::SIGTERM);
    for raw in &mut raws {
        let (notice, seqs, close) = drain_of(raw).await;
        assert!(matches!(notice, ServerMessage::ShutdownNotice { remaining: 5, last_seq: Some(5), .. }), "{notice:?}");
        assert_eq!(seqs, [1, 2, 3], "the last 2 owed never come");
        let (code, reason) = close.expect("a close frame");
        assert_eq!((code, reason.as_str()), (close::GOING_AWAY, "server draining; last_seq=3"));
    }
    assert!(server.wait_exit(SAFETY).await.success());
    // The server believes every drain complete: the fault is invisible to it.
    let end = only(&server, "drain_end");
    assert_eq!((u(&end, "complete"), u(&end, "incomplete"), u(&end, "messages")), (3, 0, 9), "{end}");
    assert_eq!(server.count("fault_close_last_seq_lower"), 3);
}

#[tokio::test]
async fn a_client_that_leaves_mid_drain_is_its_own_outcome_on_both_sides() {
    // Slow processing keeps the drain open for seconds; the client is told to
    // stop meanwhile and waits only 300 ms for it (a rollout of the clients).
    let users = 3u64;
    let (mut server, addr) = Proc::server(
        "s0",
        &["--drain-messages", "10", "--push-interval", "0s", "--metrics-linger", "5s", "--drain-timeout", "30s"],
    )
    .await;
    let (mut client, metrics) = Proc::client(
        "client",
        &format!("ws://{addr}/ws"),
        users as u32,
        &["--request-interval", "0s", "--processing-time", "400ms", "--shutdown-timeout", "300ms"],
    )
    .await;
    server.wait_count("session_open", users as usize, SAFETY).await;
    server.signal(Signal::SIGTERM);
    client.wait_count("shutdown_notice", users as usize, SAFETY).await;
    let exit = client_exit(&mut client).await;
    assert_eq!(u(&exit, "drains_client_left"), users, "{exit}");
    assert_eq!(u(&exit, "drains_incomplete"), 0, "{exit}");
    assert_eq!(u(&exit, "messages_lost"), 0, "{exit}");
    assert_eq!(exit["level"], "INFO", "leaving is not loss: {exit}");
    assert_eq!(
        metric(metrics, names::CLIENT_DRAINS.at(&[("outcome", "client_left")])).await,
        None,
        "the client has exited"
    );

    let status = server.wait_exit(SAFETY).await;
    assert!(status.success(), "server exit: {status}");
    let end = only(&server, "drain_end");
    assert_eq!((u(&end, "client_left"), u(&end, "incomplete"), u(&end, "complete")), (users, 0, 0), "{end}");
}

/// A WebSocket server on loopback that runs `session` on every connection
/// and counts connections; for peers gsd-server would never be.
async fn rogue_server<F, Fut>(session: F) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>)
where
    F: Fn(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    let session = std::sync::Arc::new(session);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let session = session.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    session(ws).await;
                }
            });
        }
    });
    (addr, count)
}

fn welcome() -> Message {
    let welcome = ServerMessage::welcome("rogue", "0000000000000001");
    Message::Text(welcome.encode().into())
}

#[tokio::test]
async fn a_notice_whose_deadline_passes_is_given_up_and_counted() {
    // Announces 3 frames with a 500 ms deadline, sends none, and keeps the
    // connection alive (reading, so pings are answered): only the notice's
    // deadline can end the wait.
    let (addr, _) = rogue_server(|mut ws| async move {
        ws.send(welcome()).await.unwrap();
        let notice = ServerMessage::ShutdownNotice { remaining: 3, deadline_ms: 500, last_seq: Some(3) };
        ws.send(Message::Text(notice.encode().into())).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let (mut client, metrics) = Proc::client(
        "client",
        &format!("ws://{addr}/ws"),
        1,
        &["--request-interval", "0s", "--ping-interval", "200ms", "--ping-timeout", "5s"],
    )
    .await;
    let started = Instant::now();
    client.wait_for("drain_deadline_passed", |e| e["message"] == "drain_deadline_passed", SAFETY).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "gave up after {waited:?}, before deadline + margin");
    let drain = client.wait_for("drain_end", |e| e["message"] == "drain_end", SAFETY).await;
    assert_eq!((u(&drain, "missing"), u(&drain, "received")), (3, 0), "{drain}");
    assert_eq!(metric(metrics, names::CLIENT_MESSAGES_LOST).await, Some(3.0));
    assert_eq!(metric(metrics, names::CLIENT_DRAINS.at(&[("outcome", "incomplete")])).await, Some(1.0));
    let exit = client_exit(&mut client).await;
    assert!(u(&exit, "messages_lost") >= 3, "{exit}");
}

#[tokio::test]
async fn a_short_close_duplicates_and_unacked_frames_reach_the_exit_ledger_exactly() {
    // The first session: a notice owing seqs 1 to 5, then seq 1; after its
    // ack (processing takes 2 s a frame), seq 2, seq 2 again and a close
    // 1001 that claims only seq 2 was meant, with seq 2 still in
    // processing. Later sessions: a welcome, then nothing but reading.
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (addr, _) = rogue_server(move |mut ws| {
        let scripted = first.swap(false, std::sync::atomic::Ordering::SeqCst);
        async move {
            ws.send(welcome()).await.unwrap();
            if scripted {
                let notice = ServerMessage::ShutdownNotice { remaining: 5, deadline_ms: 20_000, last_seq: Some(5) };
                ws.send(Message::Text(notice.encode().into())).await.unwrap();
                let data = |seq: u64| {
                    Message::Text(ServerMessage::Data { seq, payload: format!("rogue:{seq}") }.encode().into())
                };
                // Seq 1 alone, acked once processed (an ack waits for every
                // frame received), then seq 2 twice and the close at once.
                ws.send(data(1)).await.unwrap();
                while let Some(Ok(message)) = ws.next().await {
                    if message.to_text().is_ok_and(|text| text.contains(r#""type":"ack""#)) {
                        break;
                    }
                }
                for seq in [2, 2] {
                    ws.send(data(seq)).await.unwrap();
                }
                let reason = gsd_protocol::close_reason("server draining", 2);
                let frame = CloseFrame { code: CloseCode::Away, reason: reason.into() };
                ws.send(Message::Close(Some(frame))).await.unwrap();
            }
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    let (mut client, metrics) =
        Proc::client("client", &format!("ws://{addr}/ws"), 1, &["--request-interval", "0s", "--processing-time", "2s"])
            .await;
    let regressed = client.wait_for("last_seq_regressed", |e| e["message"] == "last_seq_regressed", SAFETY).await;
    assert_eq!((u(&regressed, "notice_last_seq"), u(&regressed, "close_last_seq")), (5, 2), "{regressed}");
    let drain = client.wait_for("drain_end", |e| e["message"] == "drain_end", SAFETY).await;
    assert_eq!(drain["outcome"], "incomplete", "{drain}");
    assert_eq!((u(&drain, "missing"), u(&drain, "unacked")), (3, 1), "{drain}");
    assert_eq!(metric(metrics, names::CLIENT_MESSAGES_LOST).await, Some(3.0));
    assert_eq!(metric(metrics, names::CLIENT_DATA_UNACKED).await, Some(1.0));
    assert_eq!(metric(metrics, names::CLIENT_DATA_DUPLICATE).await, Some(1.0));
    let exit = client_exit(&mut client).await;
    let fields = ["messages_lost", "drains_incomplete", "data_received", "data_processed", "data_unacked"];
    assert_eq!(fields.map(|f| u(&exit, f)), [3, 1, 2, 2, 1], "{exit}");
    assert_eq!(u(&exit, "data_duplicate"), 1, "{exit}");
    let ledger = only(&client, "ledger");
    assert_eq!((u(&ledger, "data_unacked"), u(&ledger, "data_duplicate")), (1, 1), "{ledger}");
}

#[tokio::test]
async fn a_silent_server_is_left_within_the_liveness_bound() {
    // Welcomes, then never reads or writes again: no pong ever comes.
    let (addr, _) = rogue_server(|mut ws| async move {
        ws.send(welcome()).await.unwrap();
        tokio::time::sleep(SAFETY).await;
        drop(ws);
    })
    .await;
    let (mut client, metrics) = Proc::client(
        "client",
        &format!("ws://{addr}/ws"),
        1,
        &["--request-interval", "0s", "--ping-interval", "400ms", "--ping-timeout", "400ms"],
    )
    .await;
    let silent = client.wait_for("server_silent", |e| e["message"] == "server_silent", SAFETY).await;
    let silent_ms = u(&silent, "silent_ms");
    assert!((800..3000).contains(&silent_ms), "gave up after {silent_ms} ms of silence, bound 800 ms");
    let cut = client.wait_for("session_cut", |e| e["message"] == "session_cut", SAFETY).await;
    assert_eq!(cut["reason"], "timeout", "{cut}");
    // The next session exists, so the reconnect is counted with its reason.
    common::eventually("a reconnect after the timeout", SAFETY, || async {
        metric(metrics, names::CLIENT_RECONNECTS.at(&[("reason", "timeout")])).await.filter(|n| *n >= 1.0)
    })
    .await;
    assert!(metric(metrics, names::CLIENT_SESSIONS_CUT).await >= Some(1.0));
    assert_eq!(metric(metrics, names::CLIENT_MESSAGES_LOST).await, Some(0.0), "nothing known was lost");
    client_exit(&mut client).await;
}

#[tokio::test]
async fn a_server_that_drops_every_session_meets_a_growing_backoff() {
    // Welcomes, then closes the TCP connection at once, forever.
    let (addr, connections) = rogue_server(|mut ws| async move {
        ws.send(welcome()).await.unwrap();
        drop(ws);
    })
    .await;
    let (mut client, _) = Proc::client(
        "client",
        &format!("ws://{addr}/ws"),
        1,
        &["--request-interval", "0s", "--reconnect-backoff-base", "100ms", "--reconnect-backoff-cap", "2s"],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let attempts = connections.load(std::sync::atomic::Ordering::SeqCst);
    // Reset after every session, the delay would average 50 ms: about 90
    // connections in 5 s. Growing (100, 200, 400 ms ... capped at 2 s), the
    // sum of the ceilings passes 5 s after 7 attempts; jitter can shorten each.
    assert!(attempts >= 2, "only {attempts} connection(s): the client did not retry");
    assert!(attempts <= 20, "{attempts} connections in 5 s: the backoff does not grow");
    client_exit(&mut client).await;
}

#[tokio::test]
async fn the_server_frees_a_silent_clients_session_in_service_and_in_a_drain() {
    let liveness = ["--ping-interval", "300ms", "--ping-timeout", "300ms", "--push-interval", "0s"];
    let mut args = vec!["--metrics-linger", "0s", "--drain-timeout", "30s"];
    args.extend(liveness);
    let (mut server, addr) = Proc::server("s0", &args).await;

    // In service: a session that never reads again (so it never pongs).
    let silent = Raw::connect(addr).await;
    let started = Instant::now();
    let close = server.wait_for("session_close", |e| e["reason"] == "timeout", SAFETY).await;
    let freed = started.elapsed();
    assert!(freed >= Duration::from_millis(550), "freed after {freed:?}, before the 600 ms bound");
    assert!(freed < Duration::from_secs(5), "freed after {freed:?}");
    assert_eq!(close["session_id"], silent.session_id.as_str());
    assert_eq!(server.count("client_silent"), 1);

    // In a drain: a live session (answering) and a silent one. The drain
    // ends at the liveness bound, not at the 30 s DRAIN_TIMEOUT, and the
    // silent one is `peer_lost`, not `incomplete`.
    let mut live = Raw::connect(addr).await;
    let mute = Raw::connect(addr).await;
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    loop {
        match live.next().await {
            Seen::Msg(ServerMessage::Data { seq, .. }) => {
                live.send(gsd_protocol::ClientMessage::Ack { seq }).await;
            }
            Seen::Msg(_) => {}
            Seen::Close(code) => {
                assert_eq!(code, Some(close::GOING_AWAY));
                break;
            }
            Seen::End => panic!("the live session ended without a close"),
        }
    }
    assert!(server.wait_exit(SAFETY).await.success());
    let drained_in = signalled.elapsed();
    assert!(drained_in < Duration::from_secs(10), "drain took {drained_in:?}: it waited for the dead client");
    let end = only(&server, "drain_end");
    assert_eq!((u(&end, "complete"), u(&end, "peer_lost"), u(&end, "incomplete")), (1, 1, 0), "{end}");
    drop((silent, mute));
}
