"""Where the suite's broker for a backend spec comes from, in this order: a URL given in
the spec; a container (conformance/containers.py) when a Docker engine answers; else
the local binaries (conformance/brokers/). ``SIOA_BROKER_SOURCE`` narrows it:
``container`` (fail without an engine), ``local`` (never a container), ``auto``
(the default). A spec is ``kind``, ``kind@version`` (a pinned image: containers only)
or a URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .brokers import KINDS, BrokerStartError, LocalBroker, broker_for
from .images import IMAGES

__all__ = ["BROKERLESS", "SOURCES", "Choice", "choose", "parse_spec", "start_broker"]

SOURCES = ("auto", "container", "local")
BROKERLESS = ("memory",)
"""Kinds with no broker at all (``local`` has its hub process, started locally)."""


@dataclass(frozen=True)
class Choice:
    kind: str
    version: str | None
    source: str
    """``url``, ``container``, ``local`` or ``none`` (no broker: memory)."""


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``kind`` and ``version`` of ``kind[@version]`` (URLs: the scheme, no version)."""
    if "://" in spec:
        return spec.split("://", 1)[0], None
    kind, at, version = spec.partition("@")
    known = (*BROKERLESS, *KINDS)
    if kind not in known:
        raise ValueError(f"unknown backend {kind!r} in {spec!r}; known: {', '.join(known)}, "
                         "kind@version, or a URL")
    if at and not version:
        raise ValueError(f"{spec!r}: a version after '@' (versions: conformance/images.py)")
    return kind, version or None


def choose(spec: str, wanted: str, engine_missing: str | None) -> Choice:
    """The source for ``spec`` under ``SIOA_BROKER_SOURCE=wanted``, given why no
    Docker engine answers (None: one does). Errors say what to change."""
    if wanted not in SOURCES:
        raise ValueError(f"SIOA_BROKER_SOURCE={wanted!r}: one of {', '.join(SOURCES)}")
    kind, version = parse_spec(spec)
    if "://" in spec:
        return Choice(kind, None, "url")
    if kind in BROKERLESS:
        return Choice(kind, None, "none")
    if version is None and (kind not in IMAGES or wanted == "local"
                            or (wanted == "auto" and engine_missing is not None)):
        return Choice(kind, None, "local")
    if wanted == "local":
        raise ValueError(f"{spec}: a version picks an image, which runs in a container; "
                         "SIOA_BROKER_SOURCE=local runs only the local binaries")
    if kind not in IMAGES:
        raise ValueError(f"{spec}: {kind} has no container image (it is not a broker)")
    if engine_missing is not None:
        raise BrokerStartError(f"{spec} needs a Docker engine and none answers "
                               f"({engine_missing}); without one, use the kind alone "
                               "(local binaries) or a URL")
    return Choice(kind, version or next(iter(IMAGES[kind])), "container")


def start_broker(spec: str, workdir: Path | None = None) -> tuple[Choice, LocalBroker]:
    """Start the broker of a ``kind[@version]`` spec (not a URL, not memory) from the
    source :func:`choose` picks; it serves clients when this returns."""
    from .containers import ContainerBroker, docker_engine

    wanted = os.environ.get("SIOA_BROKER_SOURCE", "auto").strip() or "auto"
    kind, version = parse_spec(spec)
    needs_engine = version is not None or (wanted != "local" and kind in IMAGES)
    choice = choose(spec, wanted, docker_engine() if needs_engine else "not asked")
    broker: LocalBroker
    if choice.source == "container":
        assert choice.version is not None
        broker = ContainerBroker(kind, choice.version, workdir)
    else:
        broker = broker_for(kind, workdir)
    broker.start()
    return choice, broker
