//! The `gsd-lab` program: a rehearsal by default, and the roles it plays for
//! itself (`server`, `client`: the lab re-executes its own binary as its pods
//! and clients, so one build gives everything) and `bench`. Shared by the
//! thin binary and by the test suite's copy of it (tests/lab.rs).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gsd_telemetry::app::{App, INTERRUPTED, Nofile, Signals};

use crate::LabConfig;
use crate::bench::BenchConfig;
use crate::proc::Reaper;

/// gsd-lab: rehearse a Kubernetes pod deletion or rolling restart on this
/// machine, with real gsd-server and gsd-client processes, real signals and
/// a Service stand-in, then report whether anything was lost.
///
/// It stands in for a cluster, not for Kubernetes itself: pods are
/// processes, the Service is an in-process TCP balancer, the kubelet is a
/// timer that runs the preStop sleep, SIGTERM and SIGKILL. Exit status 0 means
/// every drain completed and nothing was lost, 1 that something was lost or
/// cut, 2 bad input.
///
/// With no subcommand, gsd-lab rehearses: `gsd-lab --scenario kill` is
/// `gsd-lab rehearse --scenario kill`.
#[derive(Debug, Parser)]
#[command(name = "gsd-lab", version, about, long_about, args_conflicts_with_subcommands = true)]
#[command(args_override_self = true, subcommand_value_name = "ROLE", subcommand_help_heading = "Roles")]
pub struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    rehearsal: LabConfig,
}

/// What one run of gsd-lab does.
#[derive(Debug, Subcommand)]
enum Role {
    /// Rehearse a pod deletion, rolling restart or kill (the default).
    #[command(args_override_self = true)]
    Rehearse(Box<LabConfig>),
    /// Measure drain time against sessions, failover, memory per idle
    /// session and steady throughput, on loopback; prints Markdown tables.
    Bench(BenchConfig),
    /// Run gsd-server with ARGS (`gsd-lab server --help` is gsd-server's
    /// help): how the lab starts its pods.
    #[command(disable_help_flag = true)]
    Server {
        /// gsd-server's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run gsd-client with ARGS (`gsd-lab client --help` is gsd-client's
    /// help): how the lab starts its clients.
    #[command(disable_help_flag = true)]
    Client {
        /// gsd-client's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

/// The whole program: `args` as from `std::env::args_os()`.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    let program = |name: &str, args: Vec<OsString>| std::iter::once(OsString::from(name)).chain(args);
    let result = match cli.role {
        None => return rehearse(cli.rehearsal),
        Some(Role::Rehearse(config)) => return rehearse(*config),
        Some(Role::Bench(config)) => return bench(config),
        Some(Role::Server { args }) => gsd_server::cli::main(program("gsd-server", args)),
        Some(Role::Client { args }) => gsd_client::cli::main(program("gsd-client", args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// This executable, which the lab runs again as its pods and clients.
fn own_executable(program: &str) -> Result<PathBuf, ExitCode> {
    std::env::current_exe().map_err(|e| {
        eprintln!("{program}: cannot find its own executable: {e}");
        ExitCode::from(2)
    })
}

/// Runs `work` on a fresh runtime until it ends or SIGTERM/SIGINT arrives
/// (`None`); whatever happens, no child process outlives it, a panic included.
fn interruptible<F, T>(work: impl FnOnce(Reaper) -> F) -> Option<T>
where
    F: std::future::Future<Output = T>,
{
    let reaper = Reaper::default();
    reaper.on_panic();
    // The Service stand-in holds two descriptors per proxied connection, so
    // 10,000 users need 20,000 and more: raise the hard limit too where
    // allowed (root). Children inherit it.
    let app = App::untraced().nofile(Nofile::Hard).runtime_grace(std::time::Duration::from_secs(2));
    app.run(|_| async {
        let mut signals = Signals::install().expect("SIGTERM and SIGINT handlers");
        let outcome = tokio::select! {
            result = work(reaper.clone()) => Some(result),
            _ = signals.recv() => None,
        };
        reaper.kill_all();
        outcome
    })
    .expect("an async runtime")
}

/// Writes each `(path, text)`; a failure is reported and is exit status 2.
fn write_all(program: &str, files: impl IntoIterator<Item = (PathBuf, String)>) -> Result<(), ExitCode> {
    for (path, text) in files {
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("{program}: writing {}: {e}", path.display());
            return Err(ExitCode::from(2));
        }
    }
    Ok(())
}

/// `gsd-lab bench`: measures, prints the Markdown tables, writes JSON.
fn bench(config: BenchConfig) -> ExitCode {
    let exe = match (&config.measure, own_executable("gsd-lab bench")) {
        (Some(other), _) if !other.is_file() => {
            eprintln!("gsd-lab bench: --measure {}: no such file", other.display());
            return ExitCode::from(2);
        }
        (Some(other), _) => other.clone(),
        (None, Ok(exe)) => exe,
        (None, Err(code)) => return code,
    };
    let json = config.json.clone();
    match interruptible(|reaper| crate::bench::run(config, exe, reaper)) {
        None => ExitCode::from(INTERRUPTED),
        Some(Err(e)) => {
            eprintln!("gsd-lab bench: {e}");
            ExitCode::from(2)
        }
        Some(Ok(report)) => {
            print!("{}", crate::bench::render(&report));
            let text = || serde_json::to_string_pretty(&report).expect("the results serialise") + "\n";
            match write_all("gsd-lab bench", json.map(|path| (path, text()))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => code,
            }
        }
    }
}

/// `gsd-lab [rehearse]`: runs the rehearsal, prints the report, writes
/// `--json` and `--junit`; 0 when nothing was lost, 1 when something was.
fn rehearse(config: LabConfig) -> ExitCode {
    if let Err(e) = config.validate() {
        eprintln!("gsd-lab: {e}");
        return ExitCode::from(2);
    }
    let exe = match own_executable("gsd-lab") {
        Ok(exe) => exe,
        Err(code) => return code,
    };
    let (json, junit) = (config.json.clone(), config.junit.clone());
    match interruptible(|reaper| crate::run(config, exe, reaper)) {
        None => {
            eprintln!("\ngsd-lab: interrupted; every process it started was ended");
            ExitCode::from(INTERRUPTED)
        }
        Some(Err(e)) => {
            eprintln!("\ngsd-lab: {e}");
            ExitCode::from(2)
        }
        Some(Ok(report)) => {
            print!("{}", crate::render(&report));
            let json =
                json.map(|path| (path, serde_json::to_string_pretty(&report).expect("the report serialises") + "\n"));
            let files = json.into_iter().chain(junit.map(|path| (path, report.junit())));
            match write_all("gsd-lab", files) {
                Err(code) => code,
                Ok(()) if report.ok => ExitCode::SUCCESS,
                Ok(()) => ExitCode::from(1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args)
    }

    #[test]
    fn every_role_is_in_the_help_and_the_rehearsal_is_the_default() {
        let help = <Cli as clap::CommandFactory>::command().render_long_help().to_string();
        for role in ["rehearse", "bench", "server", "client", "--scenario"] {
            assert!(help.contains(role), "{role} missing from gsd-lab --help:\n{help}");
        }
        let cli = parse(&["gsd-lab", "--scenario", "kill", "--users", "3"]).unwrap();
        assert!(cli.role.is_none());
        assert_eq!(cli.rehearsal.users, 3);
        let Some(Role::Rehearse(config)) = parse(&["gsd-lab", "rehearse", "--users", "4"]).unwrap().role else {
            panic!("rehearse is a role");
        };
        assert_eq!(config.users, 4);
    }

    #[test]
    fn server_and_client_take_every_argument_as_it_is() {
        let Some(Role::Server { args }) = parse(&["gsd-lab", "server", "--help", "--port", "0"]).unwrap().role else {
            panic!("server is a role");
        };
        assert_eq!(args, ["--help", "--port", "0"]);
        let Some(Role::Client { args }) = parse(&["gsd-lab", "client", "--users", "2"]).unwrap().role else {
            panic!("client is a role");
        };
        assert_eq!(args, ["--users", "2"]);
    }

    #[test]
    fn garbage_is_refused_with_the_argument_named() {
        for (args, named) in [
            (&["gsd-lab", "--users", "many"][..], "--users"),
            (&["gsd-lab", "--scenario", "explode"], "--scenario"),
            (&["gsd-lab", "frobnicate"], "frobnicate"),
            (&["gsd-lab", "--users", "3", "bench"], "bench"),
            (&["gsd-lab", "bench", "--drain-sizes", "x"], "--drain-sizes"),
        ] {
            let error = parse(args).expect_err(&format!("{args:?} parsed")).to_string();
            assert!(error.contains(named), "{args:?}: {error}");
        }
    }
}
