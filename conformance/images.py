"""The broker images the CI matrix runs, by backend kind and version: the one table the
workflow (.github/workflows/ci.yml), the container fixtures (conformance/containers.py)
and the compatibility matrix (docs/compatibility.md) read. Tags are pinned.

A backend spec in ``SIOA_BACKENDS`` is ``kind``, ``kind@version`` (a key below: that
image, in a container) or a URL.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IMAGES", "Image", "image_for"]


@dataclass(frozen=True)
class Image:
    """A pinned image, and what it runs."""

    ref: str
    """``repository:tag``."""
    product: str
    """What the broker calls itself, with its version (for the matrix's rows)."""


IMAGES: dict[str, dict[str, Image]] = {
    "redis": {
        "7.4": Image("redis:7.4.1", "Redis 7.4.1"),
        "valkey-8.0": Image("valkey/valkey:8.0.1", "Valkey 8.0.1"),
    },
    "redis-cluster": {
        "7.4": Image("redis:7.4.1", "Redis Cluster 7.4.1 (3 masters)"),
    },
    "rabbitmq": {
        "3.13": Image("rabbitmq:3.13.7", "RabbitMQ 3.13.7"),
        "4.0": Image("rabbitmq:4.0.5", "RabbitMQ 4.0.5"),
    },
    "nats": {
        "2.10": Image("nats:2.10.24", "nats-server 2.10.24"),
        "2.11": Image("nats:2.11.0", "nats-server 2.11.0"),
    },
    "kafka": {
        "3.9": Image("apache/kafka:3.9.0", "Apache Kafka 3.9.0 (KRaft)"),
        "4.0": Image("apache/kafka:4.0.0", "Apache Kafka 4.0.0 (KRaft)"),
    },
    "postgres": {
        "14": Image("postgres:14.15", "PostgreSQL 14.15"),
        "15": Image("postgres:15.10", "PostgreSQL 15.10"),
        "16": Image("postgres:16.6", "PostgreSQL 16.6"),
        "17": Image("postgres:17.2", "PostgreSQL 17.2"),
    },
}


def image_for(kind: str, version: str) -> Image:
    """The image of ``kind@version``; a clear error names the versions there are."""
    versions = IMAGES.get(kind)
    if versions is None:
        raise ValueError(f"no container image for {kind!r}: images exist for "
                         f"{', '.join(sorted(IMAGES))}")
    if version not in versions:
        raise ValueError(f"no image for {kind}@{version}; versions of {kind}: "
                         f"{', '.join(versions)}")
    return versions[version]
