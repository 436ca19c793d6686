//! The `gsd-server` program: parse the configuration, start telemetry, run the
//! library until SIGTERM/SIGINT, drain, exit. A second signal exits at once.

use crate::Config;
use anyhow::Context;
use clap::Parser;
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
    let config = Config::parse_from(args);
    if let Err(e) = config.validate() {
        clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n")).exit();
    }
    App::service(config.log_format, "gsd-server").run(|nofile| serve(config, nofile))?
}

async fn serve(config: Config, nofile: Option<u64>) -> anyhow::Result<()> {
    let addr = std::net::SocketAddr::new(config.bind, config.port);
    let listener = gsd_telemetry::listen(addr).with_context(|| format!("binding {addr}"))?;
    let admin_addr = config.admin_addr();
    let admin = gsd_telemetry::listen(admin_addr).with_context(|| format!("binding the admin port {admin_addr}"))?;
    let mut signals = Signals::install()?;
    info!(server_id = %config.resolved_server_id(), version = env!("CARGO_PKG_VERSION"), nofile, "start");
    let server_id = config.resolved_server_id();
    let shutdown = async move {
        let name = signals.recv().await;
        info!(server_id = %server_id, signal = name, "signal_received");
        // A second signal means "now": skip the rest of the drain.
        signals.exit_on_next(move |name| warn!(server_id = %server_id, signal = name, "second_signal_exit_now"));
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
