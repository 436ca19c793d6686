//! Child processes with their JSON logs captured, so that the lab, the
//! bench and the tests can wait for what a gsd process says (`listening`,
//! `drain_end`, `client_exit`) instead of guessing when it happened, and a
//! [`Reaper`] that ends them all when the parent is interrupted.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Why a child did not do what its caller waited for; each variant carries
/// the child's last log lines, which usually say why.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("starting {name}: {source}")]
    Spawn { name: String, source: std::io::Error },
    #[error("{name}: no {what} within {timeout:?}; last log lines:\n{tail}")]
    Timeout { name: String, what: String, timeout: Duration, tail: String },
    #[error("{name} exited ({status}) before {what}; last log lines:\n{tail}")]
    Exited { name: String, what: String, status: ExitStatus, tail: String },
}

/// What a child wrote, shared between its reader tasks and its [`Proc`].
#[derive(Default)]
struct Log {
    /// Every stdout line, and those of them that parsed as JSON so far:
    /// lines are parsed when someone looks, not as they arrive, so that a
    /// process logging thousands of lines a second (a drain at info) does
    /// not share its cores with a JSON parser in the bench.
    events: Mutex<Events>,
    /// The last lines of stdout and stderr, for error messages.
    tail: Mutex<VecDeque<String>>,
    /// Woken at every line (and at the end of each stream), so that waiters
    /// re-check at once rather than on a timer.
    changed: Notify,
}

/// A child's stdout lines, and the JSON events among them parsed so far.
#[derive(Default)]
struct Events {
    lines: Vec<String>,
    /// How many of `lines` were parsed into `parsed`.
    read: usize,
    parsed: Vec<Value>,
}

impl Events {
    /// Every line that is a JSON object, parsing those not parsed yet.
    fn parsed(&mut self) -> &[Value] {
        for line in &self.lines[self.read..] {
            if let Ok(value) = serde_json::from_str::<Value>(line) {
                self.parsed.push(value);
            }
        }
        self.read = self.lines.len();
        &self.parsed
    }
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
    /// Names the child in errors (`pod-0`, `client-1`, a test's `s0`).
    pub name: String,
    /// The child itself, for `try_wait`/`wait` (and killed on drop).
    child: Child,
    /// Its pid, kept apart because `Child::id` is gone once it was reaped.
    pid: i32,
    /// Its stdout events and the tail of both streams.
    log: Arc<Log>,
    /// The stdout and stderr readers, awaited at the exit so that no last
    /// line is missed.
    readers: Vec<JoinHandle<()>>,
    /// Where the pid is registered while the child runs.
    reaper: Reaper,
    /// The exit status, once seen.
    status: Option<ExitStatus>,
    /// Its whole CPU time (user + system), read while it was a zombie, when
    /// its exit was seen by [`Proc::try_status`].
    cpu_at_exit: Option<f64>,
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
        Ok(Proc {
            name: name.to_owned(),
            child,
            pid,
            log,
            readers,
            reaper: reaper.clone(),
            status: None,
            cpu_at_exit: None,
        })
    }

    /// Every logged event whose `message` is `message`.
    pub fn events(&self, message: &str) -> Vec<Value> {
        self.log.events.lock().unwrap().parsed().iter().filter(|e| e["message"] == message).cloned().collect()
    }

    /// How many events named `message` were logged so far.
    pub fn count(&self, message: &str) -> usize {
        self.log.events.lock().unwrap().parsed().iter().filter(|e| e["message"] == message).count()
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
        // Each look reads only the events logged since the last one: a
        // process that logs tens of thousands of lines is not rescanned
        // from the start at every line.
        let seen = std::cell::Cell::new(0);
        let check = || {
            let mut events = log.events.lock().unwrap();
            let events = events.parsed();
            let found = events[seen.get()..].iter().find(|e| pred(e)).cloned();
            seen.set(events.len());
            found
        };
        self.wait_until(what, check, timeout).await
    }

    /// Waits for the first event named `message`.
    pub async fn wait_event(&mut self, message: &str, timeout: Duration) -> Result<Value, ProcError> {
        // Only a line that names the message is parsed while waiting.
        let log = self.log.clone();
        let needle = format!("\"message\":{}", Value::from(message));
        let seen = std::cell::Cell::new(0);
        let check = || {
            let events = log.events.lock().unwrap();
            let found = events.lines[seen.get()..]
                .iter()
                .filter(|line| line.contains(&needle))
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|e| e["message"] == message);
            seen.set(events.lines.len());
            found
        };
        self.wait_until(message, check, timeout).await
    }

    /// Waits until at least `n` events named `message` were logged.
    pub async fn wait_count(&mut self, message: &str, n: usize, timeout: Duration) -> Result<(), ProcError> {
        let log = self.log.clone();
        let (seen, counted) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        let check = || {
            let mut events = log.events.lock().unwrap();
            let events = events.parsed();
            counted.set(counted.get() + events[seen.get()..].iter().filter(|e| e["message"] == message).count());
            seen.set(events.len());
            (counted.get() >= n).then_some(())
        };
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
                // The last lines may still be in the pipes.
                self.drain_readers().await;
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

    /// The pid, for signals, `/proc` and prlimit.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.pid)
    }

    /// Resident memory, in KiB (0 once it has exited).
    pub fn rss_kib(&self) -> u64 {
        self.proc_file("status")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU seconds it has used so far, every thread's, those
    /// that ended included: its CPU-time clock (clock_getcpuclockid), in
    /// nanoseconds. /proc/PID/stat counts in clock ticks (10 ms here), which
    /// a 50-session drain (a few ms of CPU) reads as 0; it is the fallback
    /// only if the clock cannot be read.
    pub fn cpu_seconds(&self) -> f64 {
        let clock = nix::time::clock_getcpuclockid(self.pid()).and_then(nix::time::clock_gettime);
        if let Ok(spent) = clock {
            return spent.tv_sec() as f64 + spent.tv_nsec() as f64 / 1e9;
        }
        let stat = self.proc_file("stat");
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
        (ticks(11) + ticks(12)) / per_second
    }

    /// Its CPU seconds over its whole life, if [`Proc::try_status`] saw it
    /// exit (a process reaped some other way has none).
    pub fn cpu_at_exit(&self) -> Option<f64> {
        self.cpu_at_exit
    }

    /// `/proc/PID/file`, empty once the process is gone.
    fn proc_file(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.pid)).unwrap_or_default()
    }

    /// Sends `signal`; a process that already exited is not an error.
    pub fn signal(&self, signal: Signal) {
        let _ = nix::sys::signal::kill(self.pid(), signal);
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            // Exited but not yet reaped: its CPU time is still in /proc.
            // Reaped only once seen exited here: a process that exits between
            // this look and the reaping would take its CPU time with it.
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
            let exited = match waitid(Id::Pid(self.pid()), flags) {
                Ok(status) => status.pid().is_some(),
                // Not a child waitid can see: reaping decides.
                Err(_) => true,
            };
            if exited {
                if self.cpu_at_exit.is_none() {
                    self.cpu_at_exit = Some(self.cpu_seconds());
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    self.exited(status);
                }
            }
        }
        self.status
    }

    /// Waits for the exit; `None` if still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = match self.status {
            Some(status) => status,
            None => {
                let status = tokio::time::timeout(timeout, self.child.wait()).await.ok()?.ok()?;
                self.exited(status);
                status
            }
        };
        self.drain_readers().await;
        Some(status)
    }

    /// Waits (up to 5 s, in case a grandchild holds the pipes open) until
    /// the readers have seen the end of both streams.
    async fn drain_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
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
                log.events.lock().unwrap().lines.push(line.clone());
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
