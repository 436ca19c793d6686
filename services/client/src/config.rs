//! gsd-client's one configuration struct: every setting as a flag and an
//! environment variable (clap), and the checks of the server URL.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use gsd_telemetry::LogFormat;

/// gsd-client: virtual users that hold WebSocket sessions to gsd-server, ack
/// every data frame, re-send unanswered requests, reconnect after a drain and
/// count anything lost.
///
/// Every option can be given as a flag or as the environment variable named
/// in brackets; a flag wins over the variable. Durations take units: 250ms,
/// 5s, 1m.
#[derive(Debug, Clone, Parser)]
#[command(name = "gsd-client", version, about, long_about = None)]
pub struct Config {
    /// WebSocket URL of the server (the Service, in a cluster). The host is
    /// resolved again on every connection attempt.
    #[arg(long, env = "SERVER_URL", default_value = "ws://localhost:8080/ws", value_parser = parse_url)]
    pub server_url: String,

    /// Concurrent virtual users in this process.
    #[arg(long, env = "CLIENTS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub clients: u32,

    /// Interval between requests on each session; 0s sends none.
    #[arg(long, env = "REQUEST_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub request_interval: Duration,

    /// Simulated processing time of each data frame before it is acked.
    #[arg(long, env = "PROCESSING_TIME", default_value = "5ms", value_parser = parse_duration)]
    pub processing_time: Duration,

    /// First reconnect backoff after a failure; attempt n waits a random time
    /// in [0, min(cap, base * 2^n)] (full jitter).
    #[arg(long = "reconnect-backoff-base", env = "RECONNECT_BACKOFF_BASE", default_value = "100ms", value_parser = parse_positive_duration)]
    pub backoff_base: Duration,

    /// Largest reconnect backoff.
    #[arg(long = "reconnect-backoff-cap", env = "RECONNECT_BACKOFF_CAP", default_value = "10s", value_parser = parse_positive_duration)]
    pub backoff_cap: Duration,

    /// After a planned drain, reconnect at once but for a random delay in
    /// [0, this], so that thousands of users do not reconnect in one instant.
    #[arg(long, env = "RECONNECT_JITTER", default_value = "100ms", value_parser = parse_duration)]
    pub reconnect_jitter: Duration,

    /// Open the next session as soon as a shutdown notice arrives, while the
    /// old one finishes its drain (make-before-break).
    #[arg(long, env = "MAKE_BEFORE_BREAK", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub make_before_break: bool,

    /// Bound on one connection attempt, TCP connect to welcome.
    #[arg(long, env = "CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// After this long without any frame from the server, send it a
    /// WebSocket ping (and let TCP keepalive probe it). 0s turns liveness
    /// checks off.
    #[arg(long, env = "PING_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// After that ping, how much longer the server may stay silent before the
    /// session is given up and the user reconnects (reason `timeout`). A dead
    /// server is noticed within PING_INTERVAL + PING_TIMEOUT.
    #[arg(long, env = "PING_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub ping_timeout: Duration,

    /// Spread the users' first connections over this long.
    #[arg(long, env = "RAMP_UP", default_value = "0s", value_parser = parse_duration)]
    pub ramp_up: Duration,

    /// On SIGTERM, how long to wait for outstanding answers and acks before
    /// closing with 1000.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Address of the /metrics and /healthz listener.
    #[arg(long, env = "METRICS_BIND", default_value = "0.0.0.0")]
    pub metrics_bind: IpAddr,

    /// Port of the /metrics and /healthz listener (0 picks a free one).
    #[arg(long, env = "METRICS_PORT", default_value_t = 9091)]
    pub metrics_port: u16,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// Connect once, wait for the welcome, print it and exit: 0 if it came
    /// within the connect timeout, 1 otherwise (the chart's `helm test`).
    #[arg(long)]
    pub check: bool,
}

impl Config {
    /// The liveness settings of every session.
    pub fn liveness(&self) -> gsd_protocol::Liveness {
        gsd_protocol::Liveness { interval: self.ping_interval, timeout: self.ping_timeout }
    }

    /// `host:port` of `server_url`, for the TCP connection (port 80 when the
    /// URL names none). The URL was checked by [`parse_url`].
    pub fn server_authority(&self) -> String {
        let rest = self.server_url.strip_prefix("ws://").unwrap_or(&self.server_url);
        let authority = rest.split('/').next().unwrap_or_default();
        let has_port =
            authority.rsplit_once(':').is_some_and(|(host, _)| !host.is_empty() && !authority.ends_with(']'));
        if has_port { authority.to_owned() } else { format!("{authority}:80") }
    }
}

pub fn parse_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let rest = text.strip_prefix("ws://").ok_or_else(|| {
        format!("{text:?} is not a ws:// URL (gsd-client speaks plain ws://; wss:// is not built in)")
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(format!("{text:?} has no host"));
    }
    if let Some((_, port)) = authority.rsplit_once(':').filter(|_| !authority.ends_with(']')) {
        port.parse::<u16>().map_err(|_| format!("{text:?} has an invalid port {port:?}"))?;
    }
    Ok(text.to_owned())
}

pub use gsd_protocol::duration::{MAX_DURATION, parse_duration, parse_positive_duration};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// gsd-client's configuration from `flags` (no program name), which
    /// must be valid.
    pub(crate) fn parse(flags: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("gsd-client").chain(flags.iter().copied())).expect("valid flags")
    }

    #[test]
    fn urls_are_checked() {
        assert!(parse_url("ws://gsd:8080/ws").is_ok());
        assert!(parse_url("ws://[::1]:8080/ws").is_ok());
        assert!(parse_url("ws://127.0.0.1/ws").is_ok());
        for bad in ["", "http://x/ws", "wss://x/ws", "ws://", "ws:///ws", "ws://x:99999/ws", "ws://x:abc/ws"] {
            assert!(parse_url(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn authorities_have_a_port() {
        let with = |url: &str| Config::try_parse_from(["gsd-client", "--server-url", url]).unwrap().server_authority();
        assert_eq!(with("ws://gsd:8080/ws"), "gsd:8080");
        assert_eq!(with("ws://gsd/ws"), "gsd:80");
        assert_eq!(with("ws://[::1]:9000/ws"), "[::1]:9000");
        assert_eq!(with("ws://[::1]/ws"), "[::1]:80");
    }

    #[test]
    fn garbage_flags_are_refused() {
        for args in [
            &["gsd-client", "--clients", "0"][..],
            &["gsd-client", "--clients", "many"],
            &["gsd-client", "--request-interval", "soon"],
            &["gsd-client", "--reconnect-backoff-base", "0s"],
            &["gsd-client", "--make-before-break", "maybe"],
            &["gsd-client", "--log-format", "xml"],
            &["gsd-client", "--ping-interval", "sometimes"],
            &["gsd-client", "--ping-timeout", "0s"],
        ] {
            assert!(Config::try_parse_from(args).is_err(), "{args:?} was accepted");
        }
        let c = Config::try_parse_from(["gsd-client", "--make-before-break"]).unwrap();
        assert!(c.make_before_break);
    }
}
