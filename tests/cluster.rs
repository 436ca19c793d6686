//! The zero-loss drain on real pods: scripts/cluster-test brings up a
//! one-node Kubernetes on this machine (scripts/cluster), builds the image
//! with `docker build .`, and proves the drain with `kubectl delete pod`,
//! `kubectl rollout restart`, `helm test`, a SIGKILL negative case and a
//! real Prometheus. Its test binary holds only it and the test of the
//! host snapshot it is judged by (which reads the host and changes only
//! network namespaces of its own): it owns host-wide state (iptables, the
//! cni0 bridge), and cargo runs test binaries one at a time.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use gsd_telemetry::names;

/// A tool from KUBE_BIN_DIR (where scripts/tools.sh builds the Kubernetes
/// components), else from `$env` or PATH.
fn kube_tool(name: &str, env: &str) -> Option<PathBuf> {
    std::env::var_os("KUBE_BIN_DIR")
        .map(|d| PathBuf::from(d).join(name))
        .filter(|p| p.exists())
        .or_else(|| common::tool(name, env))
}

/// `figure: NAME VALUE` lines of the script's output.
fn figure(stdout: &str, name: &str) -> f64 {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("figure: "))
        .filter_map(|l| l.split_once(' '))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().parse().unwrap_or_else(|_| panic!("figure {name}: {v:?}")))
        .unwrap_or_else(|| panic!("no figure {name} in:\n{stdout}"))
}

/// Whether the test runs as root (/proc/self belongs to the process's
/// effective user); else it is skipped, saying `why` it needs root, unless
/// GSD_REQUIRE_TOOLS=1 (CI runs scripts/test as root).
fn root_or_skip(why: &str) -> bool {
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        return true;
    }
    assert!(std::env::var("GSD_REQUIRE_TOOLS").as_deref() != Ok("1"), "{why}; CI runs scripts/test as root");
    eprintln!("SKIPPED: {why}");
    false
}

/// `scripts/cluster snapshot FILE`, run through `wrapper` (e.g. `unshare
/// --net`) with `path_first` put before PATH: the snapshot's text, or its
/// stderr when it refused.
fn snapshot(wrapper: &[&str], path_first: Option<&Path>) -> Result<String, String> {
    let file = std::env::temp_dir().join(format!("gsd-snapshot-{}-{}", std::process::id(), wrapper.len()));
    let script = common::repo_root().join("scripts/cluster");
    let mut argv: Vec<&std::ffi::OsStr> = wrapper.iter().map(std::ffi::OsStr::new).collect();
    argv.extend([script.as_os_str(), "snapshot".as_ref(), file.as_os_str()]);
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    if let Some(dir) = path_first {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let joined = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)));
        cmd.env("PATH", joined.unwrap());
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    if out.status.success() { Ok(text) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

/// The lines of one `## NAME` part of a snapshot.
fn part<'a>(snapshot: &'a str, name: &str) -> Vec<&'a str> {
    let head = format!("## {name}");
    let mut lines = snapshot.lines().skip_while(|l| *l != head);
    assert!(lines.next().is_some(), "no part {name} in:\n{snapshot}");
    lines.take_while(|l| !l.starts_with("## ")).filter(|l| !l.is_empty()).collect()
}

/// The baseline the cluster test holds `scripts/cluster down` to. A new
/// machine has no netfilter table and a network namespace no route: the
/// snapshot takes those as empty. A part that cannot be taken, or reads
/// empty where no host has it empty, is refused with its name, so that a
/// broken baseline can never compare equal to a broken after-image.
#[test]
fn the_host_snapshot_takes_empty_parts_and_refuses_missing_ones_by_name() {
    if !root_or_skip("the snapshot test needs root (iptables-save, unshare --net)") {
        return;
    }
    if common::tool("iptables-save", "IPTABLES_SAVE_BIN").is_none() || common::tool("unshare", "UNSHARE_BIN").is_none()
    {
        return;
    }
    let host = snapshot(&[], None).unwrap_or_else(|e| panic!("the host's snapshot was refused: {e}"));
    let names: Vec<&str> = host.lines().filter_map(|l| l.strip_prefix("## ")).collect();
    assert_eq!(names, ["iptables", "ip6tables", "links", "routes", "mounts", "paths", "sysctls"], "{host}");
    assert!(part(&host, "links").contains(&"lo"), "{host}");
    assert!(part(&host, "mounts").contains(&"/"), "{host}");
    assert!(part(&host, "sysctls").iter().any(|l| l.starts_with("net.ipv4.ip_forward = ")), "{host}");

    // A network namespace of its own: no netfilter table, no route, lo only.
    let empty = snapshot(&["unshare", "--net"], None).unwrap_or_else(|e| panic!("an empty netns was refused: {e}"));
    for (name, want) in [("iptables", &[][..]), ("ip6tables", &[]), ("links", &["lo"]), ("routes", &[])] {
        assert_eq!(part(&empty, name), want, "part {name} of an empty network namespace:\n{empty}");
    }
    // ...where an empty table is no table, and a rule is a difference.
    let script = common::repo_root().join("scripts/cluster");
    let diff = Command::new("unshare")
        .args(["--net", "bash", "-c"])
        .arg(format!(
            "set -e; source {s}
             a=$(mktemp); b=$(mktemp); snapshot $a
             iptables -t nat -N GSD-T; iptables -t nat -X GSD-T; snapshot $b; cmp -s $a $b || echo nat-differs
             iptables -t nat -A POSTROUTING -j RETURN; snapshot $b; cmp -s $a $b && echo rule-ignored; rm -f $a $b",
            s = script.display()
        ))
        .output()
        .unwrap();
    assert!(diff.status.success(), "{}", String::from_utf8_lossy(&diff.stderr));
    assert_eq!(String::from_utf8_lossy(&diff.stdout), "", "an empty nat table must compare equal, a rule must not");

    // Each part refused by name: a failing command, or nothing where
    // something must be.
    let stubs = std::env::temp_dir().join(format!("gsd-snapshot-stubs-{}", std::process::id()));
    for (tool, body, says) in [
        (
            "iptables-save",
            "echo 'iptables: cannot initialize' >&2; exit 4",
            "snapshot: netfilter (iptables-save) failed",
        ),
        ("ip6tables-save", "exit 1", "snapshot: netfilter (ip6tables-save) failed"),
        ("ip", "exit 0", "snapshot: links"),
        ("findmnt", "exit 0", "snapshot: mounts"),
        ("findmnt", "exit 1", "snapshot: mounts (findmnt) failed"),
        ("sysctl", "exit 255", "snapshot: sysctls"),
    ] {
        let _ = std::fs::remove_dir_all(&stubs);
        std::fs::create_dir_all(&stubs).unwrap();
        let stub = stubs.join(tool);
        std::fs::write(&stub, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = snapshot(&[], Some(&stubs)).map(|s| format!("taken:\n{s}")).expect_err(tool);
        assert!(err.contains(says), "{tool} ({body}): expected {says:?}, got {err:?}");
    }
    let _ = std::fs::remove_dir_all(&stubs);
}

#[test]
fn a_pod_deleted_on_a_real_cluster_drains_with_zero_loss() {
    if !root_or_skip("the cluster test needs root (it runs a kubelet and changes iptables)") {
        return;
    }
    let Some(kubelet) = kube_tool("kubelet", "KUBELET_BIN") else { return };
    for (name, env) in
        [("kube-proxy", "KUBE_PROXY_BIN"), ("kube-scheduler", "KUBE_SCHEDULER_BIN"), ("coredns", "COREDNS_BIN")]
    {
        if kube_tool(name, env).is_none() {
            return;
        }
    }
    for (name, env) in
        [("containerd", "CONTAINERD_BIN"), ("dockerd", "DOCKERD_BIN"), ("debootstrap", "DEBOOTSTRAP_BIN")]
    {
        if common::tool(name, env).is_none() {
            return;
        }
    }
    let Some(helm) = common::tool("helm", "HELM_BIN") else { return };
    // Debian's Prometheus has no Kubernetes service discovery: scripts/tools.sh
    // builds one as prometheus-sd. Under scripts/test (GSD_LANES) it is still
    // building when this test starts: the script waits for it at its alert
    // phase, and finds it where the lane puts it.
    let prometheus = match std::env::var_os("GSD_LANES") {
        Some(_) => None,
        None => match kube_tool("prometheus-sd", "PROMETHEUS_SD_BIN") {
            Some(found) => Some(found),
            None => return,
        },
    };
    // Debian's prometheus-alertmanager: the chart's alerts are delivered to it.
    let Some(alertmanager) = common::tool("prometheus-alertmanager", "ALERTMANAGER_BIN") else { return };
    let expected = [
        "ok: scripts/cluster up after a crash (every daemon SIGKILLed) cleaned up and started afresh",
        "ok: node gsd-node Ready, kube-apiserver v1.34.4, kubelet v1.34.4",
        "note: the base images rust:1-bookworm and gcr.io/distroless/cc-debian12:nonroot are local stand-ins",
        "sessions drained complete in",
        "SIGTERM",
        "EndpointSlice ready=false",
        "/readyz 503 from drain_start",
        "final /metrics scraped from the pod IP",
        "users reconnected through the Service's DNS name",
        &format!("{} +0, {} +0", names::CLIENT_MESSAGES_LOST, names::CLIENT_REQUESTS_LOST),
        "ok: Prometheus discovered and scrapes the 2 server pods and the client pod by role pod",
        &format!("Prometheus holds its final {}", names::SERVER_DRAINS),
        "ok: rollout restart: 2 replicas drained",
        "ok: scripts/release pushed the image and the chart to 127.0.0.1:",
        "ok: every pod runs 127.0.0.1:",
        "ok: helm test gsd",
        "then SIGKILL: exit code 137",
        "ok: the clean scenarios fired no gsd alert",
        &format!("messages lost; the client's /metrics {} +", names::CLIENT_MESSAGES_LOST),
        "ok: GsdMessagesLost and GsdDrainIncomplete, from the chart's own PrometheusRule, fired and reached Alertmanager",
        &format!("ok: client after SIGKILL: {} +", names::CLIENT_DRAINS.at(&[("outcome", "incomplete")])),
        "ok: GsdDrainIncomplete, from the chart's PrometheusRule, reached Alertmanager",
        "ok: helm uninstall left nothing of the release",
        "ok: scripts/cluster down left netfilter (rules, chains, policies), links, routes, mounts, host paths and sysctls as they were",
        "ok: scripts/cluster down left no process it started",
        "proxy-test: PASS",
        "cluster-test: PASS",
    ];
    let mut expected = expected.to_vec();
    let proxy_lines: Vec<String> = ["traefik", "envoy-gateway"]
        .iter()
        .flat_map(|p| {
            [
                format!("ok: {p}: backend delete:"),
                format!("ok: {p}: 20 route edits"),
                format!("ok: {p}: rollout at "),
                format!("ok: {p}: uninstalled"),
            ]
        })
        .collect();
    expected.extend(proxy_lines.iter().map(String::as_str));
    // What a user runs against their own proxy: the in-cluster verdict with
    // verdict.via, through each proxy.
    let verdict_lines: Vec<String> = ["traefik", "envoy-gateway"]
        .iter()
        .map(|p| {
            format!("ok: {p}: the in-cluster verdict (verdict.via) evicted a server pod, rolled the proxy and FAILed")
        })
        .collect();
    expected.extend(verdict_lines.iter().map(String::as_str));
    let mut envs = vec![
        ("KUBE_BIN_DIR", kubelet.parent().unwrap().as_os_str()),
        ("HELM_BIN", helm.as_os_str()),
        ("ALERTMANAGER_BIN", alertmanager.as_os_str()),
    ];
    if let Some(prometheus) = &prometheus {
        envs.push(("PROMETHEUS_SD_BIN", prometheus.as_os_str()));
    }
    let stdout = common::run_script("cluster-test", &envs, &expected);
    // Safety nets, not timings: the figures exist and are in their order of
    // magnitude (the preStop is 5 s; SIGTERM follows it within a second).
    let gap = figure(&stdout, "prestop_sigterm_gap_ms");
    assert!((0.0..1000.0).contains(&gap), "preStop -> SIGTERM gap {gap} ms");
    let p99 = figure(&stdout, "reconnect_p99_ms");
    assert!(p99 < 10_000.0, "reconnect p99 {p99} ms");
    assert!(figure(&stdout, "users_moved") >= 1.0);
    // Through each proxy: no route edit cuts a session, and a rollout of
    // the proxy cuts every session it held when its drain setting runs out
    // (10 s, then 20 s), not before and not much after.
    for proxy in ["traefik", "envoy-gateway"] {
        assert_eq!(figure(&stdout, &format!("{proxy}_reload_sessions_cut")), 0.0, "{proxy}");
        for setting in [10.0, 20.0] {
            let after = figure(&stdout, &format!("{proxy}_rollout_{setting}s_cut_after_s"));
            assert!((setting - 0.5..setting + 2.0).contains(&after), "{proxy} at {setting}s: cut after {after} s");
            assert_eq!(figure(&stdout, &format!("{proxy}_rollout_{setting}s_cut")), 60.0, "{proxy} at {setting}s");
        }
        let propagation = figure(&stdout, &format!("{proxy}_propagation_s"));
        assert!((0.0..5.0).contains(&propagation), "{proxy}: propagation {propagation} s");
    }
    eprintln!("{stdout}");
}
