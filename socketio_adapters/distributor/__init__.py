"""The distributor mode: edge nodes hold the clients' connections, application
servers run a namespace's handlers and hold none (see docs/distributor.md).

>>> sio = socketio_adapters.AsyncServer(create_manager(url))   # an edge node
>>> EdgeRelay(sio, ["/chat"])
>>> app = ApplicationServer(url, namespace="/chat")            # elsewhere
"""

from .app import ApplicationServer
from .edge import Authenticate, EdgeRelay
from .environ import IDENTITY

__all__ = ["IDENTITY", "ApplicationServer", "Authenticate", "EdgeRelay"]
