//! What only the tests need, over the harness the lab and the bench use
//! (`gsd_lab::harness`: starting gsd processes, reading their logs,
//! scraping `/metrics`, the Service stand-in): wrappers that panic with the
//! process's last log lines instead of returning errors, a hand-driven
//! WebSocket peer ([`Raw`]) for checking the wire frame by frame, assertion
//! helpers, and the external tools and scripts some tests run.
#![allow(dead_code)] // each test binary uses a different part

use gsd_telemetry::names;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gsd_lab::harness::{self, Balancer, Launcher, Reaper};
use gsd_protocol::{ClientMessage, ServerMessage};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// gsd-lab as this package builds it (`gsd-tests-lab`, the same
/// `gsd_lab::cli::main`), which is gsd-server as `... server` and
/// gsd-client as `... client` (the same `cli::main` the thin binaries
/// call): cargo always rebuilds it for these tests, so they never run stale
/// code.
pub fn lab() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gsd-tests-lab"))
}

/// Starts gsd processes from the gsd-lab under test, each with its own
/// reaper (a test's processes die with it anyway: they are killed on drop).
pub fn launcher() -> Launcher {
    Launcher::new(&lab(), Reaper::default(), Duration::from_secs(20))
}

/// A running gsd process whose JSON log the test reads; killed when dropped.
/// Failures panic with the process's last log lines.
pub struct Proc {
    /// Names the process in assertion messages.
    pub name: String,
    /// A server's WebSocket address, where a Service sends users.
    addr: Option<SocketAddr>,
    /// A server's admin port (/healthz, /readyz, /metrics, /prestop).
    admin: Option<SocketAddr>,
    /// The process, as the library runs it.
    inner: harness::Proc,
}

impl Proc {
    /// A gsd-server on 127.0.0.1 and ports it picks (unless `args` names
    /// `--port`); returns once it listens, with the WebSocket address
    /// ([`Proc::admin`] has the other).
    pub async fn server(id: &str, args: &[&str]) -> (Proc, SocketAddr) {
        Self::server_env(id, args, &[]).await
    }

    /// The same with `envs` added to its environment.
    pub async fn server_env(id: &str, args: &[&str], envs: &[(&str, &str)]) -> (Proc, SocketAddr) {
        Self::server_with(&launcher(), id, "127.0.0.1", args, envs).await
    }

    /// A gsd-server started by `launcher` (e.g. one that runs it in a
    /// network namespace), bound on `bind`.
    pub async fn server_with(
        launcher: &Launcher,
        id: &str,
        bind: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> (Proc, SocketAddr) {
        let server = launcher.server(id, bind, args, envs).await.unwrap_or_else(|e| panic!("{e}"));
        let proc = Proc { name: id.to_owned(), addr: Some(server.addr), admin: Some(server.admin), inner: server.proc };
        (proc, server.addr)
    }

    /// A gsd-client with `users` virtual users against `url`; returns once
    /// its metrics listener is up, with its address.
    pub async fn client(name: &str, url: &str, users: u32, args: &[&str]) -> (Proc, SocketAddr) {
        let client = launcher().client(name, url, users, args, &[]).await.unwrap_or_else(|e| panic!("{e}"));
        (Proc { name: name.to_owned(), addr: None, admin: None, inner: client.proc }, client.metrics)
    }

    /// A server's admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin.unwrap_or_else(|| panic!("{} is not a server", self.name))
    }

    /// The process id, for prlimit and /proc.
    pub fn pid(&self) -> i32 {
        self.inner.pid().as_raw()
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        self.inner.rss_kib() * 1024
    }

    /// CPU time (user + system) used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.inner.cpu_seconds()
    }

    /// Every event named `message` logged so far.
    pub fn events(&self, message: &str) -> Vec<Value> {
        self.inner.events(message)
    }

    /// How many events named `message` were logged so far.
    pub fn count(&self, message: &str) -> usize {
        self.inner.count(message)
    }

    /// The last lines the process wrote.
    pub fn tail(&self) -> String {
        self.inner.tail()
    }

    /// The first event matching `pred`, waited for.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.inner.wait_for(what, pred, timeout).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until `n` events named `message` were logged.
    pub async fn wait_count(&mut self, message: &str, n: usize, timeout: Duration) {
        self.inner.wait_count(message, n, timeout).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether the process is still running.
    pub fn try_alive(&mut self) -> bool {
        self.inner.try_status().is_none()
    }

    /// Sends `signal` (nothing if it already exited).
    pub fn signal(&self, signal: Signal) {
        self.inner.signal(signal)
    }

    /// Its exit status, waited for.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.inner.wait_exit(timeout).await {
            Some(status) => status,
            None => panic!("{} still running after {timeout:?}; log tail:\n{}", self.name, self.tail()),
        }
    }
}

/// The Service stand-in (the lab's), in front of `servers` by their names,
/// probing readiness every 50 ms; returns once every one takes traffic.
pub async fn service(servers: &[&Proc]) -> Balancer {
    let service = Balancer::start("127.0.0.1:0".parse().unwrap(), false, Duration::from_millis(50)).await.unwrap();
    for server in servers {
        let addr = server.addr.unwrap_or_else(|| panic!("{} is not a server", server.name));
        service.add(&server.name, addr, server.admin());
        service.wait_ready(&server.name, Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e}"));
    }
    service
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

/// A test's WebSocket to a server.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A hand-driven WebSocket session, for checking the wire frame by frame.
pub struct Raw {
    /// The WebSocket itself, for frames the helpers do not cover.
    pub ws: Ws,
    /// The session id the welcome gave, as the server logs it.
    pub session_id: String,
    /// The server that welcomed it.
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
        Raw::try_connect(addr).await.expect("upgrade")
    }

    /// The upgrade's refusal as an error (a full server's 503, say); a
    /// first frame other than the welcome still panics.
    pub async fn try_connect(addr: SocketAddr) -> Result<Raw, tokio_tungstenite::tungstenite::Error> {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
        let first = next_frame(&mut ws).await;
        let Seen::Msg(ServerMessage::Welcome { server_id, session_id, .. }) = first else {
            panic!("first frame was {first:?}, not a welcome")
        };
        Ok(Raw { ws, session_id, server_id })
    }

    pub async fn next(&mut self) -> Seen {
        next_frame(&mut self.ws).await
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

/// The next frame on `ws` that is not a ping or pong, within 30 s.
pub async fn next_frame(ws: &mut Ws) -> Seen {
    let frame = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("a frame within 30 s");
    match frame {
        Some(Ok(Message::Text(text))) => Seen::Msg(ServerMessage::decode(text.as_str()).expect("valid server frame")),
        Some(Ok(Message::Close(frame))) => Seen::Close(frame.map(|f| u16::from(f.code))),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Box::pin(next_frame(ws)).await,
        Some(Ok(other)) => panic!("unexpected frame {other:?}"),
        Some(Err(_)) | None => Seen::End,
    }
}

/// Scrapes `/metrics` and returns the value of the sample named exactly
/// `series` (name plus labels as exposed, e.g. `x_total{outcome="complete"}`).
pub async fn metric(addr: SocketAddr, series: impl AsRef<str>) -> Option<f64> {
    sample(&harness::metrics::scrape_within(addr, Duration::from_secs(10)).await?, series)
}

/// Waits until the users of the client whose metrics are at `metrics`
/// carry on: `users` more data frames received and one more request
/// answered than when called.
pub async fn traffic_flows(metrics: SocketAddr, users: u32) {
    let data = names::CLIENT_MESSAGES_RECEIVED.at(&[("type", "data")]);
    let responses = names::CLIENT_MESSAGES_RECEIVED.at(&[("type", "response")]);
    let (data_now, responses_now) =
        (metric(metrics, &data).await.unwrap_or(0.0), metric(metrics, &responses).await.unwrap_or(0.0));
    wait_metric(metrics, data, data_now + users as f64).await;
    wait_metric(metrics, responses, responses_now + 1.0).await;
}

/// Waits until `series` at `addr` reaches at least `want`.
pub async fn wait_metric(addr: SocketAddr, series: impl AsRef<str>, want: f64) {
    harness::metrics::wait_value(addr, series, want, Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e}"))
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
    manifest_dir.join("..").canonicalize().unwrap()
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
    check: impl FnMut() -> F,
) -> T {
    let found = harness::metrics::poll(timeout, Duration::from_millis(100), check).await;
    found.unwrap_or_else(|| panic!("{what}: not within {timeout:?}"))
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
