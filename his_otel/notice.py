"""Saying that status rows are being lost, where a user sees it without having set up logging.

The library's loggers carry the details (and a ``NullHandler``, so they print nothing unless the
application configures logging). Losing rows must never be silent, so each kind of loss is also
said once per process as a :class:`HISOtelWarning`: Python prints it on stderr by default, and an
application can filter it, turn it into an error, or route it to logging
(``logging.captureWarnings(True)``) like any warning.
"""

from __future__ import annotations

import threading
import warnings

_lock = threading.Lock()
_said: set[str] = set()


class HISOtelWarning(UserWarning):
    """Status rows are not being written, or were lost; the message says why and what to fix."""


def tell(key: str, text: str) -> None:
    """Warn ``text`` once per process for ``key`` (a kind of loss, e.g. its cause)."""
    with _lock:
        if key in _said:
            return
        _said.add(key)
    warnings.warn(f"his-otel: {text}", HISOtelWarning, stacklevel=3)
