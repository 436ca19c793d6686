//! gsd-client's one configuration struct: every setting as a flag and an
//! environment variable (clap), and the checks of the server URL (parsed by
//! the `url` crate: the WHATWG rules every browser's WebSocket follows).

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
    pub server_url: url::Url,

    /// Concurrent virtual users in this process.
    #[arg(long, env = "USERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_USERS))]
    pub users: u32,

    /// Deprecated: the old name of --users (USERS), accepted in this release
    /// with a warning and removed in the next. Giving both is an error.
    #[arg(long = "clients", env = "CLIENTS", value_name = "CLIENTS", value_parser = clap::value_parser!(u32).range(1..=MAX_USERS))]
    clients_deprecated: Option<u32>,

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

/// The most virtual users one process runs.
const MAX_USERS: i64 = 1_000_000;

/// A deprecated spelling that was given, and its new name: the program warns
/// about each (see [`Config::from_args`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deprecated {
    /// What was given: a flag (`--clients`) or a variable (`CLIENTS`).
    pub given: &'static str,
    /// What to give instead.
    pub use_instead: &'static str,
}

impl std::fmt::Display for Deprecated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is deprecated and will be removed in the next release: use {} (the same number of virtual users)",
            self.given, self.use_instead
        )
    }
}

impl Config {
    /// Parses `args` (the program name first) and folds the deprecated
    /// `--clients`/`CLIENTS` into `users`; returns the configuration and the
    /// deprecated spellings that were given, for the caller to warn about.
    /// Both the old and the new name at once is an error: which one was meant
    /// cannot be told.
    pub fn from_args<I, T>(args: I) -> Result<(Config, Vec<Deprecated>), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::parser::ValueSource;
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Config::command();
        let matches = command.try_get_matches_from_mut(args)?;
        // How `id` was given: its flag, its variable, or not at all.
        let spelled = |id: &str, flag: &'static str, variable: &'static str| match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Some(flag),
            Some(ValueSource::EnvVariable) => Some(variable),
            _ => None,
        };
        let mut config = Config::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        let mut deprecated = Vec::new();
        if let Some(given) = spelled("clients_deprecated", "--clients", "CLIENTS") {
            if let Some(new) = spelled("users", "--users", "USERS") {
                return Err(command.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("{given} is the deprecated name of {new}: give only {new}"),
                ));
            }
            let use_instead = if given == "--clients" { "--users" } else { "USERS" };
            deprecated.push(Deprecated { given, use_instead });
        }
        if let Some(users) = config.clients_deprecated.take() {
            config.users = users;
        }
        Ok((config, deprecated))
    }

    /// The liveness settings of every session.
    pub fn liveness(&self) -> gsd_protocol::Liveness {
        gsd_protocol::Liveness { interval: self.ping_interval, timeout: self.ping_timeout }
    }

    /// `host:port` of `server_url`, for the TCP connection: port 80 when
    /// the URL names none (or names 80, which the URL drops as the default),
    /// an IPv6 address in brackets. The URL was checked by [`parse_url`].
    pub fn server_authority(&self) -> String {
        let host = self.server_url.host_str().unwrap_or_default();
        format!("{host}:{}", self.server_url.port_or_known_default().unwrap_or(80))
    }
}

/// SERVER_URL checked: a `ws://` URL with a host, no credentials and no
/// fragment (RFC 6455 §3 has none), parsed as a browser parses it (host
/// lowercased, `ws://gsd:80/ws` the same as `ws://gsd/ws`, an empty path
/// taken as `/`). Each refusal says what is wrong; `wss://` is refused by
/// name, since gsd-client has no TLS built in.
pub fn parse_url(text: &str) -> Result<url::Url, String> {
    let text = text.trim();
    let url = url::Url::parse(text).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => format!("{text:?} is not a URL: give ws://HOST[:PORT]/PATH"),
        url::ParseError::EmptyHost => format!("{text:?} has no host"),
        url::ParseError::InvalidPort => format!("{text:?} has an invalid port (1-65535)"),
        other => format!("{text:?} is not a valid URL: {other}"),
    })?;
    match url.scheme() {
        "ws" => {}
        "wss" => return Err(format!("{text:?} is wss://: gsd-client speaks plain ws:// (no TLS is built in)")),
        other => return Err(format!("{text:?} is not a ws:// URL (its scheme is {other})")),
    }
    // The WHATWG rules read `ws:///ws` as host `ws` and `ws:/x` as host `x`;
    // a SERVER_URL written that way is a typo, not a host.
    let written = text.split_once("://").map_or("", |(_, rest)| rest);
    if written.is_empty() || written.starts_with(['/', '\\']) || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.port() == Some(0) {
        return Err(format!("{text:?} has port 0"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{text:?} carries credentials; gsd-client sends none"));
    }
    if url.fragment().is_some() {
        return Err(format!("{text:?} has a #fragment, which a WebSocket URL may not have"));
    }
    Ok(url)
}

pub use gsd_protocol::duration::{MAX_DURATION, parse_duration, parse_positive_duration};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// gsd-client's configuration from `flags` (no program name), which
    /// must be valid.
    pub(crate) fn parse(flags: &[&str]) -> Config {
        Config::from_args(std::iter::once("gsd-client").chain(flags.iter().copied())).expect("valid flags").0
    }

    #[test]
    fn urls_are_checked_and_each_refusal_says_why() {
        for good in ["ws://gsd:8080/ws", "ws://[::1]:8080/ws", "ws://127.0.0.1/ws", " ws://gsd/ws?x=1 ", "WS://GSD/ws"]
        {
            assert!(parse_url(good).is_ok(), "{good:?} was refused: {:?}", parse_url(good));
        }
        for (bad, says) in [
            ("", "not a URL"),
            ("gsd:8080/ws", "not a ws:// URL (its scheme is gsd)"),
            ("/ws", "not a URL"),
            ("http://x/ws", "not a ws:// URL (its scheme is http)"),
            ("wss://x/ws", "no TLS"),
            ("ws://", "no host"),
            ("ws:///ws", "no host"),
            ("ws:/x/ws", "no host"),
            ("ws:\\\\x/ws", "no host"),
            ("ws://x:99999/ws", "invalid port"),
            ("ws://x:abc/ws", "invalid port"),
            ("ws://x:0/ws", "port 0"),
            ("ws://[::1/ws", "not a valid URL"),
            ("ws://fe80::1/ws", "invalid port"),
            ("ws://user:pw@x/ws", "credentials"),
            ("ws://user@x/ws", "credentials"),
            ("ws://x/ws#top", "fragment"),
            ("ws://x y/ws", "not a valid URL"),
        ] {
            let err = parse_url(bad).expect_err(bad);
            assert!(err.contains(says), "{bad:?}: {err:?} does not say {says:?}");
        }
    }

    #[test]
    fn authorities_have_a_port() {
        let with = |url: &str| Config::try_parse_from(["gsd-client", "--server-url", url]).unwrap().server_authority();
        assert_eq!(with("ws://gsd:8080/ws"), "gsd:8080");
        assert_eq!(with("ws://gsd/ws"), "gsd:80");
        assert_eq!(with("ws://gsd:80/ws"), "gsd:80");
        assert_eq!(with("ws://GSD.Example:9/ws"), "gsd.example:9");
        assert_eq!(with("ws://[::1]:9000/ws"), "[::1]:9000");
        assert_eq!(with("ws://[::1]/ws"), "[::1]:80");
        assert_eq!(with("ws://[0:0:0:0:0:0:0:1]:7/ws"), "[::1]:7");
        let url = Config::try_parse_from(["gsd-client", "--server-url", "ws://gsd:8080"]).unwrap().server_url;
        assert_eq!(url.as_str(), "ws://gsd:8080/", "an empty path is the root");
    }

    #[test]
    fn garbage_flags_are_refused() {
        for args in [
            &["gsd-client", "--users", "0"][..],
            &["gsd-client", "--users", "many"],
            &["gsd-client", "--users", "1000001"],
            &["gsd-client", "--clients", "0"],
            &["gsd-client", "--clients", "many"],
            &["gsd-client", "--clients", "1000001"],
            &["gsd-client", "--request-interval", "soon"],
            &["gsd-client", "--reconnect-backoff-base", "0s"],
            &["gsd-client", "--make-before-break", "maybe"],
            &["gsd-client", "--log-format", "xml"],
            &["gsd-client", "--ping-interval", "sometimes"],
            &["gsd-client", "--ping-timeout", "0s"],
        ] {
            assert!(Config::try_parse_from(args).is_err(), "{args:?} was accepted");
            assert!(Config::from_args(args).is_err(), "{args:?} was accepted");
        }
        let c = Config::try_parse_from(["gsd-client", "--make-before-break"]).unwrap();
        assert!(c.make_before_break);
    }

    #[test]
    fn users_default_to_one_and_the_new_flag_is_not_deprecated() {
        let (config, deprecated) = Config::from_args(["gsd-client"]).unwrap();
        assert_eq!((config.users, deprecated), (1, vec![]));
        let (config, deprecated) = Config::from_args(["gsd-client", "--users", "40"]).unwrap();
        assert_eq!((config.users, deprecated), (40, vec![]));
    }

    #[test]
    fn the_deprecated_clients_flag_still_sets_the_users_and_is_reported() {
        let (config, deprecated) = Config::from_args(["gsd-client", "--clients", "7"]).unwrap();
        assert_eq!(config.users, 7);
        assert_eq!(deprecated, [Deprecated { given: "--clients", use_instead: "--users" }]);
        let warning = deprecated[0].to_string();
        assert!(warning.contains("--clients is deprecated") && warning.contains("use --users"), "{warning}");
    }

    #[test]
    fn the_old_and_the_new_flag_together_are_refused() {
        for args in [["gsd-client", "--users", "2", "--clients", "3"], ["gsd-client", "--clients", "3", "--users", "3"]]
        {
            let e = Config::from_args(args).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{args:?}");
            assert!(e.to_string().contains("--clients is the deprecated name of --users: give only --users"), "{e}");
        }
    }
}
