//! The protocol decoder on arbitrary text: it never panics, its errors
//! never quote more than the echo limit, and what it accepts round-trips.
#![no_main]

use gsd_protocol::{ClientMessage, DecodeError, MAX_ECHO_BYTES, ServerMessage};
use libfuzzer_sys::fuzz_target;

/// An error's text is a fixed sentence plus at most the echo limit of input
/// (and the truncation marker).
const MAX_ERROR_BYTES: usize = MAX_ECHO_BYTES + 128;

fn check_error(e: &DecodeError) {
    let text = e.to_string();
    assert!(text.len() <= MAX_ERROR_BYTES, "{} bytes of error: {text:.300}", text.len());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ClientMessage::decode(text) {
        Ok(message) => assert_eq!(ClientMessage::decode(&message.encode()), Ok(message)),
        Err(e) => check_error(&e),
    }
    match ServerMessage::decode(text) {
        Ok(message) => assert_eq!(ServerMessage::decode(&message.encode()), Ok(message)),
        Err(e) => check_error(&e),
    }
});
