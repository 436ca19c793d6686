//! The resume token of protocol version 3 (docs/resume.md §2): what a
//! server hands a client in its welcome so that, after an end nobody
//! announced (a proxy restart, a reset, a short partition), the client can
//! ask for the same session back, and what a server checks before it
//! believes such a request.
//!
//! A token is the base64url (no padding) of
//!
//! ```text
//! version (1 byte, 1) | origin length (1) | origin | session id length (1) | session id
//! | issued_ms (8, big-endian) | expires_ms (8) | nonce (8) | HMAC-SHA256 of all before (32)
//! ```
//!
//! `origin` is the admin address of the replica that parked the session
//! (where another replica fetches it from); it is covered by the MAC, so a
//! client cannot point a server at an address of its choosing. The key is
//! shared by the replicas (the chart keeps it in a Secret). Everything here
//! is pure: the server's state (is the session parked, was the token already
//! used) is the server's to check.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// The layout version in the token's first byte.
pub const TOKEN_VERSION: u8 = 1;
/// A token longer than this (in characters, as received) is refused before
/// it is decoded.
pub const MAX_TOKEN_CHARS: usize = 512;
/// Longest origin and session id a token carries, in bytes.
pub const MAX_FIELD_BYTES: usize = 64;
/// Shortest key accepted: the HMAC's own output size.
pub const MIN_KEY_BYTES: usize = 32;

const MAC_BYTES: usize = 32;
const FIXED_BYTES: usize = 1 + 1 + 1 + 8 + 8 + 8;

/// What a token says, once its MAC holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Admin address (`ip:port`) of the replica that parked the session.
    pub origin: String,
    pub session_id: String,
    /// Wall-clock milliseconds since the Unix epoch (tokens cross replicas,
    /// so they cannot use a monotonic clock).
    pub issued_ms: u64,
    pub expires_ms: u64,
    /// Tells apart the tokens one session gets over its life: the server
    /// keeps the nonce of the token it last issued, and an older one is
    /// stale.
    pub nonce: u64,
}

/// Why a token is refused; [`Refusal::reason`] is the label of the
/// server's refusal counter and the text of the close that refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Longer than [`MAX_TOKEN_CHARS`].
    Oversized,
    /// Not base64url, an unknown version, or bytes after the MAC.
    Malformed,
    /// Shorter than its own fields say.
    Truncated,
    /// The MAC does not hold under the replicas' key.
    Forged,
    /// Past its `expires_ms`.
    Expired,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Oversized => "oversized",
            Refusal::Malformed => "malformed",
            Refusal::Truncated => "truncated",
            Refusal::Forged => "forged",
            Refusal::Expired => "expired",
        }
    }
}

/// Every reason a server refuses a resume with (close
/// [`crate::close::RESUME_REFUSED`], reason `resume refused: <reason>`): the
/// token's own ([`Refusal::reason`]), then the servers': the session was
/// already taken with this token (`replayed`), the token is older than the
/// session's newest (`stale`), the session is not parked where the token
/// says (`not_parked`: never, expired, or closed normally), the replica that
/// parked it cannot be reached to hand it over (`origin_gone`: SIGKILLed,
/// OOM-killed, gone), or the last seq the client gave is missing, not a
/// number, or above what the server sent (`last_seq`).
pub const REFUSAL_REASONS: &[&str] = &[
    "oversized",
    "malformed",
    "truncated",
    "forged",
    "expired",
    "replayed",
    "stale",
    "not_parked",
    "origin_gone",
    "last_seq",
];

/// The reason text of close [`crate::close::RESUME_REFUSED`].
pub fn refused_reason(reason: &str) -> String {
    format!("resume refused: {reason}")
}

/// The reason a close [`crate::close::RESUME_REFUSED`] names, if it is one
/// of [`REFUSAL_REASONS`] (anything else: `None`).
pub fn refused_reason_of(close_reason: &str) -> Option<&'static str> {
    let reason = close_reason.strip_prefix("resume refused: ")?;
    REFUSAL_REASONS.iter().copied().find(|r| *r == reason)
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The replicas' shared key.
pub struct Key(hmac::Key);

/// A key that cannot sign: too short to be one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the resume key has {0} bytes; it needs at least {MIN_KEY_BYTES} (32 random bytes, base64 or raw)")]
pub struct ShortKey(pub usize);

impl Key {
    pub fn new(secret: &[u8]) -> Result<Key, ShortKey> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(ShortKey(secret.len()));
        }
        Ok(Key(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The token for `claims`. Origin and session id longer than
    /// [`MAX_FIELD_BYTES`] are a bug of the caller (the server makes both).
    pub fn sign(&self, claims: &Claims) -> String {
        assert!(claims.origin.len() <= MAX_FIELD_BYTES && claims.session_id.len() <= MAX_FIELD_BYTES);
        let mut bytes = Vec::with_capacity(FIXED_BYTES + claims.origin.len() + claims.session_id.len() + MAC_BYTES);
        bytes.push(TOKEN_VERSION);
        bytes.push(claims.origin.len() as u8);
        bytes.extend_from_slice(claims.origin.as_bytes());
        bytes.push(claims.session_id.len() as u8);
        bytes.extend_from_slice(claims.session_id.as_bytes());
        for n in [claims.issued_ms, claims.expires_ms, claims.nonce] {
            bytes.extend_from_slice(&n.to_be_bytes());
        }
        let tag = hmac::sign(&self.0, &bytes);
        bytes.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The claims of `token` if it is whole, signed with this key and not
    /// expired at `now_ms`. The checks run in the order of [`Refusal`]'s
    /// variants, and nothing but the MAC is trusted before the MAC holds.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, Refusal> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(Refusal::Oversized);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| Refusal::Malformed)?;
        let mut r = Reader { bytes: &bytes, at: 0 };
        if r.take(1)?[0] != TOKEN_VERSION {
            return Err(Refusal::Malformed);
        }
        let origin = r.field()?;
        let session_id = r.field()?;
        let (issued_ms, expires_ms, nonce) = (r.u64()?, r.u64()?, r.u64()?);
        let signed = r.at;
        let tag = r.take(MAC_BYTES)?;
        if r.at != bytes.len() {
            return Err(Refusal::Malformed);
        }
        hmac::verify(&self.0, &bytes[..signed], tag).map_err(|_| Refusal::Forged)?;
        // The MAC holds, so the fields are ours: UTF-8 as we wrote them.
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| Refusal::Malformed);
        let claims = Claims { origin: text(origin)?, session_id: text(session_id)?, issued_ms, expires_ms, nonce };
        if now_ms >= claims.expires_ms {
            return Err(Refusal::Expired);
        }
        Ok(claims)
    }
}

impl Key {
    /// The MAC of `parts` (each length-prefixed, after a context label no
    /// token starts with), base64url: how one replica proves to another that
    /// it holds the key, for a hand-over (`POST /sessions/<id>/take`).
    pub fn tag(&self, context: &str, parts: &[&[u8]]) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.0, &tagged(context, parts)).as_ref())
    }

    /// Whether `tag` is [`Key::tag`] of `context` and `parts` (compared in
    /// constant time).
    pub fn check_tag(&self, context: &str, parts: &[&[u8]], tag: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(tag) {
            Ok(tag) => hmac::verify(&self.0, &tagged(context, parts), &tag).is_ok(),
            Err(_) => false,
        }
    }
}

/// The bytes a [`Key::tag`] covers: a zero byte (a token's first byte is
/// its version, 1), the context, then each part, each with its length.
fn tagged(context: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut bytes = vec![0u8];
    for part in std::iter::once(context.as_bytes()).chain(parts.iter().copied()) {
        bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
        bytes.extend_from_slice(part);
    }
    bytes
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)") // never the secret
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len()).ok_or(Refusal::Truncated)?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn field(&mut self) -> Result<&'a [u8], Refusal> {
        let len = self.take(1)?[0] as usize;
        if len > MAX_FIELD_BYTES {
            return Err(Refusal::Malformed);
        }
        self.take(len)
    }

    fn u64(&mut self) -> Result<u64, Refusal> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn key(byte: u8) -> Key {
        Key::new(&[byte; 32]).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            origin: "10.244.0.17:9090".into(),
            session_id: "s-7f3a9c".into(),
            issued_ms: NOW,
            expires_ms: NOW + 30_000,
            nonce: 0xdead_beef_0bad_cafe,
        }
    }

    fn raw(token: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(token).unwrap()
    }

    #[test]
    fn a_token_verifies_to_its_claims_until_it_expires() {
        let token = key(1).sign(&claims());
        assert!(token.len() <= 256, "{} characters", token.len());
        assert_eq!(key(1).verify(&token, NOW), Ok(claims()));
        assert_eq!(key(1).verify(&token, NOW + 29_999), Ok(claims()));
        assert_eq!(key(1).verify(&token, NOW + 30_000), Err(Refusal::Expired));
    }

    #[test]
    fn another_key_or_any_changed_byte_is_forged() {
        let token = key(1).sign(&claims());
        assert_eq!(key(2).verify(&token, NOW), Err(Refusal::Forged));
        let bytes = raw(&token);
        // Every byte after the length prefixes, flipped in turn: the MAC
        // catches each (a flipped length byte is caught as a bad layout).
        let mut forged = 0;
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let got = key(1).verify(&URL_SAFE_NO_PAD.encode(&b), NOW);
            assert!(got.is_err(), "byte {i} flipped and still {got:?}");
            forged += usize::from(got == Err(Refusal::Forged));
        }
        assert!(forged >= bytes.len() - 3, "only {forged} of {} flips were forgeries", bytes.len());
    }

    #[test]
    fn a_token_for_another_session_or_origin_cannot_be_made_from_a_real_one() {
        // Swapping the session id of a real token (same length) breaks the MAC.
        let token = key(1).sign(&claims());
        let mut b = raw(&token);
        let at = b.windows(8).position(|w| w == b"s-7f3a9c").unwrap();
        b[at..at + 8].copy_from_slice(b"s-000000");
        assert_eq!(key(1).verify(&URL_SAFE_NO_PAD.encode(&b), NOW), Err(Refusal::Forged));
        let at = b.windows(16).position(|w| w == b"10.244.0.17:9090").unwrap();
        b[at..at + 16].copy_from_slice(b"169.254.1.1:9090");
        assert_eq!(key(1).verify(&URL_SAFE_NO_PAD.encode(&b), NOW), Err(Refusal::Forged));
    }

    #[test]
    fn a_cut_token_is_truncated_and_a_long_one_oversized() {
        let token = key(1).sign(&claims());
        let bytes = raw(&token);
        for keep in 0..bytes.len() {
            let got = key(1).verify(&URL_SAFE_NO_PAD.encode(&bytes[..keep]), NOW);
            assert_eq!(got, Err(Refusal::Truncated), "cut to {keep} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(key(1).verify(&URL_SAFE_NO_PAD.encode(&longer), NOW), Err(Refusal::Malformed));
        let huge = "A".repeat(MAX_TOKEN_CHARS + 1);
        assert_eq!(key(1).verify(&huge, NOW), Err(Refusal::Oversized));
    }

    #[test]
    fn garbage_is_refused_without_a_panic() {
        for junk in ["", "!", "not a token", "====", "AQ", "Ag", "\u{0}\u{1}", "é", &"_".repeat(MAX_TOKEN_CHARS)] {
            let got = key(1).verify(junk, NOW);
            assert!(got.is_err(), "{junk:?} gave {got:?}");
        }
        assert_eq!(key(1).verify("Ag", NOW), Err(Refusal::Malformed), "version 2 is not a layout");
        // Pseudo-random byte strings of every length up to the bound.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(key(1).verify(&URL_SAFE_NO_PAD.encode(&bytes), NOW).is_err());
        }
    }

    #[test]
    fn a_short_key_is_refused_and_never_printed() {
        assert_eq!(Key::new(&[7; 31]).unwrap_err(), ShortKey(31));
        assert!(ShortKey(31).to_string().contains("at least 32"));
        assert_eq!(format!("{:?}", key(9)), "Key(..)");
    }

    #[test]
    fn every_refusal_has_a_close_reason_the_client_reads_back() {
        let token_reasons =
            [Refusal::Oversized, Refusal::Malformed, Refusal::Truncated, Refusal::Forged, Refusal::Expired];
        for refusal in token_reasons {
            assert!(REFUSAL_REASONS.contains(&refusal.reason()), "{refusal}");
        }
        for reason in REFUSAL_REASONS {
            let text = refused_reason(reason);
            assert!(text.len() <= 123, "a close reason is at most 123 bytes: {text}");
            assert_eq!(refused_reason_of(&text), Some(*reason));
        }
        for other in ["resume refused: nonsense", "server draining; last_seq=3", "", "resume refused: "] {
            assert_eq!(refused_reason_of(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_tag_holds_for_its_own_parts_and_key_only() {
        let key = Key::new(&[1u8; 32]).unwrap();
        let tag = key.tag("take", &[b"token", b"1700000000000"]);
        assert!(key.check_tag("take", &[b"token", b"1700000000000"], &tag));
        assert!(!key.check_tag("take", &[b"token", b"1700000000001"], &tag), "another time");
        assert!(!key.check_tag("take", &[b"toke", b"n1700000000000"], &tag), "the parts' bounds are covered");
        assert!(!key.check_tag("other", &[b"token", b"1700000000000"], &tag), "another context");
        assert!(!Key::new(&[2u8; 32]).unwrap().check_tag("take", &[b"token", b"1700000000000"], &tag));
        for garbage in ["", "!!", &"A".repeat(1000)] {
            assert!(!key.check_tag("take", &[b"token", b"1700000000000"], garbage), "{garbage:?}");
        }
    }
}
