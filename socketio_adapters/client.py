"""``AsyncClient``: python-socketio's client with connection state recovery.

It does what socket.io's JavaScript client (4.6+) does: keeps the private session id
(``pid``) the server sent with CONNECT and the offset of the last event received, and
sends both in ``auth`` when it reconnects, so the server can restore its session and
send what it missed. Unlike the JavaScript client, it strips the offset before
calling handlers, so handlers see the arguments the server emitted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from socketio import packet as sio_packet

__all__ = ["AsyncClient"]


class AsyncClient(socketio.AsyncClient):  # type: ignore[misc]
    """A ``socketio.AsyncClient`` that recovers its session after a lost connection.

    Every argument is python-socketio's. After each connection, :attr:`recovered`
    (or :meth:`is_recovered` for another namespace) tells whether the server
    restored the session: same sid, rooms and session data, missed events delivered.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pids: dict[str, str] = {}
        self._offsets: dict[str, str] = {}
        self._recovered: dict[str, bool] = {}

    @property
    def recovered(self) -> bool:
        """Whether the default namespace's last connection restored its session."""
        return self.is_recovered("/")

    def is_recovered(self, namespace: str = "/") -> bool:
        return self._recovered.get(namespace, False)

    def offset(self, namespace: str = "/") -> str | None:
        """The offset of the last event received in ``namespace``, if any."""
        return self._offsets.get(namespace)

    async def disconnect(self) -> None:
        """Leave for good: the server drops the session instead of keeping it.

        python-socketio's client closes its transport right after queueing the
        DISCONNECT packets, so a server may see only the transport close (which it
        keeps the session for); here the packets are sent before the close."""
        self._pids.clear()
        self._offsets.clear()
        if self.connected and self.eio.state == "connected":
            for namespace in self.namespaces:
                await self._send_packet(self.packet_class(sio_packet.DISCONNECT,
                                                          namespace=namespace))
            try:
                await asyncio.wait_for(self.eio.queue.join(), 1.0)
            except asyncio.TimeoutError:
                self.logger.warning("DISCONNECT not sent within 1s; closing anyway")
        await super().disconnect()

    async def _handle_eio_connect(self) -> None:
        self.logger.info("Engine.IO connection established")
        self.sid = self.eio.sid
        auth = await self._get_real_value(self.connection_auth) or {}
        for namespace in self.connection_namespaces:
            await self._send_packet(self.packet_class(
                sio_packet.CONNECT, data=self._auth_for(namespace, auth),
                namespace=namespace))

    def _auth_for(self, namespace: str, auth: Any) -> Any:
        pid, offset = self._pids.get(namespace), self._offsets.get(namespace)
        if pid is None or offset is None or not isinstance(auth, dict):
            return auth
        return {**auth, "pid": pid, "offset": offset}

    async def _handle_connect(self, namespace: str | None, data: Any) -> None:
        namespace = namespace or "/"
        pid = data.get("pid") if isinstance(data, dict) else None
        if isinstance(pid, str):
            recovered = self._pids.get(namespace) == pid
            self._pids[namespace] = pid
            if not recovered:
                self._offsets.pop(namespace, None)
        else:
            recovered = False
            self._pids.pop(namespace, None)
            self._offsets.pop(namespace, None)
        self._recovered[namespace] = recovered
        await super()._handle_connect(namespace, data)

    async def _handle_event(self, namespace: str | None, id: int | None,
                            data: list[Any]) -> None:
        namespace = namespace or "/"
        if (id is None and namespace in self._pids and len(data) > 1
                and isinstance(data[-1], str)):
            self._offsets[namespace] = data[-1]
            data = data[:-1]
        await super()._handle_event(namespace, id, data)
