//! Instructions per drained session under valgrind's callgrind: a count
//! that does not depend on the machine's load, unlike CPU time. The
//! processes start with counting off; it is switched on just before the
//! signal and dumped at the drain's end.

use std::path::PathBuf;
use std::time::Duration;

use super::report::InstructionsResult;
use crate::harness::{Error, Proc};

/// Processes running under callgrind with counting off: switched on just
/// before the signal, dumped (and switched off) at the drain's end.
pub(super) struct Callgrind {
    /// Where the processes write their dumps.
    dir: PathBuf,
    /// The server's pid, then the client's.
    pids: Vec<i32>,
}

impl Callgrind {
    /// Switches counting on in `procs`, whose dumps go to `dir`.
    pub(super) fn start(dir: PathBuf, procs: &[&Proc]) -> Callgrind {
        let pids: Vec<i32> = procs.iter().map(|p| p.pid().as_raw()).collect();
        for pid in &pids {
            control(&["-i", "on", &pid.to_string()]);
        }
        Callgrind { dir, pids }
    }

    /// Only the first dump is read; what follows it does not count. (No
    /// "instrumentation off" here: the server may exit at this very scrape,
    /// and a command to a process that is gone waits forever.)
    pub(super) fn dump(&self) {
        for pid in &self.pids {
            control(&["-d", &pid.to_string()]);
        }
    }

    /// Instructions in each process's first dump, per drained session.
    pub(super) fn result(&self, sessions: u32) -> Result<InstructionsResult, Error> {
        let count = |pid: i32| -> Result<f64, Error> {
            let suffix = format!(".{pid}.1");
            let dump = std::fs::read_dir(&self.dir)
                .map_err(|e| Error::Stuck(format!("callgrind output: {e}")))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(&suffix))
                .ok_or_else(|| Error::Stuck(format!("no callgrind dump for pid {pid}")))?;
            let text = std::fs::read_to_string(&dump).unwrap_or_default();
            text.lines()
                .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .ok_or_else(|| Error::Stuck(format!("no totals in {}", dump.display())))
        };
        let per = |n: f64| n / sessions.max(1) as f64;
        Ok(InstructionsResult {
            sessions,
            server_instructions_per_session: per(count(self.pids[0])?),
            client_instructions_per_session: per(count(self.pids[1])?),
        })
    }
}

/// `callgrind_control args`, given 30 s; its failure is not checked here
/// (a missing dump is reported by [`Callgrind::result`]).
fn control(args: &[&str]) {
    let Ok(mut child) = std::process::Command::new("callgrind_control")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
