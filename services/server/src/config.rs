//! gsd-server's one configuration struct: every setting as a flag and an
//! environment variable (clap), with the checks one flag alone cannot make.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use gsd_telemetry::LogFormat;

/// gsd-server: WebSocket sessions that drain without loss on SIGTERM.
///
/// Every option can be given as a flag or as the environment variable named
/// in brackets; a flag wins over the variable. Durations take units: 250ms,
/// 5s, 1m.
#[derive(Debug, Clone, Parser)]
#[command(name = "gsd-server", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Port of the WebSocket endpoint /ws, the only path it serves (0 picks a
    /// free one). This is the port the Service exposes.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address of the admin port [default: the --bind address].
    #[arg(long, env = "ADMIN_BIND")]
    pub admin_bind: Option<IpAddr>,

    /// Port for /healthz, /readyz, /metrics and /prestop (0 picks a free
    /// one). Probes, the preStop hook and Prometheus use it; the Service
    /// does not expose it. Must differ from PORT.
    #[arg(long, env = "ADMIN_PORT", default_value_t = 9090)]
    pub admin_port: u16,

    /// How long a new HTTP connection may take to send its request line and
    /// headers; a slower one is closed. On the admin port, 2s at most.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub http_header_timeout: Duration,

    /// Longest life of an HTTP connection that has not become a WebSocket
    /// session (on the admin port: not counting the /prestop wait); it is
    /// closed then, whatever it is doing.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub http_idle_timeout: Duration,

    /// Most HTTP connections open at once on the WebSocket port, not counting
    /// upgraded sessions (MAX_SESSIONS bounds those). One more is answered
    /// with 503 and closed. Never more than the port's share of the
    /// open-file limit (RLIMIT_NOFILE less what the server keeps for itself
    /// and the admin port), which bounds its sessions too.
    #[arg(long, env = "MAX_HTTP_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_http_connections: u32,

    /// Name of this replica in welcome frames, logs, metrics and traces
    /// [default: $POD_NAME, else the hostname].
    #[arg(long, env = "SERVER_ID", value_parser = parse_server_id)]
    pub server_id: Option<String>,

    /// Bound on the whole drain, from the signal to the last session closed.
    /// Sessions still open then are closed with 1001 and counted incomplete.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_positive_duration)]
    pub drain_timeout: Duration,

    /// How many data frames each session is still owed when the drain starts,
    /// drawn uniformly from MIN-MAX (or exactly N); MIN is at least 1.
    #[arg(long, env = "DRAIN_MESSAGES", default_value = "1-10", value_parser = parse_range)]
    pub drain_messages: MessageRange,

    /// Spread the sessions' shutdown notices over this window (each session
    /// starts its drain at a random offset in it) instead of all at once, so
    /// that reconnects do not hit the other replicas in one burst. Must be
    /// shorter than the drain timeout; 0s drains every session at once.
    #[arg(long, env = "DRAIN_PACING", default_value = "0s", value_parser = parse_duration)]
    pub drain_pacing: Duration,

    /// Interval between regular data pushes on each session; 0s turns them off.
    #[arg(long, env = "PUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub push_interval: Duration,

    /// Simulated processing time before a request is answered.
    #[arg(long, env = "PROCESSING_LATENCY", default_value = "5ms", value_parser = parse_duration)]
    pub processing_latency: Duration,

    /// After sending close 1001, how long to wait for the client's close reply.
    #[arg(long, env = "CLOSE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub close_timeout: Duration,

    /// After this long without any frame from a client, send it a WebSocket
    /// ping (and let TCP keepalive probe it). 0s turns liveness checks off.
    #[arg(long, env = "PING_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// After that ping, how much longer a client may stay silent before its
    /// session is given up (closed as `timeout`; during a drain, `peer_lost`).
    /// A dead client therefore holds a session at most PING_INTERVAL +
    /// PING_TIMEOUT, in service and during a drain alike.
    #[arg(long, env = "PING_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub ping_timeout: Duration,

    /// FAULT INJECTION, for tests and demonstrations: of the data frames each
    /// session is owed at the drain, announce all but never send the last N
    /// (the close still reports them in `last_seq`). The server then believes
    /// the drain complete; a client that counts correctly reports N lost per
    /// session. Never set this in production.
    #[arg(long, env = "FAULT_DROP_OWED", default_value_t = 0, hide_short_help = true)]
    pub fault_drop_owed: u32,

    /// FAULT INJECTION, for tests and demonstrations: at the signal, reset
    /// the N sessions that opened first (of those still open) at once,
    /// without a notice and without a close frame: the connection is dropped
    /// with a TCP reset (SO_LINGER 0). The other sessions drain normally. The
    /// server counts them as drains with outcome `reset`; a client can only
    /// count them as cut sessions. Never set this in production.
    #[arg(long, env = "FAULT_RESET_AT_SIGTERM", default_value_t = 0, hide_short_help = true)]
    pub fault_reset_at_sigterm: u32,

    /// FAULT INJECTION, for tests and demonstrations: of the data frames each
    /// session is owed at the drain, announce all but never send the last K
    /// (at most all of them), and end the close 1001's reason with a
    /// `last_seq` K lower than the notice's (what was really sent). The
    /// server believes the drain complete; a client that trusts the close
    /// over the notice misses the loss, a correct one reports K lost per
    /// session. Never set this in production.
    #[arg(long, env = "FAULT_CLOSE_LAST_SEQ_LOWER", default_value_t = 0, hide_short_help = true)]
    pub fault_close_last_seq_lower: u32,

    /// After the drain, keep serving /metrics until one more scrape or until
    /// this has passed, whichever is first, so the shutdown histogram reaches
    /// Prometheus. 0s exits right after the drain.
    #[arg(long, env = "METRICS_LINGER", default_value = "15s", value_parser = parse_duration)]
    pub metrics_linger: Duration,

    /// Most concurrent sessions; beyond it a new session is closed at once with
    /// 1013 (try again later). 0 means no limit.
    #[arg(long, env = "MAX_SESSIONS", default_value_t = 0)]
    pub max_sessions: usize,

    /// Session resume (protocol 3): how long a session that ended without a
    /// drain (a reset, a proxy that went away, a silent client) stays parked
    /// for its client to ask it back with the welcome's token. At most 1h.
    /// 0s turns resume off: no token in the welcome, the resume headers
    /// ignored.
    #[arg(long, env = "RESUME_WINDOW", default_value = "30s", value_parser = parse_duration)]
    pub resume_window: Duration,

    /// Most payload bytes of sent, unacknowledged data frames one session
    /// keeps for a replay, 1024 to 16777216. Past it the oldest go first; a
    /// resume that needed them counts them lost.
    #[arg(long, env = "RESUME_MAX_BYTES", default_value_t = 65536,
        value_parser = clap::value_parser!(u32).range(1024..=16 * 1024 * 1024))]
    pub resume_max_bytes: u32,

    /// File holding the key resume tokens are signed with, at least 32 bytes
    /// (the chart mounts a Secret the replicas share). Unset: a random key
    /// of this process's own, so that its tokens resume on this replica only.
    #[arg(long, env = "RESUME_KEY_FILE")]
    pub resume_key_file: Option<PathBuf>,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

/// Longest RESUME_WINDOW.
pub const MAX_RESUME_WINDOW: Duration = Duration::from_secs(3600);

/// An inclusive range of message counts, written `MIN-MAX` or `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRange {
    /// Fewest frames a drain owes (at least 1).
    pub min: u32,
    /// Most frames a drain owes.
    pub max: u32,
}

/// Largest count a drain may owe: a drain is a goodbye, not a backlog dump.
const MAX_DRAIN_MESSAGES: u32 = 10_000;

pub fn parse_range(text: &str) -> Result<MessageRange, String> {
    let number = |part: &str| {
        part.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{part}` is not a whole number (expected MIN-MAX, such as 1-10, or N)"))
    };
    let (min, max) = match text.split_once('-') {
        Some((min, max)) => (number(min)?, number(max)?),
        None => {
            let n = number(text)?;
            (n, n)
        }
    };
    if min > max {
        return Err(format!("MIN {min} is larger than MAX {max}"));
    }
    // The client's ack of the last drained frame is what proves it has seen
    // the notice (and so sent its last request): a drain owes at least one.
    if min == 0 {
        return Err("MIN must be at least 1: the ack of the last drained frame ends the drain".into());
    }
    if max > MAX_DRAIN_MESSAGES {
        return Err(format!("MAX {max} is over the limit of {MAX_DRAIN_MESSAGES}"));
    }
    Ok(MessageRange { min, max })
}

pub use gsd_protocol::duration::{MAX_DURATION, parse_duration, parse_positive_duration};

fn parse_server_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    if id.is_empty() || id.len() > 253 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{text:?} is not a usable id (1-253 visible characters, no spaces)"));
    }
    Ok(id.to_owned())
}

impl Config {
    /// Checks what one flag alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.drain_pacing >= self.drain_timeout {
            return Err(format!(
                "DRAIN_PACING ({:?}) must be shorter than DRAIN_TIMEOUT ({:?}): the last notices would come after the deadline",
                self.drain_pacing, self.drain_timeout
            ));
        }
        if self.resume_window > MAX_RESUME_WINDOW {
            return Err(format!(
                "RESUME_WINDOW ({:?}) is over {MAX_RESUME_WINDOW:?}: a parked session holds memory for all of it",
                self.resume_window
            ));
        }
        if let (false, Some(path)) = (self.resume_window.is_zero(), &self.resume_key_file) {
            crate::resume::read_key(path)?;
        }
        if self.admin_port != 0 && self.admin_port == self.port {
            return Err(format!(
                "ADMIN_PORT ({}) must differ from PORT: the admin endpoints must not be reachable through the Service",
                self.admin_port
            ));
        }
        Ok(())
    }

    /// The liveness settings of every session.
    pub fn liveness(&self) -> gsd_protocol::Liveness {
        gsd_protocol::Liveness { interval: self.ping_interval, timeout: self.ping_timeout }
    }

    /// The admin port's address.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.admin_bind.unwrap_or(self.bind), self.admin_port)
    }

    /// The replica's name: `--server-id`/`SERVER_ID`, else `POD_NAME`, else the
    /// hostname, else `gsd-server`.
    pub fn resolved_server_id(&self) -> String {
        self.server_id
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok().and_then(|v| parse_server_id(&v).ok()))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname").ok().and_then(|v| parse_server_id(&v).ok())
            })
            .unwrap_or_else(|| "gsd-server".to_owned())
    }

    /// The defaults, as if run with no flags and an empty environment; for
    /// tests and embedding.
    pub fn defaults() -> Self {
        Config::parse_from(["gsd-server"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_reject_garbage() {
        assert_eq!(parse_range("1-10"), Ok(MessageRange { min: 1, max: 10 }));
        assert_eq!(parse_range("3"), Ok(MessageRange { min: 3, max: 3 }));
        assert_eq!(parse_range(" 2 - 4 "), Ok(MessageRange { min: 2, max: 4 }));
        for bad in ["", "-", "a-b", "10-1", "1-", "-5", "1-2-3", "1-99999", "1.5", "0", "0-3"] {
            assert!(parse_range(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations_need_units_and_drain_timeout_must_be_positive() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("20").is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert!(Config::try_parse_from(["gsd-server", "--drain-timeout", "banana"]).is_err());
        assert!(Config::try_parse_from(["gsd-server", "--port", "70000"]).is_err());
        assert!(Config::try_parse_from(["gsd-server", "--server-id", "has space"]).is_err());
        assert!(Config::try_parse_from(["gsd-server", "--max-http-connections", "0"]).is_err());
        assert!(Config::try_parse_from(["gsd-server", "--http-header-timeout", "0s"]).is_err());
        let same = Config::try_parse_from(["gsd-server", "--admin-port", "8080"]).unwrap();
        assert!(same.validate().unwrap_err().contains("must differ from PORT"));
    }

    #[test]
    fn flags_have_the_documented_defaults() {
        let c = Config::try_parse_from(["gsd-server"]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.admin_port, 9090);
        assert_eq!(c.http_header_timeout, Duration::from_secs(10));
        assert_eq!(c.max_http_connections, 1024);
        assert_eq!(c.drain_timeout, Duration::from_secs(20));
        assert_eq!(c.drain_messages, MessageRange { min: 1, max: 10 });
        assert_eq!(c.metrics_linger, Duration::from_secs(15));
        assert_eq!(c.liveness().bound(), Duration::from_secs(10));
        assert_eq!(c.fault_drop_owed, 0);
        assert!(Config::try_parse_from(["gsd-server", "--ping-timeout", "0s"]).is_err());
        assert!(Config::try_parse_from(["gsd-server", "--ping-interval", "often"]).is_err());
        assert!(Config::try_parse_from(["gsd-server", "--fault-drop-owed", "-1"]).is_err());
        assert_eq!((c.fault_reset_at_sigterm, c.fault_close_last_seq_lower), (0, 0));
        assert_eq!((c.resume_window, c.resume_max_bytes, c.resume_key_file), (Duration::from_secs(30), 65536, None));
    }

    #[test]
    fn resume_settings_refuse_garbage_with_their_variable() {
        for (flag, bad) in [
            ("--resume-window", "soon"),
            ("--resume-window", "30"),
            ("--resume-window", "-1s"),
            ("--resume-max-bytes", "1023"),
            ("--resume-max-bytes", "16777217"),
            ("--resume-max-bytes", "64k"),
        ] {
            let arg = format!("{flag}={bad}");
            let error = Config::try_parse_from(["gsd-server", &arg]).expect_err(bad).to_string();
            let variable = flag.trim_start_matches("--").replace('-', "_").to_uppercase();
            assert!(error.contains(&variable), "{flag} {bad:?}: {error}");
        }
        let long = Config::try_parse_from(["gsd-server", "--resume-window", "61m"]).unwrap();
        assert!(long.validate().unwrap_err().contains("RESUME_WINDOW"), "over an hour");
        let off = Config::try_parse_from(["gsd-server", "--resume-window", "0s"]).unwrap();
        assert_eq!((off.resume_window, off.validate()), (Duration::ZERO, Ok(())));
    }

    #[test]
    fn a_resume_key_file_that_is_missing_or_short_is_refused_by_name_and_never_echoed() {
        let dir = std::env::temp_dir().join(format!("gsd-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let check = |path: &str| Config::try_parse_from(["gsd-server", "--resume-key-file", path]).unwrap().validate();
        let missing = dir.join("missing").to_str().unwrap().to_owned();
        assert!(check(&missing).unwrap_err().contains("cannot read it"), "{:?}", check(&missing));
        let short = file("short", b"secret-of-31-bytes-xxxxxxxxxxxx\n");
        let error = check(&short).unwrap_err();
        assert!(error.contains("holds 31 bytes") && error.contains("at least 32"), "{error}");
        assert!(!error.contains("secret-of"), "the key's bytes are never printed: {error}");
        assert_eq!(check(&file("ok", &[7u8; 32])), Ok(()));
        assert_eq!(check(&file("ok-newline", b"0123456789abcdef0123456789abcdef\r\n")), Ok(()));
        // Resume off: the file is not read.
        let off = Config::try_parse_from(["gsd-server", "--resume-window", "0s", "--resume-key-file", &missing]);
        assert_eq!(off.unwrap().validate(), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fault_counts_refuse_garbage_and_name_their_variable() {
        for flag in ["--fault-reset-at-sigterm", "--fault-close-last-seq-lower"] {
            let variable = flag.trim_start_matches("--").replace('-', "_").to_uppercase();
            for (bad, why) in [
                ("two", "invalid digit"),
                ("-1", "-1 is not in 0..=4294967295"),
                ("1.5", "invalid digit"),
                ("4294967296", "4294967296 is not in 0..=4294967295"),
                ("", "cannot parse integer from empty string"),
            ] {
                let arg = format!("{flag}={bad}");
                let error = Config::try_parse_from(["gsd-server", &arg]).expect_err(bad).to_string();
                assert!(error.contains(&variable) && error.contains(why), "{flag} {bad:?}: {error}");
            }
            let c = Config::try_parse_from(["gsd-server", flag, "4294967295"]).expect("u32::MAX");
            assert_eq!(c.fault_reset_at_sigterm.max(c.fault_close_last_seq_lower), u32::MAX);
        }
    }

    #[test]
    fn faults_are_hidden_from_short_help_and_explained_in_long_help() {
        let mut command = <Config as clap::CommandFactory>::command();
        let short = command.render_help().to_string();
        let long = command.render_long_help().to_string();
        for variable in ["FAULT_DROP_OWED", "FAULT_RESET_AT_SIGTERM", "FAULT_CLOSE_LAST_SEQ_LOWER"] {
            assert!(!short.contains(variable), "{variable} in -h:\n{short}");
            assert!(long.contains(variable), "{variable} not in --help:\n{long}");
        }
        assert!(long.contains("TCP reset") && long.contains("K lower than the notice's"), "{long}");
    }
}
