"""An engine.io session's packet queue, a quarter of ``asyncio.Queue``'s memory.

python-engineio gives each session an ``asyncio.Queue`` (``create_queue()``): four
``collections.deque`` (the items, the getters, the putters, its ``join`` event's
waiters), 760 bytes each however empty, 3.3 KiB with the queue and its event, about
a ninth of what a connected websocket holds on a node. A session's queue is
unbounded and has one reader at a time (the websocket writer or a long-poll), so
:class:`SessionQueue` keeps the items' deque only, and makes its list of waiting
getters and its ``join`` waiters when someone waits. Same behaviour as
``asyncio.Queue`` without ``maxsize``: ``put``/``put_nowait`` never wait, ``get``
waits in order of arrival, ``get_nowait`` raises :class:`asyncio.QueueEmpty`,
``task_done`` and ``join`` count unfinished items.

:func:`lighten_queue` gives a new session one (``socketio_adapters.AsyncServer``
does when it accepts the session, before anything reads from its queue). Like
:mod:`.engine_socket`, a module that touches python-engineio's session (its
``queue``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Generic, TypeVar

__all__ = ["SessionQueue", "lighten_queue"]

T = TypeVar("T")


class SessionQueue(Generic[T]):
    """An unbounded ``asyncio.Queue`` that allocates its waiters' lists only when
    someone waits."""

    __slots__ = ("_finished", "_getters", "_items", "_unfinished")

    maxsize = 0
    """Unbounded, as every engine.io session's queue."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._getters: list[asyncio.Future[None]] | None = None
        """Tasks waiting in :meth:`get`, first come first served (None: none yet)."""
        self._unfinished = 0
        self._finished: asyncio.Event | None = None
        """Set while no item is unfinished (None until someone joins)."""

    def __repr__(self) -> str:
        return f"<SessionQueue size={len(self._items)} unfinished={self._unfinished}>"

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        self._unfinished += 1
        if self._finished is not None:
            self._finished.clear()
        self._wake_getter()

    async def put(self, item: T) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> T:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                getters = self._getters
                if getters is not None and getter in getters:
                    getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_getter()  # the item it was woken for goes to the next
                raise
        return self._items.popleft()

    def _wake_getter(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._finished is not None:
            self._finished.set()

    async def join(self) -> None:
        if self._unfinished > 0:
            if self._finished is None:
                self._finished = asyncio.Event()
            await self._finished.wait()


def lighten_queue(socket: Any) -> None:
    """Give ``socket`` (a new python-engineio session, whose queue no one waits on
    yet) a :class:`SessionQueue` with the packets its ``asyncio.Queue`` holds (its
    OPEN packet), in order."""
    old = getattr(socket, "queue", None)
    if type(old) is not asyncio.Queue:
        return
    queue: SessionQueue[Any] = SessionQueue()
    while not old.empty():
        queue.put_nowait(old.get_nowait())
    socket.queue = queue
