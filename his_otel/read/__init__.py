"""Reading the status table: a session's rows in order, and following them as they land."""

from .session import session_rows

__all__ = ["session_rows"]
