//! The server's timing rules, in process and on a paused clock: the drain
//! deadline, the drain pacing and the liveness bound. `gsd_server::run` is
//! given in-memory connections, so nothing waits on a real socket and the
//! clock moves only when every task is waiting on a timer: each instant
//! asserted here is exact, and no test sleeps for real.

mod common;

use gsd_telemetry::names;
use std::time::Duration;

use common::{Server, follow, next_message, within};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_client_that_never_acks_is_given_up_at_the_drain_deadline() {
    let timeout = Duration::from_secs(7);
    let mut server = Server::start(&["--drain-timeout", "7s", "--drain-messages", "3"]);
    let acking = tokio::spawn(follow(server.connect().await, true));
    let silent = tokio::spawn(follow(server.connect().await, false));
    let signalled = Instant::now();
    server.drain();
    // Bounded, so that a server that never gives up fails the test rather
    // than hanging it (on the paused clock the bound passes at once).
    let bound = timeout * 2;
    let (acking, silent) = (within(bound, acking).await.unwrap(), within(bound, silent).await.unwrap());

    // The acking client is let go as soon as it has acked; the silent one
    // gets all it is owed, then waits exactly until the deadline.
    let notice = silent.notice.expect("a notice");
    assert_eq!((notice.at, notice.remaining, notice.deadline_ms), (signalled, 3, timeout.as_millis() as u64));
    assert_eq!(silent.data.len(), 3);
    let close = silent.close.as_ref().map(|(at, code, _)| (*at, *code));
    assert_eq!(close, Some((signalled + timeout, gsd_protocol::close::GOING_AWAY)));
    let (acked_close, code, _) = acking.close.clone().expect("a close");
    assert_eq!(code, gsd_protocol::close::GOING_AWAY);
    assert!(acked_close - signalled < Duration::from_millis(1), "{acking:?}");

    assert_eq!(server.metric(names::SERVER_DRAINS.at(&[("outcome", "incomplete")])), 1.0);
    assert_eq!(server.metric(names::SERVER_DRAINS.at(&[("outcome", "complete")])), 1.0);
    let summary = within(bound, server.summary()).await;
    assert_eq!((summary.sessions, summary.complete, summary.incomplete), (2, 1, 1), "{summary:?}");
    assert_eq!(summary.messages, 6, "{summary:?}");
    assert!(summary.duration >= timeout, "{summary:?}");
}

#[tokio::test(start_paused = true)]
async fn drain_pacing_spreads_the_notices_over_the_window() {
    let pacing = Duration::from_secs(2);
    let mut server = Server::start(&["--drain-pacing", "2s", "--drain-timeout", "5s", "--drain-messages", "1"]);
    let mut users = Vec::new();
    for _ in 0..32 {
        users.push(tokio::spawn(follow(server.connect().await, true)));
    }
    let signalled = Instant::now();
    server.drain();
    let mut offsets = Vec::new();
    for user in users {
        let seen = within(Duration::from_secs(10), user).await.unwrap();
        let at = seen.notice.expect("a notice").at;
        assert_eq!(seen.close.map(|(_, code, _)| code), Some(gsd_protocol::close::GOING_AWAY));
        offsets.push(at - signalled);
    }
    offsets.sort();
    // Every notice inside the window; spread over it, not all at its start
    // (32 uniform draws all in one half: odds of 2^-31).
    assert!(*offsets.last().unwrap() <= pacing, "{offsets:?}");
    assert!(offsets[0] < pacing / 2 && *offsets.last().unwrap() >= pacing / 2, "{offsets:?}");
    let summary = server.summary().await;
    assert_eq!((summary.complete, summary.incomplete), (32, 0), "{summary:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_pinged_after_the_interval_and_given_up_after_the_timeout() {
    let (interval, timeout) = (Duration::from_secs(10), Duration::from_secs(4));
    let server = Server::start(&["--ping-interval", "10s", "--ping-timeout", "4s"]);
    // Connected, then never read again: no pong, no frame of any kind.
    let _silent = server.connect().await;
    let opened = Instant::now();
    let ping = names::SERVER_MESSAGES_SENT.at(&[("type", "ping")]);
    let timed_out = names::SERVER_SESSIONS_CLOSED.at(&[("reason", "timeout")]);
    let ms = Duration::from_millis(1);

    tokio::time::sleep_until(opened + interval - ms).await;
    assert_eq!(server.metric(&ping), 0.0, "pinged before PING_INTERVAL");
    tokio::time::sleep_until(opened + interval + ms).await;
    assert_eq!(server.metric(&ping), 1.0, "no ping at PING_INTERVAL");

    tokio::time::sleep_until(opened + interval + timeout - ms).await;
    assert_eq!(server.metric(&timed_out), 0.0, "given up before PING_INTERVAL + PING_TIMEOUT");
    assert_eq!(server.metric(names::SERVER_SESSIONS), 1.0);
    tokio::time::sleep_until(opened + interval + timeout + ms).await;
    assert_eq!(server.metric(&timed_out), 1.0, "still open after PING_INTERVAL + PING_TIMEOUT");
    assert_eq!(server.metric(names::SERVER_SESSIONS), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_is_never_given_up() {
    let server = Server::start(&["--ping-interval", "10s", "--ping-timeout", "4s"]);
    let mut ws = server.connect().await;
    // Reading is enough: the WebSocket layer answers every ping with a pong.
    let reader = tokio::spawn(async move { next_message(&mut ws).await });
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(server.metric(names::SERVER_MESSAGES_SENT.at(&[("type", "ping")])) >= 8.0);
    assert_eq!(server.metric(names::SERVER_SESSIONS), 1.0);
    reader.abort();
}
