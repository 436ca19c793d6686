//! One virtual user: its reconnect loop, from the ramp-up to shutdown, one
//! session after another (each through [`crate::session`]), and its
//! [`Ledger`] logged at the end.

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::connect::{Connected, Reconnect, connect_loop, normal_close, random_up_to};
use crate::labels::EndReason;
use crate::ledger::{Book, Ledger, add};
use crate::session::Session;
use crate::shared::Shared;

/// Runs virtual user `user` until the client shuts down; returns its ledger.
pub(crate) async fn run(user: u32, shared: Arc<Shared>) -> Ledger {
    let mut ledger = Ledger::default();
    let mut book = Book { next_id: 1, ..Default::default() };
    let config = &shared.config;
    if !config.ramp_up.is_zero() {
        let offset = config.ramp_up.mul_f64(user as f64 / config.users as f64);
        tokio::select! {
            _ = tokio::time::sleep(offset) => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
    let mut prefetched: Option<JoinHandle<Option<Connected>>> = None;
    let mut first_delay = Duration::ZERO;
    let mut reconnect = Reconnect::default();
    let mut last_end: Option<(Instant, EndReason)> = None;
    let mut last_server: Option<String> = None;
    let mut ask = None;
    loop {
        let reconnect_span = match last_end {
            Some((_, reason)) => {
                info_span!(target: "gsd_client::reconnect", "reconnect", user, reason = reason.label(),
                latency_ms = tracing::field::Empty, server_id = tracing::field::Empty)
            }
            None => tracing::Span::none(),
        };
        let connected = match prefetched.take() {
            Some(handle) => handle.await.ok().flatten(),
            None => {
                connect_loop(shared.clone(), first_delay, reconnect.short_sessions, ask.take())
                    .instrument(reconnect_span.clone())
                    .await
            }
        };
        let Some(connected) = connected else { break };
        if let Some((ended, reason)) = last_end {
            let latency = connected.welcomed_at.saturating_duration_since(ended);
            ledger.record_reconnect(latency);
            shared.metrics.reconnect_latency.observe(latency.as_secs_f64());
            shared.metrics.reconnects.with_label_values(&[reason.label()]).inc();
            reconnect_span.record("latency_ms", latency.as_millis() as u64);
            reconnect_span.record("server_id", connected.server_id.as_str());
            // One line per reconnect, for gsd-lab's report (debug: thousands
            // of users would flood `kubectl logs` at info).
            debug!(target: "gsd_client::reconnect", user, from = last_server.as_deref(), to = %connected.server_id,
                reason = reason.label(), latency_us = latency.as_micros() as u64, "reconnected");
        }
        last_server = Some(connected.server_id.clone());
        drop(reconnect_span);
        let welcomed_at = connected.welcomed_at;
        let (reason, ended, next, cut) = Session::run(connected, user, &shared, &mut book, &mut ledger).await;
        prefetched = next;
        ask = cut;
        last_end = Some((ended, reason));
        if reason == EndReason::Shutdown || shared.shutdown.is_cancelled() {
            break;
        }
        first_delay = random_up_to(reconnect.after(reason, ended.saturating_duration_since(welcomed_at), config));
    }
    if let Some(handle) = prefetched.take() {
        // A session opened ahead of time and never used: close it properly.
        // (Its connect loop stops by itself on shutdown.)
        if let Ok(Some(mut connected)) = handle.await {
            let close = connected.ws.send(Message::Close(Some(normal_close())));
            let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
        }
    }
    let unanswered = book.outstanding.len() as u64;
    if unanswered > 0 {
        add(&mut ledger.requests_lost, unanswered);
        crate::metrics::add(&shared.metrics.requests_lost, unanswered);
    }
    let fields = (ledger.sessions, ledger.reconnects, ledger.drains_complete, ledger.drains_incomplete);
    let servers = ledger.server_ids.iter().cloned().collect::<Vec<_>>().join(",");
    // One event at two levels: info when nothing was lost, warn otherwise
    // (a tracing level is part of the call site, so a macro picks it).
    macro_rules! ledger_event {
        ($level:ident) => {
            $level!(
                user,
                sessions = fields.0,
                reconnects = fields.1,
                drains_complete = fields.2,
                drains_incomplete = fields.3,
                drains_client_left = ledger.drains_client_left,
                messages_lost = ledger.messages_lost,
                messages_skipped = ledger.messages_skipped,
                sessions_cut = ledger.sessions_cut,
                sessions_resumed = ledger.sessions_resumed,
                data_unacked = ledger.data_unacked,
                data_duplicate = ledger.data_duplicate,
                requests_lost = ledger.requests_lost,
                servers,
                "ledger"
            )
        };
    }
    if ledger.clean() {
        ledger_event!(info);
    } else {
        ledger_event!(warn);
    }
    ledger
}
