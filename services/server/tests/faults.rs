//! The faults the server injects on purpose (FAULT_*), each held to its
//! exact numbers: what the peers see on the wire and what the server counts.
//! In process, on in-memory pipes and a paused clock, except where a real
//! socket is the point (the TCP reset) or the binary itself is (garbage in
//! the environment).

mod common;

use gsd_telemetry::names;
use std::time::Duration;

use common::{Seen, Server, follow, within};
use gsd_protocol::close;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

/// Long enough for any drain here; on the paused clock it passes at once.
const BOUND: Duration = Duration::from_secs(60);

/// Whether the session ended with no notice, no data and no close frame:
/// cut, not drained.
fn cut_without_a_word(seen: &Seen) -> bool {
    seen.notice.is_none() && seen.data.is_empty() && seen.close.is_none() && seen.cut.is_some()
}

#[tokio::test(start_paused = true)]
async fn reset_at_sigterm_cuts_the_first_n_sessions_and_drains_the_rest() {
    let mut server = Server::start(&["--fault-reset-at-sigterm", "2", "--drain-messages", "3"]);
    // Opened one after the other: the first two are the ones reset.
    let mut users = Vec::new();
    for _ in 0..5 {
        users.push(tokio::spawn(follow(server.connect().await, true)));
    }
    server.drain();
    let mut seen = Vec::new();
    for user in users {
        seen.push(within(BOUND, user).await.unwrap());
    }
    for (n, user) in seen.iter().enumerate().take(2) {
        assert!(cut_without_a_word(user), "session {n} was not reset: {user:?}");
    }
    for (n, user) in seen.iter().enumerate().skip(2) {
        assert_eq!(user.notice.map(|notice| notice.remaining), Some(3), "session {n}: {user:?}");
        assert_eq!(user.data, [1, 2, 3], "session {n}");
        assert_eq!(user.close.as_ref().map(|(_, code, _)| *code), Some(close::GOING_AWAY), "session {n}");
    }

    // The server's own account says so, under an outcome of its own.
    assert_eq!(server.metric(names::SERVER_DRAINS.at(&[("outcome", "reset")])), 2.0);
    assert_eq!(server.metric(names::SERVER_DRAINS.at(&[("outcome", "complete")])), 3.0);
    assert_eq!(server.metric(names::SERVER_DRAINS.at(&[("outcome", "incomplete")])), 0.0);
    assert_eq!(server.metric(names::SERVER_SESSIONS_CLOSED.at(&[("reason", "reset")])), 2.0);
    assert_eq!(server.metric(names::SERVER_MESSAGES_SENT.at(&[("type", "shutdown_notice")])), 3.0);
    assert_eq!(server.metric(names::SERVER_MESSAGES_SENT.at(&[("type", "close")])), 3.0);
    let summary = within(BOUND, server.summary()).await;
    assert_eq!((summary.sessions, summary.reset, summary.complete, summary.incomplete), (5, 2, 3, 0), "{summary:?}");
}

#[tokio::test(start_paused = true)]
async fn without_the_fault_no_session_is_reset() {
    let mut server = Server::start(&["--drain-messages", "1"]);
    let user = tokio::spawn(follow(server.connect().await, true));
    server.drain();
    let seen = within(BOUND, user).await.unwrap();
    assert_eq!(seen.close.map(|(_, code, _)| code), Some(close::GOING_AWAY));
    assert_eq!(server.metric(names::SERVER_DRAINS.at(&[("outcome", "reset")])), 0.0);
    assert_eq!(within(BOUND, server.summary()).await.reset, 0);
}

#[tokio::test]
async fn reset_at_sigterm_ends_the_connection_with_a_tcp_reset() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = Server::start_on(listener, &["--fault-reset-at-sigterm", "1", "--drain-messages", "2"]);
    let first = common::welcomed(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    let second = common::welcomed(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    let (first, second) = (tokio::spawn(follow(first, true)), tokio::spawn(follow(second, true)));
    server.drain();
    let (first, second) = (within(BOUND, first).await.unwrap(), within(BOUND, second).await.unwrap());
    // A RST (SO_LINGER 0), not an orderly FIN without a close frame.
    match &first.cut {
        Some(Some(tungstenite::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the first session did not end with a reset: {other:?} ({first:?})"),
    }
    assert!(cut_without_a_word(&first), "{first:?}");
    assert_eq!(second.close.map(|(_, code, _)| code), Some(close::GOING_AWAY), "{:?}", second.cut);
    let summary = within(BOUND, server.summary()).await;
    assert_eq!((summary.reset, summary.complete), (1, 1), "{summary:?}");
}

#[tokio::test(start_paused = true)]
async fn close_last_seq_lower_withholds_k_frames_and_says_so_in_the_close() {
    let k = 2;
    let mut server =
        Server::start(&["--fault-close-last-seq-lower", "2", "--drain-messages", "5", "--push-interval", "1s"]);
    // Opened at 0, 1.5 and 3 s, so that each has had a different number of
    // pushes (3, 1, 0) when the drain starts at 3.25 s.
    let started = Instant::now();
    let mut users = Vec::new();
    for opens_at in [0, 1500, 3000] {
        tokio::time::sleep_until(started + Duration::from_millis(opens_at)).await;
        users.push(tokio::spawn(follow(server.connect().await, true)));
    }
    tokio::time::sleep_until(started + Duration::from_millis(3250)).await;
    server.drain();
    let mut notices = Vec::new();
    for user in users {
        let seen = within(BOUND, user).await.unwrap();
        let notice = seen.notice.expect("a notice");
        let last_seq = notice.last_seq.expect("a last_seq");
        notices.push(last_seq);
        assert_eq!(notice.remaining, 5, "{seen:?}");
        // The first 5 - K owed frames came, the last K never did.
        let first_owed = last_seq - 4;
        assert_eq!(seen.data, (first_owed..=last_seq - k).collect::<Vec<_>>(), "{seen:?}");
        let (_, code, reason) = seen.close.expect("a close");
        assert_eq!(code, close::GOING_AWAY);
        assert_eq!(reason, gsd_protocol::close_reason("server draining", last_seq - k));
        assert_eq!(gsd_protocol::close_reason_last_seq(&reason), Some(last_seq - k));
    }
    assert_eq!(notices, [8, 6, 5], "3, 1 and 0 pushes before the drain, then 5 owed");

    // The server believes every drain complete: the fault is invisible to it.
    assert_eq!(server.metric(names::SERVER_DRAINS.at(&[("outcome", "complete")])), 3.0);
    assert_eq!(server.metric(names::SERVER_MESSAGES_SENT.at(&[("type", "data")])), (3 + 1 + 3 * 3) as f64);
    assert_eq!(server.metric(names::SERVER_DRAIN_MESSAGES_SUM), 9.0, "5 - K sent per session");
    assert_eq!(server.metric(names::SERVER_DATA_UNACKED), 0.0, "every frame sent was acked");
    let summary = within(BOUND, server.summary()).await;
    assert_eq!((summary.complete, summary.incomplete, summary.messages), (3, 0, 9), "{summary:?}");
}

#[tokio::test(start_paused = true)]
async fn drop_owed_and_close_last_seq_lower_add_up() {
    // 5 owed: the last 1 withheld with its seq claimed by the close
    // (FAULT_DROP_OWED), the 2 before it withheld and not claimed.
    let mut server =
        Server::start(&["--fault-drop-owed", "1", "--fault-close-last-seq-lower", "2", "--drain-messages", "5"]);
    let user = tokio::spawn(follow(server.connect().await, true));
    server.drain();
    let seen = within(BOUND, user).await.unwrap();
    assert_eq!(seen.notice.and_then(|notice| notice.last_seq), Some(5));
    assert_eq!(seen.data, [1, 2]);
    let reason = seen.close.expect("a close").2;
    assert_eq!(gsd_protocol::close_reason_last_seq(&reason), Some(3), "{reason}");
    assert_eq!(within(BOUND, server.summary()).await.complete, 1);
}

#[tokio::test]
async fn garbage_in_a_fault_variable_stops_the_binary_with_its_name() {
    for variable in ["FAULT_RESET_AT_SIGTERM", "FAULT_CLOSE_LAST_SEQ_LOWER"] {
        for (garbage, why) in [
            ("two", "invalid digit"),
            ("-1", "is not in 0..=4294967295"),
            ("4294967296", "is not in 0..=4294967295"),
            ("1e3", "invalid digit"),
            ("", "cannot parse integer from empty string"),
        ] {
            let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_gsd-server"))
                .args(["--port", "0", "--admin-port", "0", "--metrics-linger", "0s"])
                .env(variable, garbage)
                .kill_on_drop(true)
                .output();
            // A server that took the value would listen until killed.
            let out = within(Duration::from_secs(20), run).await.unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{variable}={garbage}: {:?}\n{stderr}", out.status);
            assert!(
                stderr.contains(&format!("invalid value '{garbage}'")) && stderr.contains(variable),
                "{variable}={garbage}: {stderr}"
            );
            assert!(stderr.contains(why), "{variable}={garbage}: {stderr}");
        }
    }
}
