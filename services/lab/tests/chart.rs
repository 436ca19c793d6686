//! charts/gsd with the real Helm: lint and render over a matrix of values,
//! refuse bad values, and hold the facts a drain depends on, read from the
//! rendered manifests parsed as YAML.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
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
    &["server.preStop.mode=none", "server.terminationGracePeriodSeconds=46"],
    &["otlpEndpoint=http://collector.observability:4318", "server.extraEnv.RUST_LOG=debug"],
];

#[test]
fn lint_and_template_pass_over_the_values_matrix() {
    let chart = chart();
    for sets in MATRIX {
        let sets = set_args(sets);
        let mut lint = vec!["lint", "--strict", chart.to_str().unwrap()];
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
    let chart = chart();
    for (sets, sum) in [
        (&["server.terminationGracePeriodSeconds=50"][..], "= 50"),
        (&["server.drainTimeoutSeconds=45"][..], "= 75"),
        (&["server.preStop.sleepSeconds=40"][..], "= 85"),
    ] {
        let mut args = vec!["template", "gsd", chart.to_str().unwrap()];
        let sets = set_args(sets);
        args.extend(sets.iter().map(String::as_str));
        let Some((ok, _, stderr)) = helm(&args) else { return };
        assert!(!ok, "{sets:?} rendered");
        assert!(stderr.contains("server.terminationGracePeriodSeconds (") && stderr.contains(sum), "{stderr}");
        assert!(stderr.contains("the kubelet would SIGKILL a drain in progress"), "{stderr}");
    }
}

#[test]
fn garbage_values_are_refused_with_a_clear_error() {
    let chart = chart();
    let cases: &[(&str, &str)] = &[
        ("server.replica=3", "additional properties 'replica' not allowed"),
        ("server.replicas=two", "server/replicas"),
        ("server.preStop.mode=exec", "server/preStop/mode"),
        ("server.pushInterval=soon", "server/pushInterval"),
        ("server.drainMessages=0-5", "server/drainMessages"),
        ("service.sessionAffinity=Sticky", "service/sessionAffinity"),
        ("monitoring.serviceMonitor.enable=true", "additional properties 'enable' not allowed"),
        ("otlpEndpoint=collector:4318", "otlpEndpoint"),
        ("server.extraEnv.1BAD=x", "'1BAD' does not match pattern"),
    ];
    for (set, needle) in cases {
        let Some((ok, _, stderr)) = helm(&["template", "gsd", chart.to_str().unwrap(), "--set", set]) else { return };
        assert!(!ok, "{set} rendered");
        assert!(stderr.contains(needle), "{set}: {stderr:?} lacks {needle:?}");
    }
    let both = [
        "template",
        "gsd",
        chart.to_str().unwrap(),
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "monitoring.podMonitor.enabled=true",
    ];
    let (ok, _, stderr) = helm(&both).unwrap();
    assert!(!ok && stderr.contains("are alternatives"), "{stderr}");
}

#[test]
fn rendered_manifests_hold_what_a_drain_depends_on() {
    let Some(docs) = render(&[], "1.31.0") else { return };
    assert_eq!(kinds(&docs), ["PodDisruptionBudget", "Service", "Deployment", "Deployment", "Pod"]);
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
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert_eq!((prestop, drain, linger, grace), (5, 20, 15, 60));
    assert!(grace > prestop + drain + linger, "grace {grace} does not cover the drain");
    assert_eq!(env(c, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    let old = render(&[], "1.29.0").unwrap();
    let old_c = &find(&old, "Deployment", "gsd-server")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(old_c["lifecycle"]["preStop"]["httpGet"]["path"], "/prestop?sleep=5s", "no sleep action before 1.30");
    assert_eq!(old_c["lifecycle"]["preStop"]["httpGet"]["port"], "http");

    // Probes: paths and ports.
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(env(c, "PORT")["value"], "8080");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
    }
    let cc = &client["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(cc["ports"][0]["name"], "metrics");
    assert_eq!(env(cc, "METRICS_PORT")["value"], cc["ports"][0]["containerPort"].to_string());
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(cc[probe]["httpGet"]["path"], "/healthz");
        assert_eq!(cc[probe]["httpGet"]["port"], "metrics");
    }

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
    // The PrometheusRule is rules/gsd.rules.yaml, unchanged.
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
    for (name, port) in [("gsd-server", "http"), ("gsd-client", "metrics")] {
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
    assert!(contains(
        &find(&docs, "Service", "gsd")["metadata"]["labels"],
        &find(&docs, "ServiceMonitor", "gsd-server")["spec"]["selector"]["matchLabels"]
    ));
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

    let pods = render(&["monitoring.podMonitor.enabled=true"], "1.31.0").unwrap();
    let pm = find(&pods, "PodMonitor", "gsd-server");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "http");
    assert!(!kinds(&pods).contains(&"ServiceMonitor".to_owned()));
}

#[test]
fn the_image_and_tilt_use_the_same_build_and_chart() {
    let root = root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let test_command = std::fs::read_to_string(root.join("scripts/test")).unwrap();
    // The image builds with the release command CI runs.
    assert!(dockerfile.lines().any(|l| l.trim() == "scripts/build-release \\"), "{dockerfile}");
    assert!(
        test_command.lines().any(|l| l.trim() == "scripts/build-release"),
        "scripts/test must run the release build"
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/gsd-server\"]"), "exec-form ENTRYPOINT");
    assert!(dockerfile.contains("STOPSIGNAL SIGTERM"));
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(dockerfile.contains("COPY --from=builder /out/gsd-server /out/gsd-client /usr/local/bin/"));
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"));
    // The Tiltfile is valid Starlark syntax (a Python subset) and wires the chart and the image.
    let tiltfile = root.join("Tiltfile");
    let parsed = Command::new("python3")
        .args(["-c", "import ast,sys; ast.parse(open(sys.argv[1]).read())", tiltfile.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(parsed.success(), "the Tiltfile does not parse");
    let tilt = std::fs::read_to_string(tiltfile).unwrap();
    for needle in [
        "docker_build('gsd'",
        "helm(\n    'charts/gsd'",
        "k8s_resource('gsd-server'",
        "k8s_resource('gsd-client'",
        "delete pod",
    ] {
        assert!(tilt.contains(needle), "Tiltfile lacks {needle:?}");
    }
}

#[test]
fn alert_rules_pass_promtool_and_follow_the_conventions() {
    let rules_dir = chart().join("rules");
    if let Some(promtool) = common::tool("promtool", "PROMTOOL_BIN") {
        for args in [&["check", "rules", "gsd.rules.yaml"][..], &["test", "rules", "gsd.rules.test.yaml"]] {
            let out = Command::new(&promtool).args(args).current_dir(&rules_dir).output().unwrap();
            assert!(
                out.status.success(),
                "promtool {args:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let rules: Value =
        serde_norway::from_str(&std::fs::read_to_string(rules_dir.join("gsd.rules.yaml")).unwrap()).unwrap();
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).unwrap();
    let mut names = Vec::new();
    for rule in rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        let name = rule["alert"].as_str().unwrap();
        names.push(name.to_owned());
        assert!(name.starts_with("Gsd"), "{name}");
        assert!(["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap()), "{name}");
        assert!(rule["for"].as_str().is_some_and(|f| f != "0s" && f != "0m"), "{name} has no for:");
        let a = &rule["annotations"];
        assert!(a["summary"].as_str().is_some_and(|s| !s.contains('\n')), "{name}: one-line summary");
        let description = a["description"].as_str().unwrap();
        assert!(description.contains("{{ $labels.pod }}") && description.contains("$value"), "{name}: {description}");
        let anchor = format!("docs/runbook.md#{}", name.to_lowercase());
        assert_eq!(a["runbook_url"], anchor.as_str());
        assert!(runbook.lines().any(|l| l == format!("## {name}")), "docs/runbook.md has no section {name}");
    }
    assert_eq!(names, ["GsdDrainIncomplete", "GsdMessagesLost", "GsdShutdownNearGracePeriod", "GsdReconnectSlow"]);
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
    let out = Command::new(root().join("scripts/apiserver-test"))
        .env("KUBE_BIN_DIR", apiserver.parent().unwrap())
        .env("HELM_BIN", helm)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/apiserver-test failed:\n{stdout}\n{stderr}");
    for step in [
        "ok: strict dry-run apply: defaults",
        "ok: a misspelt field is refused",
        "ok: 2 server pods and 1 client pod carry the preStop sleep",
        "ok: upgraded: ServiceMonitors, PrometheusRule, NetworkPolicy, PDB",
        "ok: helm uninstall removed everything",
        "apiserver-test: PASS",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    // No etcd, kube-apiserver or kube-controller-manager is left behind.
    let bin_dir = apiserver.parent().unwrap().canonicalize().unwrap();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path().join("exe")).ok())
        .filter(|exe| exe.parent() == Some(bin_dir.as_path()))
        .map(|exe| exe.display().to_string())
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}
