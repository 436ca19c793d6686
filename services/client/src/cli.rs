//! The `gsd-client` program: parse the configuration, start telemetry, run the
//! virtual users until SIGTERM/SIGINT, close every session with 1000, exit 0.

use crate::Config;
use gsd_telemetry::app::{App, Signals};
use tracing::{info, warn};

/// The whole program: `args` as from `std::env::args_os()` (the first is the
/// program name). Shared by the thin binary and by gsd-lab, which re-executes
/// itself as server and client.
pub fn main<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    // The in-cluster verdict was `gsd-client verdict` before it became a
    // program of the judge's crate: say where it went.
    if args.get(1).is_some_and(|a| a == "verdict") {
        anyhow::bail!("the in-cluster verdict is its own program now: gsd-verdict, with the same options");
    }
    let (config, deprecated) = Config::from_args(args).unwrap_or_else(|e| e.exit());
    if config.check {
        for old in &deprecated {
            eprintln!("gsd-client: warning: {old}");
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return match runtime.block_on(crate::check(&config)) {
            Ok((server_id, session_id)) => {
                println!("ok: welcome from {server_id}, session {session_id} ({})", config.server_url);
                Ok(())
            }
            Err(e) => anyhow::bail!("no welcome from {}: {e}", config.server_url),
        };
    }
    App::service(config.log_format, "gsd-client").run(|nofile| async move {
        let mut signals = Signals::install()?;
        info!(version = env!("CARGO_PKG_VERSION"), nofile, "start");
        for old in &deprecated {
            warn!(given = old.given, use_instead = old.use_instead, "deprecated_setting");
        }
        let shutdown = async move {
            let name = signals.recv().await;
            info!(signal = name, "signal_received");
        };
        crate::run(config, prometheus::Registry::new(), shutdown).await?;
        anyhow::Ok(())
    })?
}
