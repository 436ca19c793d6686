//! The in-cluster verdict's proxy phase (`gsd-verdict --via`): a rollout
//! of the proxy the user's clients go through, in the user's own cluster,
//! judged by the same rules as everything else. After the eviction phase
//! the verdict reads the client pods' accounts, restarts the proxy's
//! Deployment as `kubectl rollout restart` does, records when each of its
//! old pods began terminating, waits for those pods to go and for the
//! users to be back in sessions, reads the accounts again and the client
//! pods' JSON logs since the restart, and hands the cuts to
//! [`crate::proxy`] and [`crate::judge_proxy`]: the report names the
//! proxy's setting that cut the sessions.
//!
//! - [`restart_patch`]: the PATCH that restarts the Deployment;
//! - [`OldPod`], [`old_pods`], [`observe`], [`settled`]: the old pods and
//!   when the verdict first saw each terminating and gone;
//! - [`attribute`]: each cut to the last termination at or before it;
//! - [`prepare`] and [`run`]: the phase itself, against the API.
//!
//! The termination instant is the verdict's clock when a poll (every
//! [`POLL`]) first shows the pod's `deletionTimestamp`: at most one poll
//! and the API's answer after the deletion. The cuts' times are the client
//! pods' clocks (their log lines' `timestamp`): the nodes' clocks are
//! taken to agree, as NTP keeps them, within the half second the setting's
//! window allows before it ([`crate::proxy::BEFORE_SETTING`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cluster::{Kube, VerdictConfig, VerdictError, client_change, ready_pods, scrape_clients};
use crate::proxy::{Seen, Via, rfc3339};
use crate::{ClientAccount, Reason};

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// How often the proxy's pods are listed while it rolls: the termination
/// instant is at most this late.
pub const POLL: Duration = Duration::from_millis(100);

/// How long past its setting an old pod that began terminating is waited
/// for before the verdict goes on without seeing it gone (a pod whose
/// grace period outlasts its drain setting: its sessions are cut by then).
pub const MARGIN: Duration = Duration::from_secs(15);

/// The proxy the verdict rolls: `--via` and its companions, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The proxy's name, as the report says it.
    pub proxy: String,
    /// The namespace of its Deployment.
    pub namespace: String,
    /// Its Deployment.
    pub deployment: String,
    /// The setting that bounds how long it keeps WebSockets open.
    pub setting_name: String,
    /// That setting's value.
    pub setting: Duration,
}

impl Target {
    /// The target of `--via proxy`: a proxy gsd knows takes its setting's
    /// name and default from [`crate::proxy::known`]; any other needs both.
    pub fn new(
        proxy: &str,
        namespace: &str,
        deployment: &str,
        setting: Option<Duration>,
        setting_name: Option<&str>,
    ) -> Result<Target, String> {
        let known = crate::proxy::known(proxy);
        let setting_name = setting_name.or(known.map(|k| k.setting_name));
        let setting = setting.or(known.map(|k| k.default));
        let (Some(setting_name), Some(setting)) = (setting_name, setting) else {
            let known = crate::proxy::KNOWN.map(|k| k.name).join(", ");
            return Err(format!(
                "--via {proxy}: not a proxy gsd knows the drain setting of ({known}): give --via-setting-name and \
                 --via-setting"
            ));
        };
        Ok(Target {
            proxy: proxy.to_owned(),
            namespace: namespace.to_owned(),
            deployment: deployment.to_owned(),
            setting_name: setting_name.to_owned(),
            setting,
        })
    }

    /// The Deployment's path in the API.
    fn path(&self) -> String {
        format!("/apis/apps/v1/namespaces/{}/deployments/{}", self.namespace, self.deployment)
    }

    /// `namespace/deployment`, as the report names it.
    fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.deployment)
    }
}

/// The body of the strategic-merge PATCH that restarts a Deployment the
/// way `kubectl rollout restart` does: a new `restartedAt` annotation on
/// its pod template (`at`, RFC 3339), which makes a new ReplicaSet and
/// rolls the pods by the Deployment's own strategy.
pub fn restart_patch(at: &str) -> Value {
    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}})
}

/// The label selector of a Deployment's pods (`k=v,...`, sorted), from its
/// `spec.selector.matchLabels`; an error when it has none, or has
/// `matchExpressions`, which a `k=v` selector cannot say.
pub fn selector(deployment: &Value) -> Result<String, String> {
    let selector = &deployment["spec"]["selector"];
    if selector["matchExpressions"].as_array().is_some_and(|e| !e.is_empty()) {
        return Err("selects its pods with matchExpressions, which the verdict does not read".to_owned());
    }
    let labels =
        selector["matchLabels"].as_object().filter(|l| !l.is_empty()).ok_or("has no spec.selector.matchLabels")?;
    let mut terms = Vec::new();
    for (key, value) in labels {
        let value = value.as_str().ok_or_else(|| format!("has a label {key} that is not a string"))?;
        terms.push(format!("{key}={value}"));
    }
    terms.sort();
    Ok(terms.join(","))
}

/// One of the proxy's pods at the restart, and what the verdict saw of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OldPod {
    /// Its name.
    pub pod: String,
    /// Its uid: a replacement with the same name is another pod.
    #[serde(skip)]
    pub uid: String,
    /// When a poll first showed its `deletionTimestamp` (Unix seconds);
    /// `None` while none has. A pod that went between two polls is taken
    /// to have begun terminating when it was first seen gone.
    pub terminated_at: Option<f64>,
    /// When a poll first found it gone; `None` while it is there.
    pub gone_at: Option<f64>,
    /// The clients' cuts that are its termination's ([`attribute`]).
    pub cuts: u64,
}

/// The live pods of a PodList (not terminating), by name: the old pods of
/// a rollout about to start.
pub fn old_pods(list: &Value) -> Vec<OldPod> {
    let mut pods: Vec<OldPod> = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| {
            Some(OldPod {
                pod: p["metadata"]["name"].as_str()?.to_owned(),
                uid: p["metadata"]["uid"].as_str()?.to_owned(),
                ..OldPod::default()
            })
        })
        .collect();
    pods.sort_by(|a, b| a.pod.cmp(&b.pod));
    pods
}

/// Records what one poll (`list`, answered at `now`, Unix seconds) shows
/// of the old `pods`: the first sight of each one's `deletionTimestamp`,
/// and of its absence. Earlier sights are kept.
pub fn observe(pods: &mut [OldPod], list: &Value, now: f64) {
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    for pod in pods {
        match items.iter().find(|p| p["metadata"]["uid"] == pod.uid.as_str()) {
            Some(item) if !item["metadata"]["deletionTimestamp"].is_null() => {
                pod.terminated_at.get_or_insert(now);
            }
            Some(_) => {}
            None => {
                pod.terminated_at.get_or_insert(now);
                pod.gone_at.get_or_insert(now);
            }
        }
    }
}

/// Whether the rollout is over as far as the verdict waits for it: every
/// old pod gone, or terminating for `bound` seconds (its setting and
/// [`MARGIN`]) at `now`.
pub fn settled(pods: &[OldPod], now: f64, bound: f64) -> bool {
    pods.iter().all(|p| p.gone_at.is_some() || p.terminated_at.is_some_and(|t| now - t >= bound))
}

/// Each cut to the last termination at or before it. `seen`: the logs read
/// from the first termination (`first`, Unix seconds) on, each cut in
/// seconds after it. Returns the same with each cut in seconds after its
/// own pod's termination, and counts each pod's cuts: with one old pod
/// (the usual proxy) nothing changes; with several, a session cut by the
/// second pod's termination is timed from that one.
pub fn attribute(pods: &mut [OldPod], first: f64, seen: &Seen) -> Seen {
    let mut starts: Vec<(f64, usize)> =
        pods.iter().enumerate().filter_map(|(i, p)| p.terminated_at.map(|t| (t, i))).collect();
    starts.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pod in pods.iter_mut() {
        pod.cuts = 0;
    }
    let Some(&earliest) = starts.first() else { return seen.clone() };
    let cuts = seen
        .cuts
        .iter()
        .map(|after| {
            let at = first + after;
            // Within a microsecond: the log's resolution.
            let (start, i) = starts.iter().rev().find(|(t, _)| *t <= at + 1e-6).copied().unwrap_or(earliest);
            pods[i].cuts += 1;
            ((at - start) * 1e6).round() / 1e6
        })
        .collect();
    Seen { cuts, reconnects: seen.reconnects.clone(), resumed: seen.resumed }
}

/// Whether every user holds a session again and every cut session's user
/// reconnected: the clients have settled after the rollout.
pub fn back(delta: &ClientAccount) -> bool {
    delta.sessions >= delta.users && delta.reconnects >= delta.cut
}

/// Whether a log is JSON lines (gsd-client with LOG_FORMAT=json): some
/// line is a JSON object, or there is no line at all.
pub fn json_lines(log: &str) -> bool {
    let mut lines = log.lines().map(str::trim).filter(|l| !l.is_empty()).peekable();
    lines.peek().is_none() || lines.any(|l| l.starts_with('{'))
}

/// The container of `pod` (an item of a PodList) that serves `port`: the
/// gsd-client container, whose log the verdict reads (`None`: the pod's
/// only container, as the API then takes it).
pub fn log_container(pod: &Value, port: u16) -> Option<String> {
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["ports"].as_array().is_some_and(|ports| ports.iter().any(|p| p["containerPort"] == port)))
        .and_then(|c| c["name"].as_str().map(str::to_owned))
}

/// The proxy phase's report: the `rollout` object of `--json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rollout {
    /// The proxy, as `--via` named it.
    pub proxy: String,
    /// Its Deployment's namespace.
    pub namespace: String,
    /// Its Deployment.
    pub deployment: String,
    /// When the verdict restarted it (Unix seconds).
    pub restarted_at: f64,
    /// Its pods at the restart, and what the verdict saw of each.
    pub pods: Vec<OldPod>,
    /// Client pods whose accounts were read.
    pub client_pods: usize,
    /// What the client pods' accounts changed by over the rollout, summed.
    pub clients: ClientAccount,
    /// Why this phase failed; empty when it passed (in the report's
    /// `reasons` too).
    #[serde(skip)]
    pub reasons: Vec<Reason>,
    /// The same, as JSON with kind and numbers.
    #[serde(rename = "reasons")]
    pub reasons_json: Value,
}

/// What [`prepare`] found: the selector of the proxy's pods.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `spec.selector.matchLabels` of its Deployment.
    pub selector: String,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A client pod's log (`query`: `sinceTime=...` or `tailLines=...`).
async fn client_log(
    kube: &Kube,
    namespace: &str,
    pod: &Value,
    port: u16,
    query: &str,
) -> Result<(String, String), VerdictError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let container = log_container(pod, port).map(|c| format!("&container={c}")).unwrap_or_default();
    let log = kube.text(&format!("/api/v1/namespaces/{namespace}/pods/{name}/log?{query}{container}")).await?;
    Ok((name, log))
}

/// The ready client pods as the list gives them (their whole objects).
fn ready_items<'a>(list: &'a Value, ready: &[crate::cluster::ReadyPod]) -> Vec<&'a Value> {
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    items.iter().filter(|p| ready.iter().any(|r| p["metadata"]["name"] == r.name.as_str())).collect()
}

/// Before anything is disrupted: the proxy's Deployment can be read (it
/// exists, the Role lets the verdict at it), it has a running pod, and
/// every ready client pod logs JSON, whose `session_cut` lines the phase
/// reads.
pub(crate) async fn prepare(
    kube: &Kube,
    target: &Target,
    namespace: &str,
    config: &VerdictConfig,
) -> Result<Prepared, VerdictError> {
    let precondition =
        |what: String| VerdictError::Precondition(format!("the proxy's Deployment {}: {what}", target.name()));
    let deployment = kube.call("GET", &target.path(), None).await.map_err(|e| precondition(e.to_string()))?;
    let selector = selector(&deployment).map_err(|e| precondition(format!("it {e}")))?;
    let pods = old_pods(&kube.pods(&target.namespace, &selector).await?);
    if pods.is_empty() {
        return Err(precondition(format!("no pod of it is running (selector {selector})")));
    }
    let list = kube.pods(namespace, &config.client_selector).await?;
    for pod in ready_items(&list, &ready_pods(&list)) {
        let (name, log) = client_log(kube, namespace, pod, config.client_metrics_port, "tailLines=20").await?;
        if !json_lines(&log) {
            return Err(VerdictError::Precondition(format!(
                "client pod {name} does not log JSON: the proxy phase reads the clients' session_cut lines, which \
                 need LOG_FORMAT=json (the chart sets it on the client with verdict.via.name)"
            )));
        }
    }
    Ok(Prepared { selector })
}

/// The proxy phase: the rollout and its verdict. Never an error: what
/// went wrong is a reason of the phase, so that the eviction phase's
/// report stands beside it. Returns the phase and the proxy's figures
/// (`None` when none of its pods began terminating).
pub(crate) async fn run(
    kube: &Kube,
    target: &Target,
    prepared: &Prepared,
    namespace: &str,
    config: &VerdictConfig,
    deadline: Instant,
) -> (Rollout, Option<Via>) {
    let mut rollout = Rollout {
        proxy: target.proxy.clone(),
        namespace: target.namespace.clone(),
        deployment: target.deployment.clone(),
        ..Rollout::default()
    };
    let (via, reasons) = match phase(kube, target, prepared, namespace, config, deadline, &mut rollout).await {
        Ok(done) => done,
        Err(e) => (None, vec![Reason::Collector { what: format!("the rollout of {}: {e}", target.name()) }]),
    };
    rollout.reasons_json = crate::reasons_json(&reasons);
    rollout.reasons = reasons;
    (rollout, via)
}

async fn phase(
    kube: &Kube,
    target: &Target,
    prepared: &Prepared,
    namespace: &str,
    config: &VerdictConfig,
    deadline: Instant,
    rollout: &mut Rollout,
) -> Result<(Option<Via>, Vec<Reason>), VerdictError> {
    let port = config.client_metrics_port;
    let clients = ready_pods(&kube.pods(namespace, &config.client_selector).await?);
    if clients.is_empty() {
        return Err(VerdictError::Precondition(format!("no ready client pod matches {}", config.client_selector)));
    }
    // Never restart the proxy without the time to follow its rollout.
    let left = deadline.saturating_duration_since(Instant::now());
    if left < target.setting + MARGIN {
        return Err(VerdictError::Precondition(format!(
            "{left:.0?} of the verdict's bound left, and following the rollout takes at least {:?} ({} {:?} and a \
             margin of {MARGIN:?}): not restarted; raise --timeout (the chart's verdict.timeoutSeconds)",
            target.setting + MARGIN,
            target.setting_name,
            target.setting
        )));
    }
    let before = scrape_clients(&clients, port).await?;
    rollout.pods = old_pods(&kube.pods(&target.namespace, &prepared.selector).await?);
    rollout.restarted_at = unix_now();
    eprintln!("verdict: restarting {} ({} pod(s))", target.name(), rollout.pods.len());
    kube.call("PATCH", &target.path(), Some(restart_patch(&rfc3339(rollout.restarted_at)))).await?;

    // Its old pods: when each begins terminating, until each is gone (or
    // past its setting and the margin), within the verdict's bound.
    let bound = (target.setting + MARGIN).as_secs_f64();
    loop {
        let list = kube.pods(&target.namespace, &prepared.selector).await?;
        let now = unix_now();
        let seen_before: Vec<bool> = rollout.pods.iter().map(|p| p.terminated_at.is_some()).collect();
        observe(&mut rollout.pods, &list, now);
        for (pod, _) in rollout.pods.iter().zip(seen_before).filter(|(p, was)| p.terminated_at.is_some() && !was) {
            eprintln!(
                "verdict: {} terminating {:.1}s after the restart; {} keeps its sessions for {:?}",
                pod.pod,
                now - rollout.restarted_at,
                target.proxy,
                target.setting
            );
        }
        if settled(&rollout.pods, now, bound) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let mut reasons = Vec::new();
    let never: Vec<&str> = rollout.pods.iter().filter(|p| p.terminated_at.is_none()).map(|p| p.pod.as_str()).collect();
    if !never.is_empty() {
        reasons.push(Reason::Collector {
            what: format!(
                "{} of {} never began terminating within the verdict's bound ({:?}): the rollout did not progress \
                 (is its new pod ready?)",
                never.join(", "),
                target.name(),
                config.timeout
            ),
        });
    }

    // The clients: at most `settle` for every user to be back in a session.
    eprintln!("verdict: rollout of {} over; up to {:?} for the clients to settle", target.name(), config.settle);
    let settle_until = (Instant::now() + config.settle).min(deadline);
    let (mut delta, mut change, mut list);
    loop {
        list = kube.pods(namespace, &config.client_selector).await?;
        let after = scrape_clients(&ready_pods(&list), port).await?;
        (delta, change) = client_change(&before, &after);
        rollout.client_pods = after.len();
        if back(&delta) || Instant::now() >= settle_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    rollout.clients = delta;
    reasons.extend(change);

    // Their logs since the restart (a second early: the kubelet filters by
    // its own timestamps), read from the first termination on.
    let Some(first) = rollout.pods.iter().filter_map(|p| p.terminated_at).min_by(f64::total_cmp) else {
        reasons.extend(crate::judge_clients(&delta, 0));
        return Ok((None, reasons));
    };
    let since = format!("sinceTime={}", rfc3339(rollout.restarted_at.floor() - 1.0));
    let mut seen = Seen::default();
    for pod in ready_items(&list, &ready_pods(&list)) {
        let (name, log) = client_log(kube, namespace, pod, port, &since).await?;
        if let Err(e) = seen.read(&log, first) {
            reasons.push(Reason::Collector { what: format!("client pod {name}'s log: {e}") });
        }
    }
    let seen = attribute(&mut rollout.pods, first, &seen);
    let terminated: Vec<&str> =
        rollout.pods.iter().filter(|p| p.terminated_at.is_some()).map(|p| p.pod.as_str()).collect();
    let via = Via::new(&target.proxy, &terminated.join(", "), first, &target.setting_name, target.setting, &seen);
    reasons.extend(crate::judge_clients(&delta, 0));
    let reasons = crate::judge_proxy(&via, reasons);
    Ok((Some(via), reasons))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, deleting: bool) -> Value {
        let mut p = json!({"metadata": {"name": name, "uid": format!("uid-{name}")}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
        }
        p
    }

    fn list(pods: &[Value]) -> Value {
        json!({"kind": "PodList", "items": pods})
    }

    #[test]
    fn the_restart_is_kubectls_annotation_on_the_pod_template() {
        let patch = restart_patch("2026-01-01T00:00:00.250Z");
        assert_eq!(
            patch,
            json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00.250Z"
            }}}}})
        );
        // Nothing else of the Deployment is touched.
        assert_eq!(patch.as_object().unwrap().len(), 1);
        assert_eq!(patch["spec"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn the_proxys_pods_are_selected_by_its_deployments_match_labels() {
        let deployment = json!({"spec": {"selector": {"matchLabels": {
            "app.kubernetes.io/name": "traefik", "app.kubernetes.io/instance": "traefik-traefik"
        }}}});
        assert_eq!(
            selector(&deployment).unwrap(),
            "app.kubernetes.io/instance=traefik-traefik,app.kubernetes.io/name=traefik"
        );
        assert_eq!(selector(&json!({"kind": "Status"})).unwrap_err(), "has no spec.selector.matchLabels");
        assert_eq!(
            selector(&json!({"spec": {"selector": {"matchLabels": {}}}})).unwrap_err(),
            "has no spec.selector.matchLabels"
        );
        let expressions = json!({"spec": {"selector": {"matchLabels": {"a": "b"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["edge"]}]}}});
        assert!(selector(&expressions).unwrap_err().contains("matchExpressions"));
    }

    #[test]
    fn each_old_pod_keeps_the_first_sight_of_its_termination_and_of_its_absence() {
        let mut pods = old_pods(&list(&[pod("p-b", false), pod("p-a", false), pod("p-old", true)]));
        assert_eq!(pods.iter().map(|p| p.pod.as_str()).collect::<Vec<_>>(), ["p-a", "p-b"], "live pods, by name");
        let new = pod("p-new", false);
        observe(&mut pods, &list(&[pod("p-a", false), pod("p-b", false), new.clone()]), 100.0);
        assert_eq!((pods[0].terminated_at, pods[1].terminated_at), (None, None));
        assert!(!settled(&pods, 100.0, 25.0));
        // p-a's deletion shows; a later poll does not move it.
        observe(&mut pods, &list(&[pod("p-a", true), pod("p-b", false), new.clone()]), 100.1);
        observe(&mut pods, &list(&[pod("p-a", true), pod("p-b", false), new.clone()]), 100.2);
        assert_eq!((pods[0].terminated_at, pods[0].gone_at), (Some(100.1), None));
        // A replacement with the same name is another pod: p-a is gone.
        let mut renamed = pod("p-a", false);
        renamed["metadata"]["uid"] = json!("uid-p-a-2");
        observe(&mut pods, &list(&[renamed, pod("p-b", false), new.clone()]), 110.4);
        assert_eq!((pods[0].terminated_at, pods[0].gone_at), (Some(100.1), Some(110.4)));
        assert!(!settled(&pods, 110.4, 25.0), "p-b has not even begun");
        // p-b went between two polls: it began terminating at most then.
        observe(&mut pods, &list(&[new]), 120.0);
        assert_eq!((pods[1].terminated_at, pods[1].gone_at), (Some(120.0), Some(120.0)));
        assert!(settled(&pods, 120.0, 25.0));
    }

    #[test]
    fn a_pod_that_lingers_past_its_setting_and_the_margin_is_no_longer_waited_for() {
        let mut pods = old_pods(&list(&[pod("p", false)]));
        observe(&mut pods, &list(&[pod("p", true)]), 10.0);
        assert!(!settled(&pods, 34.9, 25.0));
        assert!(settled(&pods, 35.0, 25.0));
        assert!(!settled(&old_pods(&list(&[pod("q", false)])), 1e9, 25.0), "one that never began is waited for");
    }

    #[test]
    fn each_cut_belongs_to_the_last_termination_before_it() {
        let mut pods = vec![
            OldPod { pod: "p-a".into(), terminated_at: Some(100.0), ..OldPod::default() },
            OldPod { pod: "p-b".into(), terminated_at: Some(130.0), ..OldPod::default() },
            OldPod { pod: "p-c".into(), terminated_at: None, ..OldPod::default() },
        ];
        // Seconds after the first termination (100.0): p-a's at 110.0 and
        // 110.3, p-b's at 140.1, and one exactly at p-b's start.
        let seen = Seen { cuts: vec![10.0, 40.1, 10.3, 30.0], reconnects: vec![(110.5, 1000)], resumed: 0 };
        let own = attribute(&mut pods, 100.0, &seen);
        assert_eq!(own.cuts, [10.0, 10.1, 10.3, 0.0]);
        assert_eq!(own.reconnects, seen.reconnects, "reconnects are not moved");
        assert_eq!(pods.iter().map(|p| p.cuts).collect::<Vec<_>>(), [2, 2, 0]);
        // One pod: the delays stay as read.
        let mut one = vec![OldPod { pod: "p".into(), terminated_at: Some(100.0), ..OldPod::default() }];
        assert_eq!(attribute(&mut one, 100.0, &seen).cuts, seen.cuts);
        assert_eq!(one[0].cuts, 4);
        // No termination: nothing to time them from.
        let mut none = vec![OldPod { pod: "p".into(), ..OldPod::default() }];
        assert_eq!(attribute(&mut none, 100.0, &seen), seen);
        assert_eq!(none[0].cuts, 0);
    }

    #[test]
    fn the_clients_are_back_when_every_user_holds_a_session_and_every_cut_reconnected() {
        let settled = ClientAccount { users: 10, sessions: 10, cut: 4, reconnects: 4, ..ClientAccount::default() };
        assert!(back(&settled));
        assert!(!back(&ClientAccount { sessions: 9, ..settled }));
        assert!(!back(&ClientAccount { reconnects: 3, ..settled }));
    }

    #[test]
    fn a_log_is_json_when_a_line_is_an_object() {
        assert!(json_lines("{\"message\":\"metrics_listening\"}\n"));
        assert!(json_lines("Defaulted container \"client\"\n{\"message\":\"x\"}\n"));
        assert!(json_lines(""), "nothing logged yet: nothing says otherwise");
        assert!(!json_lines("2026-01-01T00:00:00.000000Z  INFO session_cut reason=\"error\"\n"));
    }

    #[test]
    fn the_log_is_the_container_that_serves_the_metrics_port() {
        let pod = json!({"spec": {"containers": [
            {"name": "mesh-proxy", "ports": [{"containerPort": 15090}]},
            {"name": "client", "ports": [{"containerPort": 9091, "name": "metrics"}]},
        ]}});
        assert_eq!(log_container(&pod, 9091).as_deref(), Some("client"));
        assert_eq!(log_container(&pod, 9999), None);
        assert_eq!(log_container(&json!({}), 9091), None);
    }

    #[test]
    fn a_proxy_gsd_does_not_know_needs_its_setting() {
        let traefik = Target::new("traefik", "edge", "traefik", None, None).unwrap();
        assert_eq!((traefik.setting_name.as_str(), traefik.setting), ("Traefik graceTimeOut", Duration::from_secs(10)));
        assert_eq!(traefik.path(), "/apis/apps/v1/namespaces/edge/deployments/traefik");
        let raised = Target::new("envoy-gateway", "eg", "envoy", Some(Duration::from_secs(90)), None).unwrap();
        assert_eq!(
            (raised.setting_name.as_str(), raised.setting),
            ("Envoy Gateway shutdown.drainTimeout", Duration::from_secs(90))
        );
        let relay = Target::new("relay", "r", "relay", Some(Duration::from_secs(5)), Some("relay drain")).unwrap();
        assert_eq!((relay.setting_name.as_str(), relay.setting), ("relay drain", Duration::from_secs(5)));
        for (setting, name) in [(None, None), (Some(Duration::from_secs(5)), None), (None, Some("hard-stop-after"))] {
            assert_eq!(
                Target::new("haproxy", "h", "haproxy", setting, name).unwrap_err(),
                "--via haproxy: not a proxy gsd knows the drain setting of (traefik, envoy-gateway): give \
                 --via-setting-name and --via-setting"
            );
        }
    }
}
