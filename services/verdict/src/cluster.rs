//! `gsd-verdict`: the rehearsal inside a cluster (the chart's opt-in `helm
//! test` pod, `verdict.enabled`). It evicts one ready server pod through the
//! Eviction API, as `kubectl drain` and a node upgrade do, so that a
//! PodDisruptionBudget that forbids it is reported instead of bypassed;
//! follows that pod's drain on its `/metrics` (by pod IP, which keeps
//! answering through METRICS_LINGER after the drain); reads the client pods'
//! accounts before and after; and asks the judge ([`crate::judge_all`]),
//! the same rules gsd-lab uses. Exit 0 only on PASS.
//!
//! It talks to the Kubernetes API as the pod's service account: the token
//! and CA the kubelet mounts, over HTTPS (reqwest on rustls with the ring
//! provider, the cluster CA as the only root). The chart's Role grants what
//! it uses and nothing more: list pods, create pods/eviction.
//!
//! With `--via`, a second phase follows ([`crate::rollout`]): a rollout of
//! the proxy in front of the servers, judged by the same rules, the
//! proxy's setting named for its cuts. It also reads the client pods' logs
//! (get pods/log) and, in the proxy's namespace, gets and patches the
//! proxy's Deployment and lists its pods.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use gsd_protocol::duration::parse_duration;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::report::Case;
use crate::rollout::{Rollout, Target};
use crate::{ClientAccount, DrainEvidence, Ending, Reason, ServerAccount};

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// gsd-verdict: evict one gsd-server pod and prove that its drain completed
/// and that no client lost anything; with --via, then roll the proxy in
/// front of the servers and name the setting that cut the sessions. Runs
/// inside the cluster as a service account allowed to list pods and create
/// evictions in its namespace (and, with --via, what the proxy phase needs).
///
/// Every option can be given as a flag or as the environment variable named
/// in brackets.
#[derive(Debug, Clone, Parser)]
#[command(name = "gsd-verdict", version, long_about = None)]
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

    /// How long a refused eviction (HTTP 429: a PodDisruptionBudget allows no
    /// disruption now) is retried, every second, before the verdict reports
    /// it; a budget whose status the controller has not caught up on yet
    /// answers 429 for a moment too.
    #[arg(long, env = "VERDICT_EVICTION_WAIT", default_value = "15s", value_parser = parse_duration)]
    pub eviction_wait: Duration,

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

    /// Also write the report as JSON here (every reason with its kind and
    /// numbers), for CI gates.
    #[arg(long, env = "VERDICT_JSON")]
    pub json: Option<PathBuf>,

    /// Also write the verdict as JUnit XML here.
    #[arg(long, env = "VERDICT_JUNIT")]
    pub junit: Option<PathBuf>,

    /// The proxy the clients go through, to roll after the eviction (as
    /// `kubectl rollout restart` does) and judge what its rollout does to
    /// the sessions: `traefik` (its graceTimeOut, 10s unless set),
    /// `envoy-gateway` (its shutdown.drainTimeout, 60s unless set), or any
    /// other name with --via-setting-name and --via-setting. Needs
    /// --via-namespace and --via-deployment, and the client pods' logs in
    /// JSON (LOG_FORMAT=json).
    #[arg(
        long,
        env = "VERDICT_VIA",
        value_name = "NAME",
        value_parser = crate::offline::parse_text,
        requires_all = ["via_namespace", "via_deployment"]
    )]
    pub via: Option<String>,

    /// The namespace of the proxy's Deployment.
    #[arg(long, env = "VERDICT_VIA_NAMESPACE", value_name = "NS", value_parser = parse_dns_label, requires = "via")]
    pub via_namespace: Option<String>,

    /// The proxy's Deployment, which the verdict restarts.
    #[arg(long, env = "VERDICT_VIA_DEPLOYMENT", value_name = "NAME", value_parser = parse_dns_label, requires = "via")]
    pub via_deployment: Option<String>,

    /// How long the proxy keeps open WebSockets once its pod terminates
    /// (`10s`, `1m`, `500ms`, or seconds); default: the named proxy's
    /// default.
    #[arg(
        long,
        env = "VERDICT_VIA_SETTING",
        value_name = "DURATION",
        value_parser = crate::offline::parse_grace,
        requires = "via"
    )]
    pub via_setting: Option<Duration>,

    /// That setting's name, as the report says it; default: the named
    /// proxy's (`Traefik graceTimeOut`, `Envoy Gateway
    /// shutdown.drainTimeout`), required for any other.
    #[arg(
        long,
        env = "VERDICT_VIA_SETTING_NAME",
        value_name = "TEXT",
        value_parser = crate::offline::parse_text,
        requires = "via"
    )]
    pub via_setting_name: Option<String>,
}

impl VerdictConfig {
    /// The proxy to roll (`--via` and its companions), or none; an error
    /// for a proxy gsd does not know given without its setting.
    pub fn via_target(&self) -> Result<Option<Target>, String> {
        let Some(proxy) = &self.via else { return Ok(None) };
        let (Some(namespace), Some(deployment)) = (&self.via_namespace, &self.via_deployment) else {
            return Err(format!("--via {proxy} needs --via-namespace and --via-deployment"));
        };
        Target::new(proxy, namespace, deployment, self.via_setting, self.via_setting_name.as_deref()).map(Some)
    }
}

/// A DNS-1123 label, as Kubernetes names namespaces (and most Deployments).
fn parse_dns_label(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if bytes.len() <= 63 && edge(bytes.first()) && edge(bytes.last()) && bytes.iter().all(inner) {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is not a DNS label (lower-case letters, digits and `-`, at most 63)"))
    }
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
    Api { method: &'static str, path: String, status: Option<u16>, detail: String },
    #[error("{0}")]
    Precondition(String),
    #[error("no verdict within {0:?}: {1}")]
    Timeout(Duration, String),
}

/// The Kubernetes API as this pod's service account.
pub(crate) struct Kube {
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

    /// `method` (GET, POST, or PATCH with a strategic-merge body) on
    /// `path`, the answer as JSON.
    pub(crate) async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, VerdictError> {
        let text = self.send(method, path, body, "application/json").await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET `path`, the answer as text (a pod's log).
    pub(crate) async fn text(&self, path: &str) -> Result<String, VerdictError> {
        self.send("GET", path, None, "*/*").await
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
        accept: &str,
    ) -> Result<String, VerdictError> {
        let url = format!("{}{path}", self.base);
        let (request, content_type) = match method {
            "POST" => (self.http.post(&url), "application/json"),
            "PATCH" => (self.http.patch(&url), "application/strategic-merge-patch+json"),
            _ => (self.http.get(&url), "application/json"),
        };
        let mut request = request.bearer_auth(&self.token).header("Accept", accept);
        if let Some(body) = body {
            request = request.header("Content-Type", content_type).body(body.to_string());
        }
        let api =
            |status: Option<u16>, detail: String| VerdictError::Api { method, path: path.to_owned(), status, detail };
        let response = request.send().await.map_err(|e| api(None, causes(&e)))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| api(Some(status.as_u16()), causes(&e)))?;
        if !status.is_success() {
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let mut message = json["message"].as_str().map_or_else(|| text.chars().take(300).collect(), str::to_owned);
            // The why is often in the causes (an eviction's PodDisruptionBudget).
            for cause in json["details"]["causes"].as_array().map(Vec::as_slice).unwrap_or_default() {
                if let Some(text) = cause["message"].as_str() {
                    message = format!("{message} {text}");
                }
            }
            return Err(api(Some(status.as_u16()), format!("{status}: {message}")));
        }
        Ok(text)
    }

    pub(crate) async fn pods(&self, namespace: &str, selector: &str) -> Result<Value, VerdictError> {
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
    /// Its terminationGracePeriodSeconds (30, Kubernetes' default, when the
    /// spec does not say): the judge names it when the drain outlasts it.
    pub grace: Duration,
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
                grace: Duration::from_secs(p["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30)),
            })
        })
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods
}

/// Where the verdict's evidence came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The in-cluster run: it evicted the pod and scraped both sides itself.
    #[default]
    EvictPod,
    /// `gsd-verdict judge`: /metrics bodies someone else saved to files.
    SavedScrapes,
}

/// What the verdict saw and decided.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerdictReport {
    /// Where the evidence came from.
    pub mode: Mode,
    /// The namespace the verdict ran in (empty for saved scrapes).
    pub namespace: String,
    /// Ready server pods before the eviction.
    pub servers: usize,
    /// Client pods whose accounts were read.
    pub client_pods: usize,
    /// The evicted pod.
    pub pod: String,
    /// Sessions it held just before the eviction.
    pub held: u64,
    /// Its own account from the scrape that saw its drain end (or the last
    /// one it answered, when none did).
    pub server: Option<ServerAccount>,
    /// What the client pods' accounts changed by over the verdict, summed.
    pub clients: ClientAccount,
    /// Each client process's accounts as read, before and after (saved
    /// scrapes only, so that a caller reads every count from the judge).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_scrapes: Vec<ClientScrape>,
    /// The proxy terminated, and what the clients' logs show of it
    /// (`gsd-verdict judge --via`, and the in-cluster run's proxy phase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<crate::proxy::Via>,
    /// The in-cluster run's proxy phase (`--via`): the proxy's rollout,
    /// its old pods and the clients' change over it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// From the start of the rehearsal to its verdict.
    pub elapsed_seconds: f64,
    /// Why it failed; empty when it passed.
    #[serde(skip)]
    pub reasons: Vec<Reason>,
    /// The same, as JSON with kind and numbers.
    #[serde(rename = "reasons")]
    pub reasons_json: Value,
    /// PASS.
    pub ok: bool,
}

/// One client process's two accounts, as `gsd-verdict judge` read them.
#[derive(Debug, Clone, Serialize)]
pub struct ClientScrape {
    /// The file read before the termination.
    pub before_file: String,
    /// The file read after it.
    pub after_file: String,
    /// Its account before.
    pub before: ClientAccount,
    /// Its account after.
    pub after: ClientAccount,
}

impl VerdictReport {
    pub(crate) fn decide(mut self, reasons: Vec<Reason>) -> Self {
        self.reasons_json = crate::reasons_json(&reasons);
        self.ok = reasons.is_empty();
        self.reasons = reasons;
        self
    }

    /// The verdict as JUnit XML: the evicted pod's drain, the clients, and
    /// the proxy's rollout when there was one.
    pub fn junit(&self) -> String {
        // The rollout's reasons come last (see `run`), and are its own case.
        let rollout = self.rollout.as_ref().map_or(&[][..], |r| r.reasons.as_slice());
        let eviction = &self.reasons[..self.reasons.len().saturating_sub(rollout.len())];
        let (drain, clients): (Vec<Reason>, Vec<Reason>) = eviction.iter().cloned().partition(|r| {
            !matches!(
                r,
                Reason::MessagesLost { .. }
                    | Reason::RequestsLost { .. }
                    | Reason::ClientDrainsIncomplete { .. }
                    | Reason::Duplicates { .. }
                    | Reason::SessionsCut { .. }
                    | Reason::CutByProxy { .. }
            )
        });
        let mut cases = vec![Case { name: "clients".into(), reasons: clients }];
        if !self.pod.is_empty() {
            cases.insert(0, Case { name: format!("drain {}", self.pod), reasons: drain });
        }
        if let Some(r) = &self.rollout {
            cases.push(Case {
                name: format!("rollout {} {}/{}", r.proxy, r.namespace, r.deployment),
                reasons: r.reasons.clone(),
            });
        }
        let suite = match self.mode {
            Mode::EvictPod => format!("gsd-verdict {}", self.namespace),
            Mode::SavedScrapes => "gsd-verdict judge".to_owned(),
        };
        crate::junit(&suite, &cases, self.elapsed_seconds)
    }
}

/// The report as text, in the shape of gsd-lab's.
pub fn render(report: &VerdictReport) -> String {
    let t = &report.clients;
    let mut out = match report.mode {
        Mode::EvictPod => format!(
            "gsd-verdict: evict-pod{} | namespace {} | {} ready servers | {} client pod(s)\n\n",
            report.rollout.as_ref().map_or(String::new(), |r| format!(" + rollout of {}", r.proxy)),
            report.namespace,
            report.servers,
            report.client_pods
        ),
        Mode::SavedScrapes => format!(
            "gsd-verdict: judge | saved scrapes | {} | {} client process(es)\n\n",
            if report.pod.is_empty() { "no server pod" } else { "1 server pod" },
            report.client_pods
        ),
    };
    if !report.pod.is_empty() {
        out += &pod_rows(report);
    }
    out += "\n";
    out += &clients_lines("clients:", t);
    out += "\n";
    if let Some(rollout) = &report.rollout {
        out += &rollout_lines(rollout);
        out += "\n";
    }
    if let Some(via) = &report.via {
        out += &crate::report::render_via(via);
        if via.cuts == 0 && report.rollout.as_ref().is_some_and(|r| r.clients.cut == 0) {
            out += &format!(
                "    no session was cut: do the clients go through {}? (the chart's client.serverUrl)\n",
                via.proxy
            );
        }
        out += "\n";
    }
    out + &crate::render_outcome(&report.reasons, 0, report.elapsed_seconds)
}

/// A clients' account (`label` first): what changed over a phase.
fn clients_lines(label: &str, t: &ClientAccount) -> String {
    let indent = " ".repeat(label.len() + 1);
    format!(
        "{label} {} users | {} reconnects ({} after a drain)\n{indent}drains {} complete, {} incomplete | \
         messages lost {} | requests lost {} (re-sent {}) | received {}, unacked {} (processed, not lost), \
         duplicate {}, cut {} (resumed {})\n",
        t.users,
        t.reconnects,
        t.reconnects_drain,
        t.drains_complete,
        t.drains_incomplete,
        t.lost,
        t.requests_lost,
        t.requests_resent,
        t.received,
        t.unacked,
        t.duplicate,
        t.cut,
        t.resumed
    )
}

/// The proxy's rollout: its old pods, when each began terminating and
/// went, and the clients' change over it.
fn rollout_lines(r: &Rollout) -> String {
    let mut out = format!(
        "rollout of {} ({}/{}): restarted at {} | {} old pod(s) | {} client pod(s)\n",
        r.proxy,
        r.namespace,
        r.deployment,
        crate::proxy::rfc3339(r.restarted_at),
        r.pods.len(),
        r.client_pods
    );
    for pod in &r.pods {
        let when = match (pod.terminated_at, pod.gone_at) {
            (None, _) => "never began terminating".to_owned(),
            (Some(t), None) => format!("terminating {:.1} s after the restart, still there", t - r.restarted_at),
            (Some(t), Some(g)) => {
                format!("terminating {:.1} s after the restart, gone {:.1} s later", t - r.restarted_at, g - t)
            }
        };
        out += &format!("  {:<32} {when}; {}\n", pod.pod, crate::proxy::count(pod.cuts, "cut"));
    }
    out + &clients_lines("clients over the rollout:", &r.clients)
}

/// The drained pod's row and its own account's line.
fn pod_rows(report: &VerdictReport) -> String {
    let mut out = String::new();
    out += &format!(
        "{:<32} {:>8} {:>8} {:>9} {:>10}  {:<10}\n",
        "pod", "sessions", "drained", "messages", "shutdown", "outcome"
    );
    let (drained, messages, shutdown, outcome) = match &report.server {
        Some(s) => {
            let short = s.drained().saturating_sub(s.drains("complete")).saturating_sub(s.drains("client_left"));
            let outcome = match (s.shutdown_seconds, short) {
                (None, _) => "unknown",
                (Some(_), 0) if s.drained() >= report.held => "complete",
                _ => "incomplete",
            };
            (s.drained(), s.drain_messages, s.shutdown_seconds, outcome)
        }
        None => (0, 0, None, "unknown"),
    };
    out += &format!(
        "{:<32} {:>8} {:>8} {:>9} {:>10}  {:<10}\n",
        report.pod,
        report.held,
        drained,
        messages,
        shutdown.map_or("-".to_owned(), |s| format!("{s:.3}s")),
        outcome
    );
    if let Some(s) = &report.server {
        let drains: Vec<String> = s.drains.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
        out += &format!(
            "  server: drained {} ({}), sent {} in the drain, unacked {}\n",
            s.drained(),
            if drains.is_empty() { "none".to_owned() } else { drains.join(", ") },
            s.drain_messages,
            s.unacked
        );
    }
    out
}

async fn scrape(ip: IpAddr, port: u16) -> Option<String> {
    let addr = SocketAddr::new(ip, port).to_string();
    match gsd_telemetry::http_get(&addr, "/metrics", Duration::from_secs(2)).await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Every client pod's account, by pod; a pod that does not answer, or
/// answers with no account, is named.
pub(crate) async fn scrape_clients(
    pods: &[ReadyPod],
    port: u16,
) -> Result<BTreeMap<String, ClientAccount>, VerdictError> {
    let mut accounts = BTreeMap::new();
    for pod in pods {
        let body = scrape(pod.ip, port).await.ok_or_else(|| {
            VerdictError::Precondition(format!("client pod {} ({}:{port}) does not answer /metrics", pod.name, pod.ip))
        })?;
        let account = ClientAccount::parse(&body).map_err(|e| {
            VerdictError::Precondition(format!(
                "client pod {} ({}:{port}): its /metrics is no account: {e}",
                pod.name, pod.ip
            ))
        })?;
        accounts.insert(pod.name.clone(), account);
    }
    Ok(accounts)
}

/// The whole rehearsal. Errors are setup or API failures; a rehearsal that
/// ran (an eviction refused by a PodDisruptionBudget included) is a report,
/// passed or not.
/// With `--via`, the proxy's rollout ([`crate::rollout`]) follows the
/// eviction phase, whatever that phase found (a refused eviction
/// included): each phase has its own reasons, and the verdict passes only
/// if both have none. What the proxy phase needs (its Deployment, the
/// clients' JSON logs) is checked before the eviction, so that a typo
/// fails before anything is disrupted.
pub async fn run(config: &VerdictConfig) -> Result<VerdictReport, VerdictError> {
    let started = Instant::now();
    let deadline = started + config.timeout;
    let target = config.via_target().map_err(VerdictError::Setup)?;
    let kube = Kube::new(config)?;
    let namespace = match &config.namespace {
        Some(ns) => ns.clone(),
        None => std::fs::read_to_string(format!("{SERVICE_ACCOUNT}/namespace"))
            .map(|s| s.trim().to_owned())
            .map_err(|e| VerdictError::Setup(format!("no --namespace and no service account namespace: {e}")))?,
    };
    let prepared = match &target {
        Some(target) => Some(crate::rollout::prepare(&kube, target, &namespace, config).await?),
        None => None,
    };
    let mut report = evict(&kube, config, &namespace, started, deadline).await?;
    if let (Some(target), Some(prepared)) = (&target, &prepared) {
        let (rollout, via) = crate::rollout::run(&kube, target, prepared, &namespace, config, deadline).await;
        let mut reasons = report.reasons.clone();
        reasons.extend(rollout.reasons.iter().cloned());
        report = VerdictReport { rollout: Some(rollout), via, ..report }.decide(reasons);
        report.elapsed_seconds = started.elapsed().as_secs_f64();
    }
    Ok(report)
}

/// The eviction phase: evict the server pod with the most sessions,
/// follow its drain, judge both sides.
async fn evict(
    kube: &Kube,
    config: &VerdictConfig,
    namespace: &str,
    started: Instant,
    deadline: Instant,
) -> Result<VerdictReport, VerdictError> {
    let namespace = namespace.to_owned();
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

    // The server with the most sessions (the first by name among equals):
    // a drain of nothing proves nothing.
    let mut accounts = Vec::new();
    for pod in &servers {
        let body = scrape(pod.ip, config.server_metrics_port).await.ok_or_else(|| {
            VerdictError::Precondition(format!(
                "server pod {} ({}:{}) does not answer /metrics",
                pod.name, pod.ip, config.server_metrics_port
            ))
        })?;
        let account = ServerAccount::parse(&body).map_err(|e| {
            VerdictError::Precondition(format!("server pod {}: its /metrics is no account: {e}", pod.name))
        })?;
        accounts.push((pod.clone(), account));
    }
    let most = accounts.iter().map(|(_, a)| a.sessions).max().unwrap_or(0);
    let (victim, server_before) = accounts.into_iter().find(|(_, a)| a.sessions == most).expect("2 servers or more");
    let held = server_before.sessions;
    let mut report = VerdictReport {
        namespace: namespace.clone(),
        servers: servers.len(),
        client_pods: clients.len(),
        pod: victim.name.clone(),
        held,
        ..VerdictReport::default()
    };
    eprintln!("verdict: evicting {} ({held} sessions)", victim.name);
    let eviction = serde_json::json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": { "name": victim.name, "namespace": namespace },
        "deleteOptions": { "preconditions": { "uid": victim.uid } },
    });
    let path = format!("/api/v1/namespaces/{namespace}/pods/{}/eviction", victim.name);
    let refused_until = Instant::now() + config.eviction_wait;
    loop {
        match kube.call("POST", &path, Some(eviction.clone())).await {
            Ok(_) => break,
            // 429: a PodDisruptionBudget allows no disruption now. Retried
            // a while, then reported; the verdict never deletes around it.
            Err(VerdictError::Api { status: Some(429), detail, .. }) => {
                if Instant::now() >= refused_until {
                    report.elapsed_seconds = started.elapsed().as_secs_f64();
                    let refused = Reason::EvictionRefused { pod: victim.name.clone(), message: detail };
                    return Ok(report.decide(vec![refused]));
                }
                eprintln!("verdict: eviction refused for now ({detail}); again in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }

    // Follow the drain on the pod's own /metrics until a scrape shows its end.
    let mut last: Option<Result<ServerAccount, String>> = None;
    let mut silent_since: Option<Instant> = None;
    while !matches!(&last, Some(Ok(s)) if s.shutdown_seconds.is_some()) {
        if Instant::now() >= deadline {
            return Err(VerdictError::Timeout(config.timeout, format!("{} was still draining", victim.name)));
        }
        match scrape(victim.ip, config.server_metrics_port).await {
            Some(body) => {
                silent_since = None;
                last = Some(ServerAccount::parse(&body).map_err(|e| e.to_string()));
            }
            // Gone for good: the report says no scrape saw the drain end.
            None if silent_since.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) => break,
            None => silent_since = silent_since.or(Some(Instant::now())),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The clients: at most `settle` (within the whole bound) for them to
    // have seen an end of every session the pod drained; the client pods
    // listed again, so that one that came or went is named, not missed.
    let drained = match &last {
        Some(Ok(s)) => s.drained().saturating_sub(server_before.drained()),
        _ => held,
    };
    eprintln!(
        "verdict: drain of {} over; up to {:?} for the clients to see its {drained} sessions end",
        victim.name, config.settle
    );
    let settle_until = (Instant::now() + config.settle).min(deadline);
    let (mut delta, mut reasons);
    loop {
        let now = ready_pods(&kube.pods(&namespace, &config.client_selector).await?);
        let after = scrape_clients(&now, config.client_metrics_port).await?;
        (delta, reasons) = client_change(&before, &after);
        if all_back(&delta, drained) || Instant::now() >= settle_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(conclude(report, Ending::Exited, victim.grace, Some(server_before), last, delta, reasons))
}

/// What the client processes' accounts changed by, summed, each matched to
/// itself by name; a process read only once, or whose counters went back
/// (it restarted), is a [`Reason::Collector`] instead of a number.
pub fn client_change(
    before: &BTreeMap<String, ClientAccount>,
    after: &BTreeMap<String, ClientAccount>,
) -> (ClientAccount, Vec<Reason>) {
    let (mut delta, mut reasons) = (ClientAccount::default(), Vec::new());
    for (pod, now) in after {
        match before.get(pod).map(|then| now.since(then)) {
            Some(Ok(d)) => delta += &d,
            Some(Err(e)) => reasons.push(Reason::Collector { what: format!("client pod {pod}: {e}") }),
            None => reasons.push(Reason::Collector {
                what: format!("client pod {pod} came during the verdict: its account cannot be compared"),
            }),
        }
    }
    for pod in before.keys().filter(|p| !after.contains_key(*p)) {
        reasons.push(Reason::Collector { what: format!("client pod {pod} went during the verdict") });
    }
    (delta, reasons)
}

/// How many of the `held` users of the drained pod are back on another:
/// the clients' reconnects over the window (a user of the drained pod
/// reconnects exactly once, to a pod that is not draining), less the users
/// holding no session at the end. The clients cannot say which pod a user
/// was on, so a reconnect of another pod's user in the window counts too;
/// a user left without a session never does.
fn users_back(delta: &ClientAccount, held: u64) -> u64 {
    let without_session = delta.users.saturating_sub(delta.sessions);
    delta.reconnects.min(held.saturating_sub(without_session))
}

/// Whether the clients have seen the end of every one of the `drained`
/// sessions and every user holds a session again.
fn all_back(delta: &ClientAccount, drained: u64) -> bool {
    delta.ends() >= drained && users_back(delta, drained) >= drained
}

/// The verdict on what was collected, the one path from scrapes to
/// reasons for the in-cluster run and `gsd-verdict judge`: the drained
/// pod's evidence (`report.pod`, `report.held` and its account before,
/// the `last` scrape of it, the clients' change) to [`crate::judge_all`];
/// with no pod (`report.pod` empty) the clients' change alone to
/// [`crate::judge_clients`]. `reasons`: what the collector found already.
pub fn conclude(
    mut report: VerdictReport,
    ending: Ending,
    grace: Duration,
    server_before: Option<ServerAccount>,
    last: Option<Result<ServerAccount, String>>,
    delta: ClientAccount,
    mut reasons: Vec<Reason>,
) -> VerdictReport {
    match last {
        Some(Err(e)) => {
            reasons.push(Reason::Collector { what: format!("{}: its last /metrics is no account: {e}", report.pod) })
        }
        Some(Ok(s)) => report.server = Some(s),
        None => {}
    }
    if report.pod.is_empty() {
        reasons.extend(crate::judge_clients(&delta, 0));
    } else {
        let evidence = DrainEvidence {
            pod: report.pod.clone(),
            held: report.held,
            ending,
            server: report.server.clone(),
            server_before,
            clients: Some(delta),
            moved: Some(users_back(&delta, report.held)),
            grace,
        };
        reasons.extend(crate::judge_all(&[evidence], &delta));
    }
    report.clients = delta;
    report.decide(reasons)
}

/// The in-cluster run: `gsd-verdict [run]` ([`crate::cli`]).
pub(crate) fn run_main(config: &VerdictConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = match runtime.block_on(run(config)) {
        Ok(report) => report,
        Err(e) => {
            // A CI gate reading --json or --junit sees the failure too,
            // not a missing file.
            let failed = VerdictReport::default().decide(vec![Reason::Collector { what: e.to_string() }]);
            write_outputs(config.json.as_deref(), config.junit.as_deref(), &failed)?;
            anyhow::bail!("verdict: {e}");
        }
    };
    print!("{}", render(&report));
    write_outputs(config.json.as_deref(), config.junit.as_deref(), &report)?;
    if report.ok { Ok(()) } else { anyhow::bail!("verdict: FAIL") }
}

/// `--json` and `--junit`, where asked for.
pub(crate) fn write_outputs(
    json: Option<&std::path::Path>,
    junit: Option<&std::path::Path>,
    report: &VerdictReport,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = junit {
        std::fs::write(path, report.junit()).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, ready: &str, ip: Option<&str>, deleting: bool) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "spec": {"terminationGracePeriodSeconds": 45},
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
        assert_eq!((pods[1].uid.as_str(), pods[1].grace), ("uid-s-b", Duration::from_secs(45)));
        assert!(ready_pods(&json!({"kind": "Status"})).is_empty());
    }

    #[test]
    fn the_report_shows_both_sides_and_ends_with_the_judges_words() {
        let server = ServerAccount {
            sessions: 0,
            drains: [("complete".to_owned(), 10), ("incomplete".to_owned(), 0)].into(),
            drain_messages: 55,
            shutdown_seconds: Some(0.25),
            ..ServerAccount::default()
        };
        let clients =
            ClientAccount { users: 10, drains_complete: 10, received: 55, unacked: 2, ..ClientAccount::default() };
        let report = VerdictReport {
            namespace: "shop".into(),
            pod: "gsd-server-a".into(),
            held: 10,
            server: Some(server),
            clients,
            elapsed_seconds: 12.0,
            ..VerdictReport::default()
        }
        .decide(Vec::new());
        let text = render(&report);
        assert!(
            text.contains("gsd-server-a                           10       10        55     0.250s  complete"),
            "{text}"
        );
        assert!(text.contains("unacked 2 (processed, not lost)"), "{text}");
        assert!(text.ends_with("PASS: every drain completed and nothing was lost (12.0s)\n"), "{text}");
        let failed = VerdictReport { held: 12, ..report }.decide(vec![
            Reason::DrainedFewer { pod: "gsd-server-a".into(), held: 12, drained: 10 },
            Reason::MessagesLost { messages: 3 },
        ]);
        let text = render(&failed);
        assert!(
            text.contains("  incomplete")
                && text
                    .ends_with("FAIL:\n  - gsd-server-a: drained 10 of the 12 sessions it held\n  - 3 messages lost\n"),
            "{text}"
        );
        let junit = failed.junit();
        assert!(
            junit.contains("name=\"drain gsd-server-a\">") && junit.contains("<failure type=\"drained_fewer\""),
            "{junit}"
        );
        assert!(junit.contains("name=\"clients\">") && junit.contains("<failure type=\"messages_lost\""), "{junit}");
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["reasons"][0]["drained"], 10);
        assert_eq!(json["ok"], false);
    }

    #[test]
    fn garbage_options_are_refused() {
        let ok =
            ["gsd-verdict", "--server-selector", "app=gsd,component=server", "--client-selector", "component=client"];
        assert!(VerdictConfig::try_parse_from(ok).is_ok());
        for bad in [
            &["gsd-verdict", "--server-selector", "", "--client-selector", "a=b"][..],
            &["gsd-verdict", "--server-selector", "app", "--client-selector", "a=b"],
            &["gsd-verdict", "--server-selector", "a=b c", "--client-selector", "a=b"],
            &["gsd-verdict", "--server-selector", "a=b", "--client-selector", "a=b", "--timeout", "soon"],
            &["gsd-verdict", "--server-selector", "a=b", "--client-selector", "a=b", "--server-metrics-port", "70000"],
            &["gsd-verdict", "--client-selector", "a=b"],
        ] {
            assert!(VerdictConfig::try_parse_from(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_proxy_to_roll_is_named_whole_or_refused() {
        let base = ["gsd-verdict", "--server-selector", "a=b", "--client-selector", "a=c"];
        let parse = |more: &[&str]| VerdictConfig::try_parse_from(base.iter().chain(more));
        assert_eq!(parse(&[]).unwrap().via_target(), Ok(None));
        let traefik = parse(&["--via", "traefik", "--via-namespace", "edge", "--via-deployment", "traefik"]).unwrap();
        let target = traefik.via_target().unwrap().unwrap();
        assert_eq!(
            (target.namespace.as_str(), target.deployment.as_str(), target.setting),
            ("edge", "traefik", Duration::from_secs(10))
        );
        let relay = parse(&[
            "--via",
            "relay",
            "--via-namespace",
            "r",
            "--via-deployment",
            "relay-0",
            "--via-setting",
            "1m30s",
            "--via-setting-name",
            "relay drain",
        ])
        .unwrap();
        let target = relay.via_target().unwrap().unwrap();
        assert_eq!((target.setting_name.as_str(), target.setting), ("relay drain", Duration::from_secs(90)));
        // Parsed, but a proxy gsd does not know needs its setting.
        let unknown = parse(&["--via", "haproxy", "--via-namespace", "h", "--via-deployment", "haproxy"]).unwrap();
        assert!(unknown.via_target().unwrap_err().starts_with("--via haproxy: not a proxy gsd knows"));
        for (bad, says) in [
            (&["--via", "traefik"][..], "--via-namespace"),
            (&["--via", "traefik", "--via-namespace", "edge"], "--via-deployment"),
            (&["--via-namespace", "edge", "--via-deployment", "traefik"], "--via"),
            (&["--via-setting", "10s"], "--via"),
            (&["--via", "", "--via-namespace", "e", "--via-deployment", "t"], "an empty name"),
            (&["--via", "traefik", "--via-namespace", "Edge", "--via-deployment", "t"], "`Edge` is not a DNS label"),
            (&["--via", "traefik", "--via-namespace", "e", "--via-deployment", "traefik."], "not a DNS label"),
            (&["--via", "traefik", "--via-namespace", "e-", "--via-deployment", "t"], "not a DNS label"),
            (&["--via", "traefik", "--via-namespace", &"n".repeat(64), "--via-deployment", "t"], "not a DNS label"),
            (&["--via", "traefik", "--via-namespace", "e", "--via-deployment", "t", "--via-setting", "soon"], "soon"),
            (&["--via", "traefik", "--via-namespace", "e", "--via-deployment", "t", "--via-setting", "-1"], "-1"),
            (
                &["--via", "traefik", "--via-namespace", "e", "--via-deployment", "t", "--via-setting-name", " "],
                "empty",
            ),
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} was accepted")).to_string();
            assert!(err.contains(says), "{bad:?}: {says:?} not in {err}");
        }
    }

    #[test]
    fn the_rollout_has_its_block_its_reasons_and_its_junit_case() {
        let clients = ClientAccount { users: 10, sessions: 10, ..ClientAccount::default() };
        let eviction = VerdictReport {
            namespace: "shop".into(),
            pod: "gsd-server-a".into(),
            held: 5,
            clients,
            ..VerdictReport::default()
        }
        .decide(vec![Reason::MessagesLost { messages: 1 }]);
        let cut = ClientAccount { cut: 3, reconnects: 3, ..clients };
        let seen = crate::proxy::Seen { cuts: vec![10.1, 10.2, 10.3], reconnects: vec![(1010.4, 2000)], resumed: 0 };
        let via = crate::proxy::Via::new(
            "traefik",
            "traefik-abc",
            1000.0,
            "Traefik graceTimeOut",
            Duration::from_secs(10),
            &seen,
        );
        let reasons = crate::judge_proxy(&via, crate::judge_clients(&cut, 0));
        let rollout = Rollout {
            proxy: "traefik".into(),
            namespace: "edge".into(),
            deployment: "traefik".into(),
            restarted_at: 991.5,
            pods: vec![crate::rollout::OldPod {
                pod: "traefik-abc".into(),
                terminated_at: Some(1000.0),
                gone_at: Some(1010.5),
                cuts: 3,
                ..Default::default()
            }],
            client_pods: 1,
            clients: cut,
            reasons_json: crate::reasons_json(&reasons),
            reasons: reasons.clone(),
        };
        let mut all = eviction.reasons.clone();
        all.extend(reasons);
        let report = VerdictReport { rollout: Some(rollout), via: Some(via), ..eviction }.decide(all);
        let text = render(&report);
        assert!(text.starts_with("gsd-verdict: evict-pod + rollout of traefik | namespace shop"), "{text}");
        assert!(
            text.contains(
                "rollout of traefik (edge/traefik): restarted at 1970-01-01T00:16:31.500Z | 1 old pod(s) | 1 client \
                 pod(s)\n  traefik-abc                      terminating 8.5 s after the restart, gone 10.5 s later; \
                 3 cuts\nclients over the rollout: 10 users | 3 reconnects"
            ),
            "{text}"
        );
        assert!(text.contains("via traefik (pod traefik-abc, Traefik graceTimeOut 10s): 3 sessions cut"), "{text}");
        assert!(
            text.ends_with(
                "FAIL:\n  - 1 messages lost\n  - 3 sessions cut 10.1–10.3 s after the proxy's SIGTERM = Traefik \
                 graceTimeOut (10s)\n"
            ),
            "{text}"
        );
        let junit = report.junit();
        assert!(junit.contains("<testsuite name=\"gsd-verdict shop\" tests=\"3\" failures=\"2\""), "{junit}");
        assert!(junit.contains("name=\"drain gsd-server-a\"/>"), "{junit}");
        assert!(
            junit.contains("name=\"rollout traefik edge/traefik\">\n      <failure type=\"cut_by_proxy\""),
            "{junit}"
        );
        assert_eq!(junit.matches("<failure").count(), 2, "{junit}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rollout"]["pods"][0]["terminated_at"], 1000.0);
        assert_eq!(json["rollout"]["pods"][0]["cuts"], 3);
        assert!(json["rollout"]["pods"][0].get("uid").is_none());
        assert_eq!(json["rollout"]["clients"]["cut"], 3);
        assert_eq!(json["rollout"]["reasons"][0]["kind"], "cut_by_proxy");
        assert_eq!(json["via"]["cuts"], 3);
        assert_eq!(json["reasons"].as_array().unwrap().len(), 2);
        // A rollout that cut nothing says what that may mean.
        let quiet = crate::proxy::Via::new(
            "traefik",
            "traefik-abc",
            1000.0,
            "Traefik graceTimeOut",
            Duration::from_secs(10),
            &Default::default(),
        );
        let unlogged = VerdictReport { via: Some(quiet.clone()), ..report.clone() };
        assert!(!render(&unlogged).contains("no session was cut"), "the clients counted 3 cuts");
        let rollout = Rollout { clients, ..report.rollout.clone().unwrap() };
        let passed = VerdictReport { via: Some(quiet), rollout: Some(rollout), ..report }.decide(vec![]);
        assert!(render(&passed).contains("no session was cut: do the clients go through traefik?"));
    }

    #[tokio::test]
    async fn missing_credentials_fail_with_the_path() {
        let config = VerdictConfig::try_parse_from([
            "gsd-verdict",
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
