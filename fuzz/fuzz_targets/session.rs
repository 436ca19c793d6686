//! A session's frame handling, in a real gsd-server running in this process:
//! each input is a sequence of raw WebSocket frames (any opcode, flags and
//! payload, fragmented or not) sent on a fresh session, followed by a valid
//! request. Whatever came before, the server must either answer that
//! request or close the session, only ever sending valid server messages
//! and documented close codes, and never panic (a panic aborts the process,
//! which libFuzzer reports).
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use gsd_protocol::{ClientMessage, ServerMessage};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// The id of the request that ends every input.
const PROBE: u64 = 4_242_424_242;

/// Close codes the server may send a fuzzed session on its own: unsupported
/// data, policy, too big, and the WebSocket layer's protocol errors. (When
/// the input itself holds a close frame the server's reply echoes its code.)
const CLOSE_CODES: &[u16] = &[1002, 1003, 1007, 1008, 1009];

fn server() -> &'static (Runtime, SocketAddr) {
    static SERVER: OnceLock<(Runtime, SocketAddr)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = Runtime::new().unwrap();
        let addr = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut config = gsd_server::Config::defaults();
            config.push_interval = Duration::ZERO;
            config.processing_latency = Duration::ZERO;
            config.close_timeout = Duration::from_millis(50);
            let registry = prometheus::Registry::new();
            tokio::spawn(gsd_server::run(listener, admin, config, registry, std::future::pending()));
            addr
        });
        (runtime, addr)
    })
}

/// A client frame: FIN and RSV bits and opcode from `head`, zero mask.
fn frame(head: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![head];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// Splits the input into frames: a head byte, a length byte (in units of 16
/// bytes), that many payload bytes; the last payload is what is left. Also
/// says whether any of them is a close frame.
fn frames(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut wire = Vec::new();
    let mut close = false;
    while data.len() >= 2 {
        let (head, len) = (data[0], data[1] as usize * 16);
        let payload = &data[2..(2 + len).min(data.len())];
        wire.extend(frame(head, payload));
        close |= head & 0x0f == 0x8;
        data = &data[2 + payload.len()..];
    }
    (wire, close)
}

async fn session(addr: SocketAddr, wire: Vec<u8>, client_closed: bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(upgrade.as_bytes()).await.unwrap();
    let probe = ClientMessage::Request { id: PROBE, payload: "probe".into() }.encode();
    // The server may close before taking it all: write errors are fine.
    let _ = stream.write_all(&wire).await;
    let _ = stream.write_all(&frame(0x81, probe.as_bytes())).await;

    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut head_done = false;
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return, // closed: allowed
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if !head_done {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf));
            buf.drain(..end + 4);
            head_done = true;
        }
        // Server frames are unmasked, FIN, never over 64 KiB + a little.
        while buf.len() >= 2 {
            let (opcode, len7) = (buf[0] & 0x0f, (buf[1] & 0x7f) as usize);
            assert_eq!(buf[1] & 0x80, 0, "a masked server frame");
            let (len, start) = match len7 {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
                126 | 127 => break,
                n => (n, 2),
            };
            assert!(len <= 2 * gsd_protocol::MAX_FRAME_BYTES, "a server frame of {len} bytes");
            if buf.len() < start + len {
                break;
            }
            let payload = &buf[start..start + len];
            match opcode {
                0x1 => {
                    let text = std::str::from_utf8(payload).expect("server text is UTF-8");
                    let message = ServerMessage::decode(text).expect("a valid server message");
                    if let ServerMessage::Response { id: PROBE, .. } = message {
                        return;
                    }
                }
                0x8 => {
                    if len >= 2 {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        assert!(client_closed || CLOSE_CODES.contains(&code), "close code {code}");
                    }
                    return;
                }
                0x9 | 0xA => {}
                other => panic!("server opcode {other:#x}"),
            }
            buf.drain(..start + len);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (runtime, addr) = server();
    let (wire, client_closed) = frames(data);
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), session(*addr, wire, client_closed))
            .await
            .expect("the server neither answered the probe nor closed within 10 s");
    });
});
