//! `gsd-client verdict`: the rehearsal inside a cluster (the chart's opt-in
//! `helm test` pod, `verdict.enabled`). It deletes one ready server pod, as a
//! rollout or an eviction would, follows that pod's drain on its `/metrics`
//! (by pod IP, which keeps answering through METRICS_LINGER after the drain),
//! reads the client pods' counters before and after, prints a report in the
//! shape of gsd-lab's and succeeds only if every drain completed and nothing
//! was lost.
//!
//! It talks to the Kubernetes API as the pod's service account: the token
//! and CA the kubelet mounts, over HTTPS (reqwest on rustls with the ring
//! provider, the cluster CA as the only root). The chart's Role grants what
//! it uses and nothing more: list pods, delete pods.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::parse_duration;

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// gsd-client verdict: delete one gsd-server pod and prove that its drain
/// completed and that no client lost anything. Runs inside the cluster as a
/// service account allowed to list and delete pods in its namespace.
///
/// Every option can be given as a flag or as the environment variable named
/// in brackets.
#[derive(Debug, Clone, Parser)]
#[command(name = "gsd-client verdict", version, about, long_about = None)]
pub struct VerdictConfig {
    /// Namespace of the release (default: the service account's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,

    /// Label selector of the server pods.
    #[arg(long, env = "SERVER_SELECTOR", value_parser = parse_selector)]
    pub server_selector: String,

    /// Label selector of the client pods.
    #[arg(long, env = "CLIENT_SELECTOR", value_parser = parse_selector)]
    pub client_selector: String,

    /// Port of the servers' /metrics (their admin port, ADMIN_PORT).
    #[arg(long, env = "SERVER_METRICS_PORT", default_value_t = 9090)]
    pub server_metrics_port: u16,

    /// Port of the clients' /metrics.
    #[arg(long, env = "CLIENT_METRICS_PORT", default_value_t = 9091)]
    pub client_metrics_port: u16,

    /// Bound on the whole verdict; past it, it fails.
    #[arg(long, env = "VERDICT_TIMEOUT", default_value = "180s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// After the drain, how long the clients get to reconnect before their
    /// counters are read.
    #[arg(long, env = "VERDICT_SETTLE", default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,

    /// Base URL of the Kubernetes API (default: https:// KUBERNETES_SERVICE_HOST
    /// : KUBERNETES_SERVICE_PORT, as in every pod).
    #[arg(long, env = "KUBE_API")]
    pub api: Option<String>,

    /// The service account token.
    #[arg(long, env = "KUBE_TOKEN_FILE", default_value = concat!("/var/run/secrets/kubernetes.io/serviceaccount", "/token"))]
    pub token_file: PathBuf,

    /// The CA bundle the API server's certificate is checked against.
    #[arg(long, env = "KUBE_CA_FILE", default_value = concat!("/var/run/secrets/kubernetes.io/serviceaccount", "/ca.crt"))]
    pub ca_file: PathBuf,
}

fn parse_selector(text: &str) -> Result<String, String> {
    let text = text.trim();
    let valid = !text.is_empty()
        && text.split(',').all(|term| {
            term.split_once('=').is_some_and(|(k, v)| {
                let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
                ok(k.trim()) && ok(v.trim_start_matches('=').trim())
            })
        });
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is not a selector such as app=gsd,component=server"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    #[error("{0}")]
    Setup(String),
    #[error("Kubernetes API {method} {path}: {detail}")]
    Api { method: &'static str, path: String, detail: String },
    #[error("{0}")]
    Precondition(String),
    #[error("no verdict within {0:?}: {1}")]
    Timeout(Duration, String),
}

/// The Kubernetes API as this pod's service account.
struct Kube {
    /// HTTPS client trusting only the cluster's CA.
    http: reqwest::Client,
    /// The API server's URL: `--api`, else from the in-cluster environment.
    base: String,
    /// The service account's bearer token.
    token: String,
}

impl Kube {
    fn new(config: &VerdictConfig) -> Result<Self, VerdictError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| VerdictError::Setup(format!("{what}: {e}"));
        let base = match &config.api {
            Some(api) => api.trim_end_matches('/').to_owned(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    VerdictError::Setup("KUBERNETES_SERVICE_HOST is not set: not in a pod? (or give --api)".into())
                })?;
                let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                match host.parse::<IpAddr>() {
                    Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{port}"),
                    _ => format!("https://{host}:{port}"),
                }
            }
        };
        let token = std::fs::read_to_string(&config.token_file)
            .map_err(|e| setup(&format!("reading the token {}", config.token_file.display()), &e))?
            .trim()
            .to_owned();
        let pem = std::fs::read(&config.ca_file)
            .map_err(|e| setup(&format!("reading the CA {}", config.ca_file.display()), &e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| setup(&format!("parsing the CA {}", config.ca_file.display()), &e))?;
        if certs.is_empty() {
            return Err(VerdictError::Setup(format!("{} holds no certificate", config.ca_file.display())));
        }
        // Several crypto providers could be compiled in; say which one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .tls_certs_only(certs)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| setup("building the HTTPS client", &e))?;
        Ok(Kube { http, base, token })
    }

    async fn call(&self, method: &'static str, path: &str, body: Option<Value>) -> Result<Value, VerdictError> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "DELETE" => self.http.delete(&url),
            _ => self.http.get(&url),
        };
        let mut request = request.bearer_auth(&self.token).header("Accept", "application/json");
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let api = |detail: String| VerdictError::Api { method, path: path.to_owned(), detail };
        let response = request.send().await.map_err(|e| api(causes(&e)))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| api(causes(&e)))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = json["message"].as_str().map_or_else(|| text.chars().take(300).collect(), str::to_owned);
            return Err(api(format!("{status}: {message}")));
        }
        Ok(json)
    }

    async fn pods(&self, namespace: &str, selector: &str) -> Result<Value, VerdictError> {
        self.call("GET", &format!("/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"), None).await
    }
}

/// An error with every cause under it, so that "error sending request" says
/// why (a certificate from another CA, a refused connection).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// A pod the verdict can use: running, ready, not terminating, with an IP.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyPod {
    /// The pod's name: its `SERVER_ID`, as welcomes and metrics name it.
    pub name: String,
    /// The pod's uid, the deletion's precondition, so that a replacement
    /// with the same name is never deleted by mistake.
    pub uid: String,
    /// Where the pod's admin port is scraped.
    pub ip: IpAddr,
}

/// The ready pods of a PodList, by name.
pub fn ready_pods(list: &Value) -> Vec<ReadyPod> {
    let mut pods: Vec<ReadyPod> = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
        .filter_map(|p| {
            Some(ReadyPod {
                name: p["metadata"]["name"].as_str()?.to_owned(),
                uid: p["metadata"]["uid"].as_str()?.to_owned(),
                ip: p["status"]["podIP"].as_str()?.parse().ok()?,
            })
        })
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods
}

/// Sum of every series of `metric` (any labels) in a text exposition.
pub fn sum_series(body: &str, metric: &str) -> f64 {
    body.lines()
        .filter(|l| l.strip_prefix(metric).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A client pod's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientCounters {
    /// Virtual users in the pod.
    pub users: u64,
    /// Reconnects, whatever the reason.
    pub reconnects: u64,
    /// Drains the clients saw complete.
    pub drains_complete: u64,
    /// Drains the clients saw end short: the verdict fails on any.
    pub drains_incomplete: u64,
    /// Data frames sent or announced that never arrived.
    pub messages_lost: u64,
    /// Requests never answered.
    pub requests_lost: u64,
    /// Requests re-sent on a new session.
    pub requests_resent: u64,
    /// Sessions cut with no close and no notice: what was sent on them
    /// after the last frame received is unknown.
    pub sessions_cut: u64,
    /// Data frames received whose ack the server never got: not loss, but
    /// the clients' side of the pods' unacked counts, so the report shows it.
    pub data_unacked: u64,
    /// Data frames below the seq expected (duplicates, reorders): not loss,
    /// but gsd-server sends none, so the report shows any.
    pub data_duplicate: u64,
}

impl ClientCounters {
    pub fn parse(body: &str) -> Self {
        let n = |series: &str| gsd_telemetry::sample(body, series).unwrap_or(0.0) as u64;
        ClientCounters {
            users: n("gsd_client_users"),
            reconnects: sum_series(body, "gsd_client_reconnects_total") as u64,
            drains_complete: n(r#"gsd_client_drains_total{outcome="complete"}"#),
            drains_incomplete: n(r#"gsd_client_drains_total{outcome="incomplete"}"#),
            messages_lost: n("gsd_client_messages_lost_total"),
            requests_lost: n("gsd_client_requests_lost_total"),
            requests_resent: n("gsd_client_requests_resent_total"),
            sessions_cut: n("gsd_client_sessions_cut_total"),
            data_unacked: n("gsd_client_data_unacked_total"),
            data_duplicate: n("gsd_client_data_duplicate_total"),
        }
    }

    /// What happened between `before` and `self` (users: the current count).
    fn since(&self, before: &ClientCounters) -> ClientCounters {
        ClientCounters {
            users: self.users,
            reconnects: self.reconnects.saturating_sub(before.reconnects),
            drains_complete: self.drains_complete.saturating_sub(before.drains_complete),
            drains_incomplete: self.drains_incomplete.saturating_sub(before.drains_incomplete),
            messages_lost: self.messages_lost.saturating_sub(before.messages_lost),
            requests_lost: self.requests_lost.saturating_sub(before.requests_lost),
            requests_resent: self.requests_resent.saturating_sub(before.requests_resent),
            sessions_cut: self.sessions_cut.saturating_sub(before.sessions_cut),
            data_unacked: self.data_unacked.saturating_sub(before.data_unacked),
            data_duplicate: self.data_duplicate.saturating_sub(before.data_duplicate),
        }
    }

    fn add(&mut self, other: &ClientCounters) {
        self.users += other.users;
        self.reconnects += other.reconnects;
        self.drains_complete += other.drains_complete;
        self.drains_incomplete += other.drains_incomplete;
        self.messages_lost += other.messages_lost;
        self.requests_lost += other.requests_lost;
        self.requests_resent += other.requests_resent;
        self.sessions_cut += other.sessions_cut;
        self.data_unacked += other.data_unacked;
        self.data_duplicate += other.data_duplicate;
    }
}

/// The deleted pod's drain, from its last scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drain {
    /// The deleted pod.
    pub pod: String,
    /// Sessions the pod held just before it was deleted.
    pub sessions: u64,
    /// Sessions it drained completely.
    pub complete: u64,
    /// Sessions its drain cut short (the deadline, bad input).
    pub incomplete: u64,
    /// Sessions whose client went silent during the drain (given up after
    /// the ping timeout): their last frames may or may not have arrived.
    pub peer_lost: u64,
    /// Sessions whose client left on its own during the drain.
    pub client_left: u64,
    /// Data frames sent in the drain phase.
    pub messages: u64,
    /// Signal to last session closed; None when no scrape saw the drain end.
    pub shutdown_seconds: Option<f64>,
}

impl Drain {
    /// The drain as `body` (a scrape of the pod) shows it.
    pub fn parse(pod: &str, sessions: u64, body: &str) -> Self {
        let n = |series: &str| gsd_telemetry::sample(body, series).unwrap_or(0.0);
        let ended = n("gsd_server_shutdown_duration_seconds_count") >= 1.0;
        Drain {
            pod: pod.to_owned(),
            sessions,
            complete: n(r#"gsd_server_drains_total{outcome="complete"}"#) as u64,
            incomplete: n(r#"gsd_server_drains_total{outcome="incomplete"}"#) as u64,
            peer_lost: n(r#"gsd_server_drains_total{outcome="peer_lost"}"#) as u64,
            client_left: n(r#"gsd_server_drains_total{outcome="client_left"}"#) as u64,
            messages: n("gsd_server_drain_messages_sum") as u64,
            shutdown_seconds: ended.then(|| n("gsd_server_shutdown_duration_seconds_sum")),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerdictReport {
    /// The namespace the verdict ran in.
    pub namespace: String,
    /// Ready server pods before the deletion.
    pub servers: usize,
    /// Client pods whose counters were read.
    pub client_pods: usize,
    /// The deleted pod's drain, from its last scrape.
    pub drain: Drain,
    /// The clients' counters over the verdict (differences), summed.
    pub clients: ClientCounters,
    /// From the start of the rehearsal to its verdict.
    pub elapsed_seconds: f64,
    /// Why it failed; empty when it passed.
    pub reasons: Vec<String>,
}

impl VerdictReport {
    pub fn ok(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Every reason the rehearsal did not prove a lossless drain.
pub fn judge(drain: &Drain, clients: &ClientCounters, client_pods_changed: &[String]) -> Vec<String> {
    let mut reasons = Vec::new();
    if drain.shutdown_seconds.is_none() {
        reasons.push(format!("{}: no scrape saw its drain end (exited or SIGKILLed first?)", drain.pod));
    }
    if drain.sessions == 0 {
        reasons.push(format!("{} held no sessions when it was deleted: nothing was proven", drain.pod));
    }
    if drain.incomplete > 0 {
        reasons.push(format!("{}: {} drain(s) incomplete", drain.pod, drain.incomplete));
    }
    if drain.peer_lost > 0 {
        reasons.push(format!(
            "{}: gave up {} silent client session(s) in the drain (delivered or lost: unknown)",
            drain.pod, drain.peer_lost
        ));
    }
    reasons.extend(crate::ledger::loss_reasons(
        clients.messages_lost,
        clients.requests_lost,
        clients.drains_incomplete,
    ));
    if clients.sessions_cut > 0 {
        reasons.push(format!("{} session(s) cut with no close and no notice: loss unknown", clients.sessions_cut));
    }
    for pod in client_pods_changed {
        reasons.push(format!("client pod {pod} came or went during the verdict: its counters cannot be compared"));
    }
    reasons
}

/// The report as text, in the shape of gsd-lab's.
pub fn render(report: &VerdictReport) -> String {
    let d = &report.drain;
    let t = &report.clients;
    let mut out = format!(
        "gsd-client verdict: delete-pod | namespace {} | {} ready servers | {} client pod(s)\n\n",
        report.namespace, report.servers, report.client_pods
    );
    out += &format!(
        "{:<32} {:>8} {:>8} {:>9} {:>10}  {:<10}\n",
        "pod", "sessions", "drained", "messages", "shutdown", "outcome"
    );
    let outcome = match (d.shutdown_seconds, d.incomplete + d.peer_lost) {
        (None, _) => "unknown",
        (Some(_), 0) => "complete",
        _ => "incomplete",
    };
    out += &format!(
        "{:<32} {:>8} {:>8} {:>9} {:>10}  {:<10}\n",
        d.pod,
        d.sessions,
        d.complete + d.incomplete + d.peer_lost + d.client_left,
        d.messages,
        d.shutdown_seconds.map_or("-".to_owned(), |s| format!("{s:.3}s")),
        outcome
    );
    out += &format!(
        "\nclients: {} users | {} reconnects\n         drains {} complete, {} incomplete | messages lost {} | requests lost {} (re-sent {})\n",
        t.users,
        t.reconnects,
        t.drains_complete,
        t.drains_incomplete,
        t.messages_lost,
        t.requests_lost,
        t.requests_resent
    );
    if t.data_unacked > 0 || t.data_duplicate > 0 {
        out += &format!(
            "         data frames received but unacked when their session ended {} (processed, not lost) | \
             below the seq expected {} (ignored)\n",
            t.data_unacked, t.data_duplicate
        );
    }
    out += "\n";
    out + &crate::ledger::render_outcome(&report.reasons, report.elapsed_seconds)
}

async fn scrape(ip: IpAddr, port: u16) -> Option<String> {
    let addr = SocketAddr::new(ip, port).to_string();
    match gsd_telemetry::http_get(&addr, "/metrics", Duration::from_secs(2)).await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

async fn scrape_clients(pods: &[ReadyPod], port: u16) -> Result<BTreeMap<String, ClientCounters>, VerdictError> {
    let mut counters = BTreeMap::new();
    for pod in pods {
        let body = scrape(pod.ip, port).await.ok_or_else(|| {
            VerdictError::Precondition(format!("client pod {} ({}:{port}) does not answer /metrics", pod.name, pod.ip))
        })?;
        counters.insert(pod.name.clone(), ClientCounters::parse(&body));
    }
    Ok(counters)
}

/// The whole rehearsal. Errors are setup or API failures; a rehearsal that
/// ran is a report, passed or not.
pub async fn run(config: &VerdictConfig) -> Result<VerdictReport, VerdictError> {
    let started = Instant::now();
    let deadline = started + config.timeout;
    let kube = Kube::new(config)?;
    let namespace = match &config.namespace {
        Some(ns) => ns.clone(),
        None => std::fs::read_to_string(format!("{SERVICE_ACCOUNT}/namespace"))
            .map(|s| s.trim().to_owned())
            .map_err(|e| VerdictError::Setup(format!("no --namespace and no service account namespace: {e}")))?,
    };

    let servers = ready_pods(&kube.pods(&namespace, &config.server_selector).await?);
    if servers.len() < 2 {
        return Err(VerdictError::Precondition(format!(
            "{} ready server pod(s) match {}: a drain needs at least 2, so that the sessions have somewhere to go",
            servers.len(),
            config.server_selector
        )));
    }
    let clients = ready_pods(&kube.pods(&namespace, &config.client_selector).await?);
    if clients.is_empty() {
        return Err(VerdictError::Precondition(format!("no ready client pod matches {}", config.client_selector)));
    }
    let before = scrape_clients(&clients, config.client_metrics_port).await?;

    let victim = servers[0].clone();
    let sessions = match scrape(victim.ip, config.server_metrics_port).await {
        Some(body) => gsd_telemetry::sample(&body, "gsd_server_sessions").unwrap_or(0.0) as u64,
        None => {
            return Err(VerdictError::Precondition(format!(
                "server pod {} ({}:{}) does not answer /metrics",
                victim.name, victim.ip, config.server_metrics_port
            )));
        }
    };
    eprintln!("verdict: deleting {} ({} sessions)", victim.name, sessions);
    let precondition = serde_json::json!({
        "kind": "DeleteOptions", "apiVersion": "v1", "preconditions": { "uid": victim.uid }
    });
    kube.call("DELETE", &format!("/api/v1/namespaces/{namespace}/pods/{}", victim.name), Some(precondition)).await?;

    // Follow the drain on the pod's own /metrics until a scrape shows its end.
    let mut drain = Drain::parse(&victim.name, sessions, "");
    let mut silent_since: Option<Instant> = None;
    while drain.shutdown_seconds.is_none() {
        if Instant::now() >= deadline {
            return Err(VerdictError::Timeout(config.timeout, format!("{} was still draining", victim.name)));
        }
        match scrape(victim.ip, config.server_metrics_port).await {
            Some(body) => {
                silent_since = None;
                drain = Drain::parse(&victim.name, sessions, &body);
            }
            // Gone for good: the report says no scrape saw the drain end.
            None if silent_since.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) => break,
            None => silent_since = silent_since.or(Some(Instant::now())),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("verdict: drain of {} over; {:?} for the clients to settle", victim.name, config.settle);
    tokio::time::sleep(config.settle.min(deadline.saturating_duration_since(Instant::now()))).await;

    let after = scrape_clients(&clients, config.client_metrics_port).await?;
    let mut totals = ClientCounters::default();
    let mut changed = Vec::new();
    for (pod, now) in &after {
        match before.get(pod) {
            Some(then) if now.reconnects >= then.reconnects => totals.add(&now.since(then)),
            _ => changed.push(pod.clone()),
        }
    }
    let reasons = judge(&drain, &totals, &changed);
    Ok(VerdictReport {
        namespace,
        servers: servers.len(),
        client_pods: clients.len(),
        drain,
        clients: totals,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        reasons,
    })
}

/// `gsd-client verdict [options]`: the report on stdout; exit 0 only on PASS.
pub fn main<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let config = VerdictConfig::parse_from(args);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = runtime.block_on(run(&config)).map_err(|e| anyhow::anyhow!("verdict: {e}"))?;
    print!("{}", render(&report));
    if report.ok() { Ok(()) } else { anyhow::bail!("verdict: FAIL") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, ready: &str, ip: Option<&str>, deleting: bool) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]},
        });
        if let Some(ip) = ip {
            p["status"]["podIP"] = json!(ip);
        }
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        p
    }

    #[test]
    fn only_running_ready_live_pods_with_an_ip_are_used() {
        let list = json!({"items": [
            pod("s-b", "Running", "True", Some("10.0.0.2"), false),
            pod("s-a", "Running", "True", Some("fd00::1"), false),
            pod("s-pending", "Pending", "False", None, false),
            pod("s-unready", "Running", "False", Some("10.0.0.3"), false),
            pod("s-terminating", "Running", "True", Some("10.0.0.4"), true),
            pod("s-noip", "Running", "True", None, false),
        ]});
        let pods = ready_pods(&list);
        assert_eq!(pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["s-a", "s-b"]);
        assert_eq!(pods[0].ip, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(pods[1].uid, "uid-s-b");
        assert!(ready_pods(&json!({"kind": "Status"})).is_empty());
    }

    const CLIENT_BEFORE: &str = "gsd_client_users 10\n\
        gsd_client_reconnects_total{reason=\"drain\"} 4\ngsd_client_reconnects_total{reason=\"error\"} 1\n\
        gsd_client_drains_total{outcome=\"complete\"} 4\ngsd_client_drains_total{outcome=\"incomplete\"} 0\n\
        gsd_client_messages_lost_total 2\ngsd_client_requests_lost_total 0\ngsd_client_requests_resent_total 1\n\
        gsd_client_data_unacked_total 3\ngsd_client_data_duplicate_total 1\n";

    #[test]
    fn client_counters_are_compared_not_taken_whole() {
        let before = ClientCounters::parse(CLIENT_BEFORE);
        assert_eq!(before.reconnects, 5);
        assert_eq!(before.messages_lost, 2);
        assert_eq!((before.data_unacked, before.data_duplicate), (3, 1));
        let after = ClientCounters::parse(
            &CLIENT_BEFORE
                .replace("reason=\"drain\"} 4", "reason=\"drain\"} 14")
                .replace("outcome=\"complete\"} 4", "outcome=\"complete\"} 14")
                .replace("unacked_total 3", "unacked_total 5"),
        );
        let delta = after.since(&before);
        assert_eq!(delta.reconnects, 10);
        assert_eq!(delta.drains_complete, 10);
        // Two messages lost before the verdict are not this drain's loss.
        assert_eq!(delta.messages_lost, 0);
        assert_eq!((delta.data_unacked, delta.data_duplicate), (2, 0));
        assert_eq!(delta.users, 10);
        assert_eq!(sum_series("gsd_client_reconnects_totalx 9\n", "gsd_client_reconnects_total"), 0.0);
    }

    const DRAINED: &str = "gsd_server_sessions 0\n\
        gsd_server_drains_total{outcome=\"complete\"} 10\ngsd_server_drains_total{outcome=\"incomplete\"} 0\n\
        gsd_server_drain_messages_sum 55\ngsd_server_shutdown_duration_seconds_sum 0.25\n\
        gsd_server_shutdown_duration_seconds_count 1\n";

    #[test]
    fn a_complete_drain_without_loss_passes_and_says_so() {
        let drain = Drain::parse("gsd-server-a", 10, DRAINED);
        assert_eq!((drain.complete, drain.incomplete, drain.messages), (10, 0, 55));
        let lost_peer = Drain::parse("p", 1, &format!("{DRAINED}gsd_server_drains_total{{outcome=\"peer_lost\"}} 2\n"));
        assert_eq!((lost_peer.peer_lost, lost_peer.client_left), (2, 0));
        assert_eq!(drain.shutdown_seconds, Some(0.25));
        // Unacked frames are the clients' (processed, not lost): shown, not failed on.
        let clients =
            ClientCounters { users: 10, reconnects: 10, drains_complete: 10, data_unacked: 2, ..Default::default() };
        let reasons = judge(&drain, &clients, &[]);
        assert!(reasons.is_empty(), "{reasons:?}");
        let report = VerdictReport {
            namespace: "shop".into(),
            servers: 2,
            client_pods: 1,
            drain,
            clients,
            elapsed_seconds: 12.0,
            reasons,
        };
        let text = render(&report);
        assert!(text.contains("gsd-server-a"), "{text}");
        assert!(text.contains("0.250s") && text.contains("complete"), "{text}");
        assert!(text.contains("unacked when their session ended 2 (processed, not lost)"), "{text}");
        assert!(text.ends_with("PASS: every drain completed and nothing was lost (12.0s)\n"), "{text}");
    }

    #[test]
    fn every_kind_of_failure_is_named() {
        let mid_drain = DRAINED.replace("_count 1", "_count 0");
        let unseen = Drain::parse("gsd-server-a", 10, &mid_drain);
        assert_eq!(unseen.shutdown_seconds, None);
        let incomplete = Drain::parse("gsd-server-a", 10, &DRAINED.replace("\"incomplete\"} 0", "\"incomplete\"} 3"));
        let incomplete = Drain { peer_lost: 1, ..incomplete };
        let lossy = ClientCounters {
            messages_lost: 2,
            requests_lost: 1,
            drains_incomplete: 3,
            sessions_cut: 4,
            ..Default::default()
        };
        let reasons = judge(&unseen, &ClientCounters::default(), &[]);
        assert!(reasons[0].contains("no scrape saw its drain end"), "{reasons:?}");
        let reasons = judge(&Drain::parse("gsd-server-a", 0, DRAINED), &ClientCounters::default(), &[]);
        assert!(reasons[0].contains("held no sessions"), "{reasons:?}");
        let reasons = judge(&incomplete, &lossy, &["gsd-client-x".into()]);
        assert_eq!(
            reasons,
            [
                "gsd-server-a: 3 drain(s) incomplete",
                "gsd-server-a: gave up 1 silent client session(s) in the drain (delivered or lost: unknown)",
                "2 messages lost",
                "1 requests lost",
                "3 drains incomplete as the clients saw them",
                "4 session(s) cut with no close and no notice: loss unknown",
                "client pod gsd-client-x came or went during the verdict: its counters cannot be compared",
            ]
        );
        let report = VerdictReport { drain: incomplete, reasons, ..Default::default() };
        let text = render(&report);
        assert!(
            text.contains("incomplete") && text.contains("FAIL:\n  - gsd-server-a: 3 drain(s) incomplete"),
            "{text}"
        );
    }

    #[test]
    fn garbage_options_are_refused() {
        let ok = ["verdict", "--server-selector", "app=gsd,component=server", "--client-selector", "component=client"];
        assert!(VerdictConfig::try_parse_from(ok).is_ok());
        for bad in [
            &["verdict", "--server-selector", "", "--client-selector", "a=b"][..],
            &["verdict", "--server-selector", "app", "--client-selector", "a=b"],
            &["verdict", "--server-selector", "a=b c", "--client-selector", "a=b"],
            &["verdict", "--server-selector", "a=b", "--client-selector", "a=b", "--timeout", "soon"],
            &["verdict", "--server-selector", "a=b", "--client-selector", "a=b", "--server-metrics-port", "70000"],
            &["verdict", "--client-selector", "a=b"],
        ] {
            assert!(VerdictConfig::try_parse_from(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[tokio::test]
    async fn missing_credentials_fail_with_the_path() {
        let config = VerdictConfig::try_parse_from([
            "verdict",
            "--server-selector",
            "a=b",
            "--client-selector",
            "a=c",
            "--api",
            "https://127.0.0.1:1",
            "--token-file",
            "/nonexistent/token",
        ])
        .unwrap();
        let err = run(&config).await.unwrap_err().to_string();
        assert!(err.contains("reading the token /nonexistent/token"), "{err}");
    }
}
