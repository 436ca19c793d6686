//! The rehearsal: gsd-server pods behind the Service stand-in, gsd-client
//! processes, a scenario played on them, and a report of what was lost.
//! This file holds the lab's state and its pods' and clients' lifecycle;
//! the rooms beside it hold the rest:
//!
//! - [`scenarios`]: what each `--scenario` does, round by round;
//! - [`kubelet`]: the termination sequence Kubernetes runs on a pod;
//! - [`report`]: the report's model, its verdict rules and its text;
//! - [`progress`]: the live line on stderr.

mod kubelet;
mod progress;
pub mod report;
mod scenarios;

use gsd_telemetry::names;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::config::{Affinity, LabConfig, Scenario};
use crate::harness::metrics::{poll, scrape, scrape_value};
use crate::harness::{Balancer, Client, Error, Launcher, Reaper, Server};
use gsd_verdict::ClientAccount;
use progress::Progress;
pub use report::{ClientTotals, DrainRow, Latency, Outcome, Report, render};

/// How long a pod or client may take to listen, and a pod to turn ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a rehearsal holds while it runs.
struct Lab {
    /// What to rehearse, and how.
    config: LabConfig,
    /// Starts the pods and clients as `gsd-lab server|client`.
    launcher: Launcher,
    /// The Service stand-in; shared with the delayed endpoint removals.
    balancer: Arc<Balancer>,
    /// The pods alive, oldest first (the one a round deletes).
    pods: Vec<Server>,
    /// The number in the next pod's id (`pod-N`), as a ReplicaSet names
    /// each new pod afresh.
    next_pod: u32,
    /// The client processes.
    clients: Vec<Client>,
    /// One row per drain so far.
    rows: Vec<DrainRow>,
    /// What the progress line shows.
    progress: Arc<Progress>,
    /// What went wrong on the way that no row shows (users not back, a
    /// partitioned pod that kept its sessions).
    findings: Vec<String>,
    /// The clients' account taken just before the last row's termination,
    /// until [`Lab::close_row`] sets the row's side of the clients.
    open_row: Option<Result<ClientAccount, String>>,
    /// The resume key every pod signs with (RESUME_KEY_FILE), as the
    /// chart's Secret gives every replica the same one; removed at the end.
    resume_key: ResumeKey,
}

/// A file of 32 random bytes (hex), removed when dropped.
struct ResumeKey(std::path::PathBuf);

impl ResumeKey {
    fn new() -> Result<ResumeKey, Error> {
        let path = std::env::temp_dir().join(format!("gsd-lab-resume-key-{}", std::process::id()));
        let failed = |what: &std::path::Path, e: std::io::Error| Error::Stuck(format!("{}: {e}", what.display()));
        let mut bytes = [0u8; 32];
        let random = std::path::Path::new("/dev/urandom");
        std::io::Read::read_exact(&mut std::fs::File::open(random).map_err(|e| failed(random, e))?, &mut bytes)
            .map_err(|e| failed(random, e))?;
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, key).map_err(|e| failed(&path, e))?;
        Ok(ResumeKey(path))
    }
}

impl Drop for ResumeKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the rehearsal `config` describes, with pods and clients started as
/// `exe server ...` and `exe client ...`. Every child is ended before this
/// returns (or killed through `reaper` if the lab is interrupted).
pub async fn run(config: LabConfig, exe: PathBuf, reaper: Reaper) -> Result<Report, Error> {
    let started = Instant::now();
    let users = (config.clients * config.users) as u64;
    let room = crate::harness::service::capacity(256);
    if users > room {
        return Err(Error::Stuck(format!(
            "{users} users need {} open files for the Service stand-in, over this process's limit \
             (it proxies at most {room}); raise `ulimit -n` or use fewer users",
            users * 2 + 256
        )));
    }
    let balancer = Balancer::start(config.listen, config.affinity == Affinity::ClientIp, config.readiness_period)
        .await
        .map_err(|source| Error::Listen { addr: config.listen, source })?;
    let progress = Arc::new(Progress::default());
    progress.set("starting".into());
    let ticker = progress.show(started);
    let mut lab = Lab {
        launcher: Launcher::new(&exe, reaper, START_TIMEOUT),
        config,
        balancer: Arc::new(balancer),
        pods: Vec::new(),
        next_pod: 0,
        clients: Vec::new(),
        rows: Vec::new(),
        progress,
        findings: Vec::new(),
        open_row: None,
        resume_key: ResumeKey::new()?,
    };
    let outcome = lab.rehearse().await;
    ticker.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    // The clients' account while they still run: a stopping client's
    // leaving skips, it does not lose, and must not blur the judge's view.
    let clients_account = lab.clients_account().await;
    let totals = lab.stop_clients().await;
    lab.stop_pods().await;
    outcome?;
    let totals = totals?;
    Ok(Report::new(&lab.config, lab.rows, totals, clients_account, lab.findings, started.elapsed()))
}

impl Lab {
    /// Starts the next pod and adds it to the Service (it takes traffic
    /// once ready); returns its id.
    async fn start_pod(&mut self) -> Result<String, Error> {
        let c = &self.config;
        let id = format!("pod-{}", self.next_pod);
        self.next_pod += 1;
        let d = human;
        let args = [
            "--drain-timeout".to_owned(),
            d(c.drain_timeout),
            "--push-interval".into(),
            d(c.push_interval),
            // The lab scrapes right after the drain; the linger only matters
            // if it cannot.
            "--metrics-linger".into(),
            "10s".into(),
            "--ping-interval".into(),
            d(c.ping_interval),
            "--ping-timeout".into(),
            d(c.ping_timeout),
            "--drain-messages".into(),
            c.drain_messages.clone(),
            "--fault-drop-owed".into(),
            c.fault_drop_owed.to_string(),
            "--fault-reset-at-sigterm".into(),
            c.fault_reset_at_sigterm.to_string(),
            "--fault-close-last-seq-lower".into(),
            c.fault_close_last_seq_lower.to_string(),
            "--resume-window".into(),
            d(c.resume_window),
        ];
        let key = self.resume_key.0.to_string_lossy().into_owned();
        let pod = self.launcher.server(&id, "127.0.0.1", &args, &[("RESUME_KEY_FILE", key.as_str())]).await?;
        self.balancer.add(&id, pod.addr, pod.admin);
        self.pods.push(pod);
        Ok(id)
    }

    /// Starts client process `i`, its users going through the Service.
    async fn start_client(&mut self, i: u32) -> Result<(), Error> {
        let c = &self.config;
        let d = human;
        let args = [
            "--request-interval".to_owned(),
            d(c.request_interval),
            "--processing-time".into(),
            d(c.processing_time),
            format!("--make-before-break={}", c.make_before_break),
            "--ping-interval".into(),
            d(c.ping_interval),
            "--ping-timeout".into(),
            d(c.ping_timeout),
        ];
        // The reconnect events feed the report's latencies and moves.
        let envs = [("RUST_LOG", "info,gsd_client::reconnect=debug")];
        let client = self.launcher.client(&format!("client-{i}"), &self.balancer.url(), c.users, &args, &envs).await?;
        self.progress.add_client(client.metrics);
        self.clients.push(client);
        Ok(())
    }

    /// Waits until every virtual user holds a session; a timeout is a
    /// finding for the report, not an error.
    async fn wait_users_back(&mut self, what: &str) {
        self.progress.set(what.to_owned());
        let want = (self.config.clients * self.config.users) as f64;
        let sessions = || async {
            let mut sessions = 0.0;
            for addr in self.progress.clients() {
                sessions += scrape_value(addr, names::CLIENT_SESSIONS).await.unwrap_or(0.0);
            }
            sessions
        };
        let timeout = self.config.reconnect_timeout;
        let back =
            poll(timeout, Duration::from_millis(50), || async { (sessions().await >= want).then_some(()) }).await;
        if back.is_none() {
            let sessions = sessions().await;
            self.findings.push(format!("{what}: only {sessions} of {want} users had a session after {timeout:?}"));
        }
    }

    /// Every client's `/metrics` account, summed; the first that cannot be
    /// read or is no account, named.
    async fn clients_account(&self) -> Result<ClientAccount, String> {
        let mut total = ClientAccount::default();
        for (i, addr) in self.progress.clients().into_iter().enumerate() {
            let body = scrape(addr).await.ok_or_else(|| format!("client-{i} ({addr}): no /metrics answer"))?;
            total += &ClientAccount::parse(&body).map_err(|e| format!("client-{i} ({addr}): {e}"))?;
        }
        Ok(total)
    }

    /// Ends the last row: its users are back (or were waited for), so what
    /// the clients' accounts changed by since its termination began is its
    /// clients' side.
    async fn close_row(&mut self) {
        let Some(before) = self.open_row.take() else { return };
        // Users back in sessions is not every end counted: a client may learn
        // that its session was cut after the pod gave it up. Wait, bounded,
        // until the clients have seen as many ends as the pod held.
        let held = self.rows.last().map_or(0, |r| r.sessions);
        let deadline = Instant::now() + self.config.reconnect_timeout;
        let mut after = self.clients_account().await;
        while let (Ok(b), Ok(a)) = (&before, &after) {
            if a.since(b).map_or(true, |d| d.ends() >= held) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            after = self.clients_account().await;
        }
        let pod = self.rows.last().map(|r| r.pod.clone()).unwrap_or_default();
        match (before, after) {
            (Ok(before), Ok(after)) => match after.since(&before) {
                Ok(delta) => {
                    if let Some(row) = self.rows.last_mut() {
                        row.clients = Some(delta);
                    }
                }
                Err(e) => self.findings.push(format!("{pod}: the clients' accounts over its termination: {e}")),
            },
            (Err(e), _) | (_, Err(e)) => {
                self.findings.push(format!("{pod}: the clients' accounts over its termination could not be read: {e}"))
            }
        }
    }

    /// SIGTERM to every client; their ledgers and reconnects, summed.
    async fn stop_clients(&mut self) -> Result<ClientTotals, Error> {
        let mut totals = ClientTotals::default();
        for client in &self.clients {
            client.proc.signal(Signal::SIGTERM);
        }
        let mut reconnects = Vec::new();
        for client in &mut self.clients {
            totals.add_exit(&client.exit(Duration::from_secs(30)).await?);
            reconnects.extend(client.reconnects());
        }
        totals.add_reconnects(&reconnects, &mut self.rows);
        Ok(totals)
    }

    /// Ends the remaining pods (their sessions are gone with the clients).
    /// Each is scraped until it exits, which ends its metrics linger.
    async fn stop_pods(&mut self) {
        for pod in &self.pods {
            pod.proc.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + self.config.drain_timeout + Duration::from_secs(15);
        for pod in &mut self.pods {
            pod.scrape_until_exit(deadline, Duration::from_millis(50), |_| {}).await;
            if pod.proc.try_status().is_none() {
                pod.proc.signal(Signal::SIGKILL);
            }
            pod.proc.wait_exit(Duration::from_secs(5)).await;
        }
    }

    /// `round R/N: what`, for the progress line.
    fn step(&self, round: u32, what: &str) -> String {
        format!("round {round}/{}: {what}", self.config.rounds)
    }
}

/// `d` as a gsd flag takes it (`1s`, `250ms`).
fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl LabConfig {
    /// How the progress line names a deletion.
    fn scenario_verb(&self) -> &'static str {
        match self.scenario {
            Scenario::Kill => "kill",
            _ => "delete",
        }
    }
}
