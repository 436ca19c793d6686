//! The `gsd-verdict` program: `gsd-verdict [run]`, the in-cluster run
//! ([`crate::cluster`]), and `gsd-verdict judge`, the same verdict on saved
//! scrapes ([`crate::offline`]).

use clap::{CommandFactory, Parser};

use crate::cluster::{VerdictConfig, run_main};
use crate::offline::{self, JudgeConfig};

/// gsd-verdict: gsd's one judge, from the command line.
///
/// With no subcommand (or `run`): evict one gsd-server pod and prove that
/// its drain completed and that no client lost anything (the chart's
/// opt-in `helm test` pod; every option can be given as a flag or as the
/// environment variable named in brackets). `judge`: the same verdict on
/// /metrics bodies saved to files. Exit 0 on PASS, 1 on FAIL.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "gsd-verdict",
    version,
    long_about = None,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// What to do; none is `run`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `run`'s options, given without the word `run`.
    #[command(flatten)]
    pub run: Option<VerdictConfig>,
}

/// gsd-verdict's subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Evict one gsd-server pod and judge its drain from inside the cluster
    /// (what `gsd-verdict` with no subcommand does).
    Run(VerdictConfig),
    /// Judge one pod's termination from /metrics bodies saved to files
    /// (the pod's before and after, every client's before and after):
    /// the same accounts, rules and report as the in-cluster run; with
    /// --via, a proxy's termination too, from the clients' logs. Exit 0
    /// PASS, 1 FAIL, 2 when a file is missing or is no account.
    Judge(JudgeConfig),
}

/// `gsd-verdict [run] [options]` or `gsd-verdict judge [options]`: the
/// report on stdout (and `--json`, `--junit`). Exit 0 only on PASS.
pub fn main<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let config = match cli.command {
        Some(Command::Judge(config)) => return offline::main(&config),
        Some(Command::Run(config)) => config,
        None => cli.run.expect("clap requires run's options without a subcommand"),
    };
    // What clap cannot say: a proxy gsd does not know needs its setting.
    // A usage error like clap's own (exit 2), before anything is touched.
    if let Err(e) = config.via_target() {
        Cli::command().error(clap::error::ErrorKind::MissingRequiredArgument, e).exit();
    }
    match run_main(&config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
