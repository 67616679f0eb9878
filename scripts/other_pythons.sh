#!/usr/bin/env bash
# The unit tests of the code that differs by Python version, on every other Python
# the package supports (pyproject.toml: 3.10 and later; the version of .venv, or
# $VENV, which runs every test, is left out), each in its own virtualenv
# (.venv-3.X): the tasks started eagerly (socketio_adapters/eager.py: asyncio's own
# eager tasks from 3.12, a continuation of ours before), the engine.io session that
# waits without tasks (python-engineio's poll makes a wait_for task before 3.12
# only), the deadlines over asyncio's timeouts and the Redis subscriber that steps as
# its listener task. scripts/test.sh runs this beside its main pass; the main pass
# runs every test on the Python of .venv.
#
#   scripts/other_pythons.sh                  # 3.10 to 3.13 but .venv's
#   OTHER_PYTHONS="3.12" scripts/other_pythons.sh
#
# An interpreter is python3.X on PATH, else pyenv's newest 3.X. A version this
# machine does not have is said, and fails the run only with SIOA_REQUIRE_PYTHONS=1.
set -euo pipefail
cd "$(dirname "$0")/.."

MODULES=(tests/test_eager.py tests/test_engine_socket.py tests/test_engine_websocket.py
         tests/test_deadline.py tests/test_redis_subscriber.py)

find_python() {
    local version=$1 candidate
    if candidate=$(command -v "python$version") && "$candidate" -c "" 2>/dev/null; then
        echo "$candidate"
        return
    fi
    local root
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    candidate=$( (ls -d "$root"/versions/"$version".*/bin/python"$version" 2>/dev/null \
        || true) | sort -V | tail -n 1)
    if [ -n "$candidate" ] && "$candidate" -c "" 2>/dev/null; then
        echo "$candidate"
    fi
}

mkdir -p .results
main=""
if [ -x "${VENV:-.venv}/bin/python" ]; then
    main=$("${VENV:-.venv}/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
fi
status=0
for version in ${OTHER_PYTHONS:-3.10 3.11 3.12 3.13}; do
    if [ "$version" = "$main" ]; then
        continue  # the main pass runs every test on it
    fi
    python=$(find_python "$version")
    if [ -z "$python" ]; then
        echo "other pythons: no Python $version on this machine: its tests did not run"
        [ "${SIOA_REQUIRE_PYTHONS:-0}" = 1 ] && status=1
        continue
    fi
    venv=".venv-$version"
    if [ ! -x "$venv/bin/pip" ] && ! { rm -rf "$venv" && "$python" -m venv "$venv"; }; then
        echo "other pythons: Python $version ($python): making $venv failed"
        rm -rf "$venv"
        status=1
        continue
    fi
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"; then
        echo "other pythons: Python $version: installing the package failed"
        status=1
        continue
    fi
    echo "other pythons: Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'):" \
        "${MODULES[*]}"
    "$venv/bin/python" -m pytest "${MODULES[@]}" -q -p no:cacheprovider \
        -o console_output_style=classic --basetemp=".results/py$version-tmp" || status=1
done
exit "$status"
