//! The `gsd-lab` binary. `gsd-lab server ...` and `gsd-lab client ...` are
//! gsd-server and gsd-client (the lab re-executes itself as its pods and
//! clients, so one build gives everything); anything else is a rehearsal.

use std::process::ExitCode;

use clap::Parser;
use gsd_lab::{LabConfig, proc::Reaper};
use gsd_telemetry::app::{App, INTERRUPTED, Nofile, Signals};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let role = args.get(1).and_then(|a| a.to_str()).unwrap_or_default();
    let program = |name: &str| std::iter::once(name.into()).chain(args.iter().skip(2).cloned());
    let result = match role {
        "server" => gsd_server::cli::main(program("gsd-server")),
        "client" => gsd_client::cli::main(program("gsd-client")),
        "bench" => return bench(gsd_lab::bench::BenchConfig::parse_from(program("gsd-lab bench"))),
        _ => return rehearse(LabConfig::parse()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
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

/// `gsd-lab bench`: measures, prints the Markdown tables, writes JSON.
fn bench(config: gsd_lab::bench::BenchConfig) -> ExitCode {
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("gsd-lab: cannot find its own executable");
        return ExitCode::from(2);
    };
    let json = config.json.clone();
    let outcome = interruptible(|reaper| gsd_lab::bench::run(config, exe, reaper));
    match outcome {
        None => ExitCode::from(INTERRUPTED),
        Some(Err(e)) => {
            eprintln!("gsd-lab bench: {e}");
            ExitCode::from(2)
        }
        Some(Ok(report)) => {
            print!("{}", gsd_lab::bench::render(&report));
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report).expect("the results serialise");
                if let Err(e) = std::fs::write(&path, text + "\n") {
                    eprintln!("gsd-lab bench: writing {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn rehearse(config: LabConfig) -> ExitCode {
    if let Err(e) = config.validate() {
        eprintln!("gsd-lab: {e}");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("gsd-lab: cannot find its own executable: {e}");
            return ExitCode::from(2);
        }
    };
    let (json, junit) = (config.json.clone(), config.junit.clone());
    let outcome = interruptible(|reaper| gsd_lab::run(config, exe, reaper));
    match outcome {
        None => {
            eprintln!("\ngsd-lab: interrupted; every process it started was ended");
            ExitCode::from(INTERRUPTED)
        }
        Some(Err(e)) => {
            eprintln!("\ngsd-lab: {e}");
            ExitCode::from(2)
        }
        Some(Ok(report)) => {
            print!("{}", gsd_lab::render(&report));
            let json =
                json.map(|path| (path, serde_json::to_string_pretty(&report).expect("the report serialises") + "\n"));
            for (path, text) in json.into_iter().chain(junit.map(|path| (path, report.junit()))) {
                if let Err(e) = std::fs::write(&path, text) {
                    eprintln!("gsd-lab: writing {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
    }
}
