//! Child processes with their JSON logs captured: the lab's pods and
//! clients, and the tests' servers and clients.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("starting {name}: {source}")]
    Spawn { name: String, source: std::io::Error },
    #[error("{name}: no {what} within {timeout:?}; last log lines:\n{tail}")]
    Timeout { name: String, what: String, timeout: Duration, tail: String },
    #[error("{name} exited ({status}) before {what}; last log lines:\n{tail}")]
    Exited { name: String, what: String, status: ExitStatus, tail: String },
}

#[derive(Default)]
struct Log {
    /// Every stdout line that parsed as JSON.
    events: Mutex<Vec<Value>>,
    /// The last lines of stdout and stderr, for error messages.
    tail: Mutex<VecDeque<String>>,
    changed: Notify,
}

/// Pids of every child still running, so that a signal or a panic in the
/// parent can end them all.
#[derive(Clone, Default)]
pub struct Reaper(Arc<Mutex<Vec<i32>>>);

impl Reaper {
    /// SIGKILLs every child still registered.
    pub fn kill_all(&self) {
        for pid in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Kills every child when the process panics, then lets the panic go on.
    pub fn on_panic(&self) {
        let reaper = self.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            reaper.kill_all();
            previous(info);
        }));
    }

    fn add(&self, pid: i32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    }

    fn remove(&self, pid: i32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != pid);
    }
}

/// A running child process; killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pid: i32,
    log: Arc<Log>,
    readers: Vec<JoinHandle<()>>,
    reaper: Reaper,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program args`, with `LOG_FORMAT=json` and no OTLP export unless
    /// `envs` says otherwise.
    pub fn spawn<S: AsRef<OsStr>>(
        program: &Path,
        args: &[S],
        envs: &[(&str, &str)],
        name: &str,
        reaper: &Reaper,
    ) -> Result<Proc, ProcError> {
        let mut command = Command::new(program);
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
        let mut child = command.spawn().map_err(|source| ProcError::Spawn { name: name.to_owned(), source })?;
        let pid = child.id().expect("just spawned") as i32;
        reaper.add(pid);
        let log = Arc::new(Log::default());
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let readers = vec![read_lines(stdout, log.clone(), true), read_lines(stderr, log.clone(), false)];
        Ok(Proc { name: name.to_owned(), child, pid, log, readers, reaper: reaper.clone(), status: None })
    }

    /// Every logged event whose `message` is `message`.
    pub fn events(&self, message: &str) -> Vec<Value> {
        self.log.events.lock().unwrap().iter().filter(|e| e["message"] == message).cloned().collect()
    }

    pub fn count(&self, message: &str) -> usize {
        self.log.events.lock().unwrap().iter().filter(|e| e["message"] == message).count()
    }

    /// The last lines the process wrote.
    pub fn tail(&self) -> String {
        self.log.tail.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits for an event matching `pred`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, ProcError> {
        let log = self.log.clone();
        self.wait_until(what, || log.events.lock().unwrap().iter().find(|e| pred(e)).cloned(), timeout).await
    }

    /// Waits for the address a gsd process logs when it starts listening:
    /// `addr` of a server's `listening`, `metrics_addr` of a client's
    /// `metrics_listening`.
    pub async fn listening_addr(&mut self, timeout: Duration) -> Result<std::net::SocketAddr, ProcError> {
        let event = self
            .wait_for("listening", |e| e["message"] == "listening" || e["message"] == "metrics_listening", timeout)
            .await?;
        let addr = event["addr"].as_str().or(event["metrics_addr"].as_str());
        Ok(addr.and_then(|a| a.parse().ok()).expect("gsd logs the address it listens on"))
    }

    /// A server's WebSocket and admin addresses (`addr` and `admin_addr` of
    /// its `listening` event).
    pub async fn server_addrs(
        &mut self,
        timeout: Duration,
    ) -> Result<(std::net::SocketAddr, std::net::SocketAddr), ProcError> {
        let event = self.wait_for("listening", |e| e["message"] == "listening", timeout).await?;
        let parse = |field: &str| event[field].as_str().and_then(|a| a.parse().ok());
        Ok((
            parse("addr").expect("a server logs the address it listens on"),
            parse("admin_addr").expect("a server logs its admin address"),
        ))
    }

    /// Waits until at least `n` events named `message` were logged.
    pub async fn wait_count(&mut self, message: &str, n: usize, timeout: Duration) -> Result<(), ProcError> {
        let log = self.log.clone();
        let check =
            || (log.events.lock().unwrap().iter().filter(|e| e["message"] == message).count() >= n).then_some(());
        self.wait_until(&format!("{n} x {message}"), check, timeout).await
    }

    async fn wait_until<T>(
        &mut self,
        what: &str,
        check: impl Fn() -> Option<T>,
        timeout: Duration,
    ) -> Result<T, ProcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let log = self.log.clone();
            let changed = log.changed.notified();
            if let Some(found) = check() {
                return Ok(found);
            }
            if let Some(status) = self.try_status() {
                // Give the readers a moment to deliver the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return check().ok_or_else(|| ProcError::Exited {
                    name: self.name.clone(),
                    what: what.to_owned(),
                    status,
                    tail: self.tail(),
                });
            }
            let tick = tokio::time::sleep(Duration::from_millis(200));
            tokio::select! {
                _ = changed => {}
                _ = tick => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return check().ok_or_else(|| ProcError::Timeout {
                        name: self.name.clone(),
                        what: what.to_owned(),
                        timeout,
                        tail: self.tail(),
                    });
                }
            }
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.pid)
    }

    /// Sends `signal`; a process that already exited is not an error.
    pub fn signal(&self, signal: Signal) {
        let _ = nix::sys::signal::kill(self.pid(), signal);
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited(status);
            }
        }
        self.status
    }

    /// Waits for the exit; `None` if still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.status {
            return Some(status);
        }
        let status = tokio::time::timeout(timeout, self.child.wait()).await.ok()?.ok()?;
        self.exited(status);
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        Some(status)
    }

    fn exited(&mut self, status: ExitStatus) {
        self.status = Some(status);
        self.reaper.remove(self.pid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.reaper.remove(self.pid);
    }
}

fn read_lines(stream: impl AsyncRead + Unpin + Send + 'static, log: Arc<Log>, parse: bool) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if parse {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    log.events.lock().unwrap().push(value);
                }
            }
            let mut tail = log.tail.lock().unwrap();
            tail.push_back(line);
            if tail.len() > 40 {
                tail.pop_front();
            }
            drop(tail);
            log.changed.notify_waiters();
        }
        log.changed.notify_waiters();
    })
}
