//! The zero-loss drain on real pods: scripts/cluster-test brings up a
//! one-node Kubernetes on this machine (scripts/cluster), builds the image
//! with `docker build .`, and proves the drain with `kubectl delete pod`,
//! `kubectl rollout restart`, `helm test`, a SIGKILL negative case and a
//! real Prometheus. Alone in its test binary: it owns host-wide state
//! (iptables, the cni0 bridge), and cargo runs test binaries one at a time.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

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

#[test]
fn a_pod_deleted_on_a_real_cluster_drains_with_zero_loss() {
    // /proc/self belongs to the process's effective user.
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        assert!(
            std::env::var("GSD_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "the cluster test needs root (it runs a kubelet and changes iptables); CI runs scripts/test as root"
        );
        eprintln!("SKIPPED: the cluster test needs root (it runs a kubelet and changes iptables)");
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
    // builds one as prometheus-sd.
    let Some(prometheus) = kube_tool("prometheus-sd", "PROMETHEUS_SD_BIN") else { return };
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
        "gsd_client_messages_lost_total +0, gsd_client_requests_lost_total +0",
        "ok: Prometheus discovered and scrapes the 2 server pods and the client pod by role pod",
        "Prometheus holds its final gsd_server_drains_total",
        "ok: rollout restart: 2 replicas drained",
        "ok: helm test gsd",
        "then SIGKILL: exit code 137",
        "ok: client after SIGKILL: gsd_client_drains_total{outcome=\"incomplete\"} +",
        "ok: Prometheus: the GsdDrainIncomplete expression is non-zero",
        "ok: helm uninstall gsd left no pod",
        "ok: scripts/cluster down left iptables, ip6tables, links, routes, mounts and sysctls as they were",
        "cluster-test: PASS",
    ];
    let envs = [
        ("KUBE_BIN_DIR", kubelet.parent().unwrap().as_os_str()),
        ("HELM_BIN", helm.as_os_str()),
        ("PROMETHEUS_SD_BIN", prometheus.as_os_str()),
    ];
    let stdout = common::run_script("cluster-test", &envs, &expected);
    // Safety nets, not timings: the figures exist and are in their order of
    // magnitude (the preStop is 5 s; SIGTERM follows it within a second).
    let gap = figure(&stdout, "prestop_sigterm_gap_ms");
    assert!((0.0..1000.0).contains(&gap), "preStop -> SIGTERM gap {gap} ms");
    let p99 = figure(&stdout, "reconnect_p99_ms");
    assert!(p99 < 10_000.0, "reconnect p99 {p99} ms");
    assert!(figure(&stdout, "users_moved") >= 1.0);
    eprintln!("{stdout}");
}
