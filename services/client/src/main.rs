//! The `gsd-client` binary: parse the configuration, start telemetry, run the
//! virtual users until SIGTERM/SIGINT, close every session with 1000, exit 0.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gsd_client::Config;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = gsd_telemetry::init(config.log_format, "gsd-client")?;
    let nofile = rlimit::increase_nofile_limit(u64::MAX).ok();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        info!(version = env!("CARGO_PKG_VERSION"), nofile, "start");
        let shutdown = async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            info!(signal = name, "signal_received");
        };
        gsd_client::run(config, prometheus::Registry::new(), shutdown).await?;
        anyhow::Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    telemetry.shutdown(Duration::from_secs(3));
    result
}
