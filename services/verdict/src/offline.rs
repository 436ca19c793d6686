//! `gsd-verdict judge`: the verdict on `/metrics` bodies saved to files by
//! someone else (scripts/cluster-check, which watches a real cluster's pods
//! and asks here for every count). Each body is read with the strict
//! parse into the same accounts, and the accounts go through the same
//! [`conclude`] as the in-cluster run's, so the two cannot judge apart.
//!
//! With `--via`, the proxy the sessions went through was terminated (a
//! rollout of the proxy itself, often with no server pod terminated):
//! the clients' JSON logs say when each session was cut, and
//! [`crate::judge_proxy`] names the proxy's setting that cut them.
//!
//! Exit status: 0 PASS, 1 FAIL (the reasons printed, and in `--json`), 2
//! when the input is bad: a file that cannot be read, a body that is no
//! account (garbage, cut short, a series missing), a log line that is
//! not JSON, named with its path; or a proxy gsd does not know given
//! without its setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::cluster::{ClientScrape, Mode, VerdictReport, client_change, conclude, render, write_outputs};
use crate::proxy::{Seen, Via};
use crate::{ClientAccount, Ending, ServerAccount};

/// `gsd-verdict judge`: one pod's termination (or, with no `--pod`, only
/// the clients' change) from saved scrapes; with `--via`, the termination
/// of the proxy in front of the servers too, from the clients' logs.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example (a pod deleted with `kubectl delete pod`, one client process):\n  \
    gsd-verdict judge --pod gsd-server-x --server-before x.before.prom --server x.last.prom \\\n    \
    --clients-before client.before.prom --clients client.after.prom --grace 60 --json verdict.json\n\n\
    Example (Traefik's pod deleted, the time taken just before):\n  \
    gsd-verdict judge --via traefik --via-pod traefik-5d8f7 --via-terminated-at 1767225600.25 \\\n    \
    --client-log client.log --clients-before client.before.prom --clients client.after.prom")]
pub struct JudgeConfig {
    /// The terminated server pod, as the report names it. Without it only
    /// the clients' change is judged (loss, requests, short drains,
    /// duplicates, cuts).
    #[arg(long, value_name = "NAME", requires = "server_before")]
    pub pod: Option<String>,

    /// The pod's /metrics saved just before its termination began: its
    /// open sessions are the sessions it held, and its counters the zero
    /// its drain is counted from.
    #[arg(long, value_name = "FILE", requires = "pod")]
    pub server_before: Option<PathBuf>,

    /// The pod's last /metrics, saved after its drain ended (during
    /// METRICS_LINGER). Leave it out when no scrape saw the drain end
    /// (SIGKILL): for a planned drain the judge then says so.
    #[arg(long, value_name = "FILE", requires = "pod")]
    pub server: Option<PathBuf>,

    /// Each client process's /metrics saved before the termination, one
    /// file each (repeat the flag, or give several files).
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    pub clients_before: Vec<PathBuf>,

    /// Each client process's /metrics saved once its users were back, in
    /// the order of --clients-before.
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    pub clients: Vec<PathBuf>,

    /// How the termination ended, as Kubernetes showed it: `exited` (the
    /// pod exited on its own: a planned drain), `grace-ran-out` (SIGKILLed
    /// at the grace period, exit code 137), `killed` (SIGKILLed with no
    /// drain).
    #[arg(long, value_enum, default_value = "exited", requires = "pod")]
    pub ending: EndingArg,

    /// The pod's grace period in seconds (`30`, or a duration: `1m`), named
    /// when the drain outlasted it.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_grace)]
    pub grace: Duration,

    /// The proxy the clients' sessions went through, when it is the one
    /// terminated (a rollout of its Deployment): `traefik` (its
    /// graceTimeOut, 10s unless set), `envoy-gateway` (its
    /// shutdown.drainTimeout, 60s unless set), or any other name with
    /// --via-setting-name and --via-setting. The clients' logs
    /// (--client-log) then say when each session was cut, and the report
    /// names the setting that cut them.
    #[arg(
        long,
        value_name = "NAME",
        value_parser = parse_text,
        requires = "via_terminated_at",
        requires = "client_log"
    )]
    pub via: Option<String>,

    /// The proxy's terminated pod, as the report names it.
    #[arg(long, value_name = "NAME", value_parser = parse_text, requires = "via")]
    pub via_pod: Option<String>,

    /// When the proxy's pod began terminating (a rollout deletes the old
    /// pod once its replacement is ready), in Unix seconds, fractional (as
    /// `date +%s.%N` prints it).
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        value_parser = parse_unix_seconds,
        allow_negative_numbers = true,
        requires = "via"
    )]
    pub via_terminated_at: Option<f64>,

    /// How long the proxy keeps open WebSockets once terminated (`10s`,
    /// `1m`, `500ms`, or seconds); default: the named proxy's default.
    #[arg(long, value_name = "DURATION", value_parser = parse_grace, requires = "via")]
    pub via_setting: Option<Duration>,

    /// That setting's name, as the report says it; default: the named
    /// proxy's (`Traefik graceTimeOut`, `Envoy Gateway
    /// shutdown.drainTimeout`), required for any other.
    #[arg(long, value_name = "TEXT", value_parser = parse_text, requires = "via")]
    pub via_setting_name: Option<String>,

    /// Each client process's log with LOG_FORMAT=json, one file each, as
    /// many as --clients (`kubectl logs` output as it is: lines that are
    /// not JSON are skipped). Its `session_cut` lines from the termination
    /// on are the proxy's cuts; its `reconnected` lines (logged with
    /// RUST_LOG=info,gsd_client::reconnect=debug) the reconnects after it.
    #[arg(long, value_name = "FILE", num_args = 1.., requires = "via")]
    pub client_log: Vec<PathBuf>,

    /// Also write the report as JSON here (every reason with its kind and
    /// numbers, both sides' accounts).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Also write the verdict as JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// `--ending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EndingArg {
    /// [`Ending::Exited`].
    Exited,
    /// [`Ending::GraceRanOut`].
    GraceRanOut,
    /// [`Ending::Killed`].
    Killed,
}

impl From<EndingArg> for Ending {
    fn from(e: EndingArg) -> Ending {
        match e {
            EndingArg::Exited => Ending::Exited,
            EndingArg::GraceRanOut => Ending::GraceRanOut,
            EndingArg::Killed => Ending::Killed,
        }
    }
}

/// Seconds (`60`, `0.5`) or a duration (`1m`).
pub(crate) fn parse_grace(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        Ok(_) => Err(format!("`{text}` is not a number of seconds")),
        Err(_) => gsd_protocol::duration::parse_duration(text),
    }
}

/// Unix seconds (`1767225600.123456789`): a number, not negative.
fn parse_unix_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(format!("`{text}` is not a time in Unix seconds (such as `date +%s.%N` prints)")),
    }
}

/// A name or a setting's name: not blank.
pub(crate) fn parse_text(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Err("an empty name".to_owned()),
        text => Ok(text.to_owned()),
    }
}

/// Why the input is bad (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its body is no account.
    #[error("{}: {source}", path.display())]
    Account {
        /// The file.
        path: PathBuf,
        /// Why: the line, or the series missing.
        source: crate::AccountError,
    },
    /// The client files do not pair up.
    #[error(
        "{before} --clients-before file(s) and {after} --clients file(s): each client process needs one of each, \
         in the same order"
    )]
    Unpaired {
        /// How many before.
        before: usize,
        /// How many after.
        after: usize,
    },
    /// One client file given twice: two processes would be read as one,
    /// and one's counts would go missing from the sum (or a log's cuts
    /// counted twice).
    #[error("{}: given twice as --{flag}; each client process needs its own file", path.display())]
    Twice {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A line of a client's log that is not what it claims to be.
    #[error("{}: {source}", path.display())]
    Log {
        /// The log.
        path: PathBuf,
        /// The line, and why.
        source: crate::proxy::LineError,
    },
    /// Not a log for every client process: the cuts of those without one
    /// would go unexplained.
    #[error(
        "{logs} --client-log file(s) and {clients} --clients file(s): the proxy's cuts are read from every \
         client process's log"
    )]
    Unlogged {
        /// How many logs.
        logs: usize,
        /// How many client processes.
        clients: usize,
    },
    /// A proxy gsd does not know, without the setting that cuts its
    /// WebSockets.
    #[error(
        "--via {proxy}: not a proxy gsd knows the drain setting of ({known}): give --via-setting-name and \
         --via-setting"
    )]
    UnknownProxy {
        /// The name given.
        proxy: String,
        /// The proxies gsd knows.
        known: String,
    },
}

fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|source| InputError::Read { path: path.to_owned(), source })
}

fn server(path: &Path) -> Result<ServerAccount, InputError> {
    ServerAccount::parse(&read(path)?).map_err(|source| InputError::Account { path: path.to_owned(), source })
}

fn client(path: &Path) -> Result<ClientAccount, InputError> {
    ClientAccount::parse(&read(path)?).map_err(|source| InputError::Account { path: path.to_owned(), source })
}

/// The verdict on the saved scrapes `config` names; an error only for bad
/// input.
pub fn judge(config: &JudgeConfig) -> Result<VerdictReport, InputError> {
    if config.clients_before.len() != config.clients.len() {
        return Err(InputError::Unpaired { before: config.clients_before.len(), after: config.clients.len() });
    }
    // Each process keyed by its file after the termination, on both sides.
    let (mut before, mut after, mut scrapes) = (BTreeMap::new(), BTreeMap::new(), Vec::new());
    for (then, now) in config.clients_before.iter().zip(&config.clients) {
        let name = now.display().to_string();
        if after.contains_key(&name) {
            return Err(InputError::Twice { flag: "clients", path: now.clone() });
        }
        let scrape = ClientScrape {
            before_file: then.display().to_string(),
            after_file: name.clone(),
            before: client(then)?,
            after: client(now)?,
        };
        before.insert(name.clone(), scrape.before);
        after.insert(name, scrape.after);
        scrapes.push(scrape);
    }
    let server_before = config.server_before.as_deref().map(server).transpose()?;
    let last = config.server.as_deref().map(server).transpose()?;
    let report = VerdictReport {
        mode: Mode::SavedScrapes,
        client_pods: after.len(),
        pod: config.pod.clone().unwrap_or_default(),
        held: server_before.as_ref().map_or(0, |s| s.sessions),
        client_scrapes: scrapes,
        ..VerdictReport::default()
    };
    let via = config.via.as_deref().map(|proxy| read_via(config, proxy)).transpose()?;
    let (delta, reasons) = client_change(&before, &after);
    let report = conclude(report, config.ending.into(), config.grace, server_before, last.map(Ok), delta, reasons);
    Ok(match via {
        Some(via) => {
            let reasons = crate::judge_proxy(&via, report.reasons.clone());
            VerdictReport { via: Some(via), ..report }.decide(reasons)
        }
        None => report,
    })
}

/// The `--via` proxy's termination, as the `--client-log` files show it.
fn read_via(config: &JudgeConfig, proxy: &str) -> Result<Via, InputError> {
    let known = crate::proxy::known(proxy);
    let setting_name = config.via_setting_name.as_deref().or(known.map(|k| k.setting_name));
    let setting = config.via_setting.or(known.map(|k| k.default));
    let (Some(setting_name), Some(setting)) = (setting_name, setting) else {
        let known = crate::proxy::KNOWN.map(|k| k.name).join(", ");
        return Err(InputError::UnknownProxy { proxy: proxy.to_owned(), known });
    };
    if config.client_log.len() != config.clients.len() {
        return Err(InputError::Unlogged { logs: config.client_log.len(), clients: config.clients.len() });
    }
    let terminated_at = config.via_terminated_at.expect("clap requires --via-terminated-at with --via");
    let mut seen = Seen::default();
    for (i, path) in config.client_log.iter().enumerate() {
        if config.client_log[..i].contains(path) {
            return Err(InputError::Twice { flag: "client-log", path: path.clone() });
        }
        seen.read(&read(path)?, terminated_at).map_err(|source| InputError::Log { path: path.clone(), source })?;
    }
    let pod = config.via_pod.as_deref().unwrap_or_default();
    Ok(Via::new(proxy, pod, terminated_at, setting_name, setting, &seen))
}

/// `gsd-verdict judge`: the report on stdout; 0 PASS, 1 FAIL, 2 bad input.
pub fn main(config: &JudgeConfig) -> ExitCode {
    let report = match judge(config) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("gsd-verdict judge: bad input: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", render(&report));
    if let Err(e) = write_outputs(config.json.as_deref(), config.junit.as_deref(), &report) {
        eprintln!("gsd-verdict judge: {e}");
        return ExitCode::from(2);
    }
    if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
