//! Parked sessions, for resume (protocol version 3, docs/resume.md §4).
//!
//! A session that ends without a completed drain (a read error, a reset, a
//! ping timeout) is parked here for RESUME_WINDOW: the data frames it sent
//! and the client did not acknowledge, its next seq, and the requests it had
//! not answered. A resume takes it out, once; a parked session not taken in
//! time expires and is handed back to be counted. Nothing is dropped
//! silently: a session over its byte bound sheds its oldest frames and says
//! how many, a full lot refuses the newcomer and says so, and a second take
//! of the same token is told apart from a session never parked here.
//!
//! This is the lot alone, with no clock or I/O of its own: the caller passes
//! `now`, and counts what each call returns (crate::resume holds it for the
//! server).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// A data frame kept for replay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    pub seq: u64,
    pub payload: String,
}

/// What a session leaves behind when it ends unannounced; what one
/// replica hands another (as JSON) when a resume reached the other.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Parked {
    pub session_id: String,
    /// The nonce of the newest token the session was given: a resume with
    /// an older one is stale.
    pub nonce: u64,
    /// Sent and not acknowledged, oldest first, consecutive seqs ending at
    /// `next_seq - 1`.
    pub unacked: VecDeque<Frame>,
    pub next_seq: u64,
    /// The highest seq the client acknowledged: frames from here to the
    /// first one kept were sent and never acknowledged.
    pub acked: u64,
    /// Requests received and not answered: id and payload, in arrival order.
    pub pending: Vec<(u64, String)>,
    /// Oldest frames given up to keep the session within its byte bound:
    /// the caller counts them unacked (they can no longer be replayed).
    pub shed: u64,
}

impl Parked {
    /// Payload bytes the session holds here (frames and requests), the
    /// measure of the per-session and total bounds.
    pub fn bytes(&self) -> usize {
        self.unacked.iter().map(|f| f.payload.len()).sum::<usize>()
            + self.pending.iter().map(|(_, p)| p.len()).sum::<usize>()
    }
}

/// Why a session could not be parked; the caller counts it as cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotParked {
    /// RESUME_WINDOW is 0s.
    Off,
    /// The lot holds its most sessions already.
    Full,
}

/// Why a resume found nothing to take; each is a refusal reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeRefusal {
    /// Taken already with this token (a replayed token).
    Replayed,
    /// Parked, but the token is older than the newest one the session got.
    Stale,
    /// Not parked here (never, or expired and counted).
    NotParked,
}

impl TakeRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            TakeRefusal::Replayed => "replayed",
            TakeRefusal::Stale => "stale",
            TakeRefusal::NotParked => "not_parked",
        }
    }
}

/// The parked sessions of one server.
#[derive(Debug)]
pub struct Lot {
    window: Duration,
    max_session_bytes: usize,
    max_sessions: usize,
    parked: HashMap<String, (Instant, Parked)>,
    /// Sessions taken, with the nonce they were taken with, until their
    /// window would have ended: what tells a replayed token from an unknown
    /// one. Bounded like `parked`.
    taken: HashMap<String, (Instant, u64)>,
    bytes: usize,
}

impl Lot {
    /// A lot that keeps sessions for `window` (zero: resume off), each
    /// within `max_session_bytes` of payload, at most `max_sessions` at once.
    pub fn new(window: Duration, max_session_bytes: usize, max_sessions: usize) -> Lot {
        Lot { window, max_session_bytes, max_sessions, parked: HashMap::new(), taken: HashMap::new(), bytes: 0 }
    }

    /// Parks `session` until `now + window`; returns how many of its oldest
    /// frames were shed to fit its byte bound (also in `Parked::shed`).
    pub fn park(&mut self, mut session: Parked, now: Instant) -> Result<u64, NotParked> {
        if self.window.is_zero() {
            return Err(NotParked::Off);
        }
        if self.parked.len() >= self.max_sessions && !self.parked.contains_key(&session.session_id) {
            return Err(NotParked::Full);
        }
        let mut bytes = session.bytes();
        while bytes > self.max_session_bytes {
            // Requests are kept whole (a request's answer is owed whatever
            // its size, and MAX_PENDING_BYTES already bounds them); frames go
            // oldest first.
            let Some(oldest) = session.unacked.pop_front() else { break };
            bytes -= oldest.payload.len();
            session.shed += 1;
        }
        let shed = session.shed;
        self.taken.remove(&session.session_id);
        if let Some((_, old)) = self.parked.insert(session.session_id.clone(), (now + self.window, session)) {
            self.bytes -= old.bytes();
        }
        self.bytes += bytes;
        Ok(shed)
    }

    /// Takes the session a resume asks for, once.
    pub fn take(&mut self, session_id: &str, nonce: u64, now: Instant) -> Result<Parked, TakeRefusal> {
        match self.parked.get(session_id) {
            Some((expires, _)) if *expires <= now => Err(TakeRefusal::NotParked), // expire() counts it
            Some((_, parked)) if parked.nonce != nonce => Err(TakeRefusal::Stale),
            Some(_) => {
                let (expires, parked) = self.parked.remove(session_id).expect("just seen");
                self.bytes -= parked.bytes();
                if self.taken.len() >= self.max_sessions {
                    self.taken.retain(|_, (until, _)| *until > now);
                }
                if self.taken.len() < self.max_sessions {
                    self.taken.insert(session_id.to_owned(), (expires, nonce));
                }
                Ok(parked)
            }
            None => match self.taken.get(session_id) {
                Some((until, taken_nonce)) if *until > now && *taken_nonce == nonce => Err(TakeRefusal::Replayed),
                _ => Err(TakeRefusal::NotParked),
            },
        }
    }

    /// Removes and returns every session whose window has ended, for the
    /// caller to count (expired sessions, their frames unacked).
    pub fn expire(&mut self, now: Instant) -> Vec<Parked> {
        let ids: Vec<String> =
            self.parked.iter().filter(|(_, (expires, _))| *expires <= now).map(|(id, _)| id.clone()).collect();
        self.taken.retain(|_, (until, _)| *until > now);
        ids.into_iter()
            .map(|id| {
                let (_, parked) = self.parked.remove(&id).expect("listed");
                self.bytes -= parked.bytes();
                parked
            })
            .collect()
    }

    /// Removes and returns every parked session, whatever its window (a
    /// server that stops gives them up).
    pub fn take_all(&mut self) -> Vec<Parked> {
        self.taken.clear();
        self.bytes = 0;
        self.parked.drain().map(|(_, (_, parked))| parked).collect()
    }

    /// Whether `session_id` is parked here for the token with `nonce`
    /// (expired or not).
    pub fn holds(&self, session_id: &str, nonce: u64) -> bool {
        self.parked.get(session_id).is_some_and(|(_, parked)| parked.nonce == nonce)
    }

    /// Sessions parked now.
    pub fn len(&self) -> usize {
        self.parked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    /// Payload bytes parked now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the next parked session expires, for the caller's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.parked.values().map(|(expires, _)| *expires).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(30);

    fn session(id: &str, nonce: u64, frames: &[(u64, &str)], pending: &[(u64, &str)]) -> Parked {
        Parked {
            session_id: id.into(),
            nonce,
            unacked: frames.iter().map(|(seq, p)| Frame { seq: *seq, payload: (*p).into() }).collect(),
            next_seq: frames.last().map_or(1, |(seq, _)| seq + 1),
            acked: frames.first().map_or(0, |(seq, _)| seq - 1),
            pending: pending.iter().map(|(id, p)| (*id, (*p).into())).collect(),
            shed: 0,
        }
    }

    #[test]
    fn a_parked_session_is_taken_once_whole_and_a_second_take_is_a_replay() {
        let t0 = Instant::now();
        let mut lot = Lot::new(WINDOW, 1024, 10);
        let s = session("a", 7, &[(4, "d4"), (5, "d5")], &[(9, "q9")]);
        assert_eq!(lot.park(s.clone(), t0), Ok(0));
        assert_eq!((lot.len(), lot.bytes()), (1, 6));
        assert_eq!(lot.take("a", 6, t0), Err(TakeRefusal::Stale), "an older token");
        assert_eq!(lot.take("a", 7, t0 + Duration::from_secs(29)), Ok(s));
        assert_eq!((lot.len(), lot.bytes()), (0, 0));
        assert_eq!(lot.take("a", 7, t0 + Duration::from_secs(29)), Err(TakeRefusal::Replayed));
        assert_eq!(lot.take("b", 7, t0), Err(TakeRefusal::NotParked));
        // Past the window even a replay is just unknown here.
        assert_eq!(lot.take("a", 7, t0 + WINDOW), Err(TakeRefusal::NotParked));
    }

    #[test]
    fn a_session_not_taken_in_its_window_expires_and_is_handed_back_to_be_counted() {
        let t0 = Instant::now();
        let mut lot = Lot::new(WINDOW, 1024, 10);
        lot.park(session("a", 1, &[(1, "x")], &[]), t0).unwrap();
        lot.park(session("b", 1, &[(1, "y"), (2, "z")], &[]), t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(lot.next_expiry(), Some(t0 + WINDOW));
        assert!(lot.expire(t0 + Duration::from_secs(29)).is_empty());
        let gone = lot.expire(t0 + WINDOW);
        assert_eq!(gone.iter().map(|p| p.session_id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(gone[0].unacked.len(), 1, "its frames, for the unacked count");
        assert_eq!(lot.take("a", 1, t0 + WINDOW), Err(TakeRefusal::NotParked));
        assert_eq!((lot.len(), lot.bytes()), (1, 2));
        assert_eq!(lot.expire(t0 + Duration::from_secs(40)).len(), 1);
        assert!(lot.is_empty() && lot.bytes() == 0 && lot.next_expiry().is_none());
    }

    #[test]
    fn an_expired_session_is_not_taken_even_before_expire_runs() {
        let t0 = Instant::now();
        let mut lot = Lot::new(WINDOW, 1024, 10);
        lot.park(session("a", 1, &[(1, "x")], &[]), t0).unwrap();
        assert_eq!(lot.take("a", 1, t0 + WINDOW), Err(TakeRefusal::NotParked));
        assert_eq!(lot.expire(t0 + WINDOW).len(), 1, "still handed back to be counted");
    }

    #[test]
    fn over_its_bound_a_session_sheds_its_oldest_frames_and_says_how_many() {
        let t0 = Instant::now();
        let mut lot = Lot::new(WINDOW, 10, 10);
        let frames = [(1, "aaaa"), (2, "bbbb"), (3, "cccc"), (4, "dddd")];
        assert_eq!(lot.park(session("a", 1, &frames, &[(5, "qq")]), t0), Ok(2));
        assert_eq!(lot.bytes(), 10);
        let back = lot.take("a", 1, t0).unwrap();
        assert_eq!(back.shed, 2);
        assert_eq!(back.unacked.iter().map(|f| f.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(back.pending.len(), 1, "requests are kept whole");
        assert_eq!(back.next_seq, 5);
    }

    #[test]
    fn a_full_lot_refuses_newcomers_and_off_parks_nothing() {
        let t0 = Instant::now();
        let mut lot = Lot::new(WINDOW, 1024, 2);
        lot.park(session("a", 1, &[], &[]), t0).unwrap();
        lot.park(session("b", 1, &[], &[]), t0).unwrap();
        assert_eq!(lot.park(session("c", 1, &[], &[]), t0), Err(NotParked::Full));
        // The same session parked again (cut again before it resumed)
        // replaces itself, bytes and all.
        assert_eq!(lot.park(session("a", 2, &[(1, "abc")], &[]), t0), Ok(0));
        assert_eq!((lot.len(), lot.bytes()), (2, 3));
        assert_eq!(lot.take("a", 1, t0), Err(TakeRefusal::Stale));
        let mut off = Lot::new(Duration::ZERO, 1024, 2);
        assert_eq!(off.park(session("a", 1, &[], &[]), t0), Err(NotParked::Off));
        assert!(off.is_empty());
    }

    #[test]
    fn the_replay_memory_is_bounded_like_the_lot() {
        let t0 = Instant::now();
        let mut lot = Lot::new(WINDOW, 1024, 3);
        for i in 0..10 {
            let id = format!("s{i}");
            lot.park(session(&id, 1, &[], &[]), t0).unwrap();
            lot.take(&id, 1, t0).unwrap();
        }
        assert!(lot.taken.len() <= 3, "{} taken remembered", lot.taken.len());
        assert_eq!(lot.take("s0", 1, t0), Err(TakeRefusal::Replayed));
        assert_eq!(lot.take("s9", 1, t0), Err(TakeRefusal::NotParked), "forgotten once the memory was full");
    }
}
