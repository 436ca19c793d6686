//! The `gsd-server` program: parse the configuration, start telemetry, run the
//! library until SIGTERM/SIGINT, drain, exit. A second signal exits at once.

use std::time::Duration;

use crate::Config;
use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// The whole program: `args` as from `std::env::args_os()` (the first is the
/// program name). Shared by the thin binary and by gsd-lab, which re-executes
/// itself as server and client.
pub fn main<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let config = Config::parse_from(args);
    if let Err(e) = config.validate() {
        clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n")).exit();
    }
    let telemetry = gsd_telemetry::init(config.log_format, "gsd-server")?;
    // Thousands of sessions need thousands of descriptors.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).ok();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(serve(config, nofile));
    runtime.shutdown_timeout(Duration::from_secs(1));
    telemetry.shutdown(Duration::from_secs(3));
    result
}

async fn serve(config: Config, nofile: Option<u64>) -> anyhow::Result<()> {
    let addr = std::net::SocketAddr::new(config.bind, config.port);
    let listener = gsd_telemetry::listen(addr).with_context(|| format!("binding {addr}"))?;
    let admin_addr = config.admin_addr();
    let admin = gsd_telemetry::listen(admin_addr).with_context(|| format!("binding the admin port {admin_addr}"))?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    info!(server_id = %config.resolved_server_id(), version = env!("CARGO_PKG_VERSION"), nofile, "start");
    let server_id = config.resolved_server_id();
    let shutdown = async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(server_id = %server_id, signal = name, "signal_received");
        // A second signal means "now": skip the rest of the drain.
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            warn!(server_id = %server_id, signal = name, "second_signal_exit_now");
            std::process::exit(130);
        });
    };
    let summary = crate::run(listener, admin, config.clone(), prometheus::Registry::new(), shutdown).await?;
    info!(
        server_id = %config.resolved_server_id(),
        complete = summary.complete,
        incomplete = summary.incomplete,
        duration_ms = summary.duration.as_millis() as u64,
        "exit"
    );
    Ok(())
}
