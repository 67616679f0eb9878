"""The demo: a chat page served by several worker processes that form one cluster.

``socketio-adapters demo`` (or ``scripts/demo.sh``) runs :mod:`.app` under uvicorn
with ``--workers N``; see :mod:`.chat` for what the server does and ``static/`` for
the page (``socket.io.min.js`` is the official socket.io client, vendored; its version
is in ``static/README.md``).
"""
