//! `gsd-lab bench`: the numbers behind docs/benchmarks.md, measured on
//! loopback with the real server and client processes. Not a test: it
//! measures and reports; the tests assert behaviour.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::time::Instant;

use crate::balancer::Balancer;
use crate::lab::{percentile, scrape, scrape_value};
use crate::proc::{Proc, ProcError, Reaper};

/// gsd-lab bench: drain time against sessions, failover, memory per idle
/// session and steady throughput, on loopback.
#[derive(Debug, Clone, Parser)]
#[command(name = "gsd-lab bench", about, long_about = None)]
pub struct BenchConfig {
    /// Sessions held by one server in the drain scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub drain_sizes: Vec<u32>,
    /// Virtual users in the failover scenario.
    #[arg(long, default_value_t = 10_000)]
    pub failover_users: u32,
    /// Idle sessions in the memory scenario.
    #[arg(long, default_value_t = 10_000)]
    pub memory_sessions: u32,
    /// Busy sessions in the throughput scenario.
    #[arg(long, default_value_t = 1_000)]
    pub throughput_sessions: u32,
    /// Measurement window of the throughput scenario.
    #[arg(long, default_value = "10s", value_parser = gsd_protocol::duration::parse_duration)]
    pub throughput_window: Duration,
    /// RUST_LOG of the servers (and the clients' own events): `info` logs
    /// several lines per session and drain, as in production; `warn` shows
    /// what that logging costs.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Small sizes everywhere: a smoke run for CI.
    #[arg(long)]
    pub quick: bool,
    /// Also count instructions per drained session (server and client)
    /// under valgrind's callgrind, with this many sessions: a figure that
    /// does not depend on machine noise. 0 skips it.
    #[arg(long, default_value_t = 200)]
    pub instructions_sessions: u32,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Which scenarios to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "drain,failover,memory,throughput,instructions")]
    pub scenarios: Vec<Scenario>,
}

/// The benchmark scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Drain time and CPU per drained session against sessions held.
    Drain,
    /// Failover of many users between two servers, in each [`Failover`] variant.
    Failover,
    /// Memory per idle session, server and client.
    Memory,
    /// Frames per server CPU-second in steady state.
    Throughput,
    /// Instructions per drained session under callgrind.
    Instructions,
}

/// How the failover scenario varies the reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failover {
    NoJitter,
    DefaultJitter,
    DrainPacing,
    MakeBeforeBreak,
}

impl Failover {
    const ALL: [Failover; 4] =
        [Failover::NoJitter, Failover::DefaultJitter, Failover::DrainPacing, Failover::MakeBeforeBreak];

    fn label(self) -> &'static str {
        match self {
            Failover::NoJitter => "no jitter",
            Failover::DefaultJitter => "jitter 100ms (default)",
            Failover::DrainPacing => "jitter 100ms + drain pacing 1s",
            Failover::MakeBeforeBreak => "make-before-break",
        }
    }

    /// Extra server and client arguments.
    fn args(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Failover::NoJitter => (&[], &["--reconnect-jitter", "0s"]),
            Failover::DefaultJitter => (&[], &[]),
            Failover::DrainPacing => (&["--drain-pacing", "1s"], &[]),
            Failover::MakeBeforeBreak => (&[], &["--make-before-break"]),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DrainResult {
    pub sessions: u32,
    /// Signal to last session closed, from the server's histogram.
    pub shutdown_seconds: f64,
    /// Signal to process exit, measured by the bench.
    pub exit_seconds: f64,
    pub complete: u64,
    pub incomplete: u64,
    pub messages_drained: u64,
    pub messages_lost: u64,
    /// CPU time (user + system) each process spent from the signal to the
    /// server's last session closed, divided by the sessions drained.
    pub server_cpu_us_per_session: f64,
    pub client_cpu_us_per_session: f64,
}

/// Instructions per drained session, counted by callgrind over the drain
/// window (counting switched on just before the signal, dumped at the
/// server's last close): repeatable for the same build, whatever the
/// machine's load.
#[derive(Debug, Clone, Serialize)]
pub struct InstructionsResult {
    pub sessions: u32,
    pub server_instructions_per_session: f64,
    pub client_instructions_per_session: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    pub variant: String,
    pub users: u32,
    pub reconnects: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// SIGTERM to every user holding a session again.
    pub all_back_seconds: f64,
    pub drains_complete: u64,
    pub drains_incomplete: u64,
    pub messages_lost: u64,
    pub requests_lost: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryResult {
    pub sessions: u32,
    pub server_rss_idle_kib: u64,
    pub server_rss_loaded_kib: u64,
    pub server_kib_per_session: f64,
    pub client_rss_one_kib: u64,
    pub client_rss_loaded_kib: u64,
    pub client_kib_per_session: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    pub sessions: u32,
    pub window_seconds: f64,
    /// Frames the server sent and received in the window.
    pub messages: u64,
    pub messages_per_second: f64,
    /// Server CPU seconds (user + system) in the window.
    pub server_cpu_seconds: f64,
    pub messages_per_cpu_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub cores: usize,
    pub log_level: String,
    pub memory_gib: f64,
    pub drain: Vec<DrainResult>,
    pub failover: Vec<FailoverResult>,
    pub memory: Option<MemoryResult>,
    pub throughput: Option<ThroughputResult>,
    pub instructions: Option<InstructionsResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("{0}")]
    Stuck(String),
}

const SETTLE: Duration = Duration::from_secs(2);

struct Bench {
    exe: PathBuf,
    /// Where callgrind writes, when the processes run under it (the
    /// instructions scenario).
    callgrind: Option<PathBuf>,
    reaper: Reaper,
    /// RUST_LOG of the servers, and of the clients besides their
    /// `reconnected` events (which the bench needs for percentiles).
    log_level: String,
    /// The instruction counts of the last drain run under callgrind.
    instructions: std::sync::Mutex<Option<InstructionsResult>>,
}

/// A server process and its addresses.
struct Server {
    proc: Proc,
    addr: SocketAddr,
    /// The admin port: /metrics.
    admin: SocketAddr,
}

impl Bench {
    async fn server(&self, id: &str, extra: &[&str]) -> Result<Server, BenchError> {
        let mut args = vec!["server", "--bind", "127.0.0.1", "--port", "0", "--admin-port", "0", "--server-id", id];
        args.extend_from_slice(extra);
        // The lifecycle events (listening, drain start and end) always show.
        let filter = format!("{},gsd_server::lifecycle=info", self.log_level);
        let mut proc = self.spawn(&args, &[("RUST_LOG", filter.as_str())], id)?;
        let (addr, admin) = proc.server_addrs(Duration::from_secs(120)).await?;
        Ok(Server { proc, addr, admin })
    }

    async fn client(&self, url: &str, users: u32, extra: &[&str]) -> Result<(Proc, SocketAddr), BenchError> {
        let users = users.to_string();
        // Spread 10,000 connects over a couple of seconds rather than one burst.
        let ramp = format!("{}ms", users.parse::<u64>().unwrap_or(1) / 5);
        let mut args = vec![
            "client",
            "--server-url",
            url,
            "--clients",
            &users,
            "--metrics-bind",
            "127.0.0.1",
            "--metrics-port",
            "0",
            "--ramp-up",
            &ramp,
        ];
        args.extend_from_slice(extra);
        let filter = format!("{},gsd_client::reconnect=debug,gsd_client::lifecycle=info", self.log_level);
        let envs = [("RUST_LOG", filter.as_str())];
        let mut proc = self.spawn(&args, &envs, "client")?;
        let addr = proc.listening_addr(Duration::from_secs(120)).await?;
        Ok((proc, addr))
    }

    /// `exe args`, or `valgrind --tool=callgrind exe args` with counting off
    /// until the drain (see [`Callgrind`]).
    fn spawn(&self, args: &[&str], envs: &[(&str, &str)], name: &str) -> Result<Proc, BenchError> {
        let Some(dir) = &self.callgrind else {
            return Ok(Proc::spawn(&self.exe, args, envs, name, &self.reaper)?);
        };
        let out = format!("--callgrind-out-file={}/{name}.%p", dir.display());
        let exe = self.exe.display().to_string();
        let mut all = vec!["--tool=callgrind", "--instr-atstart=no", out.as_str(), exe.as_str()];
        all.extend_from_slice(args);
        Ok(Proc::spawn(Path::new("valgrind"), &all, envs, name, &self.reaper)?)
    }

    async fn drain(&self, sessions: u32) -> Result<DrainResult, BenchError> {
        let mut server = self.server("bench-drain", &["--push-interval", "1s", "--metrics-linger", "30s"]).await?;
        let url = format!("ws://{}/ws", server.addr);
        // There is no other replica to go to: the users wait 10 s or more
        // before they knock again, so that the drain window holds the drain
        // alone, not also 503s to users reconnecting to the draining server.
        let patient = ["--request-interval", "1s", "--reconnect-jitter", "10s", "--reconnect-backoff-base", "10s"];
        let (mut client, _) = self.client(&url, sessions, &patient).await?;
        wait_value(server.admin, "gsd_server_sessions", sessions as f64, Duration::from_secs(180)).await?;
        tokio::time::sleep(SETTLE).await;
        let callgrind = self.callgrind.clone().map(|dir| Callgrind::start(dir, &[&server.proc, &client]));
        let cpu_before = (cpu_seconds(&server.proc), cpu_seconds(&client));
        let signalled = Instant::now();
        server.proc.signal(Signal::SIGTERM);
        let mut cpu_after = None;
        let last = last_scrape(&mut server, |server| {
            cpu_after = Some((cpu_seconds(server), cpu_seconds(&client)));
            if let Some(callgrind) = &callgrind {
                callgrind.dump();
            }
        })
        .await;
        let exit = signalled.elapsed();
        let totals = stop_client(&mut client).await?;
        let v = |series: &str| gsd_telemetry::sample(&last, series).unwrap_or(f64::NAN);
        let (cpu_server, cpu_client) = cpu_after.unwrap_or((f64::NAN, f64::NAN));
        let per_session = |cpu: f64| cpu * 1e6 / sessions.max(1) as f64;
        if let Some(callgrind) = callgrind {
            self.instructions.lock().unwrap().replace(callgrind.result(sessions)?);
        }
        Ok(DrainResult {
            sessions,
            shutdown_seconds: v("gsd_server_shutdown_duration_seconds_sum"),
            exit_seconds: exit.as_secs_f64(),
            complete: v(r#"gsd_server_drains_total{outcome="complete"}"#) as u64,
            incomplete: v(r#"gsd_server_drains_total{outcome="incomplete"}"#) as u64,
            messages_drained: v("gsd_server_drain_messages_sum") as u64,
            messages_lost: totals.get("messages_lost").copied().unwrap_or(0),
            server_cpu_us_per_session: per_session(cpu_server - cpu_before.0),
            client_cpu_us_per_session: per_session(cpu_client - cpu_before.1),
        })
    }

    async fn failover(&self, variant: Failover, users: u32) -> Result<FailoverResult, BenchError> {
        let (server_args, client_args) = variant.args();
        let mut common = vec!["--push-interval", "1s", "--metrics-linger", "30s"];
        common.extend_from_slice(server_args);
        let mut a = self.server("bench-a", &common).await?;
        let b = self.server("bench-b", &common).await?;
        let balancer = Arc::new(
            Balancer::start("127.0.0.1:0".parse().unwrap(), false, Duration::from_millis(100))
                .await
                .map_err(|e| BenchError::Stuck(format!("balancer: {e}")))?,
        );
        balancer.add("bench-a", a.addr, a.admin);
        balancer.add("bench-b", b.addr, b.admin);
        wait_eligible(&balancer, "bench-a").await?;
        wait_eligible(&balancer, "bench-b").await?;
        let url = format!("ws://{}/ws", balancer.addr);
        let mut args = vec!["--request-interval", "1s"];
        args.extend_from_slice(client_args);
        let (mut client, metrics) = self.client(&url, users, &args).await?;
        wait_value(metrics, "gsd_client_sessions", users as f64, Duration::from_secs(180)).await?;
        tokio::time::sleep(SETTLE).await;

        // A pod deletion with the endpoint already gone: SIGTERM, drain, and
        // the users come back through the balancer to the other replica.
        balancer.remove("bench-a");
        let signalled = Instant::now();
        a.proc.signal(Signal::SIGTERM);
        let mut back = None;
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until {
            let reconnects: f64 =
                scrape_value(metrics, "gsd_client_reconnect_latency_seconds_count").await.unwrap_or(0.0);
            let sessions = scrape_value(metrics, "gsd_client_sessions").await.unwrap_or(0.0);
            if reconnects > 0.0 && sessions >= users as f64 {
                back = Some(signalled.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = last_scrape(&mut a, |_| {}).await;
        let totals = stop_client(&mut client).await?;
        let mut latencies: Vec<f64> = client
            .events("reconnected")
            .iter()
            .map(|e| e["latency_us"].as_u64().unwrap_or(0) as f64 / 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let q = |q: f64| percentile(&latencies, q).unwrap_or(f64::NAN);
        let mut b = b;
        b.proc.signal(Signal::SIGTERM);
        let _ = last_scrape(&mut b, |_| {}).await;
        let t = |k: &str| totals.get(k).copied().unwrap_or(0);
        Ok(FailoverResult {
            variant: variant.label().to_owned(),
            users,
            reconnects: latencies.len() as u64,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_ms: q(1.0),
            all_back_seconds: back.map_or(f64::NAN, |d| d.as_secs_f64()),
            drains_complete: t("drains_complete"),
            drains_incomplete: t("drains_incomplete"),
            messages_lost: t("messages_lost"),
            requests_lost: t("requests_lost"),
        })
    }

    async fn memory(&self, sessions: u32) -> Result<MemoryResult, BenchError> {
        let idle = ["--push-interval", "0s", "--metrics-linger", "0s"];
        let mut server = self.server("bench-memory", &idle).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let server_idle = rss_kib(&server.proc);
        let url = format!("ws://{}/ws", server.addr);
        let (mut one, one_metrics) = self.client(&url, 1, &["--request-interval", "0s"]).await?;
        wait_value(one_metrics, "gsd_client_sessions", 1.0, Duration::from_secs(30)).await?;
        tokio::time::sleep(SETTLE).await;
        let client_one = rss_kib(&one);
        stop_client(&mut one).await?;
        let (mut many, many_metrics) = self.client(&url, sessions, &["--request-interval", "0s"]).await?;
        wait_value(many_metrics, "gsd_client_sessions", sessions as f64, Duration::from_secs(180)).await?;
        tokio::time::sleep(SETTLE).await;
        let server_loaded = rss_kib(&server.proc);
        let client_loaded = rss_kib(&many);
        stop_client(&mut many).await?;
        server.proc.signal(Signal::SIGTERM);
        let _ = last_scrape(&mut server, |_| {}).await;
        let per = |loaded: u64, base: u64, n: u32| loaded.saturating_sub(base) as f64 / n.max(1) as f64;
        Ok(MemoryResult {
            sessions,
            server_rss_idle_kib: server_idle,
            server_rss_loaded_kib: server_loaded,
            server_kib_per_session: per(server_loaded, server_idle, sessions),
            client_rss_one_kib: client_one,
            client_rss_loaded_kib: client_loaded,
            client_kib_per_session: per(client_loaded, client_one, sessions.saturating_sub(1)),
        })
    }

    async fn throughput(&self, sessions: u32, window: Duration) -> Result<ThroughputResult, BenchError> {
        let mut server = self
            .server(
                "bench-throughput",
                &["--push-interval", "10ms", "--processing-latency", "0s", "--metrics-linger", "0s"],
            )
            .await?;
        let url = format!("ws://{}/ws", server.addr);
        let (mut client, _) =
            self.client(&url, sessions, &["--request-interval", "10ms", "--processing-time", "0s"]).await?;
        wait_value(server.admin, "gsd_server_sessions", sessions as f64, Duration::from_secs(120)).await?;
        tokio::time::sleep(SETTLE).await;
        let frames = |body: &str| -> f64 {
            body.lines()
                .filter(|l| {
                    l.starts_with("gsd_server_messages_sent_total{")
                        || l.starts_with("gsd_server_messages_received_total{")
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum()
        };
        let before =
            (frames(&scrape(server.admin).await.unwrap_or_default()), cpu_seconds(&server.proc), Instant::now());
        tokio::time::sleep(window).await;
        let after =
            (frames(&scrape(server.admin).await.unwrap_or_default()), cpu_seconds(&server.proc), Instant::now());
        stop_client(&mut client).await?;
        server.proc.signal(Signal::SIGTERM);
        let _ = last_scrape(&mut server, |_| {}).await;
        let messages = (after.0 - before.0) as u64;
        let seconds = (after.2 - before.2).as_secs_f64();
        let cpu = after.1 - before.1;
        Ok(ThroughputResult {
            sessions,
            window_seconds: seconds,
            messages,
            messages_per_second: messages as f64 / seconds,
            server_cpu_seconds: cpu,
            messages_per_cpu_second: if cpu > 0.0 { messages as f64 / cpu } else { f64::NAN },
        })
    }
}

/// Waits until the balancer sends new connections to `id`.
async fn wait_eligible(balancer: &Balancer, id: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !balancer.eligible(id) {
        if Instant::now() > deadline {
            return Err(BenchError::Stuck(format!("{id} never became ready")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Polls `/metrics` until `series` reaches `want`.
async fn wait_value(addr: SocketAddr, series: &str, want: f64, timeout: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let value = scrape_value(addr, series).await.unwrap_or(0.0);
        if value >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Stuck(format!("{series} reached only {value} of {want} at {addr}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scrapes a terminating server until it exits (a scrape after the drain
/// ends its linger); the first body carrying the shutdown histogram.
/// `at_drain_end` runs once, as soon as that body is seen.
async fn last_scrape(server: &mut Server, mut at_drain_end: impl FnMut(&Proc)) -> String {
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let drained = |body: &str| gsd_telemetry::sample(body, "gsd_server_shutdown_duration_seconds_count") == Some(1.0);
    while server.proc.try_status().is_none() && Instant::now() < deadline {
        if let Some(body) = scrape(server.admin).await {
            if !drained(&last) {
                if drained(&body) {
                    at_drain_end(&server.proc);
                }
                last = body;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.proc.wait_exit(Duration::from_secs(10)).await;
    last
}

/// SIGTERM to a client; the numeric fields of its `client_exit` event.
async fn stop_client(client: &mut Proc) -> Result<BTreeMap<String, u64>, BenchError> {
    client.signal(Signal::SIGTERM);
    let exit = client.wait_for("client_exit", |e| e["message"] == "client_exit", Duration::from_secs(60)).await?;
    client.wait_exit(Duration::from_secs(10)).await;
    Ok(exit.as_object().into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
}

fn proc_file(proc: &Proc, file: &str) -> String {
    std::fs::read_to_string(Path::new("/proc").join(proc.pid().to_string()).join(file)).unwrap_or_default()
}

fn rss_kib(proc: &Proc) -> u64 {
    proc_file(proc, "status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of a process, from /proc/PID/stat.
fn cpu_seconds(proc: &Proc) -> f64 {
    let stat = proc_file(proc, "stat");
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    (ticks(11) + ticks(12)) / per_second
}

/// Processes running under callgrind with counting off: switched on just
/// before the signal, dumped (and switched off) at the drain's end.
struct Callgrind {
    dir: PathBuf,
    /// The server's pid, then the client's.
    pids: Vec<i32>,
}

impl Callgrind {
    fn start(dir: PathBuf, procs: &[&Proc]) -> Callgrind {
        let pids: Vec<i32> = procs.iter().map(|p| p.pid().as_raw()).collect();
        for pid in &pids {
            control(&["-i", "on", &pid.to_string()]);
        }
        Callgrind { dir, pids }
    }

    /// Only the first dump is read; what follows it does not count. (No
    /// "instrumentation off" here: the server may exit at this very scrape,
    /// and a command to a process that is gone waits forever.)
    fn dump(&self) {
        for pid in &self.pids {
            control(&["-d", &pid.to_string()]);
        }
    }

    /// Instructions in each process's first dump, per drained session.
    fn result(&self, sessions: u32) -> Result<InstructionsResult, BenchError> {
        let count = |pid: i32| -> Result<f64, BenchError> {
            let suffix = format!(".{pid}.1");
            let dump = std::fs::read_dir(&self.dir)
                .map_err(|e| BenchError::Stuck(format!("callgrind output: {e}")))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(&suffix))
                .ok_or_else(|| BenchError::Stuck(format!("no callgrind dump for pid {pid}")))?;
            let text = std::fs::read_to_string(&dump).unwrap_or_default();
            text.lines()
                .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .ok_or_else(|| BenchError::Stuck(format!("no totals in {}", dump.display())))
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

fn machine() -> (usize, f64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    (cores, kib / 1024.0 / 1024.0)
}

/// Runs every scenario and returns the results.
pub async fn run(mut config: BenchConfig, exe: PathBuf, reaper: Reaper) -> Result<BenchReport, BenchError> {
    if config.quick {
        config.drain_sizes = vec![50, 200];
        config.failover_users = 200;
        config.memory_sessions = 500;
        config.throughput_sessions = 100;
        config.throughput_window = Duration::from_secs(3);
        config.instructions_sessions = 20;
    }
    let wanted = |s: Scenario| config.scenarios.contains(&s);
    let bench = Bench {
        exe: exe.clone(),
        callgrind: None,
        reaper: reaper.clone(),
        log_level: config.log_level.clone(),
        instructions: Default::default(),
    };
    let (cores, memory_gib) = machine();
    let mut drain = Vec::new();
    if wanted(Scenario::Drain) {
        for &n in &config.drain_sizes {
            eprintln!("bench: drain with {n} sessions");
            drain.push(bench.drain(n).await?);
        }
    }
    let mut failover = Vec::new();
    if wanted(Scenario::Failover) {
        let room = crate::balancer::capacity(512) / 100 * 100;
        if u64::from(config.failover_users) > room {
            eprintln!(
                "bench: {} users need {} open files for the Service stand-in; this machine allows fewer \
                 (ulimit -n), so failover is measured with {room} users",
                config.failover_users,
                u64::from(config.failover_users) * 2 + 512
            );
            config.failover_users = room as u32;
        }
        for variant in Failover::ALL {
            eprintln!("bench: failover of {} users, {}", config.failover_users, variant.label());
            failover.push(bench.failover(variant, config.failover_users).await?);
        }
    }
    let mut memory = None;
    if wanted(Scenario::Memory) {
        eprintln!("bench: memory at {} idle sessions", config.memory_sessions);
        memory = Some(bench.memory(config.memory_sessions).await?);
    }
    let mut throughput = None;
    if wanted(Scenario::Throughput) {
        eprintln!("bench: throughput of {} sessions", config.throughput_sessions);
        throughput = Some(bench.throughput(config.throughput_sessions, config.throughput_window).await?);
    }
    let mut instructions = None;
    if wanted(Scenario::Instructions) && config.instructions_sessions > 0 {
        let sessions = config.instructions_sessions;
        eprintln!("bench: instructions per drained session under callgrind ({sessions} sessions)");
        let dir = std::env::temp_dir().join(format!("gsd-bench-callgrind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::Stuck(format!("{}: {e}", dir.display())))?;
        let counting = Bench { callgrind: Some(dir.clone()), ..bench };
        counting.drain(sessions).await?;
        instructions = counting.instructions.lock().unwrap().take();
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(BenchReport {
        cores,
        log_level: config.log_level,
        memory_gib,
        drain,
        failover,
        memory,
        throughput,
        instructions,
    })
}

/// The results as the Markdown tables of docs/benchmarks.md.
pub fn render(r: &BenchReport) -> String {
    let mut out = format!("Machine: {} cores, {:.1} GiB. Log level: {}.\n\n", r.cores, r.memory_gib, r.log_level);
    out += "### Drain time against sessions (one server, no preStop)\n\n";
    out += "| sessions | shutdown (signal to last close) | signal to exit | complete | incomplete | messages drained | lost | server CPU per session | client CPU per session |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for d in &r.drain {
        out += &format!(
            "| {} | {:.3} s | {:.3} s | {} | {} | {} | {} | {:.0} µs | {:.0} µs |\n",
            d.sessions,
            d.shutdown_seconds,
            d.exit_seconds,
            d.complete,
            d.incomplete,
            d.messages_drained,
            d.messages_lost,
            d.server_cpu_us_per_session,
            d.client_cpu_us_per_session
        );
    }
    if let Some(i) = &r.instructions {
        out += &format!(
            "\nInstructions per drained session (callgrind, {} sessions, drain window): server {:.0}, client {:.0}.\n",
            i.sessions, i.server_instructions_per_session, i.client_instructions_per_session
        );
    }
    if !r.failover.is_empty() {
        out += "\n### Failover (two servers behind the Service stand-in, one terminated)\n\n";
        out += "| variant | users | reconnects | p50 | p99 | max | all back after | drains complete / incomplete | lost (messages / requests) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for f in &r.failover {
            out += &format!(
                "| {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.3} s | {} / {} | {} / {} |\n",
                f.variant,
                f.users,
                f.reconnects,
                f.p50_ms,
                f.p99_ms,
                f.max_ms,
                f.all_back_seconds,
                f.drains_complete,
                f.drains_incomplete,
                f.messages_lost,
                f.requests_lost
            );
        }
    }
    if let Some(m) = &r.memory {
        out += "\n### Memory per idle session\n\n";
        out += "| sessions | server RSS idle | server RSS loaded | server per session | client RSS (1 user) | client RSS loaded | client per session |\n|---:|---:|---:|---:|---:|---:|---:|\n";
        out += &format!(
            "| {} | {} KiB | {} KiB | {:.1} KiB | {} KiB | {} KiB | {:.1} KiB |\n",
            m.sessions,
            m.server_rss_idle_kib,
            m.server_rss_loaded_kib,
            m.server_kib_per_session,
            m.client_rss_one_kib,
            m.client_rss_loaded_kib,
            m.client_kib_per_session
        );
    }
    if let Some(t) = &r.throughput {
        out += "\n### Steady throughput (one server)\n\n";
        out += "| sessions | window | frames (sent + received) | frames/s | server CPU | frames per CPU-second |\n|---:|---:|---:|---:|---:|---:|\n";
        out += &format!(
            "| {} | {:.1} s | {} | {:.0} | {:.2} s | {:.0} |\n",
            t.sessions,
            t.window_seconds,
            t.messages,
            t.messages_per_second,
            t.server_cpu_seconds,
            t.messages_per_cpu_second
        );
    }
    out
}
