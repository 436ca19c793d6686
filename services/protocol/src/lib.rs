//! The gsd wire contract: the JSON messages exchanged over `GET /ws`, the close
//! codes each side uses, and the size limits. `docs/protocol.md` is the prose
//! of this file; a change here is a change there.
//!
//! Every message is one WebSocket text frame holding one JSON object, told apart
//! by its snake_case `type` field. Unknown fields are ignored, so that a newer
//! peer may add fields without breaking an older one; an unknown `type` is an
//! error.

pub mod duration;
pub mod resume;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";

/// Version of the contract in `docs/protocol.md`. Version 2 added `last_seq`
/// to `shutdown_notice` and to the reason of every close the server sends;
/// version 3 added session resume (the welcome's `resume_token`, `resumed`
/// and `replay_from`, the [`header`]s of a resuming upgrade and close
/// [`close::RESUME_REFUSED`]). Every addition is optional on the wire, so
/// peers of versions 1 to 3 interoperate: an older server ignores the
/// headers, an older client the welcome's new fields.
pub const PROTOCOL_VERSION: u32 = 3;

/// The HTTP headers of an upgrade that asks for a session back (protocol 3,
/// docs/protocol.md "Resume"). Header names are case-insensitive; these are
/// the lower-case forms HTTP/2 and the `http` crate use.
pub mod header {
    /// The `resume_token` of the welcome of the session asked back.
    pub const RESUME: &str = "gsd-resume";
    /// The highest `seq` the client received in order in that session.
    pub const RESUME_LAST_SEQ: &str = "gsd-resume-last-seq";
}

/// Largest text frame a peer may send, in bytes of UTF-8. A larger frame is
/// answered with close [`close::MESSAGE_TOO_BIG`].
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Hard cap the WebSocket layer enforces before gsd looks at a frame at all:
/// a frame (or fragmented message) whose declared length is over it is
/// refused from its header, before its payload is buffered, and the server
/// answers close 1009 just as for a frame between [`MAX_FRAME_BYTES`] and
/// this. It bounds what one session's partial frame can hold.
pub const MAX_WIRE_BYTES: usize = 2 * MAX_FRAME_BYTES;

/// Read chunk of each WebSocket connection, on both sides: the WebSocket
/// layer zeroes this much before every read, so it is kept small (at 4 KiB
/// the zeroing alone was a tenth of a drained session's instructions). Frames
/// are small (a data frame is well under 200 bytes), and thousands of idle
/// sessions must stay cheap: the WebSocket layer's default of 128 KiB per
/// connection would cost over a gigabyte at 10,000 sessions. The buffer
/// grows for a larger frame and shrinks back.
pub const READ_BUFFER_BYTES: usize = 1024;

/// Bytes the server's WebSocket layer may hold before it writes: frames
/// queued together (a drain's notice and owed frames, a replay, answers due
/// at once) leave in one write when the session flushes them, rather than
/// one system call each. Every single send is flushed at once, as before.
/// The client writes each frame at once (a write buffer of 0).
pub const WRITE_BUFFER_BYTES: usize = 4096;

/// Bound on the bytes queued for writing on one connection: a peer that
/// stops reading gets backpressure (its session's sends wait), never an
/// unbounded buffer. The layer takes a frame while it holds less than its
/// write buffer ([`WRITE_BUFFER_BYTES`] on the server, 0 on the client), so
/// this holds at most that and one frame, and the largest frame gsd sends (a
/// response echoing a request of [`MAX_FRAME_BYTES`]) fits.
pub const MAX_WRITE_BUFFER_BYTES: usize = WRITE_BUFFER_BYTES + 2 * MAX_FRAME_BYTES;

/// Most bytes of client input that an error frame or a log line quotes;
/// longer input is cut with a marker ([`truncate`]), so that a bad frame
/// never costs more output than this.
pub const MAX_ECHO_BYTES: usize = 200;

/// WebSocket close codes gsd sends (RFC 6455 section 7.4.1 and the IANA registry).
pub mod close {
    /// The client ends its session (client shutdown).
    pub const NORMAL: u16 = 1000;
    /// The server is draining: every owed message was sent and acknowledged,
    /// or the drain deadline passed.
    pub const GOING_AWAY: u16 = 1001;
    /// A binary frame: gsd speaks text frames only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A message that breaks the session's rules: an `ack` for a `seq` the
    /// server never sent.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame over [`super::MAX_FRAME_BYTES`].
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server is at its session limit; try again later (elsewhere).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// A resume the server refuses (protocol 3): the reason says why
    /// (`resume refused: <reason>`, one of [`super::resume::REFUSAL_REASONS`]).
    /// Sent at once after the upgrade, with no welcome; the client opens a
    /// new session.
    pub const RESUME_REFUSED: u16 = 4409;
}

/// How each side notices a dead peer (a node that vanished, a partition that
/// drops packets): after `interval` without any frame from the peer it sends
/// a WebSocket ping; after `interval + timeout` without any frame it gives
/// the session up. A peer that sends anything (data, acks, pongs) is alive,
/// so a busy session sends no pings at all. A zero `interval` turns this off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Silence after which a ping is sent.
    pub interval: Duration,
    /// Further silence, after the ping, after which the peer is dead.
    pub timeout: Duration,
}

impl Liveness {
    /// The longest a dead peer can hold a session: `interval + timeout`.
    pub fn bound(&self) -> Duration {
        self.interval.saturating_add(self.timeout)
    }
}

/// What [`Heartbeat::check`] asks the session to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Nothing yet; check again at [`Heartbeat::next_check`].
    Wait,
    /// Send a ping now.
    Ping,
    /// The peer has been silent for [`Liveness::bound`]: end the session.
    Dead,
}

/// One session's liveness state: when the peer was last heard and whether a
/// ping is out. Pure bookkeeping; the session does the I/O.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The interval and timeout this side was configured with.
    liveness: Liveness,
    /// Last time any frame arrived from the peer (or the session started).
    last_heard: Instant,
    /// A ping was sent since `last_heard`.
    pinged: bool,
}

impl Heartbeat {
    pub fn new(liveness: Liveness, now: Instant) -> Self {
        Heartbeat { liveness, last_heard: now, pinged: false }
    }

    /// Any frame from the peer proves it alive.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.pinged = false;
    }

    /// When [`Heartbeat::check`] has something to say; `None` when liveness is off.
    pub fn next_check(&self) -> Option<Instant> {
        if self.liveness.interval.is_zero() {
            return None;
        }
        let after = if self.pinged { self.liveness.bound() } else { self.liveness.interval };
        Some(self.last_heard + after)
    }

    /// What to do at `now`.
    pub fn check(&mut self, now: Instant) -> Beat {
        match self.next_check() {
            Some(at) if now >= at && self.pinged => Beat::Dead,
            Some(at) if now >= at => {
                self.pinged = true;
                Beat::Ping
            }
            _ => Beat::Wait,
        }
    }

    /// How long the peer has been silent.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard)
    }
}

/// Messages from the server to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First frame of every session.
    Welcome {
        /// Which replica holds the session (the pod name in Kubernetes).
        server_id: String,
        /// Unique id of this session, for logs and traces on both sides.
        session_id: String,
        /// Protocol 3: what the client presents ([`header::RESUME`]) to get
        /// this session back after an end nobody announced. Absent when the
        /// server has resume off (or is older).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        /// Protocol 3: this welcome continues a session the client asked
        /// back; its data frames go on from `replay_from`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
        /// Protocol 3, on a resumed session: the seq of the first data frame
        /// the server sends (replayed or new). Above the client's last seq
        /// plus one, the frames between are lost, and the client counts them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replay_from: Option<u64>,
    },
    /// A business push. `seq` starts at 1 in each session and rises by 1.
    Data { seq: u64, payload: String },
    /// The answer to the `request` with the same `id`.
    Response { id: u64, payload: String },
    /// The server drains: exactly `remaining` more `data` frames follow, then,
    /// once the last is acknowledged, close 1001. `deadline_ms` is how long the
    /// server will wait for the acknowledgements, counted from this frame.
    /// `last_seq` (protocol 2) is the seq of the last of them, so that a
    /// client can tell exactly which frames it is owed; a version 1 server
    /// leaves it out.
    ShutdownNotice {
        remaining: u32,
        deadline_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
    },
    /// The last text frame could not be understood; the session goes on.
    Error { message: String },
}

/// Messages from the client to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// A question the server answers with a `response` of the same `id`.
    /// Ids are chosen by the client and are idempotent: a request re-sent on a
    /// later session keeps its id.
    Request { id: u64, payload: String },
    /// Cumulative acknowledgement of every `data` frame up to `seq`.
    Ack { seq: u64 },
}

/// Why a text frame is not a valid message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooBig { len: usize, max: usize },
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("no string field `type`")]
    MissingType,
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("malformed `{kind}` message: {detail}")]
    Malformed { kind: String, detail: String },
}

impl DecodeError {
    /// A short stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooBig { .. } => "too_big",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::MissingType => "missing_type",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::Malformed { .. } => "malformed",
        }
    }

    /// Every [`DecodeError::kind`], for a metric that lists its label values
    /// before the first error.
    pub fn kinds() -> impl Iterator<Item = &'static str> {
        let every = [
            DecodeError::TooBig { len: 0, max: 0 },
            DecodeError::NotJson(String::new()),
            DecodeError::MissingType,
            DecodeError::UnknownType(String::new()),
            DecodeError::Malformed { kind: String::new(), detail: String::new() },
        ];
        every.into_iter().map(|e| e.kind())
    }
}

/// The reason text of a close frame the server sends: `text`, then
/// `; last_seq=<n>`, the seq of the last `data` frame the server sent in the
/// session (0 if none). Close reasons are at most 123 bytes; every gsd text
/// is short enough.
pub fn close_reason(text: &str, last_seq: u64) -> String {
    format!("{text}; last_seq={last_seq}")
}

/// The `last_seq` a close reason carries (see [`close_reason`]); `None` for
/// a reason without one (a version 1 server, or a peer that is not gsd).
pub fn close_reason_last_seq(reason: &str) -> Option<u64> {
    // The digits at the end, then the marker before them: read from the
    // end, without a substring search (a client reads one per session).
    let (head, digits) = trailing_digits(reason);
    head.strip_suffix("; last_seq=")?;
    digits.parse().ok()
}

/// Whether `text` goes inside a JSON string as it is: no `"`, `\` or
/// control character, which JSON escapes.
fn plain_json(text: &str) -> bool {
    !text.bytes().any(|byte| byte == b'"' || byte == b'\\' || byte < 0x20)
}

/// `text` cut before the ASCII digits it ends with.
fn trailing_digits(text: &str) -> (&str, &str) {
    let digits = text.bytes().rev().take_while(u8::is_ascii_digit).count();
    text.split_at(text.len() - digits)
}

/// `text` cut after the ASCII digits it starts with.
fn leading_digits(text: &str) -> (&str, &str) {
    text.split_at(text.bytes().take_while(u8::is_ascii_digit).count())
}

/// Decodes one text frame, with an error that says precisely what is wrong.
fn decode<T: serde::de::DeserializeOwned>(text: &str, known: &[&str]) -> Result<T, DecodeError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooBig { len: text.len(), max: MAX_FRAME_BYTES });
    }
    // The common case, a valid message, in one pass. Only a frame that fails
    // goes through the value tree below, which names precisely what is wrong.
    if let Ok(message) = serde_json::from_str::<T>(text) {
        return Ok(message);
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::NotJson(truncate(&e.to_string(), MAX_ECHO_BYTES)))?;
    let Some(obj) = value.as_object() else {
        return Err(DecodeError::NotJson("expected an object".into()));
    };
    let kind = match obj.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        _ => return Err(DecodeError::MissingType),
    };
    if !known.contains(&kind.as_str()) {
        return Err(DecodeError::UnknownType(truncate(&kind, 64)));
    }
    // serde's messages quote the offending value, which can be a whole frame.
    serde_json::from_value(value)
        .map_err(|e| DecodeError::Malformed { kind, detail: truncate(&e.to_string(), MAX_ECHO_BYTES) })
}

/// `digits` as a JSON number that fits a u64: digits only, no leading
/// zero. `None` for anything else.
fn json_u64(digits: &str) -> Option<u64> {
    let valid = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    valid.then(|| digits.parse().ok()).flatten()
}

/// `{"type":"shutdown_notice","remaining":R,"deadline_ms":D}`, with
/// `,"last_seq":L` before the brace or not: the notice as
/// [`ServerMessage::encode`] writes it. `None` for anything else.
fn canonical_notice(text: &str) -> Option<ServerMessage> {
    // Field by field, digits then the next field's name: no substring
    // search (each would build a searcher for its pattern).
    let rest = text.strip_prefix(r#"{"type":"shutdown_notice","remaining":"#)?.strip_suffix('}')?;
    let (remaining, rest) = leading_digits(rest);
    let (deadline_ms, rest) = leading_digits(rest.strip_prefix(r#","deadline_ms":"#)?);
    let last_seq = match rest {
        "" => None,
        _ => Some(json_u64(rest.strip_prefix(r#","last_seq":"#)?)?),
    };
    let remaining = u32::try_from(json_u64(remaining)?).ok()?;
    Some(ServerMessage::ShutdownNotice { remaining, deadline_ms: json_u64(deadline_ms)?, last_seq })
}

/// Appends `value` in decimal.
pub fn push_decimal(text: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    text.extend(digits[at..].iter().map(|&digit| char::from(digit)));
}

/// `{"type":"data","seq":N,"payload":"P"}` exactly, with N a JSON number
/// that fits a u64 and P free of anything JSON escapes: the data frame as
/// [`ServerMessage::encode`] writes it. `None` for anything else.
fn canonical_data(text: &str) -> Option<ServerMessage> {
    let (seq, rest) = leading_digits(text.strip_prefix(r#"{"type":"data","seq":"#)?);
    let seq = json_u64(seq)?;
    let payload = rest.strip_prefix(r#","payload":""#)?.strip_suffix(r#""}"#)?;
    if !plain_json(payload) {
        return None;
    }
    Some(ServerMessage::Data { seq, payload: payload.to_owned() })
}

/// `s` cut to at most `max` bytes (at a character boundary) followed by a
/// marker saying how many bytes were left out; `s` itself when it fits.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}…[{} more bytes]", &s[..at], s.len() - at)
}

impl ClientMessage {
    /// The `type` values a client may send.
    pub const TYPES: &'static [&'static str] = &["request", "ack"];

    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        // An ack in the very form gsd's clients write it, read without a
        // JSON parser; anything else takes the general path.
        if let Some(rest) = text.strip_prefix(r#"{"type":"ack","seq":"#) {
            if let Some(seq) = rest.strip_suffix('}').and_then(json_u64) {
                return Ok(ClientMessage::Ack { seq });
            }
        }
        decode(text, Self::TYPES)
    }

    pub fn encode(&self) -> String {
        if let ClientMessage::Ack { seq } = self {
            let mut text = String::with_capacity(40);
            text.push_str(r#"{"type":"ack","seq":"#);
            push_decimal(&mut text, *seq);
            text.push('}');
            return text;
        }
        serde_json::to_string(self).expect("a ClientMessage always serialises")
    }

    /// The `type` label of this message, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Request { .. } => "request",
            ClientMessage::Ack { .. } => "ack",
        }
    }
}

impl ServerMessage {
    /// The `type` values a server may send.
    pub const TYPES: &'static [&'static str] = &["welcome", "data", "response", "shutdown_notice", "error"];

    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        // Data frames, most of what a client reads, in the very form gsd's
        // servers write them, are read without a JSON parser; any other
        // text (another field order, an escape in the payload, a space)
        // takes the general path, which decides as it always did.
        if let Some(data) = canonical_data(text).filter(|_| text.len() <= MAX_FRAME_BYTES) {
            return Ok(data);
        }
        if let Some(notice) = canonical_notice(text) {
            return Ok(notice);
        }
        decode(text, Self::TYPES)
    }

    pub fn encode(&self) -> String {
        // A data frame, most of what a server sends, is written directly,
        // in the very bytes serde_json gives (tested), when its payload
        // needs no escape.
        if let ServerMessage::Data { seq, payload } = self {
            if plain_json(payload) {
                let mut text = String::with_capacity(payload.len() + 48);
                text.push_str(r#"{"type":"data","seq":"#);
                push_decimal(&mut text, *seq);
                text.push_str(r#","payload":""#);
                text.push_str(payload);
                text.push_str(r#""}"#);
                return text;
            }
        }
        serde_json::to_string(self).expect("a ServerMessage always serialises")
    }

    /// A welcome to a new session, without a resume token (what a server
    /// with resume off, or of version 2, sends).
    pub fn welcome(server_id: impl Into<String>, session_id: impl Into<String>) -> ServerMessage {
        ServerMessage::Welcome {
            server_id: server_id.into(),
            session_id: session_id.into(),
            resume_token: None,
            resumed: false,
            replay_from: None,
        }
    }

    /// The `type` label of this message, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::Data { .. } => "data",
            ServerMessage::Response { .. } => "response",
            ServerMessage::ShutdownNotice { .. } => "shutdown_notice",
            ServerMessage::Error { .. } => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_written_as_serde_json_writes_them_and_the_fast_path_decides_as_the_general_decoder() {
        for seq in [0, 1, 42, u64::MAX] {
            let ack = ClientMessage::Ack { seq };
            assert_eq!(ack.encode(), serde_json::to_string(&ack).unwrap());
        }
        let frames = [
            r#"{"type":"ack","seq":7}"#,
            r#"{"type":"ack","seq":0}"#,
            r#"{"type":"ack","seq":07}"#,
            r#"{"type":"ack","seq":-1}"#,
            r#"{"type":"ack","seq":18446744073709551615}"#,
            r#"{"type":"ack","seq":18446744073709551616}"#,
            r#"{"type":"ack","seq":}"#,
            r#"{"type":"ack","seq":7 }"#,
            r#"{"type":"ack","seq":7}}"#,
            r#"{"type":"ack","seq":7,"seq":8}"#,
            r#"{"type":"ack","seq":1e3}"#,
        ];
        for frame in frames {
            assert_eq!(ClientMessage::decode(frame), decode::<ClientMessage>(frame, ClientMessage::TYPES), "{frame}");
        }
    }

    #[test]
    fn the_notice_fast_path_decides_as_the_general_decoder_does() {
        for (remaining, deadline_ms, last_seq) in
            [(1, 20_000, Some(5)), (0, 0, None), (u32::MAX, u64::MAX, Some(u64::MAX))]
        {
            let notice = ServerMessage::ShutdownNotice { remaining, deadline_ms, last_seq };
            let text = notice.encode();
            assert_eq!(canonical_notice(&text), Some(notice.clone()), "{text}");
        }
        let frames = [
            r#"{"type":"shutdown_notice","remaining":3,"deadline_ms":20000,"last_seq":9}"#,
            r#"{"type":"shutdown_notice","remaining":3,"deadline_ms":20000}"#,
            r#"{"type":"shutdown_notice","remaining":4294967296,"deadline_ms":1}"#,
            r#"{"type":"shutdown_notice","remaining":03,"deadline_ms":1}"#,
            r#"{"type":"shutdown_notice","remaining":3,"deadline_ms":1,"last_seq":}"#,
            r#"{"type":"shutdown_notice","remaining":3,"deadline_ms":1,"last_seq":2,"last_seq":3}"#,
            r#"{"type":"shutdown_notice","remaining":3,"deadline_ms":1,"deadline_ms":2}"#,
            r#"{"type":"shutdown_notice","remaining":3,"deadline_ms":-1}"#,
            r#"{"type":"shutdown_notice","remaining":3}"#,
            r#"{"type":"shutdown_notice","remaining":3,"deadline_ms":1,"last_seq":null}"#,
        ];
        for frame in frames {
            assert_eq!(ServerMessage::decode(frame), decode::<ServerMessage>(frame, ServerMessage::TYPES), "{frame}");
        }
    }

    #[test]
    fn data_frames_are_written_as_serde_json_writes_them() {
        for (seq, payload) in
            [(0, ""), (1, "ab12:1"), (u64::MAX, "é→\u{7f}"), (7, "a\"b"), (8, "back\\slash"), (9, "ctl\u{1}\n")]
        {
            let data = ServerMessage::Data { seq, payload: payload.into() };
            assert_eq!(data.encode(), serde_json::to_string(&data).unwrap(), "{seq} {payload:?}");
            assert_eq!(ServerMessage::decode(&data.encode()), Ok(data));
        }
        let mut text = String::new();
        for value in [0, 9, 10, 1234567890, u64::MAX] {
            text.clear();
            push_decimal(&mut text, value);
            assert_eq!(text, value.to_string());
        }
    }

    #[test]
    fn the_data_frame_fast_path_decides_as_the_general_decoder_does() {
        let frames = [
            r#"{"type":"data","seq":7,"payload":"x"}"#,
            r#"{"seq":7,"payload":"a\"b\u00e9","type":"data"}"#,
            r#"{"type":"data","seq":7,"payload":"x","extra":[1,{"a":2}]}"#,
            r#"{"type":"data","seq":7}"#,
            r#"{"type":"data","seq":-1,"payload":"x"}"#,
            r#"{"type":"data","seq":7,"payload":"x","seq":8}"#,
            r#"{"type":"data","type":"data","seq":7,"payload":"x"}"#,
            r#"{"type":"data","type":"error","message":"m"}"#,
            r#"{"type":"dat\u0061","seq":7,"payload":"x"}"#,
            r#"{"type":7,"seq":7,"payload":"x"}"#,
            r#"{"type":"data","seq":18446744073709551616,"payload":"x"}"#,
            r#"{"type":"data","seq":7,"payload":"x"} trailing"#,
            r#"{"type":"data","seq":7,"payload":null}"#,
            r#"[{"type":"data","seq":7,"payload":"x"}]"#,
            r#"{"type":"data","seq":07,"payload":"x"}"#,
            r#"{"type":"data","seq":0,"payload":""}"#,
            r#"{"type":"data","seq":18446744073709551615,"payload":"x"}"#,
            r#"{"type":"data","seq":7,"payload":"x\u0001"}"#,
            "{\"type\":\"data\",\"seq\":7,\"payload\":\"x\u{1}\"}",
            "{\"type\":\"data\",\"seq\":7,\"payload\":\"é\u{7f}→\"}",
            r#"{"type":"data","seq":7,"payload":"x"} "#,
            r#"{"type":"data","seq":7.0,"payload":"x"}"#,
            r#"{"type":"data","seq":7,"payload":"x"}}"#,
            r#"{"type":"data","seq":7,"payload":"x","payload":"y"}"#,
        ];
        let canonical = [
            r#"{"type":"data","seq":7,"payload":"x"}"#,
            r#"{"type":"data","seq":0,"payload":""}"#,
            r#"{"type":"data","seq":18446744073709551615,"payload":"x"}"#,
            "{\"type\":\"data\",\"seq\":7,\"payload\":\"é\u{7f}→\"}",
        ];
        for frame in frames {
            let fast = canonical_data(frame);
            assert_eq!(fast.is_some(), canonical.contains(&frame), "{frame}");
            if let Some(fast) = fast {
                assert_eq!(Ok(fast), decode::<ServerMessage>(frame, ServerMessage::TYPES), "{frame}");
            }
        }
        for frame in frames {
            assert_eq!(ServerMessage::decode(frame), decode::<ServerMessage>(frame, ServerMessage::TYPES), "{frame}");
        }
        let big = format!(r#"{{"type":"data","seq":1,"payload":"{}"}}"#, "x".repeat(MAX_FRAME_BYTES));
        assert!(matches!(ServerMessage::decode(&big), Err(DecodeError::TooBig { .. })));
    }

    #[test]
    fn server_messages_round_trip_with_snake_case_type() {
        let cases = [
            (ServerMessage::welcome("gsd-0", "ab12"), r#"{"type":"welcome","server_id":"gsd-0","session_id":"ab12"}"#),
            (
                ServerMessage::Welcome {
                    server_id: "gsd-0".into(),
                    session_id: "ab12".into(),
                    resume_token: Some("tok".into()),
                    resumed: false,
                    replay_from: None,
                },
                r#"{"type":"welcome","server_id":"gsd-0","session_id":"ab12","resume_token":"tok"}"#,
            ),
            (
                ServerMessage::Welcome {
                    server_id: "gsd-1".into(),
                    session_id: "ab12".into(),
                    resume_token: Some("tok2".into()),
                    resumed: true,
                    replay_from: Some(8),
                },
                r#"{"type":"welcome","server_id":"gsd-1","session_id":"ab12","resume_token":"tok2","resumed":true,"replay_from":8}"#,
            ),
            (ServerMessage::Data { seq: 7, payload: "x".into() }, r#"{"type":"data","seq":7,"payload":"x"}"#),
            (ServerMessage::Response { id: 3, payload: "y".into() }, r#"{"type":"response","id":3,"payload":"y"}"#),
            (
                ServerMessage::ShutdownNotice { remaining: 4, deadline_ms: 19_000, last_seq: Some(11) },
                r#"{"type":"shutdown_notice","remaining":4,"deadline_ms":19000,"last_seq":11}"#,
            ),
            (
                ServerMessage::ShutdownNotice { remaining: 4, deadline_ms: 19_000, last_seq: None },
                r#"{"type":"shutdown_notice","remaining":4,"deadline_ms":19000}"#,
            ),
            (ServerMessage::Error { message: "bad".into() }, r#"{"type":"error","message":"bad"}"#),
        ];
        for (msg, wire) in cases {
            assert_eq!(msg.encode(), wire);
            assert_eq!(ServerMessage::decode(wire).unwrap(), msg);
            assert_eq!(msg.kind(), wire.split('"').nth(3).unwrap());
        }
    }

    #[test]
    fn client_messages_round_trip() {
        for (msg, wire) in [
            (ClientMessage::Request { id: 9, payload: "q".into() }, r#"{"type":"request","id":9,"payload":"q"}"#),
            (ClientMessage::Ack { seq: 12 }, r#"{"type":"ack","seq":12}"#),
        ] {
            assert_eq!(msg.encode(), wire);
            assert_eq!(ClientMessage::decode(wire).unwrap(), msg);
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            ClientMessage::decode(r#"{"type":"ack","seq":1,"extra":true}"#).unwrap(),
            ClientMessage::Ack { seq: 1 }
        );
    }

    #[test]
    fn rejections_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not_json"),
            ("[1,2]", "not_json"),
            (r#"{"seq":1}"#, "missing_type"),
            (r#"{"type":5}"#, "missing_type"),
            (r#"{"type":"welcome","server_id":"a","session_id":"b"}"#, "unknown_type"),
            (r#"{"type":"ack"}"#, "malformed"),
            (r#"{"type":"ack","seq":-1}"#, "malformed"),
            (r#"{"type":"ack","seq":"1"}"#, "malformed"),
            (r#"{"type":"request","id":1}"#, "malformed"),
        ];
        for (text, kind) in cases {
            let err = ClientMessage::decode(text).unwrap_err();
            assert_eq!(err.kind(), *kind, "{text}: {err}");
        }
        let big = format!(r#"{{"type":"request","id":1,"payload":"{}"}}"#, "a".repeat(MAX_FRAME_BYTES));
        assert_eq!(
            ClientMessage::decode(&big).unwrap_err(),
            DecodeError::TooBig { len: big.len(), max: MAX_FRAME_BYTES }
        );
    }

    #[test]
    fn heartbeat_pings_after_the_interval_and_gives_up_after_the_bound() {
        let start = Instant::now();
        let s = Duration::from_secs;
        let mut hb = Heartbeat::new(Liveness { interval: s(5), timeout: s(3) }, start);
        assert_eq!(hb.next_check(), Some(start + s(5)));
        assert_eq!(hb.check(start + s(4)), Beat::Wait);
        assert_eq!(hb.check(start + s(5)), Beat::Ping);
        assert_eq!(hb.next_check(), Some(start + s(8)));
        assert_eq!(hb.check(start + s(7)), Beat::Wait);
        // A pong (any frame) resets the clock and the ping.
        hb.heard(start + s(7));
        assert_eq!(hb.next_check(), Some(start + s(12)));
        assert_eq!(hb.check(start + s(12)), Beat::Ping);
        assert_eq!(hb.check(start + s(14)), Beat::Wait);
        assert_eq!(hb.check(start + s(15)), Beat::Dead);
        assert_eq!(hb.silent_for(start + s(15)), s(8));
        let mut off = Heartbeat::new(Liveness { interval: Duration::ZERO, timeout: s(1) }, start);
        assert_eq!(off.next_check(), None);
        assert_eq!(off.check(start + s(3600)), Beat::Wait);
    }

    #[test]
    fn close_reasons_carry_the_last_seq() {
        let reason = close_reason("server draining", 42);
        assert_eq!(reason, "server draining; last_seq=42");
        assert_eq!(close_reason_last_seq(&reason), Some(42));
        assert_eq!(close_reason_last_seq(&close_reason("x", u64::MAX)), Some(u64::MAX));
        for other in ["server draining", "", "last_seq=3", "; last_seq=", "; last_seq=-1", "; last_seq=1x"] {
            assert_eq!(close_reason_last_seq(other), None, "{other:?}");
        }
        assert!(close_reason("ack for a seq never sent", u64::MAX).len() <= 123);
    }

    #[test]
    fn errors_never_quote_more_than_the_echo_limit() {
        let long = "é".repeat(20_000);
        for text in [
            format!(r#"{{"type":"ack","seq":"{long}"}}"#),
            format!(r#"{{"type":"request","id":"{long}","payload":"x"}}"#),
        ] {
            let err = ClientMessage::decode(&text).unwrap_err().to_string();
            assert!(err.len() < MAX_ECHO_BYTES + 100, "{} bytes: {}", err.len(), &err[..300]);
            assert!(err.contains("more bytes]"), "{err}");
        }
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é…[4 more bytes]");
    }

    #[test]
    fn long_unknown_types_are_truncated_in_errors() {
        let long = "x".repeat(500);
        let err = ClientMessage::decode(&format!(r#"{{"type":"{long}"}}"#)).unwrap_err();
        assert!(err.to_string().len() < 120, "{err}");
    }
}
