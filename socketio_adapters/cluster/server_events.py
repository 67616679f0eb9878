"""Server-side events: handlers this node registered for events other nodes send
(``manager.on``), run as background tasks; what a handler returns is its ack."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from ..protocol import Message, MessageType, Response, ServerEvent
from ..tasks import BackgroundTasks
from .publisher import Publisher

__all__ = ["ServerEventHandler", "ServerEvents"]

ServerEventHandler = Callable[..., Any]


class ServerEvents:
    """The handler registry and the runs of its handlers."""

    def __init__(self, publisher: Publisher, tasks: BackgroundTasks,
                 logger: logging.Logger) -> None:
        self.publisher = publisher
        self.tasks = tasks
        self.logger = logger
        self.handlers: dict[str, ServerEventHandler] = {}

    def on(self, event: str, handler: ServerEventHandler | None = None) -> Any:
        def register(func: ServerEventHandler) -> ServerEventHandler:
            self.handlers[event] = func
            return func
        return register(handler) if handler is not None else register

    def received(self, message: Message, event: ServerEvent) -> None:
        """Run the handler of ``event``, or answer "not handled" to a request."""
        name, *args = event.packet
        handler = self.handlers.get(name)
        if handler is None:
            if event.request_id is not None:
                self.publisher.publish(MessageType.SERVER_SIDE_EMIT_RESPONSE, message.nsp,
                                       Response(event.request_id, handled=False),
                                       target=message.uid)
            return
        self.tasks.spawn(self._run(handler, args, message, event.request_id))

    async def _run(self, handler: ServerEventHandler, args: list[Any], message: Message,
                   request_id: str | None) -> None:
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            self.logger.exception("server-side event handler %r failed", handler)
            result, failed = None, True
        else:
            failed = False
        if request_id is not None:
            self.publisher.publish(MessageType.SERVER_SIDE_EMIT_RESPONSE, message.nsp,
                                   Response(request_id, result, handled=not failed),
                                   target=message.uid)
