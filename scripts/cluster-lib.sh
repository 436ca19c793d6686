# Sourced by scripts/cluster-test and scripts/proxy-test (after
# scripts/cluster, for kctl, KUBE_BIN_DIR and ROOT): what both do to prove a
# drain on real pods. Needs $ns (the release's namespace), $work (a scratch
# directory) and the array bg (background PIDs, ended by the caller's
# cleanup).

lib_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
check() { python3 "$lib_root/scripts/cluster-check" "$@"; }
# For background jobs: real commands, so that $! is the process itself.
KUBECTL="$KUBE_BIN_DIR/kubectl"
CHECK=(python3 "$lib_root/scripts/cluster-check")

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
figure() { echo "figure: $*"; }
now() { date +%s.%N; }

# background NAME CMD...: a watcher or poller, output in $work/NAME.log.
background() {
    local name=$1
    shift
    "$@" >"$work/$name.log" 2>&1 &
    bg+=($!)
}

# until_true WHAT SECONDS CMD...
until_true() {
    local what=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 4; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    fail "$what: not within ${secs}s"
}

# watchdog SECONDS WHAT: the whole script stops by itself (SIGTERM to it).
watchdog() {
    local secs=$1 what=$2
    (
        trap 'kill "$nap" 2>/dev/null; exit 0' TERM
        sleep "$secs" &
        nap=$!
        wait "$nap"
        echo "FAIL: $what took longer than $secs s" >&2
        kill -TERM $$
    ) &
    bg+=($!)
}

# The host's release build of gsd-verdict (as the Dockerfile and
# scripts/test make it, so no rebuild after scripts/test); GSD_VERDICT names
# another binary. Exported for scripts/cluster-check.
find_verdict() {
    if [ -z "${GSD_VERDICT:-}" ]; then
        "$lib_root/scripts/build-release" --quiet || fail "scripts/build-release (for gsd-verdict)"
        GSD_VERDICT="$(cd "$lib_root" && cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/gsd-verdict"
    fi
    [ -x "$GSD_VERDICT" ] || fail "no gsd-verdict binary at $GSD_VERDICT"
    export GSD_VERDICT
}

pod_ip() { kctl -n "$ns" get pod "$1" -o jsonpath='{.status.podIP}'; }
# The port serving /metrics, by its name in the pod spec: `admin` where the
# chart has a separate admin port, else `http` (server) or `metrics` (client).
metrics_url() {
    kctl -n "$ns" get pod "$1" -o json | python3 -c '
import json, sys
pod = json.load(sys.stdin)
ports = {p.get("name"): p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
port = next(ports[n] for n in ("admin", "http", "metrics") if n in ports)
print("http://%s:%d" % (pod["status"]["podIP"], port))'
}
# The running, not terminating pods of a component (in namespace $2, by
# default $ns, by the label app.kubernetes.io/component, or by a selector
# given as $3).
pods_of() {
    kctl -n "${2:-$ns}" get pods -l "${3:-app.kubernetes.io/component=$1}" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    if p["status"].get("phase") == "Running" and "deletionTimestamp" not in p["metadata"]:
        print(p["metadata"]["name"])'
}
metric() { check metric "$1/metrics" "${@:2}"; }

# watch_release: the watches of the release's pods and of the EndpointSlices
# of the Service in front of its servers ($svc, which it sets), each object
# stamped with the time it arrived (cluster-check drain reads them).
watch_release() {
    svc=$(kctl -n "$ns" get services -o json | python3 -c '
import json, sys
for s in json.load(sys.stdin)["items"]:
    # The one clients use: not the headless one for metrics, if any.
    if (s["spec"].get("selector") or {}).get("app.kubernetes.io/component") == "server" \
            and s["spec"].get("clusterIP") != "None":
        print(s["metadata"]["name"])')
    [ -n "$svc" ] || fail "no Service selects the server pods"
    "$KUBECTL" -n "$ns" get endpointslices -l kubernetes.io/service-name=$svc -w -o json \
        > >("${CHECK[@]}" stamp >"$work/eps.watch") &
    bg+=($!)
    "$KUBECTL" -n "$ns" get pods -w -o json > >("${CHECK[@]}" stamp >"$work/pods.watch") &
    bg+=($!)
}

# all_connected: the client ($client_url) and the servers both count
# $users sessions.
all_connected() {
    [ "$(metric "$client_url" gsd_client_sessions)" = "$users" ] || return 1
    local s n total=0
    for s in $(pods_of server); do
        # A pod between its deletion and its end may not answer: not yet.
        n=$(metric "$(metrics_url "$s")" gsd_server_sessions) || return 1
        total=$((total + n))
    done
    [ "$total" = "$users" ]
}

two_servers() { [ "$(pods_of server | wc -l)" = 2 ]; }

# busiest_server: the server pod holding the most sessions, then the other
# (sets a, na, b, nb).
busiest_server() {
    local servers
    mapfile -t servers < <(pods_of server)
    [ "${#servers[@]}" = 2 ] || fail "expected 2 server pods, got ${servers[*]}"
    a=${servers[0]} b=${servers[1]}
    na=$(metric "$(metrics_url "$a")" gsd_server_sessions)
    nb=$(metric "$(metrics_url "$b")" gsd_server_sessions)
    [ "$na" -lt "$nb" ] && { local t=$a; a=$b; b=$t; t=$na; na=$nb; nb=$t; }
    [ "$na" -gt 0 ] || fail "no sessions on $a"
}

# delete_server POD GRACE CLIENT_LOG [EXTRA...]: `kubectl delete pod POD`,
# proven as the direct path proves it: from the kubelet's log, the pod's
# own log, its /metrics polled during METRICS_LINGER, its /readyz, the
# EndpointSlice and the client's /metrics and log (cluster-check drain
# complete, the judge's counts), every user back on another pod. EXTRA is
# run (in the background, killed after the deletion) while the pod goes.
# Sets t_del and held; the judge's report is $work/POD.verdict.json.
delete_server() {
    local p=$1 grace=$2 client_log=$3 url logs out t_gone
    shift 3
    url=$(metrics_url "$p")
    "$KUBECTL" -n "$ns" logs -f "$p" >"$work/$p.log" 2>&1 &
    logs=$!
    bg+=($logs)
    background "readyz-poll-$p" "${CHECK[@]}" poll "$url/readyz" "$work/readyz-$p" 0.005
    local readyz=$!
    background "metrics-poll-$p" "${CHECK[@]}" poll "$url/metrics" "$work/metrics-$p" 0.25
    local metrics=$!
    sleep 1
    # Both sides' accounts before the deletion, for the judge.
    check scrape "$url/metrics" "$work/$p.before.prom" || fail "$p's /metrics could not be read"
    check scrape "$client_url/metrics" "$work/client.before-$p.prom" || fail "the client's /metrics could not be read"
    # EXTRA starts after the scrapes, so that nothing it opens is counted
    # as a session the pod held.
    local during=""
    if [ "$#" != 0 ]; then
        background "during-$p" "$@"
        during=$!
        sleep 1
    fi
    t_del=$(now)
    kctl -n "$ns" delete pod "$p" --wait=true --timeout=90s >/dev/null
    t_gone=$(now)
    wait "$logs" || true
    # EXTRA has ended by itself by now (the preStop's window); if not, it
    # ends here.
    if [ -n "$during" ]; then kill "$during" 2>/dev/null || true; wait "$during" 2>/dev/null || true; fi
    sleep 1
    kill "$readyz" "$metrics" 2>/dev/null || true
    until_true "every user back in a session" 60 all_connected
    check scrape "$client_url/metrics" "$work/client.after-$p.prom" || fail "the client's /metrics could not be read"
    out=$(check drain "$p" "$work/$p.log" "$ROOT/logs/kubelet.log" "$work/pods.watch" "$work/eps.watch" \
        "$t_del" "$grace" complete --readyz "$work/readyz-$p.log" --metrics-last "$work/metrics-$p.last" \
        --server-before "$work/$p.before.prom" --clients-before "$work/client.before-$p.prom" \
        --clients "$work/client.after-$p.prom" --verdict-json "$work/$p.verdict.json") || { echo "$out"; exit 1; }
    printf '%s\n' "$out" | sed '/^sessions=/d'
    held=$(printf '%s\n' "$out" | sed -n 's/^sessions=//p')
    figure "kubectl_delete_wait_s $(python3 -c "print(f'{$t_gone - $t_del:.2f}')")"
    check reconnects "$client_log" "$t_del" "$held" "$p"
}
