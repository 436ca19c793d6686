//! The bench's results: one struct per scenario (serialised as `--json`)
//! and the Markdown tables docs/benchmarks.md is made of.

use serde::Serialize;

/// One server drained with `sessions` sessions and no preStop.
#[derive(Debug, Clone, Serialize)]
pub struct DrainResult {
    /// Sessions the server held at the signal.
    pub sessions: u32,
    /// Signal to last session closed, from the server's histogram.
    pub shutdown_seconds: f64,
    /// Signal to process exit, measured by the bench.
    pub exit_seconds: f64,
    /// Drains the server counted complete.
    pub complete: u64,
    /// Drains it counted incomplete (the deadline passed).
    pub incomplete: u64,
    /// Data frames sent in the drain phase.
    pub messages_drained: u64,
    /// Messages the client's ledger counts lost.
    pub messages_lost: u64,
    /// CPU time (user + system) each process spent from the signal to the
    /// server's last session closed, divided by the sessions drained.
    pub server_cpu_us_per_session: f64,
    /// The same for the client process.
    pub client_cpu_us_per_session: f64,
    /// The server's whole CPU time from just before the signal to its exit
    /// (read while it was a zombie), per session: the drain's cost as an
    /// outside observer sees it, shutdown and exit included.
    pub server_exit_cpu_us_per_session: f64,
    /// The client's over the same window (to the server's exit).
    pub client_exit_cpu_us_per_session: f64,
    /// The server's resident memory with every session open, just before
    /// the signal.
    pub server_rss_kib: u64,
    /// That less its RSS before the first session, per session (sessions
    /// with traffic, not idle ones: compare with the memory scenario).
    pub server_kib_per_session: f64,
}

/// System calls per drained session, counted by `strace -c -f` attached to
/// each process from just before the signal to the server's exit.
#[derive(Debug, Clone, Serialize)]
pub struct SyscallsResult {
    /// Sessions drained while traced.
    pub sessions: u32,
    /// Drains the client's ledger counts complete.
    pub drains_complete: u64,
    /// Messages it counts lost.
    pub messages_lost: u64,
    /// Every system call of the server in the window, per session.
    pub server_per_session: f64,
    /// The client's.
    pub client_per_session: f64,
    /// The server's, by system call, most frequent first.
    pub server: Vec<(String, f64)>,
    /// The client's.
    pub client: Vec<(String, f64)>,
}

/// Instructions per drained session, counted by callgrind over the drain
/// window (counting switched on just before the signal, dumped at the
/// server's last close): repeatable for the same build, whatever the
/// machine's load.
#[derive(Debug, Clone, Serialize)]
pub struct InstructionsResult {
    /// Sessions drained under callgrind.
    pub sessions: u32,
    /// The server's instructions in the drain window, per session.
    pub server_instructions_per_session: f64,
    /// The client's, per session.
    pub client_instructions_per_session: f64,
}

/// How the failover scenario varies the reconnects: the `variant` of its
/// results, serialised as its [`Failover::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Failover {
    /// RECONNECT_JITTER 0s: every user of the drained pod reconnects at once.
    #[serde(rename = "no jitter")]
    NoJitter,
    /// The defaults: RECONNECT_JITTER 100ms.
    #[serde(rename = "jitter 100ms (default)")]
    DefaultJitter,
    /// The default jitter, and the server spreading its notices over 1 s.
    #[serde(rename = "jitter 100ms + drain pacing 1s")]
    DrainPacing,
    /// The next session opened at the notice.
    #[serde(rename = "make-before-break")]
    MakeBeforeBreak,
}

impl Failover {
    pub(super) const ALL: [Failover; 4] =
        [Failover::NoJitter, Failover::DefaultJitter, Failover::DrainPacing, Failover::MakeBeforeBreak];

    /// How the report names it (the same words as its JSON).
    pub fn label(self) -> &'static str {
        match self {
            Failover::NoJitter => "no jitter",
            Failover::DefaultJitter => "jitter 100ms (default)",
            Failover::DrainPacing => "jitter 100ms + drain pacing 1s",
            Failover::MakeBeforeBreak => "make-before-break",
        }
    }
}

/// Two servers behind the Service stand-in, one terminated, in one way of
/// spreading the reconnects.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    /// Which way (jitter, drain pacing, make-before-break).
    pub variant: Failover,
    /// Virtual users, half of them on the terminated server.
    pub users: u32,
    /// Reconnects the client logged.
    pub reconnects: u64,
    /// Median reconnect latency.
    pub p50_ms: f64,
    /// 99th percentile reconnect latency.
    pub p99_ms: f64,
    /// The slowest reconnect.
    pub max_ms: f64,
    /// SIGTERM to every user holding a session again.
    pub all_back_seconds: f64,
    /// Drains complete, as the client's ledger saw them.
    pub drains_complete: u64,
    /// Drains incomplete, as the client's ledger saw them.
    pub drains_incomplete: u64,
    /// Messages the ledger counts lost.
    pub messages_lost: u64,
    /// Requests the ledger counts lost.
    pub requests_lost: u64,
}

/// Resident memory of idle sessions, on both sides.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryResult {
    /// Idle sessions held.
    pub sessions: u32,
    /// The server's RSS with no session.
    pub server_rss_idle_kib: u64,
    /// The server's RSS with `sessions`.
    pub server_rss_loaded_kib: u64,
    /// The difference, per session.
    pub server_kib_per_session: f64,
    /// A client's RSS with one user.
    pub client_rss_one_kib: u64,
    /// A client's RSS with `sessions` users.
    pub client_rss_loaded_kib: u64,
    /// The difference, per user added.
    pub client_kib_per_session: f64,
}

/// Frames one server moves in steady state, and what they cost it.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    /// Busy sessions.
    pub sessions: u32,
    /// The measured window, as it really lasted.
    pub window_seconds: f64,
    /// Frames the server sent and received in the window.
    pub messages: u64,
    /// `messages` over the window.
    pub messages_per_second: f64,
    /// Server CPU seconds (user + system) in the window.
    pub server_cpu_seconds: f64,
    /// `messages` over `server_cpu_seconds`: the cost, whatever the load.
    pub messages_per_cpu_second: f64,
}

/// Every session of one server cut at once (both ends reset) and resumed.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeResult {
    /// Virtual users, every one on the server.
    pub users: u32,
    /// Reconnects the client logged after the first cut.
    pub resumed_first: u64,
    /// Median latency, from the cut to the resumed welcome.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
    /// The reset to every user's session resumed.
    pub all_resumed_seconds: f64,
    /// Server CPU time (user + system) from the reset to the last resume,
    /// per user.
    pub server_cpu_us_per_resume: f64,
    /// The same for the client process.
    pub client_cpu_us_per_resume: f64,
    /// The server's RSS with no session.
    pub server_rss_idle_kib: u64,
    /// With every user's session open.
    pub server_rss_live_kib: u64,
    /// With every session parked and none open (0 when they were not all
    /// parked: see `all_parked`).
    pub server_rss_parked_kib: u64,
    /// Whether every session was parked at once in the second cut.
    pub all_parked: bool,
    /// Whether every user resumed again after that.
    pub resumed_again: bool,
    /// The client's ledger: sessions resumed, over both cuts.
    pub sessions_resumed: u64,
    /// Sessions cut, over both cuts.
    pub sessions_cut: u64,
    /// Frames the server replayed.
    pub frames_replayed: u64,
    /// Messages the ledger counts lost.
    pub messages_lost: u64,
    /// Requests the ledger counts lost.
    pub requests_lost: u64,
}

/// Every scenario's results, and the machine they were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// CPU cores available.
    pub cores: usize,
    /// The servers' RUST_LOG level (logging has a cost).
    pub log_level: String,
    /// The machine's memory.
    pub memory_gib: f64,
    /// One result per drain size.
    pub drain: Vec<DrainResult>,
    /// One result per failover variant.
    pub failover: Vec<FailoverResult>,
    /// The memory scenario, if it ran.
    pub memory: Option<MemoryResult>,
    /// The throughput scenario, if it ran.
    pub throughput: Option<ThroughputResult>,
    /// The resume scenario, if it ran.
    pub resume: Option<ResumeResult>,
    /// The instructions scenario, if it ran.
    pub instructions: Option<InstructionsResult>,
    /// The syscalls scenario, if it ran.
    pub syscalls: Option<SyscallsResult>,
}

/// The results as the Markdown tables of docs/benchmarks.md.
pub fn render(r: &BenchReport) -> String {
    let mut out = format!("Machine: {} cores, {:.1} GiB. Log level: {}.\n\n", r.cores, r.memory_gib, r.log_level);
    out += "### Drain time against sessions (one server, no preStop)\n\n";
    out += "| sessions | shutdown (signal to last close) | signal to exit | complete | incomplete | messages drained | lost | server CPU per session, to last close / to exit | client CPU per session, to last close / to server exit | server RSS (per session) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for d in &r.drain {
        out += &format!(
            "| {} | {:.3} s | {:.3} s | {} | {} | {} | {} | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {} KiB ({:.1} KiB) |\n",
            d.sessions,
            d.shutdown_seconds,
            d.exit_seconds,
            d.complete,
            d.incomplete,
            d.messages_drained,
            d.messages_lost,
            d.server_cpu_us_per_session,
            d.server_exit_cpu_us_per_session,
            d.client_cpu_us_per_session,
            d.client_exit_cpu_us_per_session,
            d.server_rss_kib,
            d.server_kib_per_session
        );
    }
    if let Some(i) = &r.instructions {
        out += &format!(
            "\nInstructions per drained session (callgrind, {} sessions, drain window): server {:.0}, client {:.0}.\n",
            i.sessions, i.server_instructions_per_session, i.client_instructions_per_session
        );
    }
    if let Some(c) = &r.syscalls {
        // The calls that make up a tenth of a call per session or more.
        let top = |each: &[(String, f64)]| {
            let shown: Vec<String> =
                each.iter().filter(|(_, n)| *n >= 0.1).map(|(name, n)| format!("{name} {n:.2}")).collect();
            shown.join(", ")
        };
        out += &format!(
            "\nSystem calls per drained session (strace -c -f, {} sessions, signal to server exit; {} drains complete, \
             {} lost): server {:.2} ({}), client {:.2} ({}).\n",
            c.sessions,
            c.drains_complete,
            c.messages_lost,
            c.server_per_session,
            top(&c.server),
            c.client_per_session,
            top(&c.client)
        );
    }
    if !r.failover.is_empty() {
        out += "\n### Failover (two servers behind the Service stand-in, one terminated)\n\n";
        out += "| variant | users | reconnects | p50 | p99 | max | all back after | drains complete / incomplete | lost (messages / requests) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for f in &r.failover {
            out += &format!(
                "| {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.3} s | {} / {} | {} / {} |\n",
                f.variant.label(),
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
    if let Some(r) = &r.resume {
        out += "\n### Session resume (one server, every session reset at once)\n\n";
        out += "| users | resumed | p50 | p99 | max | all resumed after | server CPU per resume | client CPU per resume | server RSS idle / live / all parked | cut / resumed (both cuts) | replayed | lost (messages / requests) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        let parked =
            if r.all_parked { format!("{} KiB", r.server_rss_parked_kib) } else { "not all parked".to_owned() };
        out += &format!(
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.3} s | {:.0} µs | {:.0} µs | {} KiB / {} KiB / {parked} | {} / {}{} | {} | {} / {} |\n",
            r.users,
            r.resumed_first,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.all_resumed_seconds,
            r.server_cpu_us_per_resume,
            r.client_cpu_us_per_resume,
            r.server_rss_idle_kib,
            r.server_rss_live_kib,
            r.sessions_cut,
            r.sessions_resumed,
            if r.resumed_again { "" } else { " (not all back after the second)" },
            r.frames_replayed,
            r.messages_lost,
            r.requests_lost
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failover_variant_is_written_as_its_label_in_json_and_markdown() {
        // docs/benchmarks.json holds these words: the enum must not change them.
        let words = ["no jitter", "jitter 100ms (default)", "jitter 100ms + drain pacing 1s", "make-before-break"];
        for (variant, words) in Failover::ALL.into_iter().zip(words) {
            assert_eq!(serde_json::to_value(variant).unwrap(), words);
            assert_eq!(variant.label(), words);
        }
    }
}
