//! The live progress line on stderr: what the lab is doing, and what the
//! clients and drains say meanwhile, so a user watching a rehearsal of a
//! minute or more sees it move.

use gsd_telemetry::names;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::harness::metrics::scrape;

/// What the progress line shows, updated by the lab and read by its task.
#[derive(Default)]
pub struct Progress {
    /// The step the lab is at (`round 1/1: delete pod-0: preStop`).
    step: Mutex<String>,
    /// Drains finished so far.
    drains: AtomicU64,
    /// The clients' metrics addresses, scraped for sessions and loss.
    clients: Mutex<Vec<SocketAddr>>,
}

impl Progress {
    /// Shows `step` from now on.
    pub fn set(&self, step: String) {
        *self.step.lock().unwrap() = step;
    }

    /// One more drain finished.
    pub fn drained(&self) {
        self.drains.fetch_add(1, Ordering::Relaxed);
    }

    /// A client to scrape from now on.
    pub fn add_client(&self, metrics: SocketAddr) {
        self.clients.lock().unwrap().push(metrics);
    }

    /// The clients' metrics addresses.
    pub fn clients(&self) -> Vec<SocketAddr> {
        self.clients.lock().unwrap().clone()
    }

    /// Starts the task that draws the line every 250 ms.
    pub fn show(self: &Arc<Progress>, started: Instant) -> JoinHandle<()> {
        tokio::spawn(draw(self.clone(), started))
    }
}

/// The line, rewritten in place on a terminal, a line per change otherwise.
async fn draw(progress: Arc<Progress>, started: Instant) {
    let tty = std::io::stderr().is_terminal();
    let mut shown = String::new();
    loop {
        let (mut sessions, mut lost) = (0.0, 0.0);
        for addr in progress.clients() {
            if let Some(body) = scrape(addr).await {
                sessions += gsd_telemetry::sample(&body, names::CLIENT_SESSIONS).unwrap_or(0.0);
                lost += gsd_telemetry::sample(&body, names::CLIENT_MESSAGES_LOST).unwrap_or(0.0);
            }
        }
        let step = progress.step.lock().unwrap().clone();
        let line =
            format!("{step} | sessions {sessions} | drains {} | lost {lost}", progress.drains.load(Ordering::Relaxed));
        let elapsed = started.elapsed().as_secs_f64();
        if tty {
            eprint!("\r\x1b[2K[{elapsed:6.1}s] {line}");
            let _ = std::io::stderr().flush();
        } else if line != shown {
            eprintln!("[{elapsed:6.1}s] {line}");
        }
        shown = line;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
