//! Test support: real gsd processes with their JSON logs captured, raw
//! WebSocket sessions, and a minimal TCP forwarder standing in for a Service.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gsd_protocol::{ClientMessage, ServerMessage};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Path of a workspace binary. `cargo test` builds only the binaries of the
/// package under test, so the others come from `cargo build --workspace`
/// (scripts/test runs it first); a missing or stale one fails loudly rather
/// than testing old code.
pub fn bin(name: &str) -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_gsd-server"));
    let path = server.with_file_name(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: run `cargo build --workspace` first", path.display()));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let crate_dir = name.strip_prefix("gsd-").unwrap_or(name);
    for dir in [crate_dir, "protocol", "telemetry"] {
        let src = root.join("services").join(dir).join("src");
        for entry in std::fs::read_dir(&src).into_iter().flatten().flatten() {
            let changed = entry.metadata().and_then(|m| m.modified()).expect("source mtime");
            assert!(
                changed <= built,
                "{} is older than {}: run `cargo build --workspace` first",
                path.display(),
                entry.path().display()
            );
        }
    }
    path
}

#[derive(Default)]
struct Log {
    /// Every stdout line that parsed as JSON.
    events: Mutex<Vec<Value>>,
    /// The last lines of stdout and stderr, for failure messages.
    tail: Mutex<VecDeque<String>>,
    changed: Notify,
}

/// A running gsd binary; killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    log: Arc<Log>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    pub async fn spawn(binary: &str, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(bin(binary));
        command
            .args(args)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawning {binary}: {e}"));
        let log = Arc::new(Log::default());
        let mut readers = Vec::new();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for (stream, parse) in
            [(Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>, true), (Box::new(stderr), false)]
        {
            let log = log.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if parse {
                        if let Ok(value) = serde_json::from_str::<Value>(&line) {
                            log.events.lock().unwrap().push(value);
                        }
                    }
                    let mut tail = log.tail.lock().unwrap();
                    tail.push_back(line);
                    if tail.len() > 60 {
                        tail.pop_front();
                    }
                    drop(tail);
                    log.changed.notify_waiters();
                }
                log.changed.notify_waiters();
            }));
        }
        Proc { name: name.to_owned(), child, log, readers }
    }

    /// A gsd-server on 127.0.0.1 and a free port; returns once it listens.
    pub async fn server(id: &str, args: &[&str]) -> (Proc, SocketAddr) {
        Self::server_env(id, args, &[]).await
    }

    pub async fn server_env(id: &str, args: &[&str], envs: &[(&str, &str)]) -> (Proc, SocketAddr) {
        let mut all = vec!["--bind", "127.0.0.1", "--server-id", id];
        if !args.contains(&"--port") {
            all.extend(["--port", "0"]);
        }
        all.extend_from_slice(args);
        let proc = Proc::spawn("gsd-server", id, &all, envs).await;
        let listening = proc.wait_for("listening", |e| e["message"] == "listening", Duration::from_secs(20)).await;
        let addr: SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
        (proc, addr)
    }

    /// A gsd-client with `users` virtual users against `url`; returns once
    /// its metrics listener is up.
    pub async fn client(name: &str, url: &str, users: u32, args: &[&str]) -> (Proc, SocketAddr) {
        let users = users.to_string();
        let mut all =
            vec!["--server-url", url, "--clients", &users, "--metrics-bind", "127.0.0.1", "--metrics-port", "0"];
        all.extend_from_slice(args);
        let proc = Proc::spawn("gsd-client", name, &all, &[]).await;
        let up =
            proc.wait_for("metrics_listening", |e| e["message"] == "metrics_listening", Duration::from_secs(20)).await;
        (proc, up["metrics_addr"].as_str().unwrap().parse().unwrap())
    }

    pub fn events(&self, message: &str) -> Vec<Value> {
        self.log.events.lock().unwrap().iter().filter(|e| e["message"] == message).cloned().collect()
    }

    pub fn count(&self, message: &str) -> usize {
        self.log.events.lock().unwrap().iter().filter(|e| e["message"] == message).count()
    }

    pub fn tail(&self) -> String {
        self.log.tail.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits for a log event matching `pred`; panics with the log tail if
    /// none comes within `timeout` (a safety net, not a performance bound).
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.wait_until(what, || self.log.events.lock().unwrap().iter().find(|e| pred(e)).cloned(), timeout).await
    }

    /// Waits until at least `n` events named `message` were logged.
    pub async fn wait_count(&self, message: &str, n: usize, timeout: Duration) {
        self.wait_until(&format!("{n} x {message}"), || (self.count(message) >= n).then_some(()), timeout).await
    }

    async fn wait_until<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>, timeout: Duration) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.log.changed.notified();
            if let Some(found) = check() {
                return found;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                if let Some(found) = check() {
                    return found;
                }
                panic!("{}: no `{what}` within {timeout:?}; log tail:\n{}", self.name, self.tail());
            }
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().expect("still running") as i32)
    }

    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal delivered");
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} still running after {timeout:?}; log tail:\n{}", self.name, self.tail()))
            .expect("wait");
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status
    }
}

/// The one event named `message`; panics if there is not exactly one.
pub fn only(proc: &Proc, message: &str) -> Value {
    let events = proc.events(message);
    assert_eq!(events.len(), 1, "{}: expected one `{message}`, got {events:?}", proc.name);
    events.into_iter().next().unwrap()
}

pub fn u(value: &Value, field: &str) -> u64 {
    value[field].as_u64().unwrap_or_else(|| panic!("no integer `{field}` in {value}"))
}

/// A hand-driven WebSocket session, for checking the wire frame by frame.
pub struct Raw {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub session_id: String,
    pub server_id: String,
}

/// What a raw session saw next.
#[derive(Debug, PartialEq)]
pub enum Seen {
    Msg(ServerMessage),
    Close(Option<u16>),
    /// The connection ended without a close frame.
    End,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.expect("upgrade");
        let first = next(&mut ws).await;
        let Seen::Msg(ServerMessage::Welcome { server_id, session_id }) = first else {
            panic!("first frame was {first:?}, not a welcome")
        };
        Raw { ws, session_id, server_id }
    }

    pub async fn next(&mut self) -> Seen {
        next(&mut self.ws).await
    }

    pub async fn send(&mut self, message: ClientMessage) {
        self.ws.send(Message::Text(message.encode().into())).await.expect("send");
    }

    /// Sends any frame; a failure (the server already closed) is ignored.
    pub async fn send_frame(&mut self, frame: Message) {
        let _ = self.ws.send(frame).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.expect("send");
    }
}

async fn next(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> Seen {
    let frame = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("a frame within 30 s");
    match frame {
        Some(Ok(Message::Text(text))) => Seen::Msg(ServerMessage::decode(text.as_str()).expect("valid server frame")),
        Some(Ok(Message::Close(frame))) => Seen::Close(frame.map(|f| u16::from(f.code))),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Box::pin(next(ws)).await,
        Some(Ok(other)) => panic!("unexpected frame {other:?}"),
        Some(Err(_)) | None => Seen::End,
    }
}

/// A minimal Service stand-in: accepts on loopback and forwards each TCP
/// connection to the backends in turn, skipping any that refuse. Readiness,
/// propagation delay and affinity belong to gsd-lab, not here.
pub struct Forwarder {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(backends: Vec<SocketAddr>) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                let backends = backends.clone();
                let start = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    for i in 0..backends.len() {
                        if let Ok(mut outbound) = TcpStream::connect(backends[(start + i) % backends.len()]).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Forwarder { addr, task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Scrapes `/metrics` and returns the value of the sample named exactly
/// `series` (name plus labels as exposed, e.g. `x_total{outcome="complete"}`).
pub async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (status, body) = gsd_telemetry::http_get(&addr.to_string(), "/metrics", Duration::from_secs(10)).await.ok()?;
    assert_eq!(status, 200);
    sample(&body, series)
}

pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

/// An external tool (Prometheus, promtool, Jaeger): from the environment
/// variable `env`, else from PATH. When it is missing the calling test is
/// skipped with a note, unless GSD_REQUIRE_TOOLS=1 (scripts/test and CI set
/// it), where a missing tool fails the test.
pub fn tool(name: &str, env: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).filter(|p| p.exists()).or_else(|| {
        std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.exists()))
    });
    if found.is_none() {
        assert!(
            std::env::var("GSD_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{name} is required (GSD_REQUIRE_TOOLS=1) but neither ${env} nor PATH has it; scripts/test installs it"
        );
        eprintln!("SKIPPED: {name} not found (set ${env} or run scripts/test, which installs it)");
    }
    found
}

/// Polls `check` every 100 ms until it yields, or panics after `timeout`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
