//! `gsd-lab bench`: the numbers behind docs/benchmarks.md, measured on
//! loopback with the real server and client processes. Not a test: it
//! measures and reports; the tests assert behaviour.

mod callgrind;
mod report;

use gsd_telemetry::names;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::time::Instant;

use crate::harness::gsd::percentile;
use crate::harness::metrics::{scrape, scrape_until, wait_value};
use crate::harness::{Balancer, Client, Error, Launcher, Reaper, Server};
use callgrind::Callgrind;
pub use report::{
    BenchReport, DrainResult, Failover, FailoverResult, InstructionsResult, MemoryResult, ThroughputResult, render,
};

/// gsd-lab bench: drain time against sessions, failover, memory per idle
/// session and steady throughput, on loopback.
#[derive(Debug, Clone, Args)]
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

/// How each failover variant runs its server and its client.
impl Failover {
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

/// How long traffic runs before a measurement, for the processes to reach
/// a steady state.
const SETTLE: Duration = Duration::from_secs(2);

/// How long a bench process may take to listen (10,000 users under
/// callgrind are slow).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a terminating server is scraped before the bench gives up on it.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// What every scenario starts its processes with.
struct Bench {
    /// Starts gsd-lab's server and client, under callgrind in the
    /// instructions scenario.
    launcher: Launcher,
    /// Where callgrind writes, when the processes run under it (the
    /// instructions scenario).
    callgrind: Option<PathBuf>,
    /// RUST_LOG of the servers, and of the clients besides their
    /// `reconnected` events (which the bench needs for percentiles).
    log_level: String,
    /// The instruction counts of the last drain run under callgrind.
    instructions: std::sync::Mutex<Option<InstructionsResult>>,
}

impl Bench {
    /// A server whose lifecycle events (listening, drain start and end)
    /// show whatever the log level.
    async fn server(&self, id: &str, extra: &[&str]) -> Result<Server, Error> {
        let filter = format!("{},gsd_server::lifecycle=info", self.log_level);
        Ok(self.launcher.server(id, "127.0.0.1", extra, &[("RUST_LOG", filter.as_str())]).await?)
    }

    /// A client with `users` users whose connects are spread over
    /// `users / 5` ms (10,000 over two seconds rather than one burst).
    async fn client(&self, url: &str, users: u32, extra: &[&str]) -> Result<Client, Error> {
        let ramp = format!("{}ms", users / 5);
        let mut args = vec!["--ramp-up", &ramp];
        args.extend_from_slice(extra);
        let filter = format!("{},gsd_client::reconnect=debug,gsd_client::lifecycle=info", self.log_level);
        Ok(self.launcher.client("client", url, users, &args, &[("RUST_LOG", filter.as_str())]).await?)
    }

    async fn drain(&self, sessions: u32) -> Result<DrainResult, Error> {
        let mut server = self.server("bench-drain", &["--push-interval", "1s", "--metrics-linger", "30s"]).await?;
        // There is no other replica to go to: the users wait 10 s or more
        // before they knock again, so that the drain window holds the drain
        // alone, not also 503s to users reconnecting to the draining server.
        let patient = ["--request-interval", "1s", "--reconnect-jitter", "10s", "--reconnect-backoff-base", "10s"];
        let mut client = self.client(&server.url(), sessions, &patient).await?;
        wait_value(server.admin, names::SERVER_SESSIONS, sessions as f64, Duration::from_secs(180)).await?;
        tokio::time::sleep(SETTLE).await;
        let callgrind = self.callgrind.clone().map(|dir| Callgrind::start(dir, &[&server.proc, &client.proc]));
        let cpu_before = (server.proc.cpu_seconds(), client.proc.cpu_seconds());
        let signalled = Instant::now();
        server.proc.signal(Signal::SIGTERM);
        // CPU and instructions are read at the drain's end, not the exit's.
        let mut cpu_after = None;
        let seen = server
            .scrape_until_exit(Instant::now() + STOP_TIMEOUT, Duration::from_millis(5), |server| {
                cpu_after = Some((server.cpu_seconds(), client.proc.cpu_seconds()));
                if let Some(callgrind) = &callgrind {
                    callgrind.dump();
                }
            })
            .await;
        server.proc.wait_exit(Duration::from_secs(10)).await;
        let exit = signalled.elapsed();
        let totals = client.stop(Duration::from_secs(60)).await?;
        let v = |series: String| gsd_telemetry::sample(seen.account().unwrap_or_default(), series).unwrap_or(f64::NAN);
        let (cpu_server, cpu_client) = cpu_after.unwrap_or((f64::NAN, f64::NAN));
        let per_session = |cpu: f64| cpu * 1e6 / sessions.max(1) as f64;
        if let Some(callgrind) = callgrind {
            self.instructions.lock().unwrap().replace(callgrind.result(sessions)?);
        }
        Ok(DrainResult {
            sessions,
            shutdown_seconds: v(names::SERVER_SHUTDOWN_DURATION_SECONDS_SUM.at(&[])),
            exit_seconds: exit.as_secs_f64(),
            complete: v(names::SERVER_DRAINS.at(&[("outcome", "complete")])) as u64,
            incomplete: v(names::SERVER_DRAINS.at(&[("outcome", "incomplete")])) as u64,
            messages_drained: v(names::SERVER_DRAIN_MESSAGES_SUM.at(&[])) as u64,
            messages_lost: totals.n("messages_lost"),
            server_cpu_us_per_session: per_session(cpu_server - cpu_before.0),
            client_cpu_us_per_session: per_session(cpu_client - cpu_before.1),
        })
    }

    async fn failover(&self, variant: Failover, users: u32) -> Result<FailoverResult, Error> {
        let (server_args, client_args) = variant.args();
        let mut common = vec!["--push-interval", "1s", "--metrics-linger", "30s"];
        common.extend_from_slice(server_args);
        let mut a = self.server("bench-a", &common).await?;
        let mut b = self.server("bench-b", &common).await?;
        let listen = "127.0.0.1:0".parse().unwrap();
        let balancer = Balancer::start(listen, false, Duration::from_millis(100))
            .await
            .map_err(|source| Error::Listen { addr: listen, source })?;
        for server in [&a, &b] {
            balancer.add(server.id(), server.addr, server.admin);
            balancer.wait_ready(server.id(), Duration::from_secs(60)).await?;
        }
        let mut args = vec!["--request-interval", "1s"];
        args.extend_from_slice(client_args);
        let mut client = self.client(&balancer.url(), users, &args).await?;
        wait_value(client.metrics, names::CLIENT_SESSIONS, users as f64, Duration::from_secs(180)).await?;
        tokio::time::sleep(SETTLE).await;

        // A pod deletion with the endpoint already gone: SIGTERM, drain, and
        // the users come back through the balancer to the other replica.
        balancer.remove(a.id());
        let signalled = Instant::now();
        a.proc.signal(Signal::SIGTERM);
        let all_back = |body: &str| {
            let value = |series: names::Metric| gsd_telemetry::sample(body, series).unwrap_or(0.0);
            value(names::CLIENT_RECONNECT_LATENCY_SECONDS_COUNT) > 0.0 && value(names::CLIENT_SESSIONS) >= users as f64
        };
        let until = Instant::now() + Duration::from_secs(120);
        let body = scrape_until(client.metrics, until, Duration::from_millis(10), all_back).await;
        let back = body.filter(|b| all_back(b)).map(|_| signalled.elapsed());
        a.finish(STOP_TIMEOUT).await;
        let totals = client.stop(Duration::from_secs(60)).await?;
        let mut latencies: Vec<f64> = client.reconnects().iter().map(|r| r.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        let q = |percent: u64| percentile(&latencies, percent).unwrap_or(f64::NAN);
        b.stop(STOP_TIMEOUT).await;
        Ok(FailoverResult {
            variant,
            users,
            reconnects: latencies.len() as u64,
            p50_ms: q(50),
            p99_ms: q(99),
            max_ms: q(100),
            all_back_seconds: back.map_or(f64::NAN, |d| d.as_secs_f64()),
            drains_complete: totals.n("drains_complete"),
            drains_incomplete: totals.n("drains_incomplete"),
            messages_lost: totals.n("messages_lost"),
            requests_lost: totals.n("requests_lost"),
        })
    }

    async fn memory(&self, sessions: u32) -> Result<MemoryResult, Error> {
        let idle = ["--push-interval", "0s", "--metrics-linger", "0s"];
        let mut server = self.server("bench-memory", &idle).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let server_idle = server.proc.rss_kib();
        let mut one = self.client(&server.url(), 1, &["--request-interval", "0s"]).await?;
        wait_value(one.metrics, names::CLIENT_SESSIONS, 1.0, Duration::from_secs(30)).await?;
        tokio::time::sleep(SETTLE).await;
        let client_one = one.proc.rss_kib();
        one.stop(Duration::from_secs(60)).await?;
        let mut many = self.client(&server.url(), sessions, &["--request-interval", "0s"]).await?;
        wait_value(many.metrics, names::CLIENT_SESSIONS, sessions as f64, Duration::from_secs(180)).await?;
        tokio::time::sleep(SETTLE).await;
        let server_loaded = server.proc.rss_kib();
        let client_loaded = many.proc.rss_kib();
        many.stop(Duration::from_secs(60)).await?;
        server.stop(STOP_TIMEOUT).await;
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

    async fn throughput(&self, sessions: u32, window: Duration) -> Result<ThroughputResult, Error> {
        let mut server = self
            .server(
                "bench-throughput",
                &["--push-interval", "10ms", "--processing-latency", "0s", "--metrics-linger", "0s"],
            )
            .await?;
        let mut client =
            self.client(&server.url(), sessions, &["--request-interval", "10ms", "--processing-time", "0s"]).await?;
        wait_value(server.admin, names::SERVER_SESSIONS, sessions as f64, Duration::from_secs(120)).await?;
        tokio::time::sleep(SETTLE).await;
        let frames = |body: &str| -> f64 {
            body.lines()
                .filter(|l| {
                    [names::SERVER_MESSAGES_SENT, names::SERVER_MESSAGES_RECEIVED]
                        .iter()
                        .any(|m| l.strip_prefix(m.name()).is_some_and(|rest| rest.starts_with('{')))
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum()
        };
        let before =
            (frames(&scrape(server.admin).await.unwrap_or_default()), server.proc.cpu_seconds(), Instant::now());
        tokio::time::sleep(window).await;
        let after =
            (frames(&scrape(server.admin).await.unwrap_or_default()), server.proc.cpu_seconds(), Instant::now());
        client.stop(Duration::from_secs(60)).await?;
        server.stop(STOP_TIMEOUT).await;
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

    /// Instructions per drained session: a drain of `sessions` with both
    /// processes under callgrind, its output in a directory of its own.
    async fn instructions(&self, sessions: u32) -> Result<Option<InstructionsResult>, Error> {
        eprintln!("bench: instructions per drained session under callgrind ({sessions} sessions)");
        let dir = std::env::temp_dir().join(format!("gsd-bench-callgrind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::Stuck(format!("{}: {e}", dir.display())))?;
        // Counting off until the drain (see [`Callgrind`]); one output file
        // per process, named by its pid.
        let out = format!("--callgrind-out-file={}/callgrind.%p", dir.display());
        let valgrind = ["--tool=callgrind", "--instr-atstart=no", out.as_str()];
        let counting = Bench {
            launcher: self.launcher.wrapped(Path::new("valgrind"), &valgrind),
            callgrind: Some(dir.clone()),
            log_level: self.log_level.clone(),
            instructions: Default::default(),
        };
        counting.drain(sessions).await?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(counting.instructions.lock().unwrap().take())
    }
}

/// The cores and the memory (GiB) of this machine, for the report.
fn machine() -> (usize, f64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    (cores, kib / 1024.0 / 1024.0)
}

/// Runs every scenario asked for and returns the results.
pub async fn run(mut config: BenchConfig, exe: PathBuf, reaper: Reaper) -> Result<BenchReport, Error> {
    if config.quick {
        config.shrink();
    }
    let wanted = |s: Scenario| config.scenarios.contains(&s);
    let bench = Bench {
        launcher: Launcher::new(&exe, reaper, START_TIMEOUT),
        callgrind: None,
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
        let users = config.failover_users_here();
        for variant in Failover::ALL {
            eprintln!("bench: failover of {users} users, {}", variant.label());
            failover.push(bench.failover(variant, users).await?);
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
        instructions = bench.instructions(config.instructions_sessions).await?;
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

impl BenchConfig {
    /// `--quick`: small sizes everywhere.
    fn shrink(&mut self) {
        self.drain_sizes = vec![50, 200];
        self.failover_users = 200;
        self.memory_sessions = 500;
        self.throughput_sessions = 100;
        self.throughput_window = Duration::from_secs(3);
        self.instructions_sessions = 20;
    }

    /// `--failover-users`, or fewer if the Service stand-in in this process
    /// cannot proxy that many (said on stderr).
    fn failover_users_here(&self) -> u32 {
        let room = crate::harness::service::capacity(512) / 100 * 100;
        let users = u64::from(self.failover_users);
        if users <= room {
            return self.failover_users;
        }
        eprintln!(
            "bench: {users} users need {} open files for the Service stand-in; this machine allows fewer \
             (ulimit -n), so failover is measured with {room} users",
            users * 2 + 512
        );
        room as u32
    }
}
