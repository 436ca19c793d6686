# Sourced by scripts/test and the other scripts: finds or installs the
# external tools the tests drive. Everything lands in .tools/ (git-ignored),
# except Debian packages, which apt installs system-wide.

tools_dir="${GSD_TOOLS_DIR:-$(pwd)/.tools}"
mkdir -p "$tools_dir/bin"

step() { printf '\n==> %s\n' "$*" >&2; }

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "gsd: $* missing; install it (apt-get install $*) or run as root" >&2
        return 1
    fi
    step "apt-get install $*"
    if [ -z "${GSD_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        export GSD_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
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

# Jaeger (all-in-one, OTLP receiver + query API), built once from the Go
# module proxy at the version pinned in scripts/tools/jaeger/go.mod.
need_jaeger() {
    JAEGER_BIN="${JAEGER_BIN:-$tools_dir/bin/jaeger}"
    if [ ! -x "$JAEGER_BIN" ]; then
        step "go build jaeger (first run only; several minutes)"
        (cd "$(dirname "${BASH_SOURCE[0]}")/tools/jaeger" &&
            GOFLAGS=-mod=mod go build -o "$JAEGER_BIN" github.com/jaegertracing/jaeger/cmd/jaeger)
    fi
}

# Helm 3, built from the Go module proxy.
need_helm() {
    HELM_BIN="${HELM_BIN:-$(command -v helm || true)}"
    if [ -z "$HELM_BIN" ]; then
        HELM_BIN="$tools_dir/bin/helm"
        if [ ! -x "$HELM_BIN" ]; then
            step "go install helm v3.22.0 (first run only)"
            GOBIN="$tools_dir/bin" go install helm.sh/helm/v3/cmd/helm@v3.22.0
        fi
    fi
}
