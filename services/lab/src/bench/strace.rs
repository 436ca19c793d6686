//! System calls per drained session, counted by `strace -c -f` attached to
//! the running server and client: the kernel's share of a drain, which the
//! instruction count (user space only) does not see.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::harness::{Error, Proc};

/// How long strace may take to attach to every thread of a process.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// A process with `strace -c -f` attached: counting from the attach until
/// the process exits or [`Traced::finish`] detaches.
pub(super) struct Traced {
    /// The strace process.
    strace: std::process::Child,
    /// Its summary, written when it detaches.
    out: PathBuf,
    /// The traced process, for the attach check.
    pid: i32,
}

impl Traced {
    /// Attaches to `proc` and returns once every thread of it is traced.
    pub(super) fn attach(dir: &Path, proc: &Proc) -> Result<Traced, Error> {
        let pid = proc.pid().as_raw();
        let out = dir.join(format!("strace.{pid}"));
        let strace = std::process::Command::new("strace")
            .args(["-f", "-c", "-qq", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| Error::Stuck(format!("strace (apt-get install strace): {e}")))?;
        let traced = Traced { strace, out, pid };
        let deadline = std::time::Instant::now() + ATTACH_TIMEOUT;
        while !traced.attached() {
            if std::time::Instant::now() > deadline {
                return Err(Error::Stuck(format!("strace did not attach to every thread of {pid}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(traced)
    }

    /// Whether every thread of the traced process has a tracer.
    fn attached(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else { return false };
        let mut any = false;
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let tracer = status.lines().find_map(|l| l.strip_prefix("TracerPid:")).map(str::trim);
            if tracer.is_none_or(|t| t == "0") {
                return false;
            }
            any = true;
        }
        any
    }

    /// Detaches (if the process still runs) and reads the counts.
    pub(super) fn finish(mut self) -> Result<Syscalls, Error> {
        if let Ok(None) = self.strace.try_wait() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.strace.id() as i32), Signal::SIGINT);
        }
        let _ = self.strace.wait();
        let text = std::fs::read_to_string(&self.out)
            .map_err(|e| Error::Stuck(format!("strace summary {}: {e}", self.out.display())))?;
        let _ = std::fs::remove_file(&self.out);
        Syscalls::parse(&text).ok_or_else(|| Error::Stuck(format!("no strace summary in:\n{text}")))
    }
}

/// Calls counted, by system call.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Syscalls(pub BTreeMap<String, u64>);

impl Syscalls {
    /// Reads `strace -c`'s table: `% time, seconds, usecs/call, calls,
    /// [errors], syscall` per row, between dashed lines, then the total.
    fn parse(text: &str) -> Option<Syscalls> {
        let mut calls = BTreeMap::new();
        let mut rows = false;
        for line in text.lines() {
            if line.starts_with("------") {
                if rows {
                    break;
                }
                rows = true;
                continue;
            }
            if !rows {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(name), Some(count)) = (fields.last(), fields.get(3).and_then(|c| c.parse::<u64>().ok())) else {
                continue;
            };
            calls.insert(name.to_string(), count);
        }
        rows.then_some(Syscalls(calls))
    }

    /// Every call counted.
    pub(super) fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_table_and_its_rows_with_and_without_errors() {
        let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 41.20    0.004120           2      2001           sendto
 30.00    0.003000           1      2003         3 recvfrom
  0.10    0.000010           5         2           close
------ ----------- ----------- --------- --------- ----------------
100.00    0.007130           1      4006         3 total
";
        let calls = Syscalls::parse(text).unwrap();
        assert_eq!(calls.0.get("sendto"), Some(&2001));
        assert_eq!(calls.0.get("recvfrom"), Some(&2003));
        assert_eq!(calls.0.get("close"), Some(&2));
        assert!(!calls.0.contains_key("total"));
        assert_eq!(calls.total(), 4006);
        assert_eq!(Syscalls::parse("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n"), None);
    }
}
