//! `gsd-lab bench`: the numbers behind docs/benchmarks.md, measured on
//! loopback with the real server and client processes. Not a test: it
//! measures and reports; the tests assert behaviour.

mod callgrind;
mod report;
mod strace;

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
    BenchReport, DrainResult, Failover, FailoverResult, InstructionsResult, MemoryResult, ResumeResult, SyscallsResult,
    ThroughputResult, render,
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
    /// Virtual users in the resume scenario: every session cut at once
    /// (a reset of both ends) and resumed.
    #[arg(long, default_value_t = 10_000)]
    pub resume_users: u32,
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
    /// Also count system calls per drained session (server and client)
    /// with `strace -c -f` attached, with this many sessions. 0 skips it.
    #[arg(long, default_value_t = 2000)]
    pub syscalls_sessions: u32,
    /// The gsd-lab whose server and client are measured (default: this
    /// one): another build, to compare it with this one under the same
    /// bench (docs/benchmarks.md, "before and after").
    #[arg(long, value_name = "GSD_LAB")]
    pub measure: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Which scenarios to run, comma-separated (default: all).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "drain,failover,memory,throughput,resume,instructions,syscalls"
    )]
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
    /// Every session of one server cut at once and resumed: latency, CPU
    /// per resumed session, memory with every session parked.
    Resume,
    /// Instructions per drained session under callgrind.
    Instructions,
    /// System calls per drained session under strace.
    Syscalls,
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

/// Descriptors a server or client process needs besides its sessions
/// (listeners, the metrics port, the runtime, the logs), with room to spare.
const DESCRIPTOR_RESERVE: u64 = 200;

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
        let rss_idle = server.proc.rss_kib();
        // There is no other replica to go to: the users wait 10 s or more
        // before they knock again, so that the drain window holds the drain
        // alone, not also 503s to users reconnecting to the draining server.
        let patient = ["--request-interval", "1s", "--reconnect-jitter", "10s", "--reconnect-backoff-base", "10s"];
        let mut client = self.client(&server.url(), sessions, &patient).await?;
        wait_value(server.admin, names::SERVER_SESSIONS, sessions as f64, Duration::from_secs(180)).await?;
        tokio::time::sleep(SETTLE).await;
        let rss_loaded = server.proc.rss_kib();
        let callgrind = self.callgrind.clone().map(|dir| Callgrind::start(dir, &[&server.proc, &client.proc]));
        let cpu_before = (server.proc.cpu_seconds(), client.proc.cpu_seconds());
        let signalled = Instant::now();
        server.proc.signal(Signal::SIGTERM);
        // CPU and instructions are read at the drain's end, not the exit's.
        // The end is the server's `drain_end` line, not a scrape: scraping
        // /metrics every few ms would count the bench's own requests (a
        // third of the instructions under callgrind, where the drain is slow).
        server.proc.wait_event("drain_end", STOP_TIMEOUT).await?;
        let (cpu_server, cpu_client) = (server.proc.cpu_seconds(), client.proc.cpu_seconds());
        if let Some(callgrind) = &callgrind {
            callgrind.dump();
        }
        let seen = server.scrape_until_exit(Instant::now() + STOP_TIMEOUT, Duration::from_millis(5), |_| {}).await;
        let client_cpu_at_exit = client.proc.cpu_seconds();
        let server_cpu_at_exit = server.proc.cpu_at_exit().unwrap_or(f64::NAN);
        server.proc.wait_exit(Duration::from_secs(10)).await;
        let exit = signalled.elapsed();
        let totals = client.stop(Duration::from_secs(60)).await?;
        let v = |series: String| gsd_telemetry::sample(seen.account().unwrap_or_default(), series).unwrap_or(f64::NAN);
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
            server_exit_cpu_us_per_session: per_session(server_cpu_at_exit - cpu_before.0),
            client_exit_cpu_us_per_session: per_session(client_cpu_at_exit - cpu_before.1),
            server_rss_kib: rss_loaded,
            server_kib_per_session: rss_loaded.saturating_sub(rss_idle) as f64 / sessions.max(1) as f64,
        })
    }

    /// System calls per drained session: `strace -c -f` attached to the
    /// server and the client from just before the signal to the server's
    /// exit (the client's count stops there too). Requests are off, so that
    /// the window holds the drain alone; the server lingers for no scrape
    /// and is not scraped, so that no request of the bench's is counted.
    async fn syscalls(&self, sessions: u32) -> Result<SyscallsResult, Error> {
        eprintln!("bench: system calls per drained session under strace ({sessions} sessions)");
        let mut server = self.server("bench-syscalls", &["--push-interval", "1s", "--metrics-linger", "0s"]).await?;
        let patient = ["--request-interval", "0s", "--reconnect-jitter", "600s", "--reconnect-backoff-base", "10s"];
        let mut client = self.client(&server.url(), sessions, &patient).await?;
        wait_value(server.admin, names::SERVER_SESSIONS, sessions as f64, Duration::from_secs(180)).await?;
        tokio::time::sleep(SETTLE).await;
        let dir = std::env::temp_dir();
        let traced = (strace::Traced::attach(&dir, &server.proc)?, strace::Traced::attach(&dir, &client.proc)?);
        server.proc.signal(Signal::SIGTERM);
        let exited = server.proc.wait_exit(STOP_TIMEOUT).await;
        // The client's last close replies follow the server's last close.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (server_calls, client_calls) = (traced.0.finish()?, traced.1.finish()?);
        if exited.is_none() {
            return Err(Error::Stuck(format!("the server did not exit within {STOP_TIMEOUT:?} of SIGTERM")));
        }
        let totals = client.stop(Duration::from_secs(60)).await?;
        let per = |calls: &strace::Syscalls| -> Vec<(String, f64)> {
            let mut each: Vec<(String, f64)> =
                calls.0.iter().map(|(name, n)| (name.clone(), *n as f64 / sessions.max(1) as f64)).collect();
            each.sort_by(|a, b| b.1.total_cmp(&a.1));
            each
        };
        Ok(SyscallsResult {
            sessions,
            drains_complete: totals.n("drains_complete"),
            messages_lost: totals.n("messages_lost"),
            server_per_session: server_calls.total() as f64 / sessions.max(1) as f64,
            client_per_session: client_calls.total() as f64 / sessions.max(1) as f64,
            server: per(&server_calls),
            client: per(&client_calls),
        })
    }

    async fn failover(&self, variant: Failover, users: u32) -> Result<FailoverResult, Error> {
        let (server_args, client_args) = variant.args();
        let mut common = vec!["--push-interval", "1s", "--metrics-linger", "30s"];
        common.extend_from_slice(server_args);
        let mut a = self.server("bench-a", &common).await?;
        let mut b = self.server("bench-b", &common).await?;
        let balancer = service(&[&a, &b]).await?;
        let mut args = vec!["--request-interval", "1s"];
        args.extend_from_slice(client_args);
        let mut client = self.client(&balancer.url(), users, &args).await?;
        wait_value(client.metrics, names::CLIENT_SESSIONS, users as f64, Duration::from_secs(180)).await?;
        tokio::time::sleep(SETTLE).await;

        // A pod deletion with the endpoint already gone: SIGTERM, drain, and
        // the users come back through the balancer to the other replica.
        // Back means: as many reconnects since the signal as `a` held
        // sessions, and every user in a session. (Only "a reconnect and
        // every user in a session" once read one run as back 27 ms after
        // the signal, when a few users had reconnected before it.)
        let value = |body: &str, series: names::Metric| gsd_telemetry::sample(body, series).unwrap_or(0.0);
        // The reconnects first: a session of `a` that ends between the two
        // scrapes then counts one reconnect too many (back a little early),
        // not one too few (never back).
        let before =
            value(&scrape(client.metrics).await.unwrap_or_default(), names::CLIENT_RECONNECT_LATENCY_SECONDS_COUNT);
        let held = value(&scrape(a.admin).await.unwrap_or_default(), names::SERVER_SESSIONS);
        if before > 0.0 {
            eprintln!("bench: {before} reconnects before the signal (sessions ended before any server was stopped)");
        }
        balancer.remove(a.id());
        let signalled = Instant::now();
        a.proc.signal(Signal::SIGTERM);
        let all_back = |body: &str| {
            value(body, names::CLIENT_RECONNECT_LATENCY_SECONDS_COUNT) - before >= held.max(1.0)
                && value(body, names::CLIENT_SESSIONS) >= users as f64
        };
        let until = Instant::now() + Duration::from_secs(120);
        let body = scrape_until(client.metrics, until, Duration::from_millis(10), all_back).await;
        let back = body.filter(|b| all_back(b)).map(|_| signalled.elapsed());
        a.finish(STOP_TIMEOUT).await;
        let totals = client.stop(Duration::from_secs(60)).await?;
        let (reconnects, p50_ms, p99_ms, max_ms) = quantiles(client.reconnects().iter().map(|r| r.latency_ms));
        b.stop(STOP_TIMEOUT).await;
        Ok(FailoverResult {
            variant,
            users,
            reconnects,
            p50_ms,
            p99_ms,
            max_ms,
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

    /// Session resume at scale: `users` sessions on one server behind the
    /// Service stand-in, every connection reset at once (both ends, as a
    /// proxy that restarts), and every user resumed on the same server.
    /// Then the same cut with the endpoint out of the Service, so that every
    /// session stays parked while the server's memory is read, and back in:
    /// resumed again.
    async fn resume(&self, users: u32) -> Result<ResumeResult, Error> {
        let args = ["--push-interval", "1s", "--metrics-linger", "0s", "--resume-window", "120s"];
        let mut server = self.server("bench-resume", &args).await?;
        let balancer = service(&[&server]).await?;
        let (id, addr, admin) = (server.id().to_owned(), server.addr, server.admin);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_idle = server.proc.rss_kib();
        let mut client = self.client(&balancer.url(), users, &["--request-interval", "1s"]).await?;
        wait_value(client.metrics, names::CLIENT_SESSIONS, users as f64, Duration::from_secs(180)).await?;
        tokio::time::sleep(SETTLE).await;
        let rss_live = server.proc.rss_kib();

        // Every session reset at once; the users come back through the
        // stand-in to the same server and ask for their session.
        let resumed = |n: u32| {
            move |body: &str| {
                let value = |series: names::Metric| gsd_telemetry::sample(body, series).unwrap_or(0.0);
                value(names::CLIENT_SESSIONS_RESUMED) >= n as f64 && value(names::CLIENT_SESSIONS) >= users as f64
            }
        };
        let seen_before = client.reconnects().len();
        let cpu_before = (server.proc.cpu_seconds(), client.proc.cpu_seconds());
        let cut = Instant::now();
        balancer.reset(&id);
        let until = Instant::now() + Duration::from_secs(120);
        let body = scrape_until(client.metrics, until, Duration::from_millis(10), resumed(users)).await;
        let all_resumed = body.filter(|b| resumed(users)(b)).map(|_| cut.elapsed());
        let cpu = (server.proc.cpu_seconds() - cpu_before.0, client.proc.cpu_seconds() - cpu_before.1);
        // The log lines come after the counters: every user's, or what
        // came within the bound (the count says which).
        let logged = seen_before + users as usize;
        let _ = client.proc.wait_count("reconnected", logged, Duration::from_secs(30)).await;
        let (resumed_first, p50_ms, p99_ms, max_ms) =
            quantiles(client.reconnects()[seen_before..].iter().map(|r| r.latency_ms));

        // The same cut with the endpoint out of the Service: nobody can ask
        // yet, so every session is parked at once.
        balancer.remove(&id);
        balancer.reset(&id);
        let parked = wait_value(admin, names::SERVER_SESSIONS_PARKED, users as f64, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_parked = server.proc.rss_kib();
        balancer.forget(&id);
        balancer.add(&id, addr, admin);
        balancer.wait_ready(&id, Duration::from_secs(60)).await?;
        let until = Instant::now() + Duration::from_secs(120);
        let again = scrape_until(client.metrics, until, Duration::from_millis(50), resumed(2 * users)).await;
        let again = again.is_some_and(|b| resumed(2 * users)(&b));
        // The requests re-sent on the resumed sessions are answered before
        // the client stops (one still waiting at its exit counts lost).
        tokio::time::sleep(SETTLE).await;
        let totals = client.stop(Duration::from_secs(60)).await?;
        // Rare at 9,700 users and not explained yet (docs/benchmarks.md):
        // the users' own ledgers, for whoever looks into it.
        let short: Vec<_> = client.proc.events("ledger").into_iter().filter(|e| e["requests_lost"] != 0).collect();
        if let Some(first) = short.first() {
            eprintln!("bench: resume: {} user(s) counted requests lost; the first's ledger: {first}", short.len());
        }
        let account = server.stop(STOP_TIMEOUT).await;
        let v =
            |series: String| gsd_telemetry::sample(account.account().unwrap_or_default(), series).unwrap_or(f64::NAN);
        let per = |cpu: f64| cpu * 1e6 / users.max(1) as f64;
        Ok(ResumeResult {
            users,
            resumed_first,
            p50_ms,
            p99_ms,
            max_ms,
            all_resumed_seconds: all_resumed.map_or(f64::NAN, |d| d.as_secs_f64()),
            server_cpu_us_per_resume: per(cpu.0),
            client_cpu_us_per_resume: per(cpu.1),
            server_rss_idle_kib: rss_idle,
            server_rss_live_kib: rss_live,
            server_rss_parked_kib: if parked.is_ok() { rss_parked } else { 0 },
            all_parked: parked.is_ok(),
            resumed_again: again,
            sessions_resumed: totals.n("sessions_resumed"),
            sessions_cut: totals.n("sessions_cut"),
            frames_replayed: v(names::SERVER_FRAMES_REPLAYED.at(&[])) as u64,
            messages_lost: totals.n("messages_lost"),
            requests_lost: totals.n("requests_lost"),
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
        if std::env::var_os("GSD_BENCH_KEEP_CALLGRIND").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(counting.instructions.lock().unwrap().take())
    }
}

/// The Service stand-in on loopback in front of `servers`, each ready.
async fn service(servers: &[&Server]) -> Result<Balancer, Error> {
    let listen = "127.0.0.1:0".parse().unwrap();
    let balancer = Balancer::start(listen, false, Duration::from_millis(100))
        .await
        .map_err(|source| Error::Listen { addr: listen, source })?;
    for server in servers {
        balancer.add(server.id(), server.addr, server.admin);
        balancer.wait_ready(server.id(), Duration::from_secs(60)).await?;
    }
    Ok(balancer)
}

/// How many latencies (ms), and their p50, p99 and largest (NaN for none).
fn quantiles(latencies: impl Iterator<Item = f64>) -> (u64, f64, f64, f64) {
    let mut sorted: Vec<f64> = latencies.collect();
    sorted.sort_by(f64::total_cmp);
    let q = |percent: u64| percentile(&sorted, percent).unwrap_or(f64::NAN);
    (sorted.len() as u64, q(50), q(99), q(100))
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
        // One server holds every session, one client opens them: each
        // needs a descriptor per session in one process.
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
        if let Some(&n) = config.drain_sizes.iter().find(|&&n| u64::from(n) + DESCRIPTOR_RESERVE > hard) {
            return Err(Error::Stuck(format!(
                "a drain of {n} sessions needs {} open files in the server process and as many in the \
                 client's; the hard limit here is {hard} (ulimit -Hn), and raising it needs \
                 CAP_SYS_RESOURCE: measure at most {} sessions here",
                u64::from(n) + DESCRIPTOR_RESERVE,
                hard.saturating_sub(DESCRIPTOR_RESERVE)
            )));
        }
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
    let mut resume = None;
    if wanted(Scenario::Resume) {
        let users = config.users_here(config.resume_users, "resume");
        eprintln!("bench: {users} sessions cut at once and resumed");
        resume = Some(bench.resume(users).await?);
    }
    let mut instructions = None;
    if wanted(Scenario::Instructions) && config.instructions_sessions > 0 {
        instructions = bench.instructions(config.instructions_sessions).await?;
    }
    let mut syscalls = None;
    if wanted(Scenario::Syscalls) && config.syscalls_sessions > 0 {
        syscalls = Some(bench.syscalls(config.syscalls_sessions).await?);
    }
    Ok(BenchReport {
        cores,
        log_level: config.log_level,
        memory_gib,
        drain,
        failover,
        memory,
        throughput,
        resume,
        instructions,
        syscalls,
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
        self.resume_users = 200;
        self.instructions_sessions = 20;
        self.syscalls_sessions = 20;
    }

    /// `--failover-users`, or fewer if the Service stand-in in this process
    /// cannot proxy that many (said on stderr).
    fn failover_users_here(&self) -> u32 {
        self.users_here(self.failover_users, "failover")
    }

    /// `users`, or fewer if the Service stand-in in this process cannot
    /// proxy that many (said on stderr, naming the `scenario`).
    fn users_here(&self, users: u32, scenario: &str) -> u32 {
        let room = crate::harness::service::capacity(512) / 100 * 100;
        if u64::from(users) <= room {
            return users;
        }
        eprintln!(
            "bench: {users} users need {} open files for the Service stand-in; this machine allows fewer \
             (ulimit -n), so {scenario} is measured with {room} users",
            u64::from(users) * 2 + 512
        );
        room as u32
    }
}
