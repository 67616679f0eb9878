"""The cluster layer: one node's part of the Socket.IO cluster contract.

- :mod:`.manager`: the :class:`ClusterManager` facade (lifecycle, python-socketio's
  ``AsyncManager`` API), with the cluster API from :mod:`.api`;
- :mod:`.local`: local delivery, the only code touching python-socketio and
  engine.io internals;
- :mod:`.inbound`: one dispatch for every message, pub/sub payloads and log entries;
- :mod:`.publisher` and :mod:`.outbox`: publishing, in order, bounded;
- :mod:`.heartbeats` and :mod:`.nodes`: who is alive;
- :mod:`.requests`, :mod:`.callbacks`, :mod:`.server_events`: requests and answers.
"""

from .arguments import Room
from .manager import ClusterManager
from .sockets import RemoteSocket

__all__ = ["ClusterManager", "RemoteSocket", "Room"]
