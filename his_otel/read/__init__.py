"""Reading the status table: a session's rows in order, and following them as they land."""

from .cursor import Position, SessionCursor, iter_rows
from .run_end import RunEnd
from .session import session_rows

__all__ = ["Position", "RunEnd", "SessionCursor", "iter_rows", "session_rows"]
