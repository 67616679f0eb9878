"""What is declared, installed and shipped agrees: the python-socketio range in
pyproject.toml is the one the installed package declares and holds the python-socketio
under test, and the built wheel carries every module, py.typed, and no tests."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra installs tomli there
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "socketio_adapters"


def _pinned(lines: list[str], name: str) -> Requirement:
    """The unconditional requirement on ``name`` among ``lines``."""
    for line in lines:
        requirement = Requirement(line)
        if requirement.name == name and requirement.marker is None:
            return requirement
    raise AssertionError(f"{name} is not among the requirements {lines}")


def _pyproject_dependencies() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        dependencies: list[str] = tomllib.load(file)["project"]["dependencies"]
    return dependencies


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built from this source tree (pip runs the build backend hatchling:
    from the venv when it is installed there, otherwise in an isolated build env)."""
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
               "--wheel-dir", str(out), str(ROOT)]
    if importlib.util.find_spec("hatchling") is not None:
        command.insert(4, "--no-build-isolation")
    built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"building the wheel failed:\n{built.stderr}"
    wheels = list(out.glob("socketio_adapters-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, pip wrote {wheels}"
    with zipfile.ZipFile(wheels[0]) as archive:
        assert archive.testzip() is None, "the wheel is corrupt"
        yield archive


def test_installed_package_declares_the_pyproject_python_socketio_range() -> None:
    declared = _pinned(_pyproject_dependencies(), "python-socketio")
    installed = _pinned(requires("socketio-adapters") or [], "python-socketio")
    assert installed.specifier == declared.specifier, (
        "the installed socketio-adapters metadata is stale: reinstall the package")


def test_python_socketio_under_test_is_in_the_declared_range() -> None:
    declared = _pinned(_pyproject_dependencies(), "python-socketio")
    assert declared.specifier.contains(version("python-socketio"), prereleases=True), (
        f"python-socketio {version('python-socketio')} is outside {declared.specifier}")


def test_wheel_ships_every_module_and_py_typed(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    source = {path.relative_to(ROOT).as_posix()
              for path in (ROOT / PACKAGE).rglob("*.py")
              if "__pycache__" not in path.parts}
    assert f"{PACKAGE}/storage/__init__.py" in source  # the tree is what we think it is
    assert f"{PACKAGE}/py.typed" in names
    assert source - names == set(), "modules missing from the wheel"


def test_wheel_ships_no_tests(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/", 1)[0] for name in wheel.namelist()}
    extra = {name for name in top - {PACKAGE} if not name.endswith(".dist-info")}
    assert extra == set(), "the wheel carries more than the package and its metadata"
    assert not [n for n in wheel.namelist() if "/tests/" in f"/{n}"]


def test_wheel_metadata_declares_the_pyproject_dependencies(wheel: zipfile.ZipFile) -> None:
    info = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(info).decode())
    shipped = metadata.get_all("Requires-Dist") or []
    assert (_pinned(shipped, "python-socketio").specifier
            == _pinned(_pyproject_dependencies(), "python-socketio").specifier)
