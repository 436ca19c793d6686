//! Test support: real gsd processes with their JSON logs captured, raw
//! WebSocket sessions, and a minimal TCP forwarder standing in for a Service.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gsd_protocol::{ClientMessage, ServerMessage};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// gsd-lab, which is gsd-server as `gsd-lab server` and gsd-client as
/// `gsd-lab client` (the same `cli::main` the thin binaries call): cargo
/// always rebuilds it for these tests, so they never run stale code.
pub fn lab() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gsd-lab"))
}

/// A running gsd process whose JSON log the test reads; killed when dropped.
/// Failures panic with the process's last log lines.
pub struct Proc {
    pub name: String,
    /// A server's admin port (/healthz, /readyz, /metrics, /prestop).
    admin: Option<SocketAddr>,
    inner: gsd_lab::proc::Proc,
}

impl Proc {
    /// `role` is `server` or `client`.
    pub async fn spawn(role: &str, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut all = vec![role];
        all.extend_from_slice(args);
        let inner = gsd_lab::proc::Proc::spawn(&lab(), &all, envs, name, &gsd_lab::proc::Reaper::default())
            .unwrap_or_else(|e| panic!("{e}"));
        Proc { name: name.to_owned(), admin: None, inner }
    }

    /// Any program whose log is gsd's (e.g. gsd-lab run through `ip netns
    /// exec`); returns once it logs its listening address (a server's admin
    /// address too, when it is one).
    pub async fn spawn_exe(exe: &str, name: &str, args: &[&str]) -> (Proc, SocketAddr) {
        let inner =
            gsd_lab::proc::Proc::spawn(std::path::Path::new(exe), args, &[], name, &gsd_lab::proc::Reaper::default())
                .unwrap_or_else(|e| panic!("{e}"));
        let mut proc = Proc { name: name.to_owned(), admin: None, inner };
        let addr = proc.listening_addr().await;
        proc.admin = proc.events("listening").first().and_then(|e| e["admin_addr"].as_str()?.parse().ok());
        (proc, addr)
    }

    /// A server's admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin.unwrap_or_else(|| panic!("{} is not a server", self.name))
    }

    /// The process id, for prlimit and /proc.
    pub fn pid(&self) -> i32 {
        self.inner.pid().as_raw()
    }

    /// A gsd-server on 127.0.0.1 and free ports (WebSocket and admin);
    /// returns once it listens, with the WebSocket address ([`Proc::admin`]
    /// has the other).
    pub async fn server(id: &str, args: &[&str]) -> (Proc, SocketAddr) {
        Self::server_env(id, args, &[]).await
    }

    pub async fn server_env(id: &str, args: &[&str], envs: &[(&str, &str)]) -> (Proc, SocketAddr) {
        let mut all = vec!["--bind", "127.0.0.1", "--server-id", id];
        if !args.contains(&"--port") {
            all.extend(["--port", "0"]);
        }
        if !args.contains(&"--admin-port") {
            all.extend(["--admin-port", "0"]);
        }
        all.extend_from_slice(args);
        let mut proc = Proc::spawn("server", id, &all, envs).await;
        let (addr, admin) = proc.inner.server_addrs(Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e}"));
        proc.admin = Some(admin);
        (proc, addr)
    }

    /// A gsd-client with `users` virtual users against `url`; returns once
    /// its metrics listener is up.
    pub async fn client(name: &str, url: &str, users: u32, args: &[&str]) -> (Proc, SocketAddr) {
        let users = users.to_string();
        let mut all =
            vec!["--server-url", url, "--clients", &users, "--metrics-bind", "127.0.0.1", "--metrics-port", "0"];
        all.extend_from_slice(args);
        let mut proc = Proc::spawn("client", name, &all, &[]).await;
        let addr = proc.listening_addr().await;
        (proc, addr)
    }

    /// The address the process logs when it starts listening.
    async fn listening_addr(&mut self) -> SocketAddr {
        self.inner.listening_addr(Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn events(&self, message: &str) -> Vec<Value> {
        self.inner.events(message)
    }

    pub fn count(&self, message: &str) -> usize {
        self.inner.count(message)
    }

    pub fn tail(&self) -> String {
        self.inner.tail()
    }

    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.inner.wait_for(what, pred, timeout).await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn wait_count(&mut self, message: &str, n: usize, timeout: Duration) {
        self.inner.wait_count(message, n, timeout).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether the process is still running.
    pub fn try_alive(&mut self) -> bool {
        self.inner.try_status().is_none()
    }

    pub fn signal(&self, signal: Signal) {
        self.inner.signal(signal)
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.inner.wait_exit(timeout).await {
            Some(status) => status,
            None => panic!("{} still running after {timeout:?}; log tail:\n{}", self.name, self.tail()),
        }
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

pub use gsd_telemetry::sample;

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

/// The repository's root. Cargo names the package's directory when it runs
/// a test; that is preferred to the one compiled in, which is another
/// clone's when clones share one target directory (as CI's do) and cargo
/// found the test binary fresh.
pub fn repo_root() -> PathBuf {
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir.join("../..").canonicalize().unwrap()
}

/// Runs `scripts/<name>` with `envs` added to the environment and returns
/// its stdout; panics with both outputs unless it succeeds and its stdout
/// holds every line of `expected`.
pub fn run_script(name: &str, envs: &[(&str, &std::ffi::OsStr)], expected: &[&str]) -> String {
    let out = std::process::Command::new(repo_root().join("scripts").join(name))
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("scripts/{name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/{name} failed:\n{stdout}\n{stderr}");
    for step in expected {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    stdout
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
