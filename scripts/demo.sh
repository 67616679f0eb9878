#!/usr/bin/env bash
# The demo: a chat page served by several uvicorn workers on one port, one cluster
# through the embedded local:// backend (no broker). Open http://127.0.0.1:8000 in
# two tabs (see README.md, "Try it").
#
#   scripts/demo.sh                                   # 2 workers on 127.0.0.1:8000
#   scripts/demo.sh --workers 4 --port 8080
#   scripts/demo.sh --url redis://127.0.0.1:6379/0    # the same demo over a broker
#   scripts/demo.sh distributor                       # the distributor mode's demo: a
#                                                     # chat and a counter game backend
#                                                     # behind 2 edge workers on :8000
#
# It uses the project's .venv when there is one, otherwise it creates .venv-demo, and
# installs the package with its demo extra (uvicorn) there when that is missing
# (DEMO_REINSTALL=1 installs again). Every argument goes to `socketio-adapters demo`
# (--help lists them), or after `distributor` to `socketio-adapters distributor-demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ -z "${VENV:-}" ]; then
    if [ -x .venv/bin/python ]; then VENV=.venv; else VENV=.venv-demo; fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "demo: creating $VENV"
    "$PY" -m venv "$VENV"
fi
if [ "${DEMO_REINSTALL:-0}" = 1 ] || [ ! -x "$VENV/bin/socketio-adapters" ] \
    || ! "$VENV/bin/python" -c "import socketio_adapters.demo, uvicorn" 2>/dev/null; then
    echo "demo: installing the package with its demo extra into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[demo]"
fi

if [ "${1:-}" = distributor ]; then
    shift
    exec "$VENV/bin/socketio-adapters" distributor-demo "$@"
fi
exec "$VENV/bin/socketio-adapters" demo "$@"
