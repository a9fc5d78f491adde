"""The read side: a session's rows as a live AG-UI event stream, a cursor endpoint and a page."""

from .app import StatusApp
from .hub import SessionHub
from .server import StatusServer

__all__ = ["SessionHub", "StatusApp", "StatusServer"]
