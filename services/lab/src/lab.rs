//! The rehearsal: pods, clients, the kubelet-style terminator, scenarios,
//! progress and the report.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::time::Instant;

use crate::balancer::Balancer;
use crate::config::{Affinity, LabConfig, Scenario};
use crate::proc::{Proc, ProcError, Reaper};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("the Service stand-in cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Stuck(String),
}

/// One drain (or kill) the lab caused.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRow {
    pub round: u32,
    pub pod: String,
    /// Sessions the pod held when it was deleted.
    pub sessions: u64,
    /// Sessions the pod drained (`gsd_server_drains_total`, both outcomes).
    pub drained: u64,
    /// Data frames sent in its drain phase (`gsd_server_drain_messages_sum`).
    pub messages: u64,
    /// `gsd_server_shutdown_duration_seconds_sum`, when the drain finished.
    pub shutdown_seconds: Option<f64>,
    /// complete | incomplete | sigkilled | killed | partitioned
    pub outcome: String,
    pub sigkilled: bool,
    /// Sessions the pod gave up because the client went silent
    /// (`gsd_server_sessions_closed_total{reason="timeout"}` and drains
    /// `peer_lost`).
    pub peer_timeouts: u64,
    /// Data frames the pod sent that were never acknowledged
    /// (`gsd_server_data_unacked_total`): delivered or lost, the pod cannot
    /// tell. `None` when the pod was killed and its counters died with it.
    pub unacked: Option<u64>,
    /// Users whose next session after this pod was on another pod.
    pub moved: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The clients' ledgers, summed, and their reconnects.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientTotals {
    pub users: u64,
    pub reconnects: u64,
    pub reconnects_by_reason: BTreeMap<String, u64>,
    pub reconnect_latency: Latency,
    pub drains_complete: u64,
    pub drains_incomplete: u64,
    /// Drains the clients cut short themselves by leaving.
    pub drains_client_left: u64,
    pub messages_lost: u64,
    /// Announced frames the clients did not wait for because they left.
    pub messages_skipped: u64,
    /// Sessions that ended with no close and no notice: loss in them cannot
    /// be counted by anyone, so it is not in `messages_lost`.
    pub sessions_cut: u64,
    pub requests_lost: u64,
    pub requests_resent: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub rounds: u32,
    pub servers: u32,
    pub clients: u32,
    pub users_per_client: u32,
    pub prestop_seconds: f64,
    pub grace_seconds: f64,
    pub propagation_delay_seconds: f64,
    pub affinity: Affinity,
    pub drains: Vec<DrainRow>,
    pub totals: ClientTotals,
    pub elapsed_seconds: f64,
    /// Every drain complete and nothing lost.
    pub ok: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
}

struct Pod {
    id: String,
    proc: Proc,
    /// The admin port: /readyz, /metrics.
    admin: SocketAddr,
}

/// What the progress line shows, updated by the lab and read by its task.
struct Progress {
    step: Mutex<String>,
    drains: AtomicU64,
    clients: Mutex<Vec<SocketAddr>>,
}

impl Progress {
    fn set(&self, step: String) {
        *self.step.lock().unwrap() = step;
    }
}

struct Lab {
    config: LabConfig,
    exe: PathBuf,
    reaper: Reaper,
    balancer: Arc<Balancer>,
    pods: Vec<Pod>,
    next_pod: u32,
    clients: Vec<Proc>,
    rows: Vec<DrainRow>,
    progress: Arc<Progress>,
    reasons: Vec<String>,
}

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the rehearsal `config` describes, with pods and clients started as
/// `exe server ...` and `exe client ...`. Every child is ended before this
/// returns (or killed through `reaper` if the lab is interrupted).
pub async fn run(config: LabConfig, exe: PathBuf, reaper: Reaper) -> Result<Report, LabError> {
    let started = Instant::now();
    let users = (config.clients * config.users) as u64;
    let room = crate::balancer::capacity(256);
    if users > room {
        return Err(LabError::Stuck(format!(
            "{users} users need {} open files for the Service stand-in, over this process's limit \
             (it proxies at most {room}); raise `ulimit -n` or use fewer users",
            users * 2 + 256
        )));
    }
    let balancer = Balancer::start(config.listen, config.affinity == Affinity::ClientIp, config.readiness_period)
        .await
        .map_err(|source| LabError::Listen { addr: config.listen, source })?;
    let progress = Arc::new(Progress {
        step: Mutex::new("starting".into()),
        drains: AtomicU64::new(0),
        clients: Mutex::new(Vec::new()),
    });
    let ticker = tokio::spawn(show_progress(progress.clone(), started));
    let mut lab = Lab {
        config,
        exe,
        reaper,
        balancer: Arc::new(balancer),
        pods: Vec::new(),
        next_pod: 0,
        clients: Vec::new(),
        rows: Vec::new(),
        progress,
        reasons: Vec::new(),
    };
    let outcome = lab.rehearse().await;
    ticker.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let totals = lab.stop_clients().await;
    lab.stop_pods().await;
    outcome?;
    let totals = totals?;
    Ok(lab.report(totals, started.elapsed()))
}

impl Lab {
    async fn rehearse(&mut self) -> Result<(), LabError> {
        let c = self.config.clone();
        self.progress.set(format!("starting {} pods", c.servers));
        for _ in 0..c.servers {
            self.start_pod().await?;
        }
        for pod in self.pods.iter().map(|p| p.id.clone()).collect::<Vec<_>>() {
            self.wait_ready(&pod).await?;
        }
        self.progress.set(format!("starting {} x {} users", c.clients, c.users));
        let url = format!("ws://{}/ws", self.balancer.addr);
        for i in 0..c.clients {
            let args = [
                "client".to_owned(),
                "--server-url".into(),
                url.clone(),
                "--clients".into(),
                c.users.to_string(),
                "--metrics-bind".into(),
                "127.0.0.1".into(),
                "--metrics-port".into(),
                "0".into(),
                "--request-interval".into(),
                humantime::format_duration(c.request_interval).to_string(),
                "--processing-time".into(),
                humantime::format_duration(c.processing_time).to_string(),
                format!("--make-before-break={}", c.make_before_break),
                "--ping-interval".into(),
                humantime::format_duration(c.ping_interval).to_string(),
                "--ping-timeout".into(),
                humantime::format_duration(c.ping_timeout).to_string(),
            ];
            let envs = [("RUST_LOG", "info,gsd_client::reconnect=debug")];
            let mut proc = Proc::spawn(&self.exe, &args, &envs, &format!("client-{i}"), &self.reaper)?;
            let addr = proc.listening_addr(START_TIMEOUT).await?;
            self.progress.clients.lock().unwrap().push(addr);
            self.clients.push(proc);
        }
        self.wait_users_back("every user connected").await?;
        self.progress.set("traffic".into());
        tokio::time::sleep(c.settle).await;

        for round in 1..=c.rounds {
            match c.scenario {
                Scenario::Partition => {
                    self.partition(0, round).await?;
                    self.wait_users_back(&format!("round {round}: users back")).await?;
                }
                Scenario::DeletePod | Scenario::Kill => {
                    let kill = c.scenario == Scenario::Kill;
                    self.delete(0, round, kill, true).await?;
                    self.wait_users_back(&format!("round {round}: users back")).await?;
                }
                Scenario::RollingRestart => {
                    let old: Vec<String> = self.pods.iter().map(|p| p.id.clone()).collect();
                    for id in old {
                        self.progress.set(format!("round {round}/{}: surge pod", c.rounds));
                        let new = self.start_pod().await?;
                        self.wait_ready(&new).await?;
                        let idx = self.pods.iter().position(|p| p.id == id).expect("old pod still there");
                        self.delete(idx, round, false, false).await?;
                        self.wait_users_back(&format!("round {round}: users back")).await?;
                    }
                }
            }
            self.progress.set(format!("round {round}/{}: traffic", c.rounds));
            tokio::time::sleep(c.settle).await;
        }
        Ok(())
    }

    async fn start_pod(&mut self) -> Result<String, LabError> {
        let c = &self.config;
        let id = format!("pod-{}", self.next_pod);
        self.next_pod += 1;
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let args = [
            "server".to_owned(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
            "--admin-port".into(),
            "0".into(),
            "--server-id".into(),
            id.clone(),
            "--drain-timeout".into(),
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
        ];
        let mut proc = Proc::spawn(&self.exe, &args, &[], &id, &self.reaper)?;
        let (addr, admin) = proc.server_addrs(START_TIMEOUT).await?;
        self.balancer.add(&id, addr, admin);
        self.pods.push(Pod { id: id.clone(), proc, admin });
        Ok(id)
    }

    async fn wait_ready(&self, id: &str) -> Result<(), LabError> {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.balancer.eligible(id) {
            if Instant::now() > deadline {
                return Err(LabError::Stuck(format!("{id} never became ready")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until every virtual user holds a session; a timeout is a
    /// finding for the report, not an error.
    async fn wait_users_back(&mut self, what: &str) -> Result<(), LabError> {
        self.progress.set(what.to_owned());
        let want = (self.config.clients * self.config.users) as f64;
        let deadline = Instant::now() + self.config.reconnect_timeout;
        loop {
            let addrs = self.progress.clients.lock().unwrap().clone();
            let mut sessions = 0.0;
            for addr in addrs {
                sessions += scrape_value(addr, "gsd_client_sessions").await.unwrap_or(0.0);
            }
            if sessions >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.reasons.push(format!(
                    "{what}: only {sessions} of {want} users had a session after {:?}",
                    self.config.reconnect_timeout
                ));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes pod `idx` the way the kubelet does: endpoint removal after the
    /// propagation delay, concurrently preStop, SIGTERM, SIGKILL at the grace
    /// period (counted from the deletion). `kill` SIGKILLs at once instead.
    async fn delete(&mut self, idx: usize, round: u32, kill: bool, replace: bool) -> Result<(), LabError> {
        let c = self.config.clone();
        let mut pod = self.pods.remove(idx);
        let id = pod.id.clone();
        let step = |what: &str| format!("round {round}/{}: {} {id}: {what}", c.rounds, c.scenario_verb());
        let before = scrape(pod.admin).await;
        let sessions =
            before.as_deref().and_then(|b| gsd_telemetry::sample(b, "gsd_server_sessions")).unwrap_or(0.0) as u64;
        let deleted = Instant::now();
        self.remove_endpoint_later(&id);
        if replace {
            // The ReplicaSet replaces a deleted pod at once.
            self.start_pod().await?;
        }
        let mut sigkilled = false;
        let mut last = before;
        let mut final_body = None;
        if kill {
            self.progress.set(step("SIGKILL"));
            pod.proc.signal(Signal::SIGKILL);
            sigkilled = true;
            pod.proc.wait_exit(Duration::from_secs(10)).await;
        } else {
            self.progress.set(step("preStop"));
            tokio::time::sleep(c.prestop.min(c.grace)).await;
            self.progress.set(step("SIGTERM, draining"));
            pod.proc.signal(Signal::SIGTERM);
            let deadline = deleted + c.grace;
            loop {
                if pod.proc.try_status().is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    self.progress.set(step("grace period over: SIGKILL"));
                    pod.proc.signal(Signal::SIGKILL);
                    sigkilled = true;
                    pod.proc.wait_exit(Duration::from_secs(10)).await;
                    break;
                }
                // Scrape until the exit: the first body carrying the shutdown
                // histogram is the final account, and a scrape after the
                // drain is what ends the server's metrics linger.
                if let Some(body) = scrape(pod.admin).await {
                    if final_body.is_none()
                        && gsd_telemetry::sample(&body, "gsd_server_shutdown_duration_seconds_count") == Some(1.0)
                    {
                        final_body = Some(body.clone());
                    }
                    last = Some(body);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            pod.proc.wait_exit(Duration::from_secs(5)).await;
        }
        self.balancer.forget(&id);

        let body = final_body.as_deref().or(last.as_deref()).unwrap_or_default();
        let value = |series: &str| gsd_telemetry::sample(body, series).unwrap_or(0.0);
        let drains = |outcome: &str| value(&format!(r#"gsd_server_drains_total{{outcome="{outcome}"}}"#)) as u64;
        let drained: u64 = ["complete", "incomplete", "client_left", "peer_lost"].into_iter().map(drains).sum();
        let outcome = if kill {
            "killed"
        } else if sigkilled {
            "sigkilled"
        } else if final_body.is_some() && drained == drains("complete") {
            "complete"
        } else {
            "incomplete"
        };
        self.rows.push(DrainRow {
            round,
            pod: id,
            sessions,
            drained,
            messages: value("gsd_server_drain_messages_sum") as u64,
            shutdown_seconds: final_body.as_ref().map(|_| value("gsd_server_shutdown_duration_seconds_sum")),
            outcome: outcome.to_owned(),
            sigkilled,
            peer_timeouts: drains("peer_lost") + value(r#"gsd_server_sessions_closed_total{reason="timeout"}"#) as u64,
            unacked: (!kill).then(|| value("gsd_server_data_unacked_total") as u64),
            moved: 0,
        });
        self.progress.drains.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The endpoint controller's removal of `id`, `--propagation-delay` from
    /// now, concurrently with whatever the kubelet does meanwhile.
    fn remove_endpoint_later(&self, id: &str) {
        let balancer = self.balancer.clone();
        let (id, delay) = (id.to_owned(), self.config.propagation_delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            balancer.remove(&id);
        });
    }

    /// Cuts pod `idx`'s network silently, as when its node dies: the Service
    /// stand-in stops carrying its bytes both ways (nothing closed), its
    /// endpoint goes after the propagation delay, and the ReplicaSet starts
    /// a replacement. Both sides must notice on their own, within
    /// PING_INTERVAL + PING_TIMEOUT: the pod frees every session and the
    /// users reconnect elsewhere. Then the pod is SIGKILLed (its node is gone).
    async fn partition(&mut self, idx: usize, round: u32) -> Result<(), LabError> {
        let c = self.config.clone();
        let mut pod = self.pods.remove(idx);
        let id = pod.id.clone();
        let sessions = scrape_value(pod.admin, "gsd_server_sessions").await.unwrap_or(0.0) as u64;
        self.progress.set(format!("round {round}/{}: partition {id}", c.rounds));
        self.balancer.partition(&id);
        let cut = Instant::now();
        self.remove_endpoint_later(&id);
        self.start_pod().await?;
        // The pod is alive behind the cut; the lab reads it directly.
        let bound = c.ping_interval + c.ping_timeout;
        let deadline = cut + bound + Duration::from_secs(10);
        let mut body = None;
        while Instant::now() < deadline {
            body = scrape(pod.admin).await;
            if body.as_deref().and_then(|b| gsd_telemetry::sample(b, "gsd_server_sessions")) == Some(0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let freed_after = cut.elapsed();
        let body = body.unwrap_or_default();
        let value = |series: &str| gsd_telemetry::sample(&body, series).unwrap_or(0.0);
        let open = value("gsd_server_sessions") as u64;
        if open > 0 {
            self.reasons.push(format!(
                "{id}: {open} of its {sessions} sessions still open {freed_after:.1?} after the cut (bound {bound:?})"
            ));
        }
        pod.proc.signal(Signal::SIGKILL);
        pod.proc.wait_exit(Duration::from_secs(10)).await;
        self.balancer.forget(&id);
        self.rows.push(DrainRow {
            round,
            pod: id,
            sessions,
            drained: 0,
            messages: 0,
            shutdown_seconds: Some(freed_after.as_secs_f64()),
            outcome: "partitioned".into(),
            sigkilled: true,
            peer_timeouts: value(r#"gsd_server_sessions_closed_total{reason="timeout"}"#) as u64,
            unacked: Some(value("gsd_server_data_unacked_total") as u64),
            moved: 0,
        });
        self.progress.drains.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// SIGTERM to every client; their ledgers and reconnects, summed.
    async fn stop_clients(&mut self) -> Result<ClientTotals, LabError> {
        let mut totals = ClientTotals::default();
        let mut latencies = Vec::new();
        for client in &self.clients {
            client.signal(Signal::SIGTERM);
        }
        for client in &mut self.clients {
            let exit =
                client.wait_for("client_exit", |e| e["message"] == "client_exit", Duration::from_secs(30)).await?;
            let n = |field: &str| exit[field].as_u64().unwrap_or(0);
            totals.users += n("users");
            totals.drains_complete += n("drains_complete");
            totals.drains_incomplete += n("drains_incomplete");
            totals.drains_client_left += n("drains_client_left");
            totals.messages_lost += n("messages_lost");
            totals.messages_skipped += n("messages_skipped");
            totals.sessions_cut += n("sessions_cut");
            totals.requests_lost += n("requests_lost");
            totals.requests_resent += n("requests_resent");
            totals.reconnects += n("reconnects");
            for event in client.events("reconnected") {
                let reason = event["reason"].as_str().unwrap_or("unknown").to_owned();
                *totals.reconnects_by_reason.entry(reason).or_default() += 1;
                latencies.push(event["latency_us"].as_u64().unwrap_or(0) as f64 / 1000.0);
                let from = event["from"].as_str().unwrap_or_default();
                if event["to"].as_str() != Some(from) {
                    for row in self.rows.iter_mut().filter(|r| r.pod == from) {
                        row.moved += 1;
                    }
                }
            }
            client.wait_exit(Duration::from_secs(10)).await;
        }
        latencies.sort_by(f64::total_cmp);
        let quantile = |q: f64| percentile(&latencies, q).unwrap_or(0.0);
        totals.reconnect_latency =
            Latency { p50_ms: quantile(0.5), p95_ms: quantile(0.95), p99_ms: quantile(0.99), max_ms: quantile(1.0) };
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
            while pod.proc.try_status().is_none() && Instant::now() < deadline {
                let _ = scrape(pod.admin).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if pod.proc.try_status().is_none() {
                pod.proc.signal(Signal::SIGKILL);
            }
            pod.proc.wait_exit(Duration::from_secs(5)).await;
        }
    }

    fn report(&mut self, totals: ClientTotals, elapsed: Duration) -> Report {
        let c = &self.config;
        let mut reasons = std::mem::take(&mut self.reasons);
        for row in &self.rows {
            match row.outcome.as_str() {
                "complete" if row.moved < row.sessions => reasons.push(format!(
                    "{}: only {} of its {} users reconnected to another pod",
                    row.pod, row.moved, row.sessions
                )),
                "complete" => {}
                "killed" => reasons.push(format!(
                    "{} was SIGKILLed: {} sessions cut without a drain. The data it still owed them was never \
                     announced and its own counters died with it, so no one can count that loss: \
                     \"messages lost\" below counts only frames a server announced or sent",
                    row.pod, row.sessions
                )),
                "partitioned" if row.moved < row.sessions => reasons.push(format!(
                    "{}: only {} of its {} users reconnected to another pod after the partition",
                    row.pod, row.moved, row.sessions
                )),
                "partitioned" => {}
                "sigkilled" => reasons.push(format!(
                    "{} was SIGKILLed at the grace period ({:?}) before its drain finished",
                    row.pod, c.grace
                )),
                _ => reasons.push(format!("{}: drain incomplete", row.pod)),
            }
        }
        reasons.extend(gsd_client::ledger::loss_reasons(
            totals.messages_lost,
            totals.requests_lost,
            totals.drains_incomplete,
        ));
        Report {
            scenario: c.scenario,
            rounds: c.rounds,
            servers: c.servers,
            clients: c.clients,
            users_per_client: c.users,
            prestop_seconds: c.prestop.as_secs_f64(),
            grace_seconds: c.grace.as_secs_f64(),
            propagation_delay_seconds: c.propagation_delay.as_secs_f64(),
            affinity: c.affinity,
            drains: self.rows.clone(),
            totals,
            elapsed_seconds: elapsed.as_secs_f64(),
            ok: reasons.is_empty(),
            reasons,
        }
    }
}

impl LabConfig {
    fn scenario_verb(&self) -> &'static str {
        match self.scenario {
            Scenario::Kill => "kill",
            _ => "delete",
        }
    }
}

/// The `q` quantile (0 to 1, nearest rank) of ascending `sorted` values.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n => Some(sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1]),
    }
}

/// `/metrics` of a pod or client, if it answers.
pub(crate) async fn scrape(addr: SocketAddr) -> Option<String> {
    match gsd_telemetry::http_get(&addr.to_string(), "/metrics", Duration::from_secs(2)).await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

pub(crate) async fn scrape_value(addr: SocketAddr, series: &str) -> Option<f64> {
    gsd_telemetry::sample(&scrape(addr).await?, series)
}

/// The live progress line on stderr: rewritten in place on a terminal, a
/// line per change otherwise.
async fn show_progress(progress: Arc<Progress>, started: Instant) {
    let tty = std::io::stderr().is_terminal();
    let mut shown = String::new();
    loop {
        let addrs = progress.clients.lock().unwrap().clone();
        let (mut sessions, mut lost) = (0.0, 0.0);
        for addr in addrs {
            if let Some(body) = scrape(addr).await {
                sessions += gsd_telemetry::sample(&body, "gsd_client_sessions").unwrap_or(0.0);
                lost += gsd_telemetry::sample(&body, "gsd_client_messages_lost_total").unwrap_or(0.0);
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

/// The report as text, for stdout.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let secs = |s: f64| humantime::format_duration(Duration::from_millis((s * 1000.0).round() as u64)).to_string();
    out += &format!(
        "gsd-lab: {} | {} round(s) | {} servers | {} client(s) x {} users | preStop {} | grace {} | propagation {}\n\n",
        serde_json::to_value(report.scenario).unwrap().as_str().unwrap(),
        report.rounds,
        report.servers,
        report.clients,
        report.users_per_client,
        secs(report.prestop_seconds),
        secs(report.grace_seconds),
        secs(report.propagation_delay_seconds),
    );
    out += &format!(
        "{:<6} {:<8} {:>8} {:>8} {:>9} {:>10}  {:<10} {:<8} {:>6}\n",
        "round", "pod", "sessions", "drained", "messages", "shutdown", "outcome", "SIGKILL", "moved"
    );
    for row in &report.drains {
        let shutdown = row.shutdown_seconds.map_or("-".to_owned(), |s| format!("{:.3}s", s));
        out += &format!(
            "{:<6} {:<8} {:>8} {:>8} {:>9} {:>10}  {:<10} {:<8} {:>6}\n",
            row.round,
            row.pod,
            row.sessions,
            row.drained,
            row.messages,
            shutdown,
            row.outcome,
            if row.sigkilled { "yes" } else { "no" },
            format!("{}/{}", row.moved, row.sessions),
        );
    }
    let t = &report.totals;
    let l = &t.reconnect_latency;
    let reasons: Vec<String> = t.reconnects_by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
    out += &format!(
        "\nclients: {} users | {} reconnects ({}) | reconnect latency p50 {:.1}ms p95 {:.1}ms p99 {:.1}ms max {:.1}ms\n",
        t.users,
        t.reconnects,
        if reasons.is_empty() { "none".to_owned() } else { reasons.join(", ") },
        l.p50_ms,
        l.p95_ms,
        l.p99_ms,
        l.max_ms
    );
    out += &format!(
        "         drains {} complete, {} incomplete, {} cut short by leaving clients | messages lost {} \
         (skipped by leaving clients {}) | requests lost {} (re-sent {})\n",
        t.drains_complete,
        t.drains_incomplete,
        t.drains_client_left,
        t.messages_lost,
        t.messages_skipped,
        t.requests_lost,
        t.requests_resent
    );
    if t.sessions_cut > 0 {
        out += &format!(
            "         {} session(s) cut with no close and no notice: what their pod sent after the last frame \
             received is UNKNOWN, and not in \"messages lost\"\n",
            t.sessions_cut
        );
    }
    for row in &report.drains {
        if let Some(unacked) = row.unacked.filter(|_| row.outcome == "partitioned" || row.peer_timeouts > 0) {
            out += &format!(
                "         {}: gave up {} silent client session(s); {} data frame(s) it sent were never \
                 acknowledged (delivered or lost: the pod cannot tell)\n",
                row.pod, row.peer_timeouts, unacked
            );
        }
    }
    out += "\n";
    if report.ok && t.sessions_cut > 0 {
        out += &format!(
            "PASS: every user recovered on another pod within the liveness bound; nothing known was lost, \
             and loss in the cut sessions is unknown ({:.1}s)\n",
            report.elapsed_seconds
        );
    } else {
        out += &gsd_client::ledger::render_outcome(&report.reasons, report.elapsed_seconds);
    }
    out
}
