"""``python -m socketio_adapters``: the ``socketio-adapters`` command (see :mod:`.cli`)."""

import sys

from .cli import main

sys.exit(main())
