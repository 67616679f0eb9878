"""Kafka topics: their names, a metadata connection of the listener's own, and
describing and creating topics (asked without auto-creation, which a broker would do
with its own defaults)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiokafka.errors  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.conn import create_conn  # type: ignore[import-untyped]
from aiokafka.protocol.metadata import MetadataRequest  # type: ignore[import-untyped]

from ...hosts import HostPort

__all__ = ["REFUSED_CONFIG", "TopicChanged", "create_topic", "describe", "ensure_topic",
           "open_watch", "raise_unless_created", "scram_refusal", "valid_topic"]

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_TOPIC_ALREADY_EXISTS = 36
REFUSED_CONFIG = frozenset({40, 44})
"""INVALID_CONFIG, POLICY_VIOLATION: the broker will not take a topic's configs."""


class TopicChanged(ConnectionError):
    """The topic vanished or changed its partitions: subscribe again from scratch."""


def valid_topic(name: str) -> bool:
    """Whether ``name`` is a Kafka topic name: 1 to 249 letters, digits, ``.``,
    ``_`` or ``-``."""
    return _TOPIC.fullmatch(name) is not None


async def open_watch(servers: Sequence[HostPort], client_options: Mapping[str, Any],
                     on_close: Callable[[], None],
                     errors: tuple[type[BaseException], ...]) -> Any:
    """A connection of our own to the first broker that answers, for metadata:
    ``on_close`` runs when it closes (the broker went away, and may come back without
    our topics)."""
    options = {k: v for k, v in client_options.items() if k != "bootstrap_servers"}
    failures = []
    catch: tuple[type[BaseException], ...] = (*errors, asyncio.TimeoutError)
    for server in servers:
        try:
            return await create_conn(server.host, server.port, **options,
                                     on_close=lambda *_: on_close())
        except catch as exc:
            failures.append(f"{server.netloc}: {type(exc).__name__}: {exc}")
        except KeyError as exc:
            refusal = scram_refusal(exc)
            if refusal is None:
                raise
            raise aiokafka.errors.SaslAuthenticationFailed(
                f"{server.netloc} refused the SCRAM login ({refusal})") from exc
    raise aiokafka.errors.KafkaConnectionError(
        f"no Kafka broker answered ({'; '.join(failures)})")


def scram_refusal(exc: KeyError) -> str | None:
    """The broker's SCRAM server-final-message, when ``exc`` is aiokafka (0.13) failing
    to read one that carries an error (RFC 5802 ``e=...``, e.g. ``e=unknown-user``, as
    tansu answers a refused login) instead of the server's signature: a ``KeyError('v')``
    raised in ``ScramAuthenticator.process_server_final_message``. None otherwise."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if exc.args != ("v",) or tb is None:
        return None
    frame = tb.tb_frame
    if frame.f_code.co_name != "process_server_final_message":
        return None
    return str(frame.f_locals.get("server_final", "no signature"))


async def describe(watch: Any, topic: str) -> list[int] | None:
    """The topic's partition numbers, or None when it does not exist."""
    response = await watch.send(MetadataRequest([topic], allow_auto_topic_creation=False))
    for found in response.to_object()["topics"]:
        if found["topic"] != topic:
            continue
        code = found["error_code"]
        if code == aiokafka.errors.UnknownTopicOrPartitionError.errno:
            return None
        if code:
            raise aiokafka.errors.for_code(code)(f"metadata of topic {topic!r}")
        return sorted(p["partition"] for p in found["partitions"]) or None
    return None


async def create_topic(client_options: Mapping[str, Any], topic: NewTopic) -> int:
    """Ask the broker to create ``topic``; its error code (0: created)."""
    admin = AIOKafkaAdminClient(**client_options)
    try:
        await admin.start()
        response = await admin.create_topics([topic])
    finally:
        await admin.close()
    codes = [int(error[1]) for error in response.topic_errors]
    return next((code for code in codes if code), 0)


def raise_unless_created(code: int, topic: str) -> None:
    """Raise the error of a create-topic ``code``, unless the topic exists now."""
    if code and code != _TOPIC_ALREADY_EXISTS:
        raise aiokafka.errors.for_code(code)(f"could not create topic {topic!r}")


async def ensure_topic(watch: Any, client_options: Mapping[str, Any], topic: str,
                       partitions: int, replication_factor: int) -> list[int]:
    """Create ``topic`` when it is missing; its partition numbers."""
    found = await describe(watch, topic)
    if found:
        return found
    code = await create_topic(client_options,
                              NewTopic(topic, partitions, replication_factor))
    raise_unless_created(code, topic)
    found = await describe(watch, topic)
    if not found:
        raise TopicChanged(f"topic {topic!r} not visible after it was created")
    return found
