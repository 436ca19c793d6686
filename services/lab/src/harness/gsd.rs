//! gsd-server and gsd-client started the one way the lab, the bench and the
//! tests all need: on loopback, on ports the process picks itself (port 0,
//! read back from its `listening` log event, so no port is guessed), with
//! the JSON log captured; and what a client says when it leaves
//! (`client_exit`, `reconnected`), parsed once.

use gsd_telemetry::names;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::metrics::scrape;
use super::proc::{Proc, ProcError, Reaper};

/// How to start gsd processes: `gsd-lab server ...` and `gsd-lab client
/// ...`, possibly under a wrapper (valgrind, `ip netns exec`).
#[derive(Clone)]
pub struct Launcher {
    /// The program run: gsd-lab itself, or the wrapper.
    program: PathBuf,
    /// Arguments before the role: the wrapper's own, then gsd-lab's path.
    prefix: Vec<OsString>,
    /// Every child is registered here, so that an interrupted parent can
    /// end them all.
    reaper: Reaper,
    /// How long a child may take to log the address it listens on.
    start_timeout: Duration,
}

impl Launcher {
    /// Starts `exe server ...` and `exe client ...`; `exe` is gsd-lab.
    pub fn new(exe: &Path, reaper: Reaper, start_timeout: Duration) -> Launcher {
        Launcher { program: exe.to_owned(), prefix: Vec::new(), reaper, start_timeout }
    }

    /// The same, run as `wrapper args... exe role ...`.
    pub fn wrapped<S: AsRef<str>>(&self, wrapper: &Path, args: &[S]) -> Launcher {
        let mut prefix: Vec<OsString> = args.iter().map(|a| a.as_ref().into()).collect();
        prefix.push(self.program.clone().into());
        prefix.extend(self.prefix.iter().cloned());
        Launcher { program: wrapper.to_owned(), prefix, ..self.clone() }
    }

    /// `gsd-lab role args`, named `name` in errors; no wait.
    pub fn spawn<S: AsRef<str>>(
        &self,
        role: &str,
        args: &[S],
        envs: &[(&str, &str)],
        name: &str,
    ) -> Result<Proc, ProcError> {
        let mut all = self.prefix.clone();
        all.push(role.into());
        all.extend(args.iter().map(|a| a.as_ref().into()));
        Proc::spawn(&self.program, &all, envs, name, &self.reaper)
    }

    /// A gsd-server with `--server-id id`, bound on `bind` at ports it picks
    /// (unless `args` names `--port` or `--admin-port`); returns once it
    /// logs where it listens.
    pub async fn server<S: AsRef<str>>(
        &self,
        id: &str,
        bind: &str,
        args: &[S],
        envs: &[(&str, &str)],
    ) -> Result<Server, ProcError> {
        let mut all = vec!["--bind".to_owned(), bind.to_owned(), "--server-id".to_owned(), id.to_owned()];
        for flag in ["--port", "--admin-port"] {
            if !args.iter().any(|a| a.as_ref() == flag) {
                all.extend([flag.to_owned(), "0".to_owned()]);
            }
        }
        all.extend(args.iter().map(|a| a.as_ref().to_owned()));
        let mut proc = self.spawn("server", &all, envs, id)?;
        let listening = proc.wait_event("listening", self.start_timeout).await?;
        let addr = |field: &str| listening[field].as_str().and_then(|a| a.parse().ok());
        Ok(Server {
            addr: addr("addr").expect("a server logs the address it listens on"),
            admin: addr("admin_addr").expect("a server logs its admin address"),
            proc,
        })
    }

    /// A gsd-client with `users` virtual users against `url`, its metrics
    /// on a loopback port it picks; returns once that port is open.
    pub async fn client<S: AsRef<str>>(
        &self,
        name: &str,
        url: &str,
        users: u32,
        args: &[S],
        envs: &[(&str, &str)],
    ) -> Result<Client, ProcError> {
        let users = users.to_string();
        let mut all: Vec<&str> =
            vec!["--server-url", url, "--users", &users, "--metrics-bind", "127.0.0.1", "--metrics-port", "0"];
        all.extend(args.iter().map(|a| a.as_ref()));
        let mut proc = self.spawn("client", &all, envs, name)?;
        let listening = proc.wait_event("metrics_listening", self.start_timeout).await?;
        let metrics = listening["metrics_addr"].as_str().and_then(|a| a.parse().ok());
        Ok(Client { metrics: metrics.expect("a client logs its metrics address"), proc })
    }
}

/// A running gsd-server and where it listens.
pub struct Server {
    /// The process; its name is the server's id.
    pub proc: Proc,
    /// The WebSocket address, where a Service sends its users.
    pub addr: SocketAddr,
    /// The admin address: /readyz, /metrics, /prestop.
    pub admin: SocketAddr,
}

/// A terminating server's `/metrics`, scraped until it exited.
#[derive(Debug, Default)]
pub struct LastScrape {
    /// The first body that carried the shutdown histogram: the server's
    /// final account of its drain. `None` if the drain never finished.
    pub drained: Option<String>,
    /// The last body scraped at all, for a server that never finished.
    pub last: Option<String>,
}

impl LastScrape {
    /// The best account there is: the drained body, else the last one.
    pub fn account(&self) -> Option<&str> {
        self.drained.as_deref().or(self.last.as_deref())
    }
}

impl Server {
    /// The server's id (its `--server-id`).
    pub fn id(&self) -> &str {
        &self.proc.name
    }

    /// `ws://addr/ws`, to reach the server directly.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Scrapes the server every `every` until it exits or `until` passes,
    /// whichever is first. A scrape after the drain is what ends the
    /// server's metrics linger, so this is also how a drained server is let
    /// go. `at_drain_end` runs once, as soon as the drained body is seen.
    pub async fn scrape_until_exit(
        &mut self,
        until: tokio::time::Instant,
        every: Duration,
        mut at_drain_end: impl FnMut(&Proc),
    ) -> LastScrape {
        let mut seen = LastScrape::default();
        while self.proc.try_status().is_none() && tokio::time::Instant::now() < until {
            if let Some(body) = scrape(self.admin).await {
                if seen.drained.is_none()
                    && gsd_telemetry::sample(&body, names::SERVER_SHUTDOWN_DURATION_SECONDS_COUNT) == Some(1.0)
                {
                    at_drain_end(&self.proc);
                    seen.drained = Some(body.clone());
                }
                seen.last = Some(body);
            }
            tokio::time::sleep(every).await;
        }
        seen
    }

    /// SIGTERM, then [`Server::finish`].
    pub async fn stop(&mut self, timeout: Duration) -> LastScrape {
        self.proc.signal(Signal::SIGTERM);
        self.finish(timeout).await
    }

    /// For a server already signalled: [`Server::scrape_until_exit`] for up
    /// to `timeout`, then SIGKILL if it still runs. Returns what it said.
    pub async fn finish(&mut self, timeout: Duration) -> LastScrape {
        let seen =
            self.scrape_until_exit(tokio::time::Instant::now() + timeout, Duration::from_millis(50), |_| {}).await;
        if self.proc.try_status().is_none() {
            self.proc.signal(Signal::SIGKILL);
        }
        self.proc.wait_exit(Duration::from_secs(10)).await;
        seen
    }
}

/// A running gsd-client and where its metrics are.
pub struct Client {
    /// The process.
    pub proc: Proc,
    /// Its metrics listener (/metrics, /healthz).
    pub metrics: SocketAddr,
}

impl Client {
    /// SIGTERM, then its `client_exit` event (waited for up to `timeout`)
    /// and its exit.
    pub async fn stop(&mut self, timeout: Duration) -> Result<ClientExit, ProcError> {
        self.proc.signal(Signal::SIGTERM);
        self.exit(timeout).await
    }

    /// Its `client_exit` event, once it logs it, and its exit.
    pub async fn exit(&mut self, timeout: Duration) -> Result<ClientExit, ProcError> {
        let exit = self.proc.wait_event("client_exit", timeout).await?;
        self.proc.wait_exit(Duration::from_secs(10)).await;
        Ok(ClientExit(exit))
    }

    /// Every reconnect the client logged (`reconnected`, a debug event of
    /// `gsd_client::reconnect`).
    pub fn reconnects(&self) -> Vec<Reconnect> {
        self.proc.events("reconnected").iter().map(Reconnect::from_event).collect()
    }
}

/// A client's `client_exit` event: its ledger, summed over its users.
#[derive(Debug, Clone)]
pub struct ClientExit(pub Value);

impl ClientExit {
    /// The integer field `field` (0 when absent).
    pub fn n(&self, field: &str) -> u64 {
        self.0[field].as_u64().unwrap_or(0)
    }
}

/// One `reconnected` event: a user's next session after one ended.
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// Why the previous session ended (`drain`, `error`, `timeout`, ...).
    pub reason: String,
    /// From the end of the previous session to the next welcome.
    pub latency_ms: f64,
    /// The server of the previous session.
    pub from: String,
    /// The server of the new one.
    pub to: String,
}

impl Reconnect {
    fn from_event(event: &Value) -> Reconnect {
        let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
        Reconnect {
            reason: event["reason"].as_str().unwrap_or("unknown").to_owned(),
            latency_ms: event["latency_us"].as_u64().unwrap_or(0) as f64 / 1000.0,
            from: text("from"),
            to: text("to"),
        }
    }
}

/// The nearest-rank percentile of ascending values: the judge's own, so
/// that gsd-lab's report and the verdict's cannot disagree.
pub use gsd_verdict::proxy::percentile;
