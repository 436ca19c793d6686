//! gsd-server: WebSocket sessions that survive a pod termination.
//!
//! [`run`] serves `/ws` on one listener and `/healthz`, `/readyz`, `/metrics`
//! and `/prestop` on another (the admin port, which the Service does not
//! expose) until its `shutdown` future resolves (SIGTERM in the binary). Then
//! it drains: readiness turns 503, new upgrades are refused with 503, and every
//! open session concurrently gets a `shutdown_notice`, the data it is still
//! owed, and close 1001 once the client has acknowledged everything, all
//! bounded by the drain timeout. Sessions are tracked by the server itself
//! (a [`TaskTracker`]), because the HTTP server's own graceful shutdown does
//! not wait for upgraded connections. The HTTP layer in front ([`http`]) bounds
//! what a connection that is not (yet) a session can hold.

pub mod cli;
pub mod config;
mod descriptors;
mod fair;
mod fault;
mod http;
mod labels;
pub mod metrics;
pub mod park;
mod resume;
mod session;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use prometheus::Registry;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Span, info, info_span, warn};

pub use config::Config;
pub use http::Listener;
use metrics::ServerMetrics;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error("{0}")]
    Descriptors(String),
    #[error("{0}")]
    Resume(String),
}

/// What a drain did, for the binary's last log line and for embedding tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainSummary {
    /// Sessions open when the drain started (or that opened during it).
    pub sessions: u64,
    /// Sessions whose every owed message was acknowledged before close.
    pub complete: u64,
    /// Sessions cut short by the deadline or bad input.
    pub incomplete: u64,
    /// Sessions the client closed itself before its drain was over.
    pub client_left: u64,
    /// Sessions whose client went silent or whose connection broke.
    pub peer_lost: u64,
    /// Sessions the server reset at the signal, without a notice
    /// (FAULT_RESET_AT_SIGTERM).
    pub reset: u64,
    /// Data frames sent during the drain phase, over all sessions.
    pub messages: u64,
    /// Signal to last session closed.
    pub duration: Duration,
}

/// Shared by the router and every session.
pub(crate) struct Shared {
    /// Effective configuration.
    pub config: Config,
    /// This replica's name, resolved once.
    pub server_id: String,
    /// Every server metric, for the sessions and the HTTP layer to count in.
    pub metrics: ServerMetrics,
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Cancelled when the drain starts; every session selects on it.
    pub drain: CancellationToken,
    /// When the drain started: the sessions' pacing offsets count from it.
    /// Set, with `deadline`, just before `drain` is cancelled.
    pub started: OnceLock<Instant>,
    /// When every session's drain must be over: `started` + DRAIN_TIMEOUT.
    pub deadline: OnceLock<Instant>,
    /// Parent of every session's drain span; taken (and so closed) when the
    /// drain ends.
    pub drain_span: Mutex<Option<Span>>,
    /// Every live session, including ones upgraded but not yet started.
    pub sessions: TaskTracker,
    /// Sessions counted against `max_sessions`.
    pub active: AtomicUsize,
    /// Drains by outcome (indexed by [`metrics::DrainOutcome`]), for the
    /// [`DrainSummary`].
    pub drained: [AtomicU64; metrics::DrainOutcome::ALL.len()],
    /// Data frames sent in drains, over all sessions, for the [`DrainSummary`].
    pub drained_messages: AtomicU64,
    /// Set once the last session has closed; a scrape after that carries the
    /// final shutdown histogram.
    pub drain_finished: AtomicBool,
    /// Woken by the first `/metrics` scrape after `drain_finished`.
    pub scraped_after_drain: Notify,
    /// Held by the one `/prestop` call allowed at a time.
    pub prestop_busy: AtomicBool,
    /// The sessions FAULT_RESET_AT_SIGTERM resets at the signal; `None`
    /// when that fault is off.
    pub reset_pick: Option<Arc<fault::ResetPick>>,
    /// Session resume: the token key and the parked sessions; `None` when
    /// RESUME_WINDOW is 0s.
    pub resume: Option<resume::Resume>,
}

impl Shared {
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Resolves when a session whose pacing offset is `offset` should start
    /// its drain: `offset` after the drain began (never before the drain).
    pub async fn drain_turn(&self, offset: Duration) {
        self.drain.cancelled().await;
        let started = *self.started.get().expect("set before the drain starts");
        tokio::time::sleep_until(started + offset).await;
    }

    /// Resolves at the signal if the session numbered `number` is one that
    /// FAULT_RESET_AT_SIGTERM resets; never otherwise.
    pub async fn reset_turn(&self, number: Option<u64>) {
        self.drain.cancelled().await;
        match (&self.reset_pick, number) {
            (Some(pick), Some(number)) if pick.is_chosen(number) => {}
            _ => std::future::pending().await,
        }
    }

    /// Resolves once the drain deadline has passed (never before the drain).
    pub async fn deadline_passed(&self) {
        self.drain.cancelled().await;
        let deadline = *self.deadline.get().expect("the deadline is set before the drain starts");
        tokio::time::sleep_until(deadline).await;
    }
}

/// The WebSocket port: `/ws` only (anything else is 404).
fn ws_router(shared: Arc<Shared>) -> Router {
    Router::new().route(gsd_protocol::WS_PATH, get(ws_upgrade)).with_state(shared)
}

/// The admin port: probes, metrics and the preStop hook.
fn admin_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/prestop", get(prestop))
        .route("/sessions/{id}/take", axum::routing::post(take))
        .with_state(shared)
}

/// Another replica asks for a session parked here, for a client that
/// reconnected to it (docs/resume.md §3): see `Resume::hand_over`.
async fn take(
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    State(shared): State<Arc<Shared>>,
) -> Response {
    let Some(resume) = &shared.resume else {
        return (StatusCode::NOT_FOUND, "resume is off on this replica\n").into_response();
    };
    let (status, body) = resume.hand_over(&id, &headers).await;
    if status == 200 {
        shared.metrics.sessions_parked.set(resume.parked() as i64);
        shared.metrics.sessions_handed_over.inc();
        info!(session_id = %id, "session_handed_over");
    } else {
        warn!(session_id = %gsd_protocol::truncate(&id, 64), status, reason = body.trim(), "hand_over_refused");
    }
    let status = StatusCode::from_u16(status).expect("a status hand_over returns");
    (status, body).into_response()
}

/// The admin port's bound on a request head, whatever HTTP_HEADER_TIMEOUT
/// says: the kubelet and Prometheus send theirs at once, so a connection
/// slower than this is not one of theirs.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let after_drain = shared.drain_finished.load(Ordering::SeqCst);
    let response = gsd_telemetry::metrics_response(&shared.registry);
    if after_drain {
        shared.scraped_after_drain.notify_one();
    }
    response
}

#[derive(serde::Deserialize)]
struct PrestopQuery {
    /// How long to hold the request, as a duration (`5s`).
    sleep: Option<String>,
}

/// Longest `/prestop?sleep=` the server honours, so that a mistyped value
/// cannot pin a handler for hours.
const PRESTOP_MAX: Duration = Duration::from_secs(300);

/// The preStop hook for clusters without the native `sleep` action: the kubelet
/// calls `GET /prestop?sleep=5s` and waits for the answer before SIGTERM,
/// which gives the endpoint removal time to propagate. The server keeps
/// serving normally meanwhile; the drain starts with SIGTERM. One call at a
/// time: the kubelet makes one, and a second is answered 409 at once rather
/// than holding another handler.
async fn prestop(
    query: Result<Query<PrestopQuery>, axum::extract::rejection::QueryRejection>,
    State(shared): State<Arc<Shared>>,
) -> Response {
    let Ok(Query(query)) = query else {
        return (StatusCode::BAD_REQUEST, "expected /prestop or /prestop?sleep=DURATION\n").into_response();
    };
    let wait = match query.sleep.as_deref().map(|text| (text, config::parse_duration(text))) {
        None => Duration::from_secs(5),
        Some((_, Ok(d))) if d <= PRESTOP_MAX => d,
        Some((_, Ok(d))) => {
            return (StatusCode::BAD_REQUEST, format!("sleep {d:?} is over the {PRESTOP_MAX:?} limit\n"))
                .into_response();
        }
        Some((text, Err(_))) => {
            let shown = gsd_protocol::truncate(text, 32);
            return (StatusCode::BAD_REQUEST, format!("sleep: {shown:?} is not a duration such as 5s\n"))
                .into_response();
        }
    };
    if shared.prestop_busy.swap(true, Ordering::SeqCst) {
        warn!(server_id = %shared.server_id, "prestop_refused_busy");
        return (StatusCode::CONFLICT, "a preStop wait is already running\n").into_response();
    }
    /// Frees the slot however the handler ends (the connection may be dropped).
    struct Release<'a>(&'a AtomicBool);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::SeqCst);
        }
    }
    let _release = Release(&shared.prestop_busy);
    info!(server_id = %shared.server_id, wait_ms = wait.as_millis() as u64, "prestop");
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shared.drain.cancelled() => {}
    }
    "done\n".into_response()
}

/// RFC 6455 section 4.2.1: exactly one `Sec-WebSocket-Key`, the base64 of
/// 16 bytes, which is 22 base64 characters and `==`. A second key, even the
/// same one, makes the request invalid (section 11.3.1): which of the two
/// the answer's `Sec-WebSocket-Accept` proves is then anyone's guess.
fn valid_websocket_key(headers: &HeaderMap) -> bool {
    let mut keys = headers.get_all(axum::http::header::SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return false;
    };
    let key = key.as_bytes();
    key.len() == 24
        && key[..22].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        && &key[22..] == b"=="
}

/// The other headers of an upgrade request that must appear once:
/// `Sec-WebSocket-Version` (RFC 6455 section 11.3.5) and `Host` (RFC 9112
/// section 3.2). Listed headers (`Connection`, `Upgrade`,
/// `Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`) may repeat.
static SINGLE_HEADERS: [axum::http::HeaderName; 2] =
    [axum::http::header::SEC_WEBSOCKET_VERSION, axum::http::header::HOST];

/// The first of [`SINGLE_HEADERS`] that `headers` repeats.
fn repeated_single_header(headers: &HeaderMap) -> Option<&'static axum::http::HeaderName> {
    SINGLE_HEADERS.iter().find(|name| headers.get_all(*name).iter().nth(1).is_some())
}

async fn ws_upgrade(
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Extension(reset_switch): Extension<fault::ResetSwitch>,
    State(shared): State<Arc<Shared>>,
) -> Response {
    // axum's rejections are fixed texts: no client input is echoed.
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    if !valid_websocket_key(&headers) {
        shared.metrics.refused(metrics::Refusal::BadKey).inc();
        return (StatusCode::BAD_REQUEST, "expected one Sec-WebSocket-Key, the base64 of 16 bytes\n").into_response();
    }
    if let Some(name) = repeated_single_header(&headers) {
        shared.metrics.refused(metrics::Refusal::RepeatedHeader).inc();
        // The name is one of ours, never the request's text.
        return (StatusCode::BAD_REQUEST, format!("{name} must appear once\n")).into_response();
    }
    // Taken before the draining check: the drain cancels before it closes
    // and waits on the tracker, so either this request sees the drain and is
    // refused, or the drain waits for this session.
    let token = shared.sessions.token();
    if shared.is_draining() {
        drop(token);
        shared.metrics.refused(metrics::Refusal::Draining).inc();
        return (StatusCode::SERVICE_UNAVAILABLE, "draining: connect to another replica\n").into_response();
    }
    // The token's MAC is checked only for an upgrade that will be served.
    let ask = shared.resume.as_ref().map_or(resume::Ask::New, |resume| resume.ask(&headers));
    upgrade
        .max_message_size(gsd_protocol::MAX_WIRE_BYTES)
        .max_frame_size(gsd_protocol::MAX_WIRE_BYTES)
        .read_buffer_size(gsd_protocol::READ_BUFFER_BYTES)
        .accept_unmasked_frames(false)
        .write_buffer_size(gsd_protocol::WRITE_BUFFER_BYTES)
        .max_write_buffer_size(gsd_protocol::MAX_WRITE_BUFFER_BYTES)
        .on_failed_upgrade(|e| warn!(error = %e, "upgrade_failed"))
        .on_upgrade(move |socket| async move {
            session::run(socket, shared, peer, reset_switch, ask).await;
            drop(token);
        })
}

/// Serves `/ws` on `listener` and the admin endpoints on `admin` until
/// `shutdown` resolves, drains, lingers for the last scrape and returns what
/// the drain did. Every session is closed when this returns.
pub async fn run<W: Listener, A: Listener>(
    listener: W,
    admin: A,
    config: Config,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<DrainSummary, ServerError> {
    let server_id = config.resolved_server_id();
    let metrics = ServerMetrics::new(&registry, &server_id);
    metrics.drain_timeout.set(config.drain_timeout.as_secs_f64());
    let addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let resume = resume::Resume::new(&config, resume_origin(admin_addr)).map_err(ServerError::Resume)?;
    let shared = Arc::new(Shared {
        resume,
        // Before `config` moves in.
        reset_pick: fault::ResetPick::new(config.fault_reset_at_sigterm),
        config,
        server_id,
        metrics,
        registry,
        drain: CancellationToken::new(),
        started: OnceLock::new(),
        deadline: OnceLock::new(),
        drain_span: Mutex::new(None),
        sessions: TaskTracker::new(),
        active: AtomicUsize::new(0),
        drained: Default::default(),
        drained_messages: AtomicU64::new(0),
        drain_finished: AtomicBool::new(false),
        scraped_after_drain: Notify::new(),
        prestop_busy: AtomicBool::new(false),
    });
    listener.set_liveness(shared.config.ping_interval, shared.config.ping_timeout)?;
    let budget = descriptors::Budget::measure().map_err(ServerError::Descriptors)?;
    let stop_http = CancellationToken::new();
    let c = &shared.config;
    let ws_limits = http::Limits {
        port: metrics::Port::Ws.label(),
        header_timeout: c.http_header_timeout,
        lifetime: c.http_idle_timeout,
        max_http: budget.ws_http(c.max_http_connections),
        max_connections: budget.ws,
        max_refusals: descriptors::WS_REFUSALS,
        shares: None,
        // hyper answers an upgrade with `Connection: close` without it.
        keep_alive: true,
    };
    let admin_limits = http::Limits {
        port: metrics::Port::Admin.label(),
        header_timeout: c.http_header_timeout.min(ADMIN_HEADER_TIMEOUT),
        lifetime: c.http_idle_timeout + PRESTOP_MAX,
        max_http: descriptors::ADMIN_CONNECTIONS,
        max_connections: descriptors::ADMIN_CONNECTIONS,
        max_refusals: descriptors::ADMIN_REFUSALS,
        shares: Some(fair::Shares::new(descriptors::ADMIN_CONNECTIONS, descriptors::ADMIN_EVICTING)),
        keep_alive: false,
    };
    for limits in [&ws_limits, &admin_limits] {
        let max = i64::try_from(limits.max_connections).unwrap_or(i64::MAX);
        shared.metrics.connections_max.with_label_values(&[limits.port]).set(max);
    }
    let ws_connections = budget.nofile.map(|_| budget.ws);
    info!(target: "gsd_server::lifecycle", server_id = %shared.server_id, nofile = budget.nofile, in_use = budget.in_use,
        reserve = budget.reserve, ws_connections, ws_http_connections = ws_limits.max_http,
        admin_connections = admin_limits.max_connections, "connection_limits");
    if c.max_sessions > budget.ws {
        warn!(target: "gsd_server::lifecycle", server_id = %shared.server_id, max_sessions = c.max_sessions,
            ws_connections, "max_sessions_over_connection_limit");
    }
    let servers = TaskTracker::new();
    servers.spawn(http::serve(
        listener,
        ws_router(shared.clone()),
        ws_limits,
        shared.metrics.clone(),
        stop_http.clone(),
    ));
    servers.spawn(http::serve(
        admin,
        admin_router(shared.clone()),
        admin_limits,
        shared.metrics.clone(),
        stop_http.clone(),
    ));
    servers.close();
    let origin = shared.resume.as_ref().map(|resume| resume.origin.as_str());
    info!(target: "gsd_server::lifecycle", server_id = %shared.server_id, %addr, %admin_addr,
        resume_window_ms = shared.config.resume_window.as_millis() as u64, resume_origin = origin,
        resume_key = if shared.config.resume_key_file.is_some() { "file" } else { "process" }, "listening");
    let expiry = tokio::spawn(expire_parked(shared.clone()));

    shutdown.await;

    let summary = drain(&shared).await;
    expiry.abort();

    let linger = shared.config.metrics_linger;
    if !linger.is_zero() {
        tokio::select! {
            _ = shared.scraped_after_drain.notified() => info!(server_id = %shared.server_id, "metrics_scraped_after_drain"),
            _ = tokio::time::sleep(linger) => info!(server_id = %shared.server_id, linger_ms = linger.as_millis() as u64, "metrics_linger_elapsed"),
        }
    }
    stop_http.cancel();
    // The accept loops stop at once; requests in flight get a moment (each
    // connection gives up after one second of graceful shutdown).
    let _ = tokio::time::timeout(Duration::from_secs(2), servers.wait()).await;
    Ok(summary)
}

/// The admin address other replicas reach this one at, for the tokens:
/// `$POD_IP` (the chart sets it from the pod's status) with the admin
/// port, else the admin listener's own address.
fn resume_origin(admin: std::net::SocketAddr) -> String {
    match std::env::var("POD_IP").ok().and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) {
        Some(ip) => std::net::SocketAddr::new(ip, admin.port()).to_string(),
        None => admin.to_string(),
    }
}

/// Counts parked sessions given up: expired, with every frame they were
/// not acked counted unacked.
fn count_expired(shared: &Shared, expired: Vec<park::Parked>) {
    for parked in expired {
        let unacked = (parked.next_seq - 1).saturating_sub(parked.acked);
        shared.metrics.sessions_expired.inc();
        shared.metrics.data_unacked.inc_by(unacked);
        info!(session_id = %parked.session_id, unacked, "session_expired");
    }
    if let Some(resume) = &shared.resume {
        shared.metrics.sessions_parked.set(resume.parked() as i64);
    }
}

/// Expires parked sessions as their windows end (checked at least once a
/// second), until the server stops.
async fn expire_parked(shared: Arc<Shared>) {
    let Some(resume) = &shared.resume else { return };
    loop {
        let now = Instant::now();
        let next = resume.next_expiry().unwrap_or(now + Duration::from_secs(1)).min(now + Duration::from_secs(1));
        tokio::time::sleep_until(next).await;
        count_expired(&shared, resume.expire(Instant::now()));
    }
}

/// How long a drain waits for its parked sessions to be handed over. A
/// client comes back within about a second of its cut (its reconnect
/// jitter, then a first backoff of 100 ms by default); one that has not
/// by then, or that never will (a client that went silent, a kill), must
/// not hold the drain until its deadline.
const HAND_OVER_GRACE: Duration = Duration::from_secs(2);

/// The drain proper: from the signal to the last session closed.
async fn drain(shared: &Arc<Shared>) -> DrainSummary {
    let started = Instant::now();
    let timeout = shared.config.drain_timeout;
    let sessions = shared.sessions.len() as u64;
    let span = info_span!(target: "gsd_server::drain", "drain", server_id = %shared.server_id, sessions,
        complete = tracing::field::Empty, incomplete = tracing::field::Empty, duration_ms = tracing::field::Empty);
    shared.started.set(started).expect("drain runs once");
    shared.deadline.set(started + timeout).expect("drain runs once");
    *shared.drain_span.lock().expect("not poisoned") = Some(span.clone());
    shared.metrics.draining.set(1);
    // Chosen before any session learns of the drain, among those open now.
    if let Some(pick) = &shared.reset_pick {
        let chosen = pick.choose();
        warn!(target: "gsd_server::lifecycle", server_id = %shared.server_id, chosen,
            asked = shared.config.fault_reset_at_sigterm, "fault_reset_at_sigterm_chosen");
    }
    // The drain's own lines are logged in its span: with traces exported,
    // they carry its trace and span ids (gsd_telemetry's JSON lines).
    span.in_scope(|| {
        info!(target: "gsd_server::lifecycle", server_id = %shared.server_id, sessions,
            timeout_ms = timeout.as_millis() as u64, pacing_ms = shared.config.drain_pacing.as_millis() as u64,
            "drain_start");
    });
    shared.drain.cancel();
    shared.sessions.close();

    // Each session honours the deadline itself; this bound is only a net
    // under a bug, so that the process always exits.
    let net = started + timeout + shared.config.close_timeout + Duration::from_secs(1);
    if tokio::time::timeout_at(net, shared.sessions.wait()).await.is_err() {
        span.in_scope(
            || warn!(server_id = %shared.server_id, open = shared.sessions.len(), "drain_sessions_abandoned"),
        );
    }
    // Parked sessions wait for their clients, who reconnect to another
    // replica, which asks this one to hand them over (the admin port serves
    // on): until none is left, for HAND_OVER_GRACE at most (and never past
    // the deadline). What is left then is given up, counted as expired,
    // its frames unacked.
    if let Some(resume) = &shared.resume {
        let parked = resume.parked();
        if parked > 0 {
            span.in_scope(
                || info!(target: "gsd_server::lifecycle", server_id = %shared.server_id, parked, "drain_waits_for_parked"),
            );
            let until = (Instant::now() + HAND_OVER_GRACE).min(started + timeout);
            while resume.parked() > 0 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        count_expired(shared, resume.expire_all());
    }
    let duration = started.elapsed();
    shared.metrics.shutdown_duration.observe(duration.as_secs_f64());
    let drained = |outcome: metrics::DrainOutcome| shared.drained[outcome as usize].load(Ordering::SeqCst);
    let summary = DrainSummary {
        sessions: metrics::DrainOutcome::ALL.into_iter().map(drained).sum::<u64>().max(sessions),
        complete: drained(metrics::DrainOutcome::Complete),
        incomplete: drained(metrics::DrainOutcome::Incomplete),
        client_left: drained(metrics::DrainOutcome::ClientLeft),
        peer_lost: drained(metrics::DrainOutcome::PeerLost),
        reset: drained(metrics::DrainOutcome::Reset),
        messages: shared.drained_messages.load(Ordering::SeqCst),
        duration,
    };
    span.record("complete", summary.complete);
    span.record("incomplete", summary.incomplete);
    span.record("duration_ms", duration.as_millis() as u64);
    shared.drain_span.lock().expect("not poisoned").take();
    shared.drain_finished.store(true, Ordering::SeqCst);
    span.in_scope(|| {
        info!(
            target: "gsd_server::lifecycle",
            server_id = %shared.server_id,
            sessions = summary.sessions,
            complete = summary.complete,
            incomplete = summary.incomplete,
            client_left = summary.client_left,
            peer_lost = summary.peer_lost,
            reset = summary.reset,
            messages = summary.messages,
            duration_ms = duration.as_millis() as u64,
            "drain_end"
        )
    });
    drop(span);
    summary
}
