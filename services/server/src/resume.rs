//! Session resume on the server (protocol 3, docs/resume.md): the key the
//! tokens are signed with, the parking lot, and what an upgrade that asks
//! for a session back is given.
//!
//! The checks that need no state run in the upgrade handler ([`Resume::ask`]:
//! the token's layout, MAC and expiry, the client's last seq); the session
//! itself takes the parked state once the upgrade is done, so that an
//! upgrade that fails on the way never loses a parked session: out of this
//! replica's lot ([`Resume::take`]), or, when the token names another
//! replica, out of that one's over its admin port ([`Resume::fetch`], which
//! the other answers with [`Resume::hand_over`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use gsd_protocol::header;
use gsd_protocol::resume::{Claims, Key, MIN_KEY_BYTES};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Config;
use crate::park::{Lot, NotParked, Parked, TakeRefusal};

/// How long a token is good for from its welcome: a session older than
/// this can no longer be resumed (it is a cut as in protocol 2). The window
/// after the cut (RESUME_WINDOW) is the bound that matters; this one only
/// stops a token kept for days from being tried at all.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The context of a hand-over's tag ([`Key::tag`]).
const TAKE_CONTEXT: &str = "gsd-take";
/// A hand-over's time (ms since the epoch) and its tag, as headers.
const TAKE_TIME: &str = "gsd-take-time";
const TAKE_TAG: &str = "gsd-take-tag";
/// How far a hand-over's time may be from the answering replica's clock.
const TAKE_SKEW: Duration = Duration::from_secs(30);
/// How long a replica waits for another to hand a session over.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a resume waits for a session that is still open here to end and
/// be parked: whatever cut it (a proxy that closed both of its connections,
/// a reset) reaches the client and this replica at about the same time, and
/// the client's new upgrade can arrive first. Under [`FETCH_TIMEOUT`], so
/// that a replica fetching the session still gets an answer.
const LIVE_WAIT: Duration = Duration::from_secs(1);

/// Most sessions parked at once when MAX_SESSIONS is 0 (no limit): with
/// RESUME_MAX_BYTES of 64 KiB, 640 MiB of payload at worst.
pub(crate) const DEFAULT_MAX_PARKED: usize = 10_000;

/// A server's resume state; absent when RESUME_WINDOW is 0s.
pub(crate) struct Resume {
    key: Key,
    /// The admin address other replicas would fetch a parked session from;
    /// in every token this server issues, and what a token must name to be
    /// taken here.
    pub(crate) origin: String,
    lot: Mutex<Lot>,
    /// RESUME_MAX_BYTES: payload bytes of unacked frames a session keeps.
    pub(crate) max_bytes: usize,
    /// Sessions serving here with a token, by id: a resume for one of them
    /// waits up to [`LIVE_WAIT`] for it to end and be parked, woken by the
    /// session's own [`Notify`] when it is parked or stops serving. A count,
    /// since the session resumed from a parked one can start serving before
    /// the one that parked it has left.
    live: Mutex<HashMap<String, (u32, Arc<Notify>)>>,
}

/// What an upgrade asked for.
pub(crate) enum Ask {
    /// A new session (no resume header, or resume off).
    New,
    /// A session back: the token, its checked claims and the last seq the
    /// client received.
    Resume { token: String, claims: Claims, last_seq: u64 },
    /// A resume refused before any state was looked at, with the reason.
    Refused(&'static str),
}

/// Wall-clock milliseconds since the Unix epoch (tokens cross replicas).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// RESUME_KEY_FILE's key: its bytes, one trailing newline dropped, at
/// least [`MIN_KEY_BYTES`] of them. The error names the file, never its
/// bytes.
pub(crate) fn read_key(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("RESUME_KEY_FILE {}: cannot read it: {e}", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.len() < MIN_KEY_BYTES {
        return Err(format!(
            "RESUME_KEY_FILE {} holds {} bytes; a resume key needs at least {MIN_KEY_BYTES} (`head -c 32 /dev/urandom | base64 > FILE`)",
            path.display(),
            bytes.len()
        ));
    }
    Ok(bytes)
}

impl Resume {
    /// The resume state `config` asks for; `None` when RESUME_WINDOW is 0s.
    /// `origin` is this replica's admin address as others reach it. The
    /// key is RESUME_KEY_FILE's bytes (one trailing newline dropped), or,
    /// without the file, random bytes of this process's own: its tokens
    /// then resume on this replica only.
    pub(crate) fn new(config: &Config, origin: String) -> Result<Option<Resume>, String> {
        if config.resume_window.is_zero() {
            return Ok(None);
        }
        let secret = match &config.resume_key_file {
            Some(path) => read_key(path)?,
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let key = Key::new(&secret).map_err(|short| format!("a resume key of {} bytes is too short", short.0))?;
        let max_parked = if config.max_sessions > 0 { config.max_sessions } else { DEFAULT_MAX_PARKED };
        let max_bytes = config.resume_max_bytes as usize;
        Ok(Some(Resume {
            key,
            origin,
            lot: Mutex::new(Lot::new(config.resume_window, max_bytes, max_parked)),
            max_bytes,
            live: Mutex::new(HashMap::new()),
        }))
    }

    /// A token for `session_id`, and the nonce the lot must see again.
    pub(crate) fn issue(&self, session_id: &str) -> (String, u64) {
        let nonce = rand::random::<u64>();
        let issued_ms = now_ms();
        let claims = Claims {
            origin: self.origin.clone(),
            session_id: session_id.to_owned(),
            issued_ms,
            expires_ms: issued_ms.saturating_add(TOKEN_LIFETIME.as_millis() as u64),
            nonce,
        };
        (self.key.sign(&claims), nonce)
    }

    /// What the upgrade's headers ask for, with every check that needs no
    /// parked state. Header values that are not visible ASCII are malformed.
    pub(crate) fn ask(&self, headers: &HeaderMap) -> Ask {
        let Some(token) = headers.get(header::RESUME) else { return Ask::New };
        let Ok(token) = token.to_str() else { return Ask::Refused("malformed") };
        let claims = match self.key.verify(token, now_ms()) {
            Ok(claims) => claims,
            Err(refusal) => return Ask::Refused(refusal.reason()),
        };
        let last_seq = headers.get(header::RESUME_LAST_SEQ).and_then(|v| v.to_str().ok()).and_then(|v| {
            // Digits only: no sign, no spaces, no leading `+`.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) { None } else { v.parse::<u64>().ok() }
        });
        match last_seq {
            Some(last_seq) => Ask::Resume { token: token.to_owned(), claims, last_seq },
            None => Ask::Refused("last_seq"),
        }
    }

    /// Whether `claims` name a session parked here (not on another replica).
    pub(crate) fn is_here(&self, claims: &Claims) -> bool {
        claims.origin == self.origin
    }

    /// Takes the parked session `claims` names out of this replica's lot,
    /// once. A session still serving here (this replica has not yet seen
    /// the cut its client saw) is waited for, up to [`LIVE_WAIT`].
    pub(crate) async fn take(&self, claims: &Claims) -> Result<Parked, &'static str> {
        let until = Instant::now() + LIVE_WAIT;
        loop {
            // Whether it serves, read before the lot: a session is parked
            // before it stops serving, so one that does not serve now and
            // is not in the lot either will not be parked. The wake-up is
            // registered before the look, so that a park in between wakes it.
            let serving = self.live.lock().expect("not poisoned").get(&claims.session_id).map(|(_, n)| n.clone());
            let changed = serving.as_ref().map(|notify| notify.notified());
            let taken = self.lot.lock().expect("not poisoned").take(&claims.session_id, claims.nonce, Instant::now());
            match (taken, changed) {
                (Err(TakeRefusal::NotParked), Some(changed)) if Instant::now() < until => {
                    let _ = tokio::time::timeout_at(until, changed).await;
                }
                (other, _) => return other.map_err(|r| r.reason()),
            }
        }
    }

    /// Whether this replica's lot holds the session `claims` name, for
    /// their token, whatever replica the token names: a session fetched
    /// from another replica and parked again here when its client could not
    /// be served.
    pub(crate) fn holds(&self, claims: &Claims) -> bool {
        self.lot.lock().expect("not poisoned").holds(&claims.session_id, claims.nonce)
    }

    /// A session with a token starts serving here.
    pub(crate) fn enter(&self, session_id: &str) {
        let mut live = self.live.lock().expect("not poisoned");
        live.entry(session_id.to_owned()).or_insert_with(|| (0, Arc::new(Notify::new()))).0 += 1;
    }

    /// A session stops serving here (parked or not).
    pub(crate) fn leave(&self, session_id: &str) {
        let mut live = self.live.lock().expect("not poisoned");
        if let Some((n, notify)) = live.get_mut(session_id) {
            *n -= 1;
            notify.notify_waiters();
            if *n == 0 {
                live.remove(session_id);
            }
        }
    }

    /// Asks the replica that parked the session (the token's origin) to
    /// hand it over: `POST /sessions/<id>/take` on its admin port, with the
    /// client's token and a tag under the shared key proving this replica
    /// holds it. `origin_gone` when that replica cannot be reached.
    pub(crate) async fn fetch(&self, token: &str, claims: &Claims) -> Result<Parked, &'static str> {
        let time = now_ms().to_string();
        let tag = self.key.tag(TAKE_CONTEXT, &[token.as_bytes(), time.as_bytes()]);
        let headers = [(header::RESUME, token), (TAKE_TIME, time.as_str()), (TAKE_TAG, tag.as_str())];
        let path = format!("/sessions/{}/take", claims.session_id);
        // The answer holds at most RESUME_MAX_BYTES of payloads, JSON-escaped
        // (at most 6 bytes each), and a little state per frame.
        let bound = (self.max_bytes as u64) * 8 + 64 * 1024;
        match gsd_telemetry::http_post(&claims.origin, &path, &headers, bound, FETCH_TIMEOUT).await {
            Ok((200, body)) => serde_json::from_str(&body).map_err(|_| "origin_gone"),
            Ok((404, _)) => Err("not_parked"),
            Ok((409, body)) => Err(match body.trim() {
                "replayed" => "replayed",
                _ => "stale",
            }),
            Ok(_) | Err(_) => Err("origin_gone"),
        }
    }

    /// Answers another replica's `POST /sessions/<id>/take`: the parked
    /// session, once, to a caller that shows a valid token for it and a
    /// fresh tag under the shared key. The status and the body: 200 and the
    /// session as JSON; 403 a caller without the key; 400 a request that
    /// is not one; 404 not parked here; 409 `replayed` or `stale`.
    pub(crate) async fn hand_over(&self, path_id: &str, headers: &HeaderMap) -> (u16, String) {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(token), Some(time), Some(tag)) = (get(header::RESUME), get(TAKE_TIME), get(TAKE_TAG)) else {
            return (400, "a take needs the Gsd-Resume, Gsd-Take-Time and Gsd-Take-Tag headers\n".into());
        };
        if !self.key.check_tag(TAKE_CONTEXT, &[token.as_bytes(), time.as_bytes()], tag) {
            return (403, "not a replica of this one's key\n".into());
        }
        let fresh = time.parse::<u64>().is_ok_and(|t| t.abs_diff(now_ms()) <= TAKE_SKEW.as_millis() as u64);
        if !fresh {
            return (403, "a take older or newer than 30 s\n".into());
        }
        let claims = match self.key.verify(token, now_ms()) {
            Ok(claims) if claims.session_id == path_id && self.is_here(&claims) => claims,
            Ok(_) => return (404, "not_parked\n".into()),
            Err(refusal) => return (400, format!("{}\n", refusal.reason())),
        };
        match self.take(&claims).await {
            Ok(parked) => (200, serde_json::to_string(&parked).expect("a parked session serialises")),
            Err("not_parked") => (404, "not_parked\n".into()),
            Err(reason) => (409, format!("{reason}\n")),
        }
    }

    /// Parks a session that ended unannounced (or one fetched for a client
    /// that then asked for too much); how many of its frames were shed to
    /// fit its byte bound.
    pub(crate) fn park(&self, parked: Parked) -> Result<u64, NotParked> {
        let id = parked.session_id.clone();
        let shed = self.lot.lock().expect("not poisoned").park(parked, Instant::now());
        if let Some((_, notify)) = self.live.lock().expect("not poisoned").get(&id) {
            notify.notify_waiters();
        }
        shed
    }

    /// Every parked session whose window has ended, to be counted.
    pub(crate) fn expire(&self, now: Instant) -> Vec<Parked> {
        self.lot.lock().expect("not poisoned").expire(now)
    }

    /// Every parked session, whatever its window: what a server that stops
    /// gives up (counted as expired; no replica can fetch them yet).
    pub(crate) fn expire_all(&self) -> Vec<Parked> {
        self.lot.lock().expect("not poisoned").take_all()
    }

    /// Sessions parked now.
    pub(crate) fn parked(&self) -> usize {
        self.lot.lock().expect("not poisoned").len()
    }

    /// When the next parked session expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.lot.lock().expect("not poisoned").next_expiry()
    }
}
