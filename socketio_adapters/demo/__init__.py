"""The demo: a chat page served by several worker processes that form one cluster.

``socketio-adapters demo`` (or ``scripts/demo.sh``) runs :mod:`.app` under uvicorn
with ``--workers N``; see :mod:`.chat` for what the server does and ``static/`` for
the page (``socket.io.min.js`` is the official socket.io client, vendored; its version
is in ``static/README.md``).

``socketio-adapters distributor-demo`` runs the distributor mode's demo (see
:mod:`.launch`): :mod:`.edge` under uvicorn, in front of :mod:`.chat_backend` and
:mod:`.counter_backend`, each a process of its own, watched by :mod:`.processes`;
its page is ``static/distributor.html``.
"""
