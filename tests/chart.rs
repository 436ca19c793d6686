//! charts/gsd with the real Helm: lint and render over a matrix of values,
//! refuse bad values, and hold the facts a drain depends on, read from the
//! rendered manifests parsed as YAML.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use gsd_telemetry::names;
use serde_json::Value;

fn root() -> PathBuf {
    common::repo_root()
}

fn chart() -> PathBuf {
    root().join("charts/gsd")
}

/// `helm <args>`: (success, stdout, stderr), or None when Helm is missing
/// (and not required).
fn helm(args: &[&str]) -> Option<(bool, String, String)> {
    let helm = common::tool("helm", "HELM_BIN")?;
    let out = Command::new(helm).args(args).output().unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    ))
}

/// The test pods' hook-delete-policy the chart renders under the Helm that
/// runs the tests: Helm 4.1 and later read `helm test --logs` before they
/// delete a succeeded hook, so the chart lets them delete it; earlier Helm
/// would delete it first and break `--logs`, so the chart keeps it.
fn expected_test_delete_policy() -> Option<&'static str> {
    let (ok, version, _) = helm(&["version", "--template", "{{.Version}}"])?;
    assert!(ok, "helm version");
    let numbers: Vec<u64> =
        version.trim().trim_start_matches('v').split(['.', '-']).take(2).map(|n| n.parse().unwrap()).collect();
    Some(if numbers >= vec![4, 1] { "before-hook-creation,hook-succeeded" } else { "before-hook-creation" })
}

fn set_args(sets: &[&str]) -> Vec<String> {
    sets.iter().flat_map(|s| ["--set".to_owned(), (*s).to_owned()]).collect()
}

/// Renders the chart (release `gsd` in namespace `shop`) and parses every
/// document; None when Helm is missing.
fn render(sets: &[&str], kube_version: &str) -> Option<Vec<Value>> {
    let chart = chart();
    let mut args =
        vec!["template", "gsd", chart.to_str().unwrap(), "--namespace", "shop", "--kube-version", kube_version];
    let sets = set_args(sets);
    args.extend(sets.iter().map(String::as_str));
    let (ok, stdout, stderr) = helm(&args)?;
    assert!(ok, "helm template {sets:?}: {stderr}");
    let docs = serde_norway::Deserializer::from_str(&stdout)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v: &Value| !v.is_null())
        .collect();
    Some(docs)
}

/// `helm template gsd charts/gsd --kube-version 1.31.0 <sets>`: (success,
/// stdout, stderr); None when Helm is missing.
fn try_template(sets: &[&str]) -> Option<(bool, String, String)> {
    let chart = chart();
    let mut args = vec!["template", "gsd", chart.to_str().unwrap(), "--namespace", "shop", "--kube-version", "1.31.0"];
    let sets = set_args(sets);
    args.extend(sets.iter().map(String::as_str));
    helm(&args)
}

/// Asserts that the chart refuses `sets` with a message holding `needle`.
fn refused(sets: &[&str], needle: &str) {
    let Some((ok, _, stderr)) = try_template(sets) else { return };
    assert!(!ok, "{sets:?} rendered");
    assert!(stderr.contains(needle), "{sets:?}: {stderr:?} lacks {needle:?}");
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| {
        panic!(
            "no {kind} {name} in {:?}",
            docs.iter().map(|d| (&d["kind"], &d["metadata"]["name"])).collect::<Vec<_>>()
        )
    })
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter().map(|d| d["kind"].as_str().unwrap().to_owned()).collect()
}

/// Every `key: value` of `sub` is in `map`.
fn contains(map: &Value, sub: &Value) -> bool {
    sub.as_object().unwrap().iter().all(|(k, v)| map.get(k) == Some(v))
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no env {name}"))
}

const MATRIX: &[&[&str]] = &[
    &[],
    &[
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.dashboards.enabled=true",
    ],
    &["monitoring.serviceMonitor.enabled=true", "monitoring.serviceMonitor.serviceDiscoveryRole=EndpointSlice"],
    &["monitoring.podMonitor.enabled=true"],
    &["networkPolicy.enabled=true"],
    &["service.sessionAffinity=ClientIP"],
    &["server.replicas=1", "client.enabled=false", "tests.enabled=false"],
    &["server.preStop.mode=none", "server.terminationGracePeriodSeconds=48"],
    &[
        "otlpEndpoint=http://collector.observability:4318",
        "server.extraEnv[0].name=RUST_LOG",
        "server.extraEnv[0].value=debug",
        "imagePullSecrets[0].name=registry",
    ],
    &[
        "monitoring.labels.release=kube-prometheus-stack",
        "monitoring.podMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
    ],
    &["verdict.enabled=true", "networkPolicy.enabled=true"],
    &[
        "verdict.enabled=true",
        "verdict.via.name=traefik",
        "verdict.via.namespace=edge",
        "verdict.via.deployment=traefik",
        "client.serverUrl=ws://traefik.edge.svc.cluster.local/ws",
    ],
    &["server.softNodeSpread=false", "server.drainPacingSeconds=5", "server.drainMessages=3"],
    &["faults.enabled=true", "faults.dropOwed=1", "faults.resetAtSigterm=1", "faults.closeLastSeqLower=1"],
];

#[test]
fn lint_and_template_pass_over_the_values_matrix() {
    let chart = chart();
    for sets in MATRIX {
        let sets = set_args(sets);
        let mut lint = vec!["lint", "--strict", chart.to_str().unwrap(), "--kube-version", "1.31.0"];
        lint.extend(sets.iter().map(String::as_str));
        let Some((ok, stdout, stderr)) = helm(&lint) else { return };
        assert!(ok, "helm lint --strict {sets:?}:\n{stdout}\n{stderr}");
        for kube in ["1.29.0", "1.31.0"] {
            let mut template = vec!["template", "gsd", chart.to_str().unwrap(), "--kube-version", kube];
            template.extend(sets.iter().map(String::as_str));
            let (ok, _, stderr) = helm(&template).unwrap();
            assert!(ok, "helm template {sets:?} on {kube}: {stderr}");
        }
    }
}

#[test]
fn an_inconsistent_grace_period_fails_with_its_message() {
    // Defaults: preStop 5 + drain 20 + close 2 + linger 15 + margin 10 = 52.
    for (sets, sum) in [
        (&["server.terminationGracePeriodSeconds=52"][..], "(52) must be larger than"),
        (&["server.drainTimeoutSeconds=45"][..], "= 77"),
        (&["server.preStop.sleepSeconds=40"][..], "= 87"),
        (&["server.closeTimeoutSeconds=14"][..], "closeTimeoutSeconds (14)"),
    ] {
        refused(sets, sum);
        refused(sets, "the kubelet would SIGKILL a drain in progress");
    }
    assert!(try_template(&["server.terminationGracePeriodSeconds=53"]).is_none_or(|(ok, _, _)| ok), "53 > 52");
}

#[test]
fn garbage_values_are_refused_with_a_clear_error() {
    let cases: &[(&str, &str)] = &[
        ("server.replica=3", "additional properties 'replica' not allowed"),
        ("server.replicas=two", "server/replicas"),
        ("server.preStop.mode=exec", "server/preStop/mode"),
        ("server.pushInterval=soon", "server/pushInterval"),
        ("server.drainMessages=0-5", "server/drainMessages"),
        ("service.sessionAffinity=Sticky", "service/sessionAffinity"),
        ("monitoring.serviceMonitor.enable=true", "additional properties 'enable' not allowed"),
        ("otlpEndpoint=collector:4318", "otlpEndpoint"),
        ("server.pushInterval=1.5s", "server/pushInterval"),
        ("server.pingTimeout=0s", "server/pingTimeout"),
        ("server.pingInterval=soon", "server/pingInterval"),
        ("client.pingTimeout=never", "client/pingTimeout"),
        ("client.reconnectBackoffBase=0ms", "client/reconnectBackoffBase"),
        ("server.readinessProbe.timeoutSeconds=0", "server/readinessProbe/timeoutSeconds"),
        ("imagePullSecrets[0]=regcred", "imagePullSecrets/0"),
        ("monitoring.prometheusRule.runbookBaseUrl=docs/runbook.md", "monitoring/prometheusRule/runbookBaseUrl"),
        ("monitoring.labels.release=null", "monitoring/labels"),
        ("verdict.timeoutSeconds=1", "verdict/timeoutSeconds"),
        ("server.maxSessions=lots", "server/maxSessions"),
        ("server.adminPort=8080", "server.adminPort (8080) must differ from server.port"),
        ("server.httpHeaderTimeout=10", "server/httpHeaderTimeout"),
        ("server.maxHttpConnections=0", "server/maxHttpConnections"),
        ("server.resources.limits.memory=1.5Gi", "reads only whole numbers"),
        ("server.resources.limits.memory=40Mi", "leaves no room for a session"),
        ("server.resources.limits.memory=null", "needs server.resources.limits.memory"),
        ("faults.enable=true", "additional properties 'enable' not allowed"),
        ("faults.resetAtSigterm=-1", "faults/resetAtSigterm"),
        ("faults.closeLastSeqLower=two", "faults/closeLastSeqLower"),
        ("faults.dropOwed=4294967296", "faults/dropOwed"),
        ("client.users=0", "client/users"),
        ("client.users=many", "client/users"),
        ("client.clients=0", "client/clients"),
        ("client.clients=many", "client/clients"),
        ("server.resume.windowSeconds=-1", "server/resume/windowSeconds"),
        ("server.resume.windowSeconds=3601", "server/resume/windowSeconds"),
        ("server.resume.windowSeconds=30s", "server/resume/windowSeconds"),
        ("server.resume.maxBytes=1023", "server/resume/maxBytes"),
        ("server.resume.maxBytes=16777217", "server/resume/maxBytes"),
        ("server.resume.existingSecret=My_Key", "server/resume/existingSecret"),
        ("server.resume.window=30", "additional properties 'window' not allowed"),
    ];
    for (set, needle) in cases {
        refused(&[set], needle);
    }
    // Checked at render, with the server's own rules.
    refused(&["server.drainMessages=5-3"], "server.drainMessages \"5-3\": MIN 5 is larger than MAX 3");
    refused(&["server.drainMessages=1-20000"], "MAX 20000 is over the server's limit of 10000");
    refused(&["server.drainPacingSeconds=20"], "server.drainPacingSeconds (20) must be shorter than");
    refused(&["monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true"], "are alternatives");
    refused(&["verdict.enabled=true", "client.enabled=false"], "verdict.enabled needs client.enabled");
    refused(&["verdict.enabled=true", "server.replicas=1"], "verdict.enabled needs server.replicas >= 2 (it is 1)");
    // extraEnv: a list of EnvVar, names checked.
    refused(&["server.extraEnv[0].name=1BAD", "server.extraEnv[0].value=x"], "does not match pattern");
    refused(&["server.extraEnv[0].name=RUST_LOG"], "server/extraEnv/0");
    refused(&["server.extraEnv.RUST_LOG=debug"], "server/extraEnv");
    for owned in ["RESUME_WINDOW", "RESUME_KEY_FILE", "POD_IP"] {
        let name = format!("server.extraEnv[0].name={owned}");
        refused(&[&name, "server.extraEnv[0].value=x"], owned);
    }
    refused(
        &[
            "client.extraEnv[0].name=X",
            "client.extraEnv[0].value=a",
            "client.extraEnv[1].name=X",
            "client.extraEnv[1].value=b",
        ],
        "client.extraEnv: X is given twice",
    );
}

#[test]
fn rendered_manifests_hold_what_a_drain_depends_on() {
    let Some(docs) = render(&[], "1.31.0") else { return };
    assert_eq!(kinds(&docs), ["PodDisruptionBudget", "Secret", "Service", "Deployment", "Deployment", "Pod"]);
    let server = find(&docs, "Deployment", "gsd-server");
    let client = find(&docs, "Deployment", "gsd-client");
    let service = find(&docs, "Service", "gsd");

    // Replicas and the rollout strategy.
    assert_eq!(server["spec"]["replicas"], 2);
    assert_eq!(server["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 1);
    assert_eq!(server["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(client["spec"]["replicas"], 1);

    // The preStop hook and the grace arithmetic.
    let pod = &server["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let prestop = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64().expect("native sleep on 1.31");
    let drain: i64 = env(c, "DRAIN_TIMEOUT")["value"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    let linger: i64 = env(c, "METRICS_LINGER")["value"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    let close: i64 = env(c, "CLOSE_TIMEOUT")["value"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert_eq!((prestop, drain, close, linger, grace), (5, 20, 2, 15, 60));
    assert!(grace > prestop + drain + close + linger, "grace {grace} does not cover the drain");
    // Drain pacing, liveness and backoff are chart values, passed as the binaries' variables.
    for (name, value) in [("DRAIN_PACING", "0s"), ("PING_INTERVAL", "5s"), ("PING_TIMEOUT", "5s")] {
        assert_eq!(env(c, name)["value"], value, "{name}");
    }
    assert_eq!(env(c, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    let old = render(&[], "1.29.0").unwrap();
    let old_c = &find(&old, "Deployment", "gsd-server")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(old_c["lifecycle"]["preStop"]["httpGet"]["path"], "/prestop?sleep=5s", "no sleep action before 1.30");
    assert_eq!(old_c["lifecycle"]["preStop"]["httpGet"]["port"], "admin");

    // Probes: paths and ports; the probes and the hook use the admin port.
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(env(c, "PORT")["value"], "8080");
    assert_eq!(c["ports"][1]["name"], "admin");
    assert_eq!(c["ports"][1]["containerPort"], 9090);
    assert_eq!(env(c, "ADMIN_PORT")["value"], "9090");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    // The HTTP limits, and MAX_SESSIONS from the 256Mi limit: (256 - 48) MiB
    // at 1 MiB a session, and with resume on (the default) 2 x 64 KiB + 1 KiB
    // more a session: 212992 / 1153.
    assert_eq!(env(c, "HTTP_HEADER_TIMEOUT")["value"], "10s");
    assert_eq!(env(c, "HTTP_IDLE_TIMEOUT")["value"], "30s");
    assert_eq!(env(c, "MAX_HTTP_CONNECTIONS")["value"], "1024");
    assert_eq!(env(c, "MAX_SESSIONS")["value"], "184");
    for (limit, sessions) in [("1Gi", "976"), ("512M", "440"), ("2147483648", "2000"), ("300000Ki", "244")] {
        let set = format!("server.resources.limits.memory={limit}");
        let docs = render(&[&set, "server.resume.windowSeconds=0"], "1.31.0").unwrap();
        let c = &find(&docs, "Deployment", "gsd-server")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(env(c, "MAX_SESSIONS")["value"], sessions, "limit {limit}");
    }
    let fixed = render(&["server.maxSessions=5000"], "1.31.0").unwrap();
    let fixed_c = &find(&fixed, "Deployment", "gsd-server")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(fixed_c, "MAX_SESSIONS")["value"], "5000");
    let cc = &client["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(cc["ports"][0]["name"], "metrics");
    assert_eq!(env(cc, "METRICS_PORT")["value"], cc["ports"][0]["containerPort"].to_string());
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(cc[probe]["httpGet"]["path"], "/healthz");
        assert_eq!(cc[probe]["httpGet"]["port"], "metrics");
    }
    for (name, value) in [
        ("RECONNECT_BACKOFF_BASE", "100ms"),
        ("RECONNECT_BACKOFF_CAP", "10s"),
        ("PING_INTERVAL", "5s"),
        ("PING_TIMEOUT", "5s"),
    ] {
        assert_eq!(env(cc, name)["value"], value, "{name}");
    }

    // Probes that a reconnect storm does not flap: no 1 s default timeout,
    // and readiness needs two failures in a row. Endpoint removal at a
    // deletion does not wait for it, but a broken pod is still out within
    // period * threshold + timeout.
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert!(c[probe]["timeoutSeconds"].as_i64().unwrap() >= 2, "{probe}: {}", c[probe]);
    }
    let r = &c["readinessProbe"];
    assert_eq!(r["failureThreshold"], 2);
    let unready = r["periodSeconds"].as_i64().unwrap() * r["failureThreshold"].as_i64().unwrap()
        + r["timeoutSeconds"].as_i64().unwrap();
    assert!(unready <= 10, "a broken pod stays in the Service {unready}s");
    assert!(c["livenessProbe"]["failureThreshold"].as_i64().unwrap() > 1);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert!(cc[probe]["timeoutSeconds"].as_i64().unwrap() >= 2, "client {probe}");
    }

    // The servers prefer different nodes, softly (one node still works),
    // counting each ReplicaSet apart.
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread["whenUnsatisfiable"], "ScheduleAnyway");
    assert_eq!(spread["maxSkew"], 1);
    assert_eq!(spread["labelSelector"]["matchLabels"], server["spec"]["selector"]["matchLabels"]);
    assert_eq!(spread["matchLabelKeys"], serde_json::json!(["pod-template-hash"]));
    let old = render(&[], "1.26.0").unwrap();
    let old_spread =
        &find(&old, "Deployment", "gsd-server")["spec"]["template"]["spec"]["topologySpreadConstraints"][0];
    assert!(old_spread["matchLabelKeys"].is_null(), "matchLabelKeys before 1.27");
    let off = render(&["server.softNodeSpread=false"], "1.31.0").unwrap();
    assert!(find(&off, "Deployment", "gsd-server")["spec"]["template"]["spec"]["topologySpreadConstraints"].is_null());

    // securityContext of every pod the chart makes, helm test included.
    let test_pod = find(&docs, "Pod", "gsd-test-connection");
    for spec in [pod, &client["spec"]["template"]["spec"], &test_pod["spec"]] {
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        let sc = &spec["containers"][0]["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(spec["containers"][0]["resources"]["limits"].is_object());
    }

    // Labels and selectors match; the Service selects the server pods only.
    for deployment in [server, client] {
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert!(contains(labels, &deployment["spec"]["selector"]["matchLabels"]), "{deployment}");
        assert_eq!(labels["app.kubernetes.io/instance"], "gsd");
    }
    let selector = &service["spec"]["selector"];
    assert!(contains(&server["spec"]["template"]["metadata"]["labels"], selector));
    assert!(!contains(&client["spec"]["template"]["metadata"]["labels"], selector), "the Service would select clients");
    assert!(!contains(&test_pod["metadata"]["labels"], selector), "the Service would select the test pod");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(service["spec"]["ports"].as_array().unwrap().len(), 1, "the Service exposes /ws only");
    assert_eq!(service["spec"]["sessionAffinity"], "None");

    // SERVER_URL names the Service and its port.
    let url = format!(
        "ws://{}.shop.svc.cluster.local:{}/ws",
        service["metadata"]["name"].as_str().unwrap(),
        service["spec"]["ports"][0]["port"]
    );
    assert_eq!(env(cc, "SERVER_URL")["value"], url.as_str());
    assert_eq!(env(&test_pod["spec"]["containers"][0], "SERVER_URL")["value"], url.as_str());
    assert_eq!(test_pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    // `helm test --logs` reads the pod's log after it succeeded; whether the
    // chart lets Helm delete it depends on the Helm (gsd.testDeletePolicy),
    // and where it stays, NOTES.txt says how to remove it.
    let policy = expected_test_delete_policy().unwrap();
    assert_eq!(test_pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"], policy);
    let text = notes(&[]).unwrap();
    let cleanup = "delete pod -l app.kubernetes.io/instance=gsd,app.kubernetes.io/component=test";
    assert_eq!(text.contains(cleanup), !policy.contains("hook-succeeded"), "{text}");
    assert_eq!(test_pod["spec"]["containers"][0]["command"][1], "--check");

    // The PDB is only there with more than one replica.
    let pdb = find(&docs, "PodDisruptionBudget", "gsd-server");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(contains(&server["spec"]["template"]["metadata"]["labels"], &pdb["spec"]["selector"]["matchLabels"]));
    let single = render(&["server.replicas=1"], "1.31.0").unwrap();
    assert!(!kinds(&single).contains(&"PodDisruptionBudget".to_owned()));

    // Session affinity, when asked for.
    let sticky = render(&["service.sessionAffinity=ClientIP"], "1.31.0").unwrap();
    let sticky = find(&sticky, "Service", "gsd");
    assert_eq!(sticky["spec"]["sessionAffinity"], "ClientIP");
    assert_eq!(sticky["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 10800);
}

#[test]
fn monitoring_ships_the_one_source_of_rules_and_dashboards() {
    let sets = [
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.serviceMonitor.serviceDiscoveryRole=EndpointSlice",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.dashboards.enabled=true",
        "networkPolicy.enabled=true",
    ];
    let Some(docs) = render(&sets, "1.31.0") else { return };
    // With the default runbookBaseUrl the PrometheusRule is rules/gsd.rules.yaml, unchanged.
    let rules_file = std::fs::read_to_string(chart().join("rules/gsd.rules.yaml")).unwrap();
    let rules: Value = serde_norway::from_str(&rules_file).unwrap();
    let rule = find(&docs, "PrometheusRule", "gsd");
    assert_eq!(rule["spec"], rules, "the PrometheusRule drifted from rules/gsd.rules.yaml");
    // The ConfigMap carries every dashboards/*.json, byte for byte.
    let cm = find(&docs, "ConfigMap", "gsd-dashboards");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let mut files = 0;
    for entry in std::fs::read_dir(root().join("dashboards")).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        if name.ends_with(".json") {
            files += 1;
            let shipped = cm["data"][&name].as_str().unwrap_or_else(|| panic!("{name} not shipped"));
            assert_eq!(shipped, std::fs::read_to_string(entry.path()).unwrap(), "{name} drifted");
        }
    }
    assert!(files > 0);
    assert_eq!(cm["data"].as_object().unwrap().len(), files);
    // ServiceMonitors: EndpointSlice discovery, the release label, the right ports.
    for (name, port) in [("gsd-server", "admin"), ("gsd-client", "metrics")] {
        let sm = find(&docs, "ServiceMonitor", name);
        assert_eq!(sm["spec"]["serviceDiscoveryRole"], "EndpointSlice");
        let endpoint = &sm["spec"]["endpoints"][0];
        assert_eq!(endpoint["port"], port);
        assert_eq!(endpoint["path"], "/metrics");
        assert_eq!(endpoint["relabelings"][0]["targetLabel"], "release");
    }
    // Each ServiceMonitor selects its own Service.
    let client_metrics = find(&docs, "Service", "gsd-client-metrics");
    assert!(contains(
        &client_metrics["metadata"]["labels"],
        &find(&docs, "ServiceMonitor", "gsd-client")["spec"]["selector"]["matchLabels"]
    ));
    let server_selector = &find(&docs, "ServiceMonitor", "gsd-server")["spec"]["selector"]["matchLabels"];
    let server_metrics = find(&docs, "Service", "gsd-server-metrics");
    assert!(contains(&server_metrics["metadata"]["labels"], server_selector));
    assert_eq!(server_metrics["spec"]["ports"][0]["targetPort"], "admin");
    assert_eq!(server_metrics["spec"]["clusterIP"], "None");
    assert!(
        !contains(&find(&docs, "Service", "gsd")["metadata"]["labels"], server_selector),
        "the server ServiceMonitor must not select the client-facing Service"
    );
    // The NetworkPolicy guards the server pods and lets clients and monitoring in.
    let np = find(&docs, "NetworkPolicy", "gsd-server");
    let server = find(&docs, "Deployment", "gsd-server");
    assert_eq!(np["spec"]["podSelector"]["matchLabels"], server["spec"]["selector"]["matchLabels"]);
    let from = &np["spec"]["ingress"];
    assert_eq!(
        from[0]["from"][0]["podSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["client", "test"])
    );
    assert_eq!(from[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "monitoring");
    assert_eq!(from[0]["ports"][0]["port"], "http", "clients reach /ws");
    assert_eq!(from[1]["ports"][0]["port"], "admin", "monitoring reaches the admin port only");
    // With resume on (the default), the other server pods reach the admin
    // port too: a resume that lands on one fetches the session from the
    // other. With it off, no such rule.
    assert_eq!(from[2]["from"][0]["podSelector"]["matchLabels"], server["spec"]["selector"]["matchLabels"]);
    assert_eq!(from[2]["ports"][0]["port"], "admin");
    assert_eq!(from.as_array().unwrap().len(), 3);
    let off = render(&["networkPolicy.enabled=true", "server.resume.windowSeconds=0"], "1.31.0").unwrap();
    assert_eq!(find(&off, "NetworkPolicy", "gsd-server")["spec"]["ingress"].as_array().unwrap().len(), 2);

    let pods = render(&["monitoring.podMonitor.enabled=true"], "1.31.0").unwrap();
    let pm = find(&pods, "PodMonitor", "gsd-server");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "admin");
    assert!(!kinds(&pods).contains(&"ServiceMonitor".to_owned()));
}

#[test]
fn the_image_and_tilt_use_the_same_build_and_chart() {
    let root = root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let cluster = std::fs::read_to_string(root.join("scripts/cluster")).unwrap();
    let cluster_test = std::fs::read_to_string(root.join("scripts/cluster-test")).unwrap();
    // The image builds with the one release command, and CI builds the
    // image: the cluster test runs `docker build` on this Dockerfile, so a
    // change that breaks the image's build breaks CI.
    assert!(dockerfile.lines().any(|l| l.trim() == "scripts/build-release \\"), "{dockerfile}");
    assert!(
        cluster.lines().any(|l| l.trim().starts_with("docker_ build --network host -t \"$tag\" \"$here/..\"")),
        "scripts/cluster image must build the repository's Dockerfile"
    );
    assert!(
        cluster_test.lines().any(|l| l.trim() == "scripts/cluster image gsd:dev"),
        "the cluster test must build the image"
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/gsd-server\"]"), "exec-form ENTRYPOINT");
    assert!(dockerfile.contains("STOPSIGNAL SIGTERM"));
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(
        dockerfile.contains("COPY --from=builder /out/gsd-server /out/gsd-client /out/gsd-verdict /usr/local/bin/")
    );
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"));
    // The Tiltfile is valid Starlark syntax (a Python subset) and wires the chart and the image.
    let tiltfile = root.join("Tiltfile");
    let parsed = Command::new("python3")
        .args(["-c", "import ast,sys; ast.parse(open(sys.argv[1]).read())", tiltfile.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(parsed.success(), "the Tiltfile does not parse");
    let tilt = std::fs::read_to_string(&tiltfile).unwrap();
    for needle in [
        "docker_build('gsd'",
        "helm(\n    'charts/gsd'",
        // Any namespace: the current context's, for the release and the buttons.
        "namespace = k8s_namespace()",
        "namespace=namespace,",
        "kubectl -n {ns} delete pod",
        "kubectl -n {ns} rollout restart",
        // The cluster's version picks the preStop form, as helm install would.
        "kube_version=kube_version,",
        "k8s_resource('gsd-server'",
        "k8s_resource('gsd-client'",
        // How to use k3d: a registry announced in local-registry-hosting.
        "k3d cluster create gsd --registry-create",
        "local-registry-hosting",
    ] {
        assert!(tilt.contains(needle), "Tiltfile lacks {needle:?}");
    }
    // Its helm() values render with real Helm in any namespace, and the
    // client's SERVER_URL follows the namespace.
    let sets = Command::new("python3")
        .args([
            "-c",
            "import ast,sys\n\
             for n in ast.walk(ast.parse(open(sys.argv[1]).read())):\n\
             \x20   if isinstance(n, ast.keyword) and n.arg == 'set':\n\
             \x20       print('\\n'.join(ast.literal_eval(n.value)))",
            tiltfile.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let sets = String::from_utf8(sets.stdout).unwrap();
    let sets: Vec<&str> = sets.lines().collect();
    assert!(sets.contains(&"image.tag=dev"), "{sets:?}");
    let chart = chart();
    let mut args =
        vec!["template", "gsd", chart.to_str().unwrap(), "--namespace", "team-a", "--kube-version", "v1.34.4"];
    let sets = set_args(&sets);
    args.extend(sets.iter().map(String::as_str));
    let Some((ok, stdout, stderr)) = helm(&args) else { return };
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ws://gsd.team-a.svc.cluster.local:8080/ws"), "SERVER_URL not in the namespace");
    assert!(stdout.contains("image: \"gsd:dev\""), "the image Tilt builds is not the one the chart runs");
}

/// The rule groups of the rendered PrometheusRule.
fn rendered_rules(sets: &[&str]) -> Option<Value> {
    let mut all = vec!["monitoring.prometheusRule.enabled=true"];
    all.extend_from_slice(sets);
    let docs = render(&all, "1.31.0")?;
    Some(find(&docs, "PrometheusRule", "gsd")["spec"].clone())
}

fn alerts(rules: &Value) -> Vec<&Value> {
    rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect()
}

#[test]
fn alert_rules_pass_promtool_as_rendered_and_follow_the_conventions() {
    let Some(rules) = rendered_rules(&[]) else { return };
    // promtool checks and unit-tests the rules the chart renders, written
    // next to a copy of the test file.
    if let Some(promtool) = common::tool("promtool", "PROMTOOL_BIN") {
        let dir = tempdir("gsd-rules");
        std::fs::write(dir.join("gsd.rules.yaml"), serde_norway::to_string(&rules).unwrap()).unwrap();
        std::fs::copy(chart().join("rules/gsd.rules.test.yaml"), dir.join("gsd.rules.test.yaml")).unwrap();
        for args in [&["check", "rules", "gsd.rules.yaml"][..], &["test", "rules", "gsd.rules.test.yaml"]] {
            let out = Command::new(&promtool).args(args).current_dir(&dir).output().unwrap();
            assert!(
                out.status.success(),
                "promtool {args:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).unwrap();
    let values: Value = serde_norway::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    let base = values["monitoring"]["prometheusRule"]["runbookBaseUrl"].as_str().unwrap();
    let chart_yaml: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(base, format!("{}/blob/main/docs/runbook.md", chart_yaml["home"].as_str().unwrap()));
    let custom =
        rendered_rules(&["monitoring.prometheusRule.runbookBaseUrl=https://wiki.example/gsd/runbook/"]).unwrap();
    let mut names = Vec::new();
    for (rule, custom) in alerts(&rules).into_iter().zip(alerts(&custom)) {
        let name = rule["alert"].as_str().unwrap();
        names.push(name.to_owned());
        assert!(name.starts_with("Gsd"), "{name}");
        assert!(["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap()), "{name}");
        assert!(rule["for"].as_str().is_some_and(|f| f != "0s" && f != "0m"), "{name} has no for:");
        let a = &rule["annotations"];
        assert!(a["summary"].as_str().is_some_and(|s| !s.contains('\n')), "{name}: one-line summary");
        let description = a["description"].as_str().unwrap();
        assert!(description.contains("{{ $labels.pod }}") && description.contains("$value"), "{name}: {description}");
        // Exact counts: no `humanize` of an extrapolated increase().
        assert!(!description.contains("$value | humanize }}"), "{name}: {description}");
        // Absolute runbook links, under the configured base.
        let anchor = format!("#{}", name.to_lowercase());
        assert_eq!(a["runbook_url"], format!("{base}{anchor}").as_str(), "{name}");
        assert_eq!(custom["annotations"]["runbook_url"], format!("https://wiki.example/gsd/runbook{anchor}").as_str());
        assert!(runbook.lines().any(|l| l == format!("## {name}")), "docs/runbook.md has no section {name}");
        // Routing labels survive every aggregation.
        let expr = rule["expr"].as_str().unwrap();
        assert!(runbook.contains(expr.trim_end()), "docs/runbook.md does not show {name}'s expression");
        let bys: Vec<&str> = expr.split(" by (").skip(1).map(|rest| rest.split(')').next().unwrap()).collect();
        assert!(!bys.is_empty(), "{name}: no aggregation");
        for by in bys {
            for label in ["namespace", "job", "release", "pod"] {
                assert!(by.split(", ").any(|l| l == label), "{name}: `by ({by})` drops {label}");
            }
        }
        assert!(
            !expr.contains(&format!("increase({}", names::SERVER_DRAINS))
                && !expr.contains(&format!("increase({}", names::CLIENT_MESSAGES_LOST)),
            "{name}"
        );
    }
    assert_eq!(names, ["GsdDrainIncomplete", "GsdMessagesLost", "GsdDrainNearTimeout", "GsdReconnectSlow"]);
}

fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn kube_prometheus_stack_selects_every_monitor_and_rule() {
    // The README's kube-prometheus-stack line, verbatim in its values.
    for monitor in ["podMonitor", "serviceMonitor"] {
        let enabled = format!("monitoring.{monitor}.enabled=true");
        let sets = [
            "monitoring.labels.release=kube-prometheus-stack",
            enabled.as_str(),
            "monitoring.prometheusRule.enabled=true",
            "monitoring.prometheusRule.labels.team=payments",
        ];
        let Some(docs) = render(&sets, "1.31.0") else { return };
        let selected: Vec<&Value> = docs
            .iter()
            .filter(|d| ["ServiceMonitor", "PodMonitor", "PrometheusRule"].contains(&d["kind"].as_str().unwrap()))
            .collect();
        assert_eq!(selected.len(), 3, "{monitor}: {:?}", kinds(&docs));
        for d in selected {
            let labels = &d["metadata"]["labels"];
            assert_eq!(labels["release"], "kube-prometheus-stack", "{}", d["kind"]);
            assert_eq!(labels["app.kubernetes.io/instance"], "gsd", "{}", d["kind"]);
            assert_eq!(labels["team"].is_null(), d["kind"] != "PrometheusRule", "own labels stay with their kind");
        }
    }
    // A kind's own labels win over the common ones.
    let docs = render(
        &[
            "monitoring.labels.release=a",
            "monitoring.podMonitor.enabled=true",
            "monitoring.podMonitor.labels.release=b",
        ],
        "1.31.0",
    )
    .unwrap();
    assert_eq!(find(&docs, "PodMonitor", "gsd-server")["metadata"]["labels"]["release"], "b");
}

/// The first ```lang block after the line `heading` of the Markdown file
/// `page` (relative to the repository).
fn doc_block(page: &str, heading: &str, lang: &str) -> String {
    let text = std::fs::read_to_string(root().join(page)).unwrap();
    let rest = &text[text.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("{page} has no {heading}"))..];
    let start = rest.find(&format!("```{lang}\n")).unwrap() + lang.len() + 4;
    rest[start..start + rest[start..].find("```").unwrap()].to_owned()
}

/// The `--set` values of a documented command (continuation lines joined).
fn doc_sets(block: &str, command: &str) -> Vec<String> {
    let joined = block.replace("\\\n", " ");
    let line = joined.lines().find(|l| l.starts_with(command)).unwrap_or_else(|| panic!("no `{command}` in {block}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).filter(|w| w[0] == "--set").map(|w| w[1].trim_matches('\'').to_owned()).collect()
}

#[test]
fn the_documented_walkthrough_is_what_the_chart_renders() {
    // The kind path: the image built, loaded and installed is one and the same.
    let kind = doc_block("docs/kubernetes.md", "### From a checkout, on kind", "sh");
    let lines: Vec<&str> = kind.lines().collect();
    assert_eq!(lines.len(), 5, "the five-line kind path: {kind}");
    let image = lines[0].strip_prefix("docker build -t ").unwrap().strip_suffix(" .").unwrap();
    assert!(lines[1].starts_with("kind create cluster --name gsd"));
    assert_eq!(lines[2], format!("kind load docker-image {image} --name gsd"));
    assert!(lines[3].starts_with("helm install gsd charts/gsd ") && lines[3].ends_with(" --wait"));
    assert_eq!(lines[4], "helm test gsd --logs");
    let sets = doc_sets(&kind, "helm install");
    let Some(docs) = render(&sets.iter().map(String::as_str).collect::<Vec<_>>(), "1.31.0") else { return };
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], image, "{}", d["metadata"]["name"]);
    }
    assert_eq!(find(&docs, "Pod", "gsd-test-connection")["spec"]["containers"][0]["image"], image);
    // k3d's equivalent names the same image.
    let page = std::fs::read_to_string(root().join("docs/kubernetes.md")).unwrap();
    assert!(page.contains(&format!("`k3d image import {image} --cluster gsd`")));

    // The README's OCI path first: the release pushed where the install
    // and the verdict's upgrade take it from, at the chart's version.
    let chart_yaml: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
    let version = chart_yaml["version"].as_str().unwrap();
    let oci = doc_block("README.md", "## On Kubernetes", "sh");
    let lines: Vec<&str> = oci.lines().collect();
    assert_eq!(lines.len(), 4, "{oci}");
    let registry = lines[0].strip_prefix("scripts/release --registry ").unwrap().split_whitespace().next().unwrap();
    let chart_ref = format!("oci://{registry}/charts/gsd --version {version}");
    assert_eq!(lines[1], format!("helm install gsd {chart_ref} --wait"));
    assert_eq!(lines[2], format!("helm upgrade gsd {chart_ref} --reuse-values --set verdict.enabled=true"));
    assert!(lines[3].starts_with("helm test gsd --logs --timeout 5m"));

    // Then its kind path: the same image as docs/kubernetes.md's.
    let short = doc_block("README.md", "From a checkout, on kind:", "sh");
    let lines: Vec<&str> = short.lines().collect();
    assert_eq!(lines.len(), 3, "{short}");
    assert_eq!(lines[0], format!("docker build -t {image} ."));
    assert_eq!(lines[1], format!("kind create cluster --name gsd && kind load docker-image {image} --name gsd"));
    assert!(lines[2].starts_with("helm install gsd charts/gsd ") && lines[2].ends_with(" --wait"));
    let install = doc_sets(lines[2], "helm install");
    let Some(docs) = render(&install.iter().map(String::as_str).collect::<Vec<_>>(), "1.31.0") else { return };
    assert_eq!(find(&docs, "Pod", "gsd-test-connection")["spec"]["containers"][0]["image"], image);
    let mut upgraded = install.clone();
    upgraded.push("verdict.enabled=true".to_owned());
    let docs = render(&upgraded.iter().map(String::as_str).collect::<Vec<_>>(), "1.31.0").unwrap();
    assert_eq!(find(&docs, "Pod", "gsd-verdict")["spec"]["containers"][0]["image"], image);

    // kube-prometheus-stack: its line puts `release` on every monitor and rule.
    let kps = doc_block("docs/kubernetes.md", "## Monitoring: kube-prometheus-stack, or a plain Prometheus", "sh");
    let sets = doc_sets(&kps, "helm upgrade gsd charts/gsd --reuse-values");
    assert!(sets.contains(&"monitoring.labels.release=kube-prometheus-stack".to_owned()), "{sets:?}");
    let docs = render(&sets.iter().map(String::as_str).collect::<Vec<_>>(), "1.31.0").unwrap();
    let monitored: Vec<&Value> =
        docs.iter().filter(|d| ["PodMonitor", "PrometheusRule"].contains(&d["kind"].as_str().unwrap())).collect();
    assert_eq!(monitored.len(), 3, "{:?}", kinds(&docs));
    for d in monitored {
        assert_eq!(d["metadata"]["labels"]["release"], "kube-prometheus-stack");
    }
    assert_eq!(find(&docs, "ConfigMap", "gsd-dashboards")["metadata"]["labels"]["grafana_dashboard"], "1");

    // The verdict's line adds the verdict pod.
    let verdict = doc_block("docs/kubernetes.md", "## The verdict, inside the cluster", "sh");
    let sets = doc_sets(&verdict, "helm upgrade");
    let docs = render(&sets.iter().map(String::as_str).collect::<Vec<_>>(), "1.31.0").unwrap();
    find(&docs, "Pod", "gsd-verdict");
    assert!(verdict.contains("helm test gsd --logs"));

    // The proxy phase, in the README and in docs/kubernetes.md: the same
    // command, which sends the clients through the proxy and gives the
    // verdict its rollout, its Role in the proxy's namespace included.
    let own = doc_block("README.md", "## Test your own path", "sh");
    assert_eq!(own, doc_block("docs/kubernetes.md", "### Your own proxy, from inside the cluster", "sh"));
    assert!(own.trim_end().ends_with("\nhelm test gsd --logs --timeout 5m"), "{own}");
    let sets = doc_sets(&own, "helm upgrade gsd charts/gsd --reuse-values");
    let docs = render(&sets.iter().map(String::as_str).collect::<Vec<_>>(), "1.31.0").unwrap();
    let route = find(&docs, "HTTPRoute", "gsd");
    assert_eq!(route["spec"]["parentRefs"][0], serde_json::json!({"name": "web", "namespace": "traefik"}));
    let client = &find(&docs, "Deployment", "gsd-client")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(client, "SERVER_URL")["value"], "ws://traefik.traefik.svc.cluster.local/ws");
    assert_eq!(find(&docs, "Role", "gsd-verdict-shop")["metadata"]["namespace"], "traefik");
    let c = &find(&docs, "Pod", "gsd-verdict")["spec"]["containers"][0];
    assert_eq!(env(c, "VERDICT_VIA_DEPLOYMENT")["value"], "traefik");

    // The plain Prometheus job is a valid configuration that keeps the labels the alerts route on.
    let config = doc_block("docs/kubernetes.md", "## Monitoring: kube-prometheus-stack, or a plain Prometheus", "yaml");
    let parsed: Value = serde_norway::from_str(&config).unwrap();
    let targets: Vec<&str> = parsed["scrape_configs"][0]["relabel_configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["target_label"].as_str())
        .collect();
    assert_eq!(targets, ["namespace", "pod", "release"]);
    assert_eq!(parsed["rule_files"][0], "charts/gsd/rules/gsd.rules.yaml");
    if let Some(promtool) = common::tool("promtool", "PROMTOOL_BIN") {
        let dir = tempdir("gsd-prometheus-config");
        let rules = chart().join("rules/gsd.rules.yaml");
        // Debian's Prometheus is built without Kubernetes service discovery:
        // the job is checked with a static target in its place, relabelling,
        // rule file and all.
        let sd = "    kubernetes_sd_configs:\n      - role: pod";
        assert!(config.contains(sd), "{config}");
        let config = config
            .replace(sd, "    static_configs:\n      - targets: [\"127.0.0.1:8080\"]")
            .replace("charts/gsd/rules/gsd.rules.yaml", rules.to_str().unwrap());
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let out =
            Command::new(promtool).args(["check", "config", "prometheus.yml"]).current_dir(&dir).output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// NOTES.txt rendered with `sets`; None when Helm is missing. `helm
/// template` leaves the notes out and `helm install --dry-run` wants a
/// cluster, so a copy of the chart gets a ConfigMap that includes them.
fn notes(sets: &[&str]) -> Option<String> {
    let dir = tempdir("gsd-notes");
    let copy = dir.join("gsd");
    assert!(Command::new("cp").arg("-r").arg(chart()).arg(&copy).status().unwrap().success());
    let template = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: |\n\
                    {{ include \"gsd/templates/NOTES.txt\" . | indent 4 }}\n";
    std::fs::write(copy.join("templates/notes-under-test.yaml"), template).unwrap();
    let mut args = vec!["template", "gsd", copy.to_str().unwrap(), "--namespace", "shop", "--kube-version", "1.31.0"];
    args.extend(["--show-only", "templates/notes-under-test.yaml"]);
    let sets = set_args(sets);
    args.extend(sets.iter().map(String::as_str));
    let out = helm(&args);
    std::fs::remove_dir_all(&dir).unwrap();
    let (ok, stdout, stderr) = out?;
    assert!(ok, "helm template {sets:?}: {stderr}");
    let doc: Value = serde_norway::from_str(&stdout).unwrap();
    Some(doc["data"]["notes"].as_str().unwrap().to_owned())
}

#[test]
fn client_users_and_their_deprecated_name_clients() {
    // USERS as the client Deployment sets it; it never sets CLIENTS.
    let users = |sets: &[&str]| {
        let docs = render(sets, "1.31.0")?;
        let c = &find(&docs, "Deployment", "gsd-client")["spec"]["template"]["spec"]["containers"][0];
        assert!(c["env"].as_array().unwrap().iter().all(|e| e["name"] != "CLIENTS"), "{c}");
        Some(env(c, "USERS")["value"].clone())
    };
    let Some(default) = users(&[]) else { return };
    assert_eq!(default, "10");
    assert_eq!(users(&["client.users=50"]).unwrap(), "50");
    assert_eq!(users(&["client.users=1000000"]).unwrap(), "1000000");
    // From a values file the number is a float: still written in digits
    // (`1e+06` would be refused by the client).
    let dir = tempdir("gsd-users");
    let values = dir.join("values.yaml");
    std::fs::write(&values, "client:\n  users: 1000000\n").unwrap();
    let chart = chart();
    let args = ["template", "gsd", chart.to_str().unwrap(), "--kube-version", "1.31.0", "-f", values.to_str().unwrap()];
    let (ok, stdout, stderr) = helm(&args).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("- name: USERS\n              value: \"1000000\"\n"), "{stdout}");
    // The old name is still honoured, beside the default users too.
    assert_eq!(users(&["client.clients=7"]).unwrap(), "7");
    assert_eq!(users(&["client.clients=7", "client.users=10"]).unwrap(), "7");
    // Beside another number of users, which one was meant cannot be told.
    refused(
        &["client.clients=7", "client.users=20"],
        "client.clients (7) is the deprecated name of client.users (20): set only client.users",
    );
    // The extraEnv may not pass the old variable either.
    refused(
        &["client.extraEnv[0].name=CLIENTS", "client.extraEnv[0].value=x"],
        "client.extraEnv: CLIENTS is set by the chart",
    );
    // The notes count the users, and warn about the old name only when it is set.
    let plain = notes(&["client.users=12"]).unwrap();
    assert!(plain.contains("1 client pod(s) with 12 virtual users each"), "{plain}");
    assert!(!plain.contains("deprecated"), "{plain}");
    let old = notes(&["client.clients=7"]).unwrap();
    assert!(old.contains("1 client pod(s) with 7 virtual users each"), "{old}");
    assert!(old.contains("WARNING: client.clients is deprecated"), "{old}");
    assert!(old.contains("set client.users instead (--set client.users=7)"), "{old}");
}

#[test]
fn extra_env_takes_env_vars_and_refuses_the_charts_own() {
    let dir = tempdir("gsd-extra-env");
    let values = dir.join("values.yaml");
    std::fs::write(
        &values,
        "server:\n  extraEnv:\n    - name: RUST_LOG\n      value: debug\n    - name: TOKEN\n      valueFrom:\n        secretKeyRef: {name: gsd, key: token}\n\
         client:\n  extraEnv:\n    - name: NODE\n      valueFrom:\n        fieldRef: {fieldPath: spec.nodeName}\n\
         imagePullSecrets:\n  - name: registry\n",
    )
    .unwrap();
    let chart = chart();
    let args = ["template", "gsd", chart.to_str().unwrap(), "--kube-version", "1.31.0", "-f", values.to_str().unwrap()];
    let Some((ok, stdout, stderr)) = helm(&args) else { return };
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "{stderr}");
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&stdout)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    let sc = &find(&docs, "Deployment", "gsd-server")["spec"]["template"]["spec"];
    assert_eq!(env(&sc["containers"][0], "RUST_LOG")["value"], "debug");
    assert_eq!(env(&sc["containers"][0], "TOKEN")["valueFrom"]["secretKeyRef"]["key"], "token");
    assert_eq!(sc["imagePullSecrets"], serde_json::json!([{"name": "registry"}]));
    let cc = &find(&docs, "Deployment", "gsd-client")["spec"]["template"]["spec"];
    assert_eq!(env(&cc["containers"][0], "NODE")["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_eq!(cc["imagePullSecrets"], sc["imagePullSecrets"]);

    // Every variable the chart sets, with every option on, is refused in extraEnv.
    let all = render(&["otlpEndpoint=http://collector:4318"], "1.31.0").unwrap();
    for (deployment, key) in [("gsd-server", "server"), ("gsd-client", "client")] {
        let c = &find(&all, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
        for e in c["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            let set_name = format!("{key}.extraEnv[0].name={name}");
            let set_value = format!("{key}.extraEnv[0].value=x");
            refused(&[&set_name, &set_value], &format!("{key}.extraEnv: {name} is set by the chart"));
        }
    }
}

/// The fault injections: the values key and the server's variable.
const FAULTS: [(&str, &str); 3] = [
    ("dropOwed", "FAULT_DROP_OWED"),
    ("resetAtSigterm", "FAULT_RESET_AT_SIGTERM"),
    ("closeLastSeqLower", "FAULT_CLOSE_LAST_SEQ_LOWER"),
];

#[test]
fn faults_are_refused_unless_faults_enabled() {
    let Some(off) = render(&[], "1.31.0") else { return };
    let server =
        |docs: &[Value]| find(docs, "Deployment", "gsd-server")["spec"]["template"]["spec"]["containers"][0].clone();
    let env_names = |container: &Value| -> Vec<String> {
        container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect()
    };
    let none = |container: &Value| env_names(container).iter().all(|name| !name.starts_with("FAULT_"));
    assert!(none(&server(&off)), "a FAULT_ variable by default");
    let allowed = render(&["faults.enabled=true"], "1.31.0").unwrap();
    assert!(none(&server(&allowed)), "faults.enabled alone sets no fault");
    for (key, variable) in FAULTS {
        let set = format!("faults.{key}=2");
        let needle = format!("faults.{key} (2) sets {variable}, FAULT INJECTION");
        refused(&[&set], &needle);
        refused(&[&set, "faults.enabled=false"], &needle);
        // Nor through extraEnv, faults.enabled or not.
        let name = format!("server.extraEnv[0].name={variable}");
        for enabled in ["faults.enabled=false", "faults.enabled=true"] {
            refused(
                &[&name, "server.extraEnv[0].value=x", enabled],
                &format!("server.extraEnv: {variable} is set by the chart"),
            );
        }
        let on = render(&[&set, "faults.enabled=true"], "1.31.0").unwrap();
        let container = server(&on);
        assert_eq!(env(&container, variable)["value"], "2", "{key}");
        assert_eq!(env_names(&container).iter().filter(|n| n.starts_with("FAULT_")).count(), 1, "{key}");
        // The schema takes exactly the counts the server parses.
        for text in ["0", "4294967295", "4294967296", "-1", "two"] {
            let (ok, _, stderr) = try_template(&[&format!("faults.{key}={text}"), "faults.enabled=true"]).unwrap();
            let flag =
                format!("--fault-{}={text}", variable.trim_start_matches("FAULT_").to_lowercase().replace('_', "-"));
            let parsed = gsd_server::Config::try_parse_from(["gsd-server", &flag]);
            assert_eq!(ok, parsed.is_ok(), "{key}={text}: chart {ok} ({stderr}), server {:?}", parsed.err());
        }
    }
}

#[test]
fn resume_has_one_key_for_every_replica_its_settings_and_an_off_switch() {
    use base64::Engine as _;
    let Some(docs) = render(&[], "1.31.0") else { return };
    let pod = &find(&docs, "Deployment", "gsd-server")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    // The chart's key: random, at least 32 bytes, in a Secret every replica
    // mounts (the Deployment's one pod template).
    let secret = find(&docs, "Secret", "gsd-resume-key");
    let encoded = secret["data"]["resume.key"].as_str().expect("resume.key in the Secret");
    let key = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64");
    assert!(key.len() >= 32, "{} bytes", key.len());
    let again = render(&[], "1.31.0").unwrap();
    assert_ne!(find(&again, "Secret", "gsd-resume-key")["data"], secret["data"], "helm template: a new random key");
    let volume = &pod["volumes"][0];
    assert_eq!((&volume["name"], &volume["secret"]["secretName"]), (&"resume-key".into(), &"gsd-resume-key".into()));
    assert_eq!(volume["secret"]["items"][0]["key"], "resume.key");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/gsd/resume");
    assert_eq!(c["volumeMounts"][0]["readOnly"], true);
    assert_eq!(env(c, "RESUME_KEY_FILE")["value"], "/etc/gsd/resume/resume.key");
    assert_eq!(env(c, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
    // The server takes the rendered settings and the key as they are.
    let dir = std::env::temp_dir().join(format!("gsd-chart-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("resume.key");
    std::fs::write(&file, &key).unwrap();
    let window = env(c, "RESUME_WINDOW")["value"].as_str().unwrap().to_owned();
    let bytes = env(c, "RESUME_MAX_BYTES")["value"].as_str().unwrap().to_owned();
    assert_eq!((window.as_str(), bytes.as_str()), ("30s", "65536"));
    let args = ["gsd-server", "--resume-window", &window, "--resume-max-bytes", &bytes, "--resume-key-file"];
    let config = gsd_server::Config::try_parse_from(args.iter().copied().chain([file.to_str().unwrap()])).unwrap();
    assert_eq!(config.validate(), Ok(()), "the server refuses the chart's resume settings");
    std::fs::remove_dir_all(&dir).unwrap();

    // A Secret of the user's: named, not made.
    let own = render(&["server.resume.existingSecret=shop-resume"], "1.31.0").unwrap();
    assert!(!kinds(&own).contains(&"Secret".to_owned()), "{:?}", kinds(&own));
    let own_pod = &find(&own, "Deployment", "gsd-server")["spec"]["template"]["spec"];
    assert_eq!(own_pod["volumes"][0]["secret"]["secretName"], "shop-resume");

    // Off: no key, no POD_IP, RESUME_WINDOW 0s, and maxSessions auto back
    // to 1 MiB a session.
    let off = render(&["server.resume.windowSeconds=0", "server.resume.maxBytes=1024"], "1.31.0").unwrap();
    assert!(!kinds(&off).contains(&"Secret".to_owned()), "{:?}", kinds(&off));
    let off_pod = &find(&off, "Deployment", "gsd-server")["spec"]["template"]["spec"];
    let off_c = &off_pod["containers"][0];
    assert!(off_pod.get("volumes").is_none() && off_c.get("volumeMounts").is_none(), "{off_pod}");
    let names: Vec<&str> = off_c["env"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(!names.iter().any(|n| ["RESUME_KEY_FILE", "POD_IP"].contains(n)), "{names:?}");
    assert_eq!(
        (env(off_c, "RESUME_WINDOW")["value"].as_str(), env(off_c, "MAX_SESSIONS")["value"].as_str()),
        (Some("0s"), Some("208"))
    );
    // A larger replay budget costs sessions: 1 MiB kept = 1024 + 2 x 1024 + 1 KiB.
    let big = render(&["server.resume.maxBytes=1048576"], "1.31.0").unwrap();
    let big_c = &find(&big, "Deployment", "gsd-server")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(big_c, "MAX_SESSIONS")["value"], (208 * 1024 / 3073).to_string());
}

#[test]
fn the_schema_accepts_only_what_the_binaries_parse() {
    // Durations: whatever the schema lets through, the binaries parse.
    for text in ["1s", "500ms", "1m30s", "0s", "2h", "100us", "10ns", "1.5s", "10", "1 s", "5sec", "-1s", "1d"] {
        let Some((ok, _, _)) = try_template(&[&format!("server.pushInterval={text}")]) else { return };
        let binary = gsd_client::config::parse_duration(text).is_ok();
        assert!(!ok || binary, "the schema accepts {text:?}, the binaries refuse it");
        if ["1s", "500ms", "1m30s", "0s", "100us"].contains(&text) {
            assert!(ok, "the schema refuses {text:?}");
        }
        let (ping, _, _) = try_template(&[&format!("server.pingInterval={text}")]).unwrap();
        assert!(!ping || gsd_server::config::parse_duration(text).is_ok(), "PING_INTERVAL {text:?}");
        let (positive, _, _) = try_template(&[&format!("client.reconnectBackoffBase={text}")]).unwrap();
        let binary = gsd_client::config::parse_positive_duration(text).is_ok();
        assert!(!positive || binary, "the schema accepts {text:?} as positive, the client refuses it");
        assert_eq!(positive, ok && text != "0s", "{text:?}");
    }
    // DRAIN_MESSAGES: the schema and the render checks together accept
    // exactly what the server's parser accepts.
    for text in ["1-10", "5", "10000", " 2 - 4 ", "0-5", "5-3", "1-20000", "1-10001", "a-b", "", "1-", "-1"] {
        let (ok, _, stderr) = try_template(&[&format!("server.drainMessages={text}")]).unwrap();
        let server = gsd_server::config::parse_range(text);
        assert_eq!(ok, server.is_ok(), "{text:?}: chart {ok} ({stderr}), server {server:?}");
    }
}

#[test]
fn the_verdict_is_opt_in_with_the_least_rbac() {
    let Some(off) = render(&[], "1.31.0") else { return };
    for kind in ["ServiceAccount", "Role", "RoleBinding"] {
        assert!(!kinds(&off).contains(&kind.to_owned()), "{kind} without verdict.enabled");
    }
    let docs = render(&["verdict.enabled=true"], "1.31.0").unwrap();
    let role = find(&docs, "Role", "gsd-verdict");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
        ]),
        "the verdict lists pods and evicts one; nothing else"
    );
    let binding = find(&docs, "RoleBinding", "gsd-verdict");
    assert_eq!(binding["roleRef"]["kind"], "Role", "namespaced, never a ClusterRole");
    assert_eq!(binding["roleRef"]["name"], "gsd-verdict");
    assert_eq!(binding["subjects"][0]["name"], "gsd-verdict");
    assert_eq!(binding["subjects"][0]["namespace"], "shop");
    let sa = find(&docs, "ServiceAccount", "gsd-verdict");
    assert_eq!(sa["automountServiceAccountToken"], false, "only the verdict pod mounts the token");

    let pod = find(&docs, "Pod", "gsd-verdict");
    let a = &pod["metadata"]["annotations"];
    assert_eq!(a["helm.sh/hook"], "test");
    assert_eq!(a["helm.sh/hook-delete-policy"], expected_test_delete_policy().unwrap());
    assert_eq!(a["helm.sh/hook-weight"], "1", "after the connection test");
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "gsd-verdict");
    assert_eq!(spec["automountServiceAccountToken"], true);
    assert_eq!(spec["restartPolicy"], "Never");
    let c = &spec["containers"][0];
    assert_eq!(c["command"], serde_json::json!(["/usr/local/bin/gsd-verdict"]));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    // Its selectors pick exactly the Deployments' pods; its ports are theirs.
    for (deployment, var) in [("gsd-server", "SERVER_SELECTOR"), ("gsd-client", "CLIENT_SELECTOR")] {
        let labels = &find(&docs, "Deployment", deployment)["spec"]["selector"]["matchLabels"];
        let selector = env(c, var)["value"].as_str().unwrap();
        let parsed: serde_json::Map<String, Value> = selector
            .split(',')
            .map(|t| t.split_once('=').unwrap())
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        assert_eq!(&Value::Object(parsed), labels, "{var}");
    }
    let server = &find(&docs, "Deployment", "gsd-server")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(server["ports"][1]["name"], "admin");
    assert_eq!(env(c, "SERVER_METRICS_PORT")["value"], server["ports"][1]["containerPort"].to_string());
    assert_eq!(env(c, "CLIENT_METRICS_PORT")["value"], "9091");
    assert_eq!(env(c, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    // The selector is one the verdict accepts.
    let parsed = gsd_verdict::cluster::VerdictConfig::try_parse_from([
        "gsd-verdict",
        "--server-selector",
        env(c, "SERVER_SELECTOR")["value"].as_str().unwrap(),
        "--client-selector",
        env(c, "CLIENT_SELECTOR")["value"].as_str().unwrap(),
        "--timeout",
        env(c, "VERDICT_TIMEOUT")["value"].as_str().unwrap(),
        "--settle",
        env(c, "VERDICT_SETTLE")["value"].as_str().unwrap(),
    ]);
    assert!(parsed.is_ok(), "{parsed:?}");
    // No other pod gets an API token.
    for d in docs.iter().filter(|d| d["metadata"]["name"] != "gsd-verdict") {
        let spec = if d["kind"] == "Pod" { &d["spec"] } else { &d["spec"]["template"]["spec"] };
        if spec.is_object() && spec["containers"].is_array() {
            assert_eq!(spec["automountServiceAccountToken"], false, "{}", d["metadata"]["name"]);
        }
    }
}

/// The values of a whole proxy phase: Traefik's Deployment `traefik` in
/// `edge`, the clients sent through it.
const VIA: [&str; 5] = [
    "verdict.enabled=true",
    "verdict.via.name=traefik",
    "verdict.via.namespace=edge",
    "verdict.via.deployment=traefik",
    "client.serverUrl=ws://traefik.edge.svc.cluster.local/ws",
];

#[test]
fn the_verdicts_proxy_phase_gets_its_env_json_logs_and_exactly_its_rbac_in_the_proxys_namespace() {
    let Some(docs) = render(&VIA, "1.31.0") else { return };
    // In the proxy's namespace: get and patch that one Deployment, list pods.
    let role = find(&docs, "Role", "gsd-verdict-shop");
    assert_eq!(role["metadata"]["namespace"], "edge");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["traefik"], "verbs": ["get", "patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        ]),
        "the proxy phase reads and restarts one Deployment and lists pods; nothing else"
    );
    let binding = find(&docs, "RoleBinding", "gsd-verdict-shop");
    assert_eq!(binding["metadata"]["namespace"], "edge");
    assert_eq!(
        binding["roleRef"],
        serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gsd-verdict-shop"})
    );
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "gsd-verdict", "namespace": "shop"}])
    );
    // In the release's namespace: the client pods' logs besides the eviction.
    let own = docs.iter().find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "gsd-verdict").unwrap();
    assert!(own["metadata"]["namespace"].is_null(), "the release's namespace, as Helm installs it");
    assert_eq!(
        own["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ])
    );
    let roles: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Role" || d["kind"] == "RoleBinding").collect();
    assert_eq!(roles.len(), 4, "{:?}", kinds(&docs));

    // The verdict pod's environment is what gsd-verdict takes.
    let c = &find(&docs, "Pod", "gsd-verdict")["spec"]["containers"][0];
    for (name, value) in
        [("VERDICT_VIA", "traefik"), ("VERDICT_VIA_NAMESPACE", "edge"), ("VERDICT_VIA_DEPLOYMENT", "traefik")]
    {
        assert_eq!(env(c, name)["value"], value, "{name}");
    }
    let names: Vec<&str> = c["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&"VERDICT_VIA_SETTING") && !names.contains(&"VERDICT_VIA_SETTING_NAME"), "{names:?}");
    let var = |c: &Value, name: &str| env(c, name)["value"].as_str().unwrap().to_owned();
    // gsd-verdict's own parse of the flags the pod's env gives it.
    let parse = |c: &Value, flags: &[(&str, &str)]| {
        let mut args = vec!["gsd-verdict".to_owned()];
        for (flag, name) in flags {
            args.extend([flag.to_string(), var(c, name)]);
        }
        gsd_verdict::cluster::VerdictConfig::try_parse_from(args).unwrap()
    };
    const FLAGS: [(&str, &str); 5] = [
        ("--server-selector", "SERVER_SELECTOR"),
        ("--client-selector", "CLIENT_SELECTOR"),
        ("--via", "VERDICT_VIA"),
        ("--via-namespace", "VERDICT_VIA_NAMESPACE"),
        ("--via-deployment", "VERDICT_VIA_DEPLOYMENT"),
    ];
    let parsed = parse(c, &FLAGS);
    let target = parsed.via_target().unwrap().unwrap();
    assert_eq!((target.setting_name.as_str(), target.setting.as_secs()), ("Traefik graceTimeOut", 10));

    // A proxy gsd does not know, with its setting: both passed on.
    let mut relay = VIA.to_vec();
    relay.extend(["verdict.via.name=relay", "verdict.via.setting=1m30s", "verdict.via.settingName=relay drain"]);
    let docs = render(&relay, "1.31.0").unwrap();
    let c = &find(&docs, "Pod", "gsd-verdict")["spec"]["containers"][0];
    assert_eq!(env(c, "VERDICT_VIA_SETTING")["value"], "1m30s");
    assert_eq!(env(c, "VERDICT_VIA_SETTING_NAME")["value"], "relay drain");
    let mut flags = FLAGS.to_vec();
    flags.extend([("--via-setting", "VERDICT_VIA_SETTING"), ("--via-setting-name", "VERDICT_VIA_SETTING_NAME")]);
    let parsed = parse(c, &flags);
    assert_eq!(parsed.via_target().unwrap().unwrap().setting.as_secs(), 90);

    // The client logs JSON, with its reconnects, for the phase to read.
    let client =
        |docs: &[Value]| find(docs, "Deployment", "gsd-client")["spec"]["template"]["spec"]["containers"][0].clone();
    let c = client(&docs);
    assert_eq!(env(&c, "LOG_FORMAT")["value"], "json");
    assert_eq!(env(&c, "RUST_LOG")["value"], "info,gsd_client::reconnect=debug");
    let mut own_log = VIA.to_vec();
    own_log.extend(["client.logFormat=pretty", "client.extraEnv[0].name=RUST_LOG", "client.extraEnv[0].value=debug"]);
    let c = client(&render(&own_log, "1.31.0").unwrap());
    assert_eq!(env(&c, "LOG_FORMAT")["value"], "json", "whatever client.logFormat says");
    let rust_log: Vec<&Value> = c["env"].as_array().unwrap().iter().filter(|e| e["name"] == "RUST_LOG").collect();
    assert_eq!(rust_log, [&serde_json::json!({"name": "RUST_LOG", "value": "debug"})], "the user's RUST_LOG only");

    // The notes say what `helm test` will do to the proxy.
    let text = notes(&VIA).unwrap();
    assert!(text.contains("(then the proxy phase: deploy/traefik in edge restarted; the sessions"), "{text}");
    assert!(!notes(&["verdict.enabled=true"]).unwrap().contains("proxy phase"));

    // Without the proxy phase: none of it.
    let off = render(&["verdict.enabled=true"], "1.31.0").unwrap();
    assert!(!off.iter().any(|d| d["metadata"]["name"] == "gsd-verdict-shop"));
    let c = client(&off);
    assert_eq!(env(&c, "LOG_FORMAT")["value"], "json", "the chart's default");
    let server = &find(&off, "Deployment", "gsd-server")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(server, "LOG_FORMAT")["value"], "json", "the chart's default");
    let pretty = client(&render(&["verdict.enabled=true", "client.logFormat=pretty"], "1.31.0").unwrap());
    assert_eq!(env(&pretty, "LOG_FORMAT")["value"], "pretty", "the user's choice without the proxy phase");
    assert!(c["env"].as_array().unwrap().iter().all(|e| e["name"] != "RUST_LOG"));
    let v = &find(&off, "Pod", "gsd-verdict")["spec"]["containers"][0];
    assert!(v["env"].as_array().unwrap().iter().all(|e| !e["name"].as_str().unwrap().starts_with("VERDICT_VIA")));
}

#[test]
fn a_half_given_or_malformed_proxy_phase_is_refused() {
    fn with<'a>(more: &[&'a str]) -> Vec<&'a str> {
        VIA.iter().chain(more).copied().collect()
    }
    let without =
        |key: &str| -> Vec<&str> { VIA.iter().filter(|s| s.split_once('=').unwrap().0 != key).copied().collect() };
    // Checked at render, each with its reason.
    refused(
        &without("verdict.enabled"),
        "verdict.via (name=traefik, namespace=edge, deployment=traefik) needs verdict.enabled",
    );
    refused(
        &without("verdict.via.deployment"),
        "verdict.via is half-given (name=traefik, namespace=edge): set verdict.via.deployment too",
    );
    refused(&without("verdict.via.namespace"), "set verdict.via.namespace too");
    refused(
        &without("verdict.via.name"),
        "verdict.via is half-given (namespace=edge, deployment=traefik): set verdict.via.name too",
    );
    refused(
        &["verdict.enabled=true", "verdict.via.setting=30s"],
        "set verdict.via.name, verdict.via.namespace, verdict.via.deployment too",
    );
    refused(
        &without("client.serverUrl"),
        "verdict.via.name traefik needs client.serverUrl: the clients must go through the proxy",
    );
    let unknown = "verdict.via.name haproxy: not a proxy gsd knows the drain setting of (traefik, envoy-gateway): set verdict.via.setting and verdict.via.settingName";
    refused(&with(&["verdict.via.name=haproxy"]), unknown);
    refused(&with(&["verdict.via.name=haproxy", "verdict.via.setting=30s"]), unknown);
    refused(&with(&["verdict.via.name=haproxy", "verdict.via.settingName=hard-stop-after"]), unknown);
    // Refused by the schema.
    for (set, needle) in [
        ("verdict.via.name=Traefik", "verdict/via/name"),
        ("verdict.via.name=traefik proxy", "verdict/via/name"),
        ("verdict.via.namespace=edge.example", "verdict/via/namespace"),
        ("verdict.via.namespace=-edge", "verdict/via/namespace"),
        ("verdict.via.deployment=Traefik_1", "verdict/via/deployment"),
        (
            "verdict.via.deployment=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "verdict/via/deployment",
        ),
        ("verdict.via.setting=forever", "verdict/via/setting"),
        ("verdict.via.setting=1.5s", "verdict/via/setting"),
        ("verdict.via.setting=30", "verdict/via/setting"),
        ("verdict.via.settingName= ", "verdict/via/settingName"),
        ("verdict.via.timeout=30s", "additional properties 'timeout' not allowed"),
    ] {
        refused(&with(&[set]), needle);
    }
    // Whatever the schema lets through as a setting, gsd-verdict parses.
    for text in ["10s", "1m30s", "500ms", "0s", "2h", "1.5s", "10", "1 s", "-1s", "soon"] {
        let set = format!("verdict.via.setting={text}");
        let Some((ok, _, stderr)) = try_template(&with(&[&set])) else { return };
        let parsed = gsd_verdict::cluster::VerdictConfig::try_parse_from([
            "gsd-verdict",
            "--server-selector",
            "a=b",
            "--client-selector",
            "a=c",
            "--via",
            "traefik",
            "--via-namespace",
            "edge",
            "--via-deployment",
            "traefik",
            "--via-setting",
            text,
        ]);
        assert!(!ok || parsed.is_ok(), "the chart takes {text:?}, gsd-verdict refuses it: {parsed:?}");
        if ["10s", "1m30s", "500ms", "2h"].contains(&text) {
            assert!(ok, "the chart refuses {text:?}: {stderr}");
        }
    }
}

/// `helm-docs --dry-run` on a chart directory: the README it would write.
fn helm_docs(helm_docs: &Path, chart: &Path) -> String {
    let out = Command::new(helm_docs)
        .args(["--chart-search-root"])
        .arg(chart)
        .args(["--sort-values-order", "file", "--log-level", "warning", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success(), "helm-docs: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// What a README's values table leaves undocumented of `values`: every
/// row with an empty description (helm-docs lists an undocumented value so),
/// and every value with no row of its own or of a parent.
fn undocumented(readme: &str, values: &Value) -> Vec<String> {
    let rows: Vec<(String, String)> = readme
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Key |") && !l.starts_with("| Name |"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            (cells.len() >= 4).then(|| (cells[0].trim().to_owned(), cells[cells.len() - 1].trim().to_owned()))
        })
        .collect();
    let mut missing: Vec<String> = rows.iter().filter(|(_, d)| d.is_empty()).map(|(k, _)| k.clone()).collect();
    fn leaves(value: &Value, prefix: &str, out: &mut Vec<String>) {
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, v) in map {
                    leaves(v, &format!("{prefix}{k}."), out);
                }
            }
            _ => out.push(prefix.trim_end_matches('.').to_owned()),
        }
    }
    let mut all = Vec::new();
    leaves(values, "", &mut all);
    let documented =
        |leaf: &str| rows.iter().any(|(k, d)| !d.is_empty() && (leaf == k || leaf.starts_with(&format!("{k}."))));
    missing.extend(all.into_iter().filter(|leaf| !documented(leaf)));
    missing.sort();
    missing.dedup();
    missing
}

#[test]
fn helm_docs_writes_the_chart_readme_and_every_value_is_documented() {
    let Some(tool) = common::tool("helm-docs", "HELM_DOCS_BIN") else { return };
    let committed = std::fs::read_to_string(chart().join("README.md")).unwrap();
    assert!(helm_docs(&tool, &chart()) == committed, "charts/gsd/README.md is stale: run scripts/chart-docs");
    let values: Value = serde_norway::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    assert_eq!(undocumented(&committed, &values), Vec::<String>::new(), "values without a `# key -- text` comment");
    for key in ["server.pingInterval", "client.reconnectBackoffCap", "monitoring.labels", "verdict.via.name"] {
        assert!(committed.contains(&format!("| {key} |")), "no row for {key}");
    }
    assert!(committed.contains("helm install gsd oci://"), "the OCI install comes first");

    // The check can fail: a value without a comment, a comment whose text
    // holds ` -- ` (helm-docs would read a wrong key from it) and a map
    // whose parent is not documented are each named.
    let dir = tempdir("gsd-helm-docs");
    let copy = dir.join("gsd");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["Chart.yaml", "README.md.gotmpl"] {
        std::fs::copy(chart().join(file), copy.join(file)).unwrap();
    }
    let values_text = std::fs::read_to_string(chart().join("values.yaml")).unwrap()
        + "\nundocumented: 1\n# twice -- a value -- with a dash pair\ntwice: 2\nnested:\n  deep: 3\n";
    std::fs::write(copy.join("values.yaml"), &values_text).unwrap();
    let readme = helm_docs(&tool, &copy);
    let values: Value = serde_norway::from_str(&values_text).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(undocumented(&readme, &values), ["nested.deep", "twice", "undocumented"]);
}

/// `jsonnet -e EXPR` run at the repository's root, parsed.
fn jsonnet(tool: &Path, expr: &str) -> Value {
    let out = Command::new(tool).current_dir(root()).args(["-e", expr]).output().unwrap();
    assert!(out.status.success(), "jsonnet {expr}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The first place where `a` and `b` differ (a JSON path), numbers equal
/// to 15 significant digits: jsonnet prints a number such as the
/// dashboard's 1e-9 by its own rules, which can come back one ulp away.
fn differs(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => differs(p, q, &format!("{path}.{k}")),
                _ => Some(format!("{path}.{k}: only on one side")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| differs(p, q, &format!("{path}[{i}]")))
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            ((x - y).abs() > 1e-15 * x.abs().max(y.abs())).then(|| format!("{path}: {x} != {y}"))
        }
        _ => (a != b).then(|| format!("{path}: {a} != {b}")),
    }
}

#[test]
fn the_mixin_renders_what_the_chart_ships() {
    let Some(tool) = common::tool("jsonnet", "JSONNET_BIN") else { return };
    let mixin = |config: &str| {
        jsonnet(
            &tool,
            &format!(
                "local m = (import 'mixin/mixin.libsonnet') + {{ _config+:: {config} }}; \
                 {{ alerts: m.prometheusAlerts, rules: m.prometheusRules, dashboards: m.grafanaDashboards }}"
            ),
        )
    };
    let sets = ["monitoring.prometheusRule.enabled=true", "monitoring.dashboards.enabled=true"];
    let Some(docs) = render(&sets, "1.31.0") else { return };
    let rendered = mixin("{}");
    // The rules file has alerts only: every group is an alert group.
    assert_eq!(differs(&rendered["alerts"], &find(&docs, "PrometheusRule", "gsd")["spec"], "alerts"), None);
    assert_eq!(rendered["rules"], serde_json::json!({"groups": []}));
    let alerts = rendered["alerts"]["groups"][0]["rules"].as_array().unwrap();
    assert!(alerts.iter().any(|r| r["alert"] == "GsdMessagesLost"), "{alerts:?}");
    // Every dashboard of the ConfigMap, parsed, and no other.
    let cm = find(&docs, "ConfigMap", "gsd-dashboards");
    let shipped: serde_json::Map<String, Value> = cm["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::from_str(v.as_str().unwrap()).unwrap()))
        .collect();
    assert!(!shipped.is_empty());
    assert_eq!(differs(&rendered["dashboards"], &Value::Object(shipped), "dashboards"), None);

    // The runbook base moves the same way in both (a trailing slash too),
    // and the comparison sees a difference.
    let base = "https://wiki.example/gsd-runbook/";
    let moved = rendered_rules(&[&format!("monitoring.prometheusRule.runbookBaseUrl={base}")]).unwrap();
    let ours = mixin(&format!("{{ runbookBaseUrl: '{base}' }}"));
    assert_eq!(differs(&ours["alerts"], &moved, "alerts"), None);
    let url = ours["alerts"]["groups"][0]["rules"][0]["annotations"]["runbook_url"].as_str().unwrap();
    assert!(url.starts_with("https://wiki.example/gsd-runbook#gsd"), "{url}");
    let moved_only_here = differs(&ours["alerts"], &rendered["alerts"], "alerts").unwrap();
    assert!(moved_only_here.contains("runbook_url"), "{moved_only_here}");
}

#[test]
fn chart_metadata_and_license() {
    let chart_yaml: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
    for key in ["kubeVersion", "home"] {
        assert!(chart_yaml[key].as_str().is_some_and(|s| !s.is_empty()), "Chart.yaml has no {key}");
    }
    assert!(chart_yaml["home"].as_str().unwrap().starts_with("https://"));
    assert!(chart_yaml["sources"][0].as_str().is_some_and(|s| s.starts_with("https://")));
    assert!(chart_yaml["maintainers"][0]["name"].is_string());
    // The chart refuses a cluster older than its kubeVersion, with Helm's message.
    refused_on("1.20.0", "chart requires kubeVersion");
    let license = std::fs::read_to_string(root().join("LICENSE")).unwrap();
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    assert!(license.contains("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"));
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(cargo.lines().any(|l| l == "license = \"Apache-2.0\""), "Cargo.toml's license is not the LICENSE file's");
}

fn refused_on(kube: &str, needle: &str) {
    let chart = chart();
    let Some((ok, _, stderr)) = helm(&["template", "gsd", chart.to_str().unwrap(), "--kube-version", kube]) else {
        return;
    };
    assert!(!ok && stderr.contains(needle), "{kube}: {stderr}");
}

#[test]
fn dashboards_have_stable_uids_and_the_variables() {
    let dir = root().join("dashboards");
    assert_eq!(std::fs::canonicalize(&dir).unwrap(), chart().join("dashboards"), "dashboards/ is the chart's own copy");
    let mut uids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
        let uid = d["uid"].as_str().expect("a uid").to_owned();
        assert!(uid.starts_with("gsd-"), "{uid}");
        uids.push(uid);
        assert!(d["title"].as_str().unwrap().starts_with("GSD / "));
        let vars: Vec<&str> =
            d["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(vars, ["datasource", "namespace", "release", "pod"]);
        assert_eq!(d["templating"]["list"][0]["type"], "datasource");
        let text = d.to_string();
        assert!(!text.contains("\"uid\":\"prometheus\""), "a hard-coded datasource");
        for panel in d["panels"].as_array().unwrap() {
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
            for t in panel["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                assert!(
                    !expr.contains("rate(") || expr.contains("$__rate_interval") || expr.contains("$__range"),
                    "{expr}"
                );
                assert!(expr.contains("$namespace") && expr.contains("$release"), "{expr}");
            }
        }
    }
    assert!(uids.contains(&"gsd-drains".to_owned()));
}

/// Every process running a binary of `dir` for scripts/apiserver-test: its
/// working directory or arguments are in the script's /tmp/gsd-apiserver.*
/// (the one-node cluster and other tests run the same binaries elsewhere).
fn apiserver_test_processes(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path().join("exe")).is_ok_and(|exe| exe.parent() == Some(dir)))
        .filter(|e| {
            let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            cwd.to_string_lossy().contains("/gsd-apiserver.")
                || String::from_utf8_lossy(&cmdline).contains("/gsd-apiserver.")
        })
        .map(|e| std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default().replace('\0', " "))
        .collect()
}

#[test]
fn the_chart_installs_upgrades_and_uninstalls_on_a_real_kube_apiserver() {
    // scripts/test builds etcd, kube-apiserver, kube-controller-manager and
    // kubectl into KUBE_BIN_DIR; scripts/apiserver-test does the rest.
    let dir = std::env::var_os("KUBE_BIN_DIR").map(PathBuf::from);
    let Some(apiserver) = dir
        .map(|d| d.join("kube-apiserver"))
        .filter(|p| p.exists())
        .or_else(|| common::tool("kube-apiserver", "KUBE_APISERVER_BIN"))
    else {
        return;
    };
    let Some(helm) = common::tool("helm", "HELM_BIN") else { return };
    let bin_dir = apiserver.parent().unwrap().canonicalize().unwrap();
    let expected = [
        "ok: strict dry-run apply: defaults",
        "ok: strict dry-run apply: extraEnv valueFrom, imagePullSecrets objects, the verdict's RBAC and pod",
        "ok: a misspelt field is refused",
        "ok: gsd-verdict may list pods and evict them in gsd, and nothing else",
        "ok: gsd-verdict listed the pods over HTTPS as its ServiceAccount",
        "ok: without the Role: 403 Forbidden",
        "ok: an API server certificate from another CA is refused",
        "ok: verdict PASS: it deleted a server pod, followed the drain of its 5 sessions",
        "ok: verdict FAIL when the server drops one owed message per session: 5 messages lost",
        "ok: verdict FAIL when the server resets 2 of its 5 sessions at SIGTERM",
        "ok: verdict FAIL when each close says last_seq 2 below its notice's: 10 messages lost",
        "ok: verdict FAIL when a PodDisruptionBudget forbids the eviction: 429 reported, the pod not deleted",
        "ok: 2 server pods and 1 client pod carry the preStop sleep",
        "ok: upgraded: ServiceMonitors, PrometheusRule, NetworkPolicy, PDB",
        "ok: helm uninstall removed everything",
        "apiserver-test: PASS",
    ];
    let (client, server) =
        (format!("{} client", common::lab().display()), format!("{} server", common::lab().display()));
    // The verdict built for this run (tests/verdict.rs), never one an
    // earlier build left in the target directory.
    let verdict = PathBuf::from(env!("CARGO_BIN_EXE_gsd-tests-verdict"));
    let envs = [
        ("KUBE_BIN_DIR", apiserver.parent().unwrap().as_os_str()),
        ("HELM_BIN", helm.as_os_str()),
        ("GSD_CLIENT", client.as_ref()),
        ("GSD_SERVER", server.as_ref()),
        ("GSD_VERDICT", verdict.as_os_str()),
    ];
    common::run_script("apiserver-test", &envs, &expected);
    // No etcd, kube-apiserver or kube-controller-manager is left behind.
    let left = apiserver_test_processes(&bin_dir);
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn tilt_ci_needs_a_cluster_and_says_so() {
    // scripts/tilt-ci runs `tilt ci` against an existing cluster (see the
    // README); without one it stops before building anything, with a reason.
    let Some(helm) = common::tool("helm", "HELM_BIN") else { return };
    // scripts/test builds the control plane's tools into KUBE_BIN_DIR; without
    // them tilt-ci would build them first (need_kube).
    let Some(kube_bin_dir) = std::env::var_os("KUBE_BIN_DIR").map(PathBuf::from).filter(|d| {
        ["kubectl", "kube-apiserver", "kube-controller-manager", "etcd"].iter().all(|t| d.join(t).exists())
    }) else {
        return;
    };
    let dir = tempdir("gsd-tilt-ci");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: none\n  cluster: {server: \"https://127.0.0.1:1\"}\n\
         contexts:\n- name: none\n  context: {cluster: none, user: none}\ncurrent-context: none\n\
         users:\n- name: none\n  user: {token: none}\n",
    )
    .unwrap();
    let out = Command::new(root().join("scripts/tilt-ci"))
        .env("KUBECONFIG", &kubeconfig)
        .env("HELM_BIN", helm)
        .env("KUBE_BIN_DIR", kube_bin_dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "tilt-ci passed without a cluster");
    assert!(stderr.contains("FAIL: no cluster answers at the current kubeconfig"), "{stderr}");
    assert!(!stderr.contains("go build tilt"), "it built Tilt before checking for a cluster: {stderr}");
}

/// Outside Rust, metric names are spelled where PromQL or a script needs
/// them: the chart's rules and dashboards, the dashboards of `dashboards/`,
/// the scripts and the docs. Each spelling must be a metric gsd exposes
/// (`gsd_telemetry::names`, a histogram's `_sum`/`_count`/`_bucket`
/// included), and docs/metrics.md must describe every one, so that a
/// renamed metric fails here instead of leaving an alert that never fires.
#[test]
fn every_metric_named_outside_the_code_is_one_gsd_exposes() {
    let known: std::collections::BTreeSet<String> = names::ALL
        .iter()
        .flat_map(|m| {
            let name = m.name();
            [name.to_owned(), format!("{name}_sum"), format!("{name}_count"), format!("{name}_bucket")]
        })
        .collect();
    let mut files = Vec::new();
    for dir in ["charts/gsd/templates", "charts/gsd/rules", "charts/gsd/dashboards", "dashboards", "scripts", "docs"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.push(root().join("README.md"));
    let mut seen = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for (at, _) in text.match_indices("gsd_") {
            let word: String =
                text[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            if word.starts_with("gsd_server_") || word.starts_with("gsd_client_") {
                seen += 1;
                // A prefix (`gsd_server_(drains_total|...)` in a grep) must
                // begin some metric's name.
                let exists = if word.ends_with('_') {
                    known.iter().any(|k| k.starts_with(&word))
                } else {
                    known.contains(&word)
                };
                assert!(exists, "{}: {word} is no metric gsd exposes", path.display());
            }
        }
    }
    assert!(seen > 100, "only {seen} metric names found: the scan is broken");
    let documented = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    for metric in names::ALL {
        assert!(documented.contains(&format!("`{metric}")), "docs/metrics.md does not describe {metric}");
    }
}

/// The path real traffic takes: an HTTPRoute and an Ingress that send /ws
/// to the server Service, off by default; the route's timeouts off unless
/// set (a WebSocket session is one long request); and what a Gateway or an
/// ingress controller would refuse is refused at render, with its reason.
#[test]
fn the_route_and_the_ingress_take_ws_to_the_server_service() {
    let Some(plain) = render(&[], "1.31.0") else { return };
    assert!(!kinds(&plain).iter().any(|k| k == "HTTPRoute" || k == "Ingress"), "{:?}", kinds(&plain));

    let sets = [
        "gateway.httpRoute.enabled=true",
        "gateway.httpRoute.parentRefs[0].name=web",
        "gateway.httpRoute.parentRefs[0].namespace=gateways",
        "gateway.httpRoute.hostnames[0]=ws.example.test",
        "ingress.enabled=true",
        "ingress.className=traefik",
        "ingress.host=ws.example.test",
        "ingress.tlsSecretName=ws-tls",
        "service.port=8443",
    ];
    let docs = render(&sets, "1.31.0").unwrap();
    let route = find(&docs, "HTTPRoute", "gsd");
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    let spec = &route["spec"];
    assert_eq!(spec["parentRefs"][0]["name"], "web");
    assert_eq!(spec["parentRefs"][0]["namespace"], "gateways");
    assert_eq!(spec["hostnames"][0], "ws.example.test");
    let rule = &spec["rules"][0];
    assert_eq!(rule["matches"][0]["path"]["value"], "/ws");
    assert_eq!(rule["backendRefs"][0]["name"], "gsd");
    assert_eq!(rule["backendRefs"][0]["port"], 8443);
    assert_eq!(
        (rule["timeouts"]["request"].as_str(), rule["timeouts"]["backendRequest"].as_str()),
        (Some("0s"), Some("0s"))
    );

    let ingress = find(&docs, "Ingress", "gsd");
    let spec = &ingress["spec"];
    assert_eq!(spec["ingressClassName"], "traefik");
    assert_eq!(spec["tls"][0]["secretName"], "ws-tls");
    assert_eq!(spec["tls"][0]["hosts"][0], "ws.example.test");
    assert_eq!(spec["rules"][0]["host"], "ws.example.test");
    let path = &spec["rules"][0]["http"]["paths"][0];
    assert_eq!((path["path"].as_str(), path["pathType"].as_str()), (Some("/ws"), Some("Prefix")));
    assert_eq!(path["backend"]["service"]["name"], "gsd");
    assert_eq!(path["backend"]["service"]["port"]["number"], 8443);

    // Set timeouts are written as given.
    let timed = render(
        &[
            "gateway.httpRoute.enabled=true",
            "gateway.httpRoute.parentRefs[0].name=web",
            "gateway.httpRoute.requestTimeout=1h",
        ],
        "1.31.0",
    )
    .unwrap();
    assert_eq!(find(&timed, "HTTPRoute", "gsd")["spec"]["rules"][0]["timeouts"]["request"], "1h");

    // The client and the connection test can be sent through the proxy.
    let via = render(&["client.serverUrl=ws://ws.example.test/ws"], "1.31.0").unwrap();
    let client = &find(&via, "Deployment", "gsd-client")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(client, "SERVER_URL")["value"], "ws://ws.example.test/ws");
    let test = &find(&via, "Pod", "gsd-test-connection")["spec"]["containers"][0];
    assert_eq!(env(test, "SERVER_URL")["value"], "ws://ws.example.test/ws");
    refused(&["client.serverUrl=http://ws.example.test/ws"], "client/serverUrl");
    refused(&["client.serverUrl=ws://ws.example.test"], "client/serverUrl");
    // gsd-client has no TLS: a wss:// URL would only crash-loop the client.
    refused(&["client.serverUrl=wss://ws.example.test/ws"], "client/serverUrl");

    refused(&["gateway.httpRoute.enabled=true"], "gateway.httpRoute.enabled needs gateway.httpRoute.parentRefs");
    refused(&["gateway.httpRoute.requestTimeout=forever"], "gateway/httpRoute/requestTimeout");
    refused(&["gateway.httpRoute.requestTimeout=1.5s"], "gateway/httpRoute/requestTimeout");
    refused(&["gateway.httpRoute.hostnames[0]=Not_A_Host"], "gateway/httpRoute/hostnames/0");
    refused(&["gateway.httpRoute.parentRefs[0].namespace=gateways"], "missing property 'name'");
    refused(&["gateway.httpRoute.parentRef=web"], "additional properties 'parentRef' not allowed");
    refused(&["ingress.enabled=true", "ingress.tlsSecretName=ws-tls"], "ingress.tlsSecretName needs ingress.host");
    refused(&["ingress.host=WS.example.test"], "ingress/host");
    refused(&["ingress.className=Traefik Ingress"], "ingress/className");
}

#[test]
fn scripts_release_refuses_garbage_before_it_builds_anything() {
    let release = |args: &[&str]| {
        let out = Command::new(root().join("scripts/release")).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (args, said) in [
        (&[][..], "--registry is required"),
        (&["--registry"][..], "--registry needs a value"),
        (&["--registry", ""][..], "--registry needs a value"),
        (&["--registry", "oci://r.example/x"][..], "give it without a scheme"),
        (&["--registry", "r.example/x/"][..], "no trailing slash"),
        (&["--registry", "r.example:port"][..], "is not HOST[:PORT][/PATH]"),
        (&["--registry", "[::1"][..], "is not HOST[:PORT][/PATH]"),
        (&["--registry", "r.example/UPPER"][..], "is not HOST[:PORT][/PATH]"),
        (&["--registry", "r.example", "--out"][..], "--out needs a value"),
        (&["--registry", "r.example", "--sign"][..], "unknown argument: --sign"),
    ] {
        let (code, stderr) = release(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage: scripts/release"), "{args:?}: {stderr}");
    }
}

#[test]
fn the_image_chart_and_workspace_versions_agree() {
    // scripts/release refuses to publish when they differ; this says so first.
    let chart_yaml: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
    let app = chart_yaml["appVersion"].as_str().unwrap();
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let docker = dockerfile.lines().find_map(|l| l.strip_prefix("ARG GSD_VERSION=")).expect("ARG GSD_VERSION");
    assert_eq!((app, docker), (env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_VERSION")));
    let release = std::fs::read_to_string(root().join("scripts/release")).unwrap();
    for label in ["title", "version", "revision", "created", "source", "licenses"] {
        let key = format!("org.opencontainers.image.{label}");
        assert!(dockerfile.contains(&key) || release.contains(&key), "{key} is set by neither");
    }
}
