//! gsd-client: many virtual users in one process, each holding a WebSocket
//! session to gsd-server through a Service, acking every data frame after
//! processing it, re-sending unanswered requests on the next session, and
//! counting anything lost in its [`Ledger`].
//!
//! [`run`] serves `/metrics` and `/healthz` on the metrics port and runs the
//! users until `shutdown` resolves; then every session is closed with 1000
//! and the summed ledger is returned.

pub mod cli;
pub mod config;
mod connect;
mod labels;
pub mod ledger;
pub mod metrics;
mod session;
mod shared;
mod user;

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use prometheus::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
pub use ledger::Ledger;
use metrics::ClientMetrics;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("binding the metrics listener on {addr}: {source}")]
    MetricsBind { addr: std::net::SocketAddr, source: std::io::Error },
}

/// `--check`: one connection to `config.server_url`; the welcome's server and
/// session ids, or why there was none.
pub async fn check(config: &Config) -> Result<(String, String), String> {
    connect::check(config).await
}

/// Runs the virtual users until `shutdown` resolves; returns the summed ledger.
pub async fn run(
    config: Config,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<Ledger, ClientError> {
    let metrics = ClientMetrics::new(&registry);
    metrics.users.set(config.users as i64);

    let addr = std::net::SocketAddr::new(config.metrics_bind, config.metrics_port);
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| ClientError::MetricsBind { addr, source })?;
    let metrics_addr = listener.local_addr().map_err(|source| ClientError::MetricsBind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(move || async move { gsd_telemetry::metrics_response(&registry) }))
        .route("/healthz", get(|| async { "ok\n" }));
    let http = tokio::spawn(axum::serve(listener, app).into_future());
    info!(target: "gsd_client::lifecycle", %metrics_addr, server_url = %config.server_url, users = config.users, "metrics_listening");

    let shared = Arc::new(shared::Shared { config, metrics, shutdown: CancellationToken::new() });
    let mut users = JoinSet::new();
    for user in 0..shared.config.users {
        users.spawn(user::run(user, shared.clone()));
    }
    shutdown.await;
    info!("shutdown_requested");
    shared.shutdown.cancel();
    let mut total = Ledger::default();
    while let Some(ledger) = users.join_next().await {
        match ledger {
            Ok(ledger) => total += &ledger,
            Err(e) => warn!(error = %e, "user_task_failed"),
        }
    }
    http.abort();
    let servers = total.server_ids.iter().cloned().collect::<Vec<_>>().join(",");
    macro_rules! exit_event {
        ($level:ident) => {
            $level!(
                target: "gsd_client::lifecycle",
                users = shared.config.users,
                sessions = total.sessions,
                reconnects = total.reconnects,
                reconnect_latency_max_ms = total.reconnect_latency_max.as_millis() as u64,
                drains_complete = total.drains_complete,
                drains_incomplete = total.drains_incomplete,
                drains_client_left = total.drains_client_left,
                data_received = total.data_received,
                data_processed = total.data_processed,
                data_unacked = total.data_unacked,
                data_duplicate = total.data_duplicate,
                messages_lost = total.messages_lost,
                messages_skipped = total.messages_skipped,
                sessions_cut = total.sessions_cut,
                sessions_resumed = total.sessions_resumed,
                requests_sent = total.requests_sent,
                requests_answered = total.requests_answered,
                requests_resent = total.requests_resent,
                requests_lost = total.requests_lost,
                duplicate_responses = total.duplicate_responses,
                servers,
                "client_exit"
            )
        };
    }
    if total.clean() {
        exit_event!(info);
    } else {
        exit_event!(warn);
    }
    Ok(total)
}
