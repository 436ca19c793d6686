//! Session resume (protocol 3, docs/resume.md) between real processes: a
//! session cut without a drain is parked by the server, and the client that
//! presents the welcome's token gets it back with every frame it had not
//! received, on the replica that parked it or, handed over, on another.
//! Each way a resume is refused is tried and counted, and so is what resume
//! cannot save (a session expired, frames no longer kept, a replica gone).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use gsd_protocol::resume::{Claims, Key};
use gsd_protocol::{ClientMessage, ServerMessage, header};
use gsd_telemetry::names;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

mod common;
use common::{Proc, Raw, Seen, metric, wait_metric};

/// A key file of 32 bytes for the server, and the same key for the test to
/// sign tokens with.
fn key_file(name: &str) -> (PathBuf, Key) {
    let dir = std::env::temp_dir().join(format!("gsd-resume-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key");
    let secret = format!("{name:-<32}").into_bytes();
    std::fs::write(&path, &secret).unwrap();
    (path, Key::new(&secret).unwrap())
}

/// A server with resume on (key file `key`), pushing every 5 ms unless
/// `args` says otherwise.
async fn server(id: &str, key: &std::path::Path, args: &[&str]) -> (Proc, SocketAddr) {
    let mut all = vec!["--ping-interval", "0s"];
    if !args.contains(&"--push-interval") {
        all.extend(["--push-interval", "5ms"]);
    }
    all.extend_from_slice(args);
    Proc::server_env(id, &all, &[("RESUME_KEY_FILE", key.to_str().unwrap())]).await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A raw session, its welcome's token and session id.
struct Held {
    raw: Raw,
    token: String,
}

async fn open(addr: SocketAddr) -> Held {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.expect("upgrade");
    welcomed(ws).await
}

async fn welcomed(mut ws: common::Ws) -> Held {
    let first = common::next_frame(&mut ws).await;
    let Seen::Msg(ServerMessage::Welcome { server_id, session_id, resume_token: Some(token), .. }) = first else {
        panic!("first frame was {first:?}, not a welcome with a token")
    };
    Held { raw: Raw { ws, session_id, server_id }, token }
}

/// Reads data frames until seq `upto` (acking none); the seqs seen.
async fn read_data(raw: &mut Raw, upto: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last().is_none_or(|s| *s < upto) {
        match raw.next().await {
            Seen::Msg(ServerMessage::Data { seq, .. }) => seqs.push(seq),
            Seen::Msg(_) => {}
            other => panic!("the session ended before seq {upto}: {other:?} after {seqs:?}"),
        }
    }
    seqs
}

/// Drops the connection with a TCP reset (SO_LINGER 0), as a proxy that
/// restarts does.
fn reset(raw: Raw) {
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = raw.ws.get_ref() {
        tcp.set_zero_linger().expect("SO_LINGER 0");
    }
    drop(raw);
}

/// A session reset once it had received seqs up to `upto`, and parked.
struct Parked {
    token: String,
    session_id: String,
}

/// A server with resume on (`args` more) holding one parked session.
async fn one_parked(name: &str, args: &[&str], upto: u64) -> (Proc, SocketAddr, Parked) {
    let (key, _) = key_file(name);
    let (server, addr) = server("a", &key, args).await;
    let mut held = open(addr).await;
    read_data(&mut held.raw, upto).await;
    let parked = Parked { token: held.token.clone(), session_id: held.raw.session_id.clone() };
    reset(held.raw);
    wait_metric(server.admin(), names::SERVER_SESSIONS_PARKED.at(&[]), 1.0).await;
    (server, addr, parked)
}

/// An upgrade asking for a session back: `token` and, unless `None`, the
/// last seq header's value. What came first: the resumed welcome, or the
/// close code and reason.
async fn ask(
    addr: SocketAddr,
    token: &str,
    last_seq: Option<&str>,
) -> Result<(common::Ws, ServerMessage), (u16, String)> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert(header::RESUME, HeaderValue::from_str(token).unwrap());
    if let Some(last_seq) = last_seq {
        request.headers_mut().insert(header::RESUME_LAST_SEQ, HeaderValue::from_str(last_seq).unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("the upgrade itself succeeds");
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a first frame");
    match frame {
        Some(Ok(Message::Text(text))) => Ok((ws, ServerMessage::decode(text.as_str()).unwrap())),
        Some(Ok(Message::Close(Some(close)))) => Err((u16::from(close.code), close.reason.to_string())),
        other => panic!("first frame of a resume: {other:?}"),
    }
}

async fn refused(addr: SocketAddr, token: &str, last_seq: Option<&str>, reason: &str) {
    match ask(addr, token, last_seq).await {
        Err((code, text)) => {
            assert_eq!(code, 4409, "{reason}: {text}");
            assert_eq!(text, format!("resume refused: {reason}"));
        }
        Ok((_, welcome)) => panic!("{reason}: resumed instead: {welcome:?}"),
    }
}

async fn refusals(admin: SocketAddr, reason: &str) -> f64 {
    metric(admin, names::SERVER_RESUME_REFUSED.at(&[("reason", reason)])).await.unwrap_or(-1.0)
}

/// A session cut by a reset, with frames received past its last ack, is
/// given back whole: the same session id, the frames above the client's
/// last seq replayed in order, the same seq space going on; the frames it
/// had and never acked are counted unacked, once.
#[tokio::test]
async fn a_reset_session_is_resumed_with_exactly_the_frames_not_received() {
    let (key, _) = key_file("replay");
    let (server, addr) = server("a", &key, &[]).await;
    let admin = server.admin();
    let mut held = open(addr).await;
    read_data(&mut held.raw, 10).await;
    held.raw.send(ClientMessage::Ack { seq: 4 }).await;
    // The ack reaches the server before the reset (its own frame, then a
    // moment); the session has sent more by now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let session_id = held.raw.session_id.clone();
    reset(held.raw);
    wait_metric(admin, names::SERVER_SESSIONS_PARKED.at(&[]), 1.0).await;
    assert_eq!(metric(admin, names::SERVER_DATA_UNACKED.at(&[])).await, Some(0.0), "nothing counted while parked");

    let (ws, welcome) = ask(addr, &held.token, Some("7")).await.expect("resumed");
    let ServerMessage::Welcome { session_id: again, resumed, replay_from, resume_token, .. } = welcome else {
        panic!("{welcome:?}")
    };
    assert_eq!((again.as_str(), resumed, replay_from), (session_id.as_str(), true, Some(8)));
    assert!(resume_token.is_some_and(|t| t != held.token), "a resumed session gets a token of its own");
    let mut raw = Raw { ws, session_id: again, server_id: String::new() };
    let seqs = read_data(&mut raw, 40).await;
    assert_eq!(seqs, (8..=40).collect::<Vec<_>>(), "replayed from 8, then new frames, in one seq space");
    let replayed = metric(admin, names::SERVER_FRAMES_REPLAYED.at(&[])).await.unwrap();
    assert!(replayed >= 3.0, "at least seqs 8 to 10 were sent before the reset: {replayed}");
    assert_eq!(metric(admin, names::SERVER_SESSIONS_RESUMED.at(&[("where", "local")])).await, Some(1.0));
    assert_eq!(metric(admin, names::SERVER_SESSIONS_PARKED.at(&[])).await, Some(0.0));
    // Seqs 5 to 7: received, never acked; counted by the server once.
    assert_eq!(metric(admin, names::SERVER_DATA_UNACKED.at(&[])).await, Some(3.0));
    for reason in gsd_protocol::resume::REFUSAL_REASONS {
        assert_eq!(refusals(admin, reason).await, 0.0, "{reason}");
    }
}

/// A resume can reach the server before the server has seen the cut (a
/// proxy closes both of its connections at once, and the client's new
/// upgrade can win the race): the server waits up to a second for the
/// session to end and be parked, then gives it back. A session that stays
/// open is not taken from its connection: the resume is refused
/// `not_parked` after that second, and the open session goes on.
#[tokio::test]
async fn a_resume_that_outruns_the_cut_waits_for_the_park_and_a_live_session_is_not_taken() {
    let (key, _) = key_file("outrun");
    let (server, addr) = server("a", &key, &[]).await;
    let admin = server.admin();
    let mut held = open(addr).await;
    read_data(&mut held.raw, 5).await;
    let token = held.token.clone();
    let asked = tokio::spawn(async move { ask(addr, &token, Some("5")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!asked.is_finished(), "the resume did not wait for the session still open");
    let session_id = held.raw.session_id.clone();
    reset(held.raw);
    let (_ws, welcome) = asked.await.unwrap().expect("resumed once the cut was seen");
    let ServerMessage::Welcome { session_id: again, resumed, replay_from, .. } = welcome else { panic!("{welcome:?}") };
    assert_eq!((again, resumed, replay_from), (session_id, true, Some(6)));
    assert_eq!(metric(admin, names::SERVER_SESSIONS_RESUMED.at(&[("where", "local")])).await, Some(1.0));

    let mut open_one = open(addr).await;
    read_data(&mut open_one.raw, 2).await;
    let started = std::time::Instant::now();
    refused(addr, &open_one.token, Some("2"), "not_parked").await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "refused after {waited:?}, before the wait for the park");
    assert!(waited < Duration::from_secs(5), "refused after {waited:?}");
    // The open session goes on: still counted open, still sending.
    assert_eq!(metric(admin, names::SERVER_SESSIONS.at(&[])).await, Some(2.0), "the resumed one and the open one");
    let before = metric(admin, names::SERVER_MESSAGES_SENT.at(&[("type", "data")])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = metric(admin, names::SERVER_MESSAGES_SENT.at(&[("type", "data")])).await.unwrap();
    assert!(after > before, "nothing sent after the refusal: {before} then {after}");
    read_data(&mut open_one.raw, 3).await;
    assert_eq!(refusals(admin, "not_parked").await, 1.0);
}

/// A resume the server cannot serve now (MAX_SESSIONS reached) is closed
/// 1013 before any welcome, and the session it took goes back to the lot:
/// the client's next try, once there is room, gets it back whole.
#[tokio::test]
async fn a_resume_refused_for_capacity_keeps_the_session_parked_for_the_next_try() {
    let (server, addr, held) = one_parked("capacity", &["--max-sessions", "1"], 5).await;
    let admin = server.admin();
    let session_id = held.session_id.clone();
    // Another user takes the one place.
    let other = open(addr).await;
    match ask(addr, &held.token, Some("5")).await {
        Err((code, _)) => assert_eq!(code, gsd_protocol::close::TRY_AGAIN_LATER),
        Ok((_, welcome)) => panic!("served beyond MAX_SESSIONS: {welcome:?}"),
    }
    assert_eq!(metric(admin, names::SERVER_SESSIONS_PARKED.at(&[])).await, Some(1.0), "back in the lot");
    drop(other);
    wait_metric(admin, names::SERVER_SESSIONS.at(&[]), 0.0).await;
    // The place is given back a moment after the gauge drops: the client's
    // retries, each refused 1013 and each putting the session back.
    let mut tries = 0;
    let welcome = loop {
        tries += 1;
        match ask(addr, &held.token, Some("5")).await {
            Ok((_ws, welcome)) => break welcome,
            Err((code, _)) if code == gsd_protocol::close::TRY_AGAIN_LATER && tries < 50 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("try {tries}: {other:?}"),
        }
    };
    let ServerMessage::Welcome { session_id: again, resumed, replay_from, .. } = welcome else { panic!("{welcome:?}") };
    assert_eq!((again, resumed, replay_from), (session_id, true, Some(6)));
    assert_eq!(refusals(admin, "replayed").await, 0.0);
}

/// Past RESUME_MAX_BYTES a session keeps only its newest frames: a resume
/// from seq 0 is given back from the oldest frame kept, and every frame
/// before it is counted, unacked by the server and (from `replay_from`)
/// lost by a client, exactly.
#[tokio::test]
async fn frames_past_the_byte_bound_are_not_replayed_and_the_gap_is_exact() {
    let (server, addr, held) = one_parked("shed", &["--resume-max-bytes", "1024"], 150).await;
    let admin = server.admin();
    let sent = metric(admin, names::SERVER_MESSAGES_SENT.at(&[("type", "data")])).await.unwrap() as u64;
    let (ws, welcome) = ask(addr, &held.token, Some("0")).await.expect("resumed");
    let ServerMessage::Welcome { replay_from: Some(from), .. } = welcome else { panic!("{welcome:?}") };
    let mut raw = Raw { ws, session_id: String::new(), server_id: String::new() };
    let first = read_data(&mut raw, from).await;
    assert_eq!(first, [from], "the first frame is the welcome's replay_from");
    // Payloads are `<16 hex digits>:<seq>`: the newest frames whose
    // payloads fit in 1024 bytes were kept, and not one more.
    let bytes = |seqs: std::ops::RangeInclusive<u64>| seqs.map(|seq| 17 + seq.to_string().len()).sum::<usize>();
    assert!(sent >= 150 && from > 1, "sent {sent}, replay_from {from}");
    assert!(bytes(from..=sent) <= 1024 && bytes(from - 1..=sent) > 1024, "kept {from}..={sent}");
    assert_eq!(metric(admin, names::SERVER_DATA_UNACKED.at(&[])).await, Some((from - 1) as f64));
    assert_eq!(metric(admin, names::SERVER_FRAMES_REPLAYED.at(&[])).await, Some((sent - from + 1) as f64));
}

/// Every way to ask for a session that cannot be had: close 4409 with the
/// reason, counted by reason, and nothing taken from the one parked
/// session, which a correct ask still gets afterwards.
#[tokio::test]
async fn every_bad_resume_is_refused_with_4409_by_reason_and_counted() {
    let (key, signer) = key_file("refusals");
    let (server, addr) = server("a", &key, &[]).await;
    let admin = server.admin();
    let mut held = open(addr).await;
    read_data(&mut held.raw, 5).await;
    let session_id = held.raw.session_id.clone();
    let token = held.token.clone();
    reset(held.raw);
    wait_metric(admin, names::SERVER_SESSIONS_PARKED.at(&[]), 1.0).await;

    let origin = admin.to_string();
    let claims = |origin: &str, session: &str, expires_ms: u64| Claims {
        origin: origin.to_owned(),
        session_id: session.to_owned(),
        issued_ms: now_ms() - 1000,
        expires_ms,
        nonce: 1,
    };
    let later = now_ms() + 60_000;
    let other_key = Key::new(&[9u8; 32]).unwrap();
    refused(addr, &other_key.sign(&claims(&origin, &session_id, later)), Some("5"), "forged").await;
    refused(addr, &token[..token.len() - 4], Some("5"), "truncated").await;
    refused(addr, &"A".repeat(600), Some("5"), "oversized").await;
    refused(addr, "not*base64url", Some("5"), "malformed").await;
    refused(addr, &signer.sign(&claims(&origin, &session_id, now_ms() - 1)), Some("5"), "expired").await;
    // A closed port on loopback: the replica the token names is gone.
    refused(addr, &signer.sign(&claims("127.0.0.1:1", &session_id, later)), Some("5"), "origin_gone").await;
    refused(addr, &signer.sign(&claims(&origin, "0123456789abcdef", later)), Some("5"), "not_parked").await;
    refused(addr, &signer.sign(&claims(&origin, &session_id, later)), Some("5"), "stale").await;
    refused(addr, &token, None, "last_seq").await;
    refused(addr, &token, Some("five"), "last_seq").await;
    refused(addr, &token, Some("-1"), "last_seq").await;
    refused(addr, &token, Some("99999999999"), "last_seq").await;
    for (reason, n) in [
        ("forged", 1.0),
        ("truncated", 1.0),
        ("oversized", 1.0),
        ("malformed", 1.0),
        ("expired", 1.0),
        ("origin_gone", 1.0),
        ("not_parked", 1.0),
        ("stale", 1.0),
        ("last_seq", 4.0),
        ("replayed", 0.0),
    ] {
        assert_eq!(refusals(admin, reason).await, n, "{reason}");
    }
    assert_eq!(metric(admin, names::SERVER_SESSIONS_PARKED.at(&[])).await, Some(1.0), "still parked");

    // The real ask still works; the same token a second time is a replay.
    let (ws, welcome) = ask(addr, &token, Some("5")).await.expect("resumed after the refusals");
    assert!(matches!(welcome, ServerMessage::Welcome { resumed: true, .. }), "{welcome:?}");
    refused(addr, &token, Some("5"), "replayed").await;
    assert_eq!(refusals(admin, "replayed").await, 1.0);
    // Cut again: the first token is now an older one of a parked session.
    let mut raw = Raw { ws, session_id: String::new(), server_id: String::new() };
    read_data(&mut raw, 12).await;
    reset(raw);
    wait_metric(admin, names::SERVER_SESSIONS_PARKED.at(&[]), 1.0).await;
    refused(addr, &token, Some("5"), "stale").await;
    assert_eq!(refusals(admin, "stale").await, 2.0);
}

/// A parked session nobody asks back within RESUME_WINDOW expires: counted,
/// every frame it was not acked counted unacked, and a later ask is
/// refused `not_parked`.
#[tokio::test]
async fn a_session_not_resumed_within_the_window_expires_counted() {
    let (key, _) = key_file("expiry");
    let (server, addr) = server("a", &key, &["--resume-window", "1s"]).await;
    let admin = server.admin();
    let mut held = open(addr).await;
    read_data(&mut held.raw, 20).await;
    held.raw.send(ClientMessage::Ack { seq: 20 }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    reset(held.raw);
    wait_metric(admin, names::SERVER_SESSIONS_EXPIRED.at(&[]), 1.0).await;
    assert_eq!(metric(admin, names::SERVER_SESSIONS_PARKED.at(&[])).await, Some(0.0));
    let sent = metric(admin, names::SERVER_MESSAGES_SENT.at(&[("type", "data")])).await.unwrap();
    let unacked = metric(admin, names::SERVER_DATA_UNACKED.at(&[])).await.unwrap();
    assert_eq!(unacked, sent - 20.0, "every frame after the ack of 20");
    refused(addr, &held.token, Some("20"), "not_parked").await;
}

/// A session whose client leaves with close 1000 is over: not parked, and
/// its token no longer resumes anything.
#[tokio::test]
async fn a_session_closed_normally_is_not_parked() {
    let (key, _) = key_file("normal");
    let (server, addr) = server("a", &key, &[]).await;
    let admin = server.admin();
    let mut held = open(addr).await;
    read_data(&mut held.raw, 3).await;
    let close = tokio_tungstenite::tungstenite::protocol::CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    held.raw.send_frame(Message::Close(Some(close))).await;
    while !matches!(held.raw.next().await, Seen::Close(_) | Seen::End) {}
    wait_metric(admin, names::SERVER_SESSIONS.at(&[]), 0.0).await;
    assert_eq!(metric(admin, names::SERVER_SESSIONS_PARKED.at(&[])).await, Some(0.0));
    refused(addr, &held.token, Some("3"), "not_parked").await;
}

/// With RESUME_WINDOW=0s the server is as protocol 2: no token in the
/// welcome, and an upgrade with resume headers is a new session.
#[tokio::test]
async fn with_resume_off_there_is_no_token_and_the_headers_are_ignored() {
    let (key, signer) = key_file("off");
    let (server, addr) = server("a", &key, &["--resume-window", "0s"]).await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.expect("upgrade");
    let mut ws = ws;
    let first = common::next_frame(&mut ws).await;
    assert!(
        matches!(
            &first,
            Seen::Msg(ServerMessage::Welcome { resume_token: None, resumed: false, replay_from: None, .. })
        ),
        "{first:?}"
    );
    let claims = Claims {
        origin: server.admin().to_string(),
        session_id: "0123456789abcdef".into(),
        issued_ms: now_ms(),
        expires_ms: now_ms() + 60_000,
        nonce: 1,
    };
    let (_, welcome) = ask(addr, &signer.sign(&claims), Some("3")).await.expect("a new session");
    assert!(matches!(welcome, ServerMessage::Welcome { resumed: false, resume_token: None, .. }), "{welcome:?}");
    assert_eq!(metric(server.admin(), names::SERVER_RESUME_REFUSED.at(&[("reason", "not_parked")])).await, Some(0.0));
}

/// N users whose connections a proxy resets mid-stream (an RST to both
/// ends): every one asks its session back through the Service, every one
/// is resumed, and nothing is lost or unknown. With resume off on the
/// server, the same reset leaves N cuts unknown.
#[tokio::test]
async fn n_sessions_reset_mid_stream_are_all_resumed_with_nothing_lost() {
    const USERS: u32 = 20;
    for (resume, window) in [(true, "30s"), (false, "0s")] {
        let (key, _) = key_file(if resume { "rst-on" } else { "rst-off" });
        let (server, _) = server("a", &key, &["--resume-window", window, "--push-interval", "20ms"]).await;
        let service = common::service(&[&server]).await;
        let (mut client, metrics) =
            Proc::client("client", &service.url(), USERS, &["--request-interval", "50ms"]).await;
        common::traffic_flows(metrics, USERS).await;
        service.reset("a");
        let cut = names::CLIENT_SESSIONS_CUT.at(&[]);
        wait_metric(metrics, &cut, USERS as f64).await;
        if resume {
            wait_metric(metrics, names::CLIENT_SESSIONS_RESUMED.at(&[]), USERS as f64).await;
        }
        // Everyone back and carrying traffic again.
        wait_metric(metrics, names::CLIENT_SESSIONS.at(&[]), USERS as f64).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(client.wait_exit(Duration::from_secs(30)).await.success(), "{}", client.tail());
        let exit = common::only(&client, "client_exit");
        let resumed = common::u(&exit, "sessions_resumed");
        assert_eq!(common::u(&exit, "sessions_cut"), USERS as u64, "{exit}");
        assert_eq!(common::u(&exit, "messages_lost"), 0, "{exit}");
        assert_eq!(common::u(&exit, "requests_lost"), 0, "{exit}");
        let server_resumed = metric(server.admin(), names::SERVER_SESSIONS_RESUMED.at(&[("where", "local")])).await;
        if resume {
            assert_eq!(resumed, USERS as u64, "every cut resumed: {exit}");
            assert_eq!(server_resumed, Some(USERS as f64));
            for reason in gsd_protocol::resume::REFUSAL_REASONS {
                assert_eq!(refusals(server.admin(), reason).await, 0.0, "{reason}");
            }
        } else {
            assert_eq!(resumed, 0, "resume off: every cut unknown: {exit}");
            assert_eq!(server_resumed, Some(0.0));
        }
    }
}

/// A resume that reaches another replica is handed over: the other replica
/// asks the one that parked the session for it over the admin port, and
/// the client goes on with nothing lost and no cut unknown. Then, with the
/// parking replica SIGKILLed, the same reset leaves every cut refused
/// `origin_gone`, counted, and unknown.
#[tokio::test]
async fn a_resume_that_reaches_another_replica_is_handed_over_and_one_whose_replica_is_gone_is_refused() {
    const USERS: u32 = 5;
    let (key, _) = key_file("other");
    let (mut a, a_ws) = server("a", &key, &["--push-interval", "20ms"]).await;
    let (b, b_ws) = server("b", &key, &["--push-interval", "20ms"]).await;
    let service = common::service(&[&a]).await;
    let (mut client, metrics) = Proc::client("client", &service.url(), USERS, &[]).await;
    common::traffic_flows(metrics, USERS).await;
    // Only b takes new connections now; a's connections are reset.
    service.add("b", b_ws, b.admin());
    service.wait_ready("b", Duration::from_secs(20)).await.unwrap();
    service.remove("a");
    service.reset("a");
    wait_metric(metrics, names::CLIENT_SESSIONS_RESUMED.at(&[]), USERS as f64).await;
    wait_metric(metrics, names::CLIENT_SESSIONS.at(&[]), USERS as f64).await;
    assert_eq!(metric(b.admin(), names::SERVER_SESSIONS_RESUMED.at(&[("where", "fetched")])).await, Some(USERS as f64));
    assert_eq!(metric(a.admin(), names::SERVER_SESSIONS_HANDED_OVER.at(&[])).await, Some(USERS as f64));
    assert_eq!(metric(a.admin(), names::SERVER_SESSIONS_PARKED.at(&[])).await, Some(0.0));

    // Back to a, then a dies: b can fetch nothing from it.
    service.add("a", a_ws, a.admin());
    service.wait_ready("a", Duration::from_secs(20)).await.unwrap();
    service.remove("b");
    service.reset("b");
    wait_metric(metrics, names::CLIENT_SESSIONS_RESUMED.at(&[]), 2.0 * USERS as f64).await;
    service.add("b", b_ws, b.admin());
    service.wait_ready("b", Duration::from_secs(20)).await.unwrap();
    service.remove("a");
    a.signal(nix::sys::signal::Signal::SIGKILL);
    a.wait_exit(Duration::from_secs(10)).await;
    service.reset("a");
    let gone = names::CLIENT_RESUME_FAILED.at(&[("reason", "origin_gone")]);
    wait_metric(metrics, &gone, USERS as f64).await;
    wait_metric(metrics, names::CLIENT_SESSIONS.at(&[]), USERS as f64).await;
    assert_eq!(refusals(b.admin(), "origin_gone").await, USERS as f64);
    client.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(client.wait_exit(Duration::from_secs(30)).await.success(), "{}", client.tail());
    let exit = common::only(&client, "client_exit");
    let counts = (common::u(&exit, "sessions_cut"), common::u(&exit, "sessions_resumed"));
    assert_eq!(counts, (3 * USERS as u64, 2 * USERS as u64), "the last {USERS} cuts unknown: {exit}");
    assert_eq!(common::u(&exit, "messages_lost"), 0, "{exit}");
}

/// The hand-over endpoint is only for replicas: without the headers, with
/// a tag under another key or an old one, or for a session the token does
/// not name, nothing is handed over; with a valid tag the session is, once.
#[tokio::test]
async fn the_hand_over_endpoint_hands_a_session_only_to_a_holder_of_the_key_once() {
    let (key, signer) = key_file("take");
    let (server, addr) = server("a", &key, &[]).await;
    let admin = server.admin();
    let mut held = open(addr).await;
    read_data(&mut held.raw, 5).await;
    let session_id = held.raw.session_id.clone();
    reset(held.raw);
    wait_metric(admin, names::SERVER_SESSIONS_PARKED.at(&[]), 1.0).await;
    let token = held.token.clone();
    let take = |path: String, headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        gsd_telemetry::http_post(&admin.to_string(), &path, &headers, 1 << 20, Duration::from_secs(5)).await.unwrap()
    };
    let tagged = |key: &Key, time: u64| {
        let time = time.to_string();
        let tag = key.tag("gsd-take", &[token.as_bytes(), time.as_bytes()]);
        vec![("gsd-resume", token.clone()), ("gsd-take-time", time), ("gsd-take-tag", tag)]
    };
    let path = format!("/sessions/{session_id}/take");
    let other = Key::new(&[3u8; 32]).unwrap();
    assert_eq!(take(path.clone(), vec![]).await.0, 400, "no headers");
    assert_eq!(take(path.clone(), tagged(&other, now_ms())).await.0, 403, "another key");
    assert_eq!(take(path.clone(), tagged(&signer, now_ms() - 60_000)).await.0, 403, "a minute old");
    let mut garbage = tagged(&signer, now_ms());
    garbage[2].1 = "not a tag".into();
    assert_eq!(take(path.clone(), garbage).await.0, 403, "a garbage tag");
    assert_eq!(take("/sessions/0123456789abcdef/take".into(), tagged(&signer, now_ms())).await.0, 404, "another id");
    assert_eq!(metric(admin, names::SERVER_SESSIONS_PARKED.at(&[])).await, Some(1.0), "nothing handed over");
    let (status, body) = take(path.clone(), tagged(&signer, now_ms())).await;
    assert_eq!(status, 200, "{body}");
    let parked: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parked["session_id"], session_id.as_str());
    assert!(parked["next_seq"].as_u64().unwrap() > 5, "{parked}");
    let (status, body) = take(path, tagged(&signer, now_ms())).await;
    assert_eq!((status, body.trim()), (409, "replayed"), "once");
    assert_eq!(metric(admin, names::SERVER_SESSIONS_HANDED_OVER.at(&[])).await, Some(1.0));
}
