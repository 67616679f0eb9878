"""Connection state recovery: options, session records, where sessions are kept,
and restores (see :mod:`.restores`). It works through small interfaces
(:mod:`.ports`) and knows no class of the cluster package."""

from .log_sessions import LogSessions
from .options import RecoveryOptions, RecoverySetting
from .records import Repeats, SessionRecord, matches, new_pid
from .restores import Recovery
from .sessions import SessionSource, StoreSessions, Taken
from .tails import Restore, Tail, Tails

__all__ = ["LogSessions", "Recovery", "RecoveryOptions", "RecoverySetting", "Repeats",
           "Restore", "SessionRecord", "SessionSource", "StoreSessions", "Tail", "Tails", "Taken",
           "matches", "new_pid"]
