"""The AMQP backend's session store: one durable queue per session id, holding at
most one message, which expires with the session."""

from __future__ import annotations

import math
from typing import Any

import aiormq
import aiormq.exceptions

from .connection import AmqpConnection, PublishRefused
from .naming import QUEUE_NAME_LIMIT

__all__ = ["AmqpSessions"]


class AmqpSessions(AmqpConnection):
    """Session records in queues named ``{channel}#session#{pid}``: saving pushes any
    older record out (``x-max-length: 1``), taking is a ``basic.get`` without ack,
    which removes the message as it hands it out (of several takers, one gets it)."""

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        name = self.names.session_queue(pid)
        ms = max(1, math.ceil(ttl * 1000))
        # one message at most: a new record pushes the old one out (x-max-length)
        arguments: dict[str, Any] = {"x-max-length": 1, "x-expires": ms}
        properties = aiormq.spec.Basic.Properties(delivery_mode=2, expiration=str(ms))
        timeout = self.settings["connect_timeout"]
        connection = await self._publisher_connection()
        try:
            async with self._side_channel(connection, confirms=True) as channel:
                await channel.queue_declare(name, durable=True, arguments=arguments)
                reply = await channel.basic_publish(data, routing_key=name,
                                                    properties=properties, timeout=timeout)
        except aiormq.exceptions.ChannelPreconditionFailed:
            # kept before with another ttl: replace the queue along with its record
            async with self._side_channel(connection, confirms=True) as channel:
                await channel.queue_delete(name)
                await channel.queue_declare(name, durable=True, arguments=arguments)
                reply = await channel.basic_publish(data, routing_key=name,
                                                    properties=properties, timeout=timeout)
        if not isinstance(reply, aiormq.spec.Basic.Ack):
            raise PublishRefused(f"broker refused the session of {pid!r}")

    async def take_session(self, pid: str) -> bytes | None:
        name = self.names.session_queue(pid)
        if len(name.encode()) > QUEUE_NAME_LIMIT:
            return None
        connection = await self._publisher_connection()
        async with self._side_channel(connection) as channel:
            timeout = self.settings["connect_timeout"]
            try:
                # a missing queue first answers a passive declare: a basic.get on it
                # would work as well, but makes aiormq log an unretrieved future
                await channel.queue_declare(name, passive=True, timeout=timeout)
                # a get without ack removes the message: of several takers one gets it
                message = await channel.basic_get(name, no_ack=True, timeout=timeout)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None  # never saved, or expired with its queue
        if not isinstance(message.delivery, aiormq.spec.Basic.GetOk):
            return None
        return message.body
