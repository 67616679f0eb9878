"""The suite runs against a python-socketio inside the range the package declares."""

from __future__ import annotations

from importlib.metadata import requires, version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _declared(name: str) -> Requirement:
    for line in requires("socketio-adapters") or []:
        requirement = Requirement(line)
        if requirement.name == name and requirement.marker is None:
            return requirement
    raise AssertionError(f"{name} is not a dependency of the installed package")


def test_python_socketio_under_test_is_in_the_declared_range() -> None:
    declared = _declared("python-socketio")
    assert declared.specifier == Requirement("x>=5.18.1,<5.19").specifier
    assert version("python-socketio") in declared.specifier


def test_py_typed_is_shipped() -> None:
    assert (ROOT / "socketio_adapters" / "py.typed").exists()
