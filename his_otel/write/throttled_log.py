"""A log that says each kind of failure once per interval, so an outage does not flood the log."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class ThrottledLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def _due(self, key: str) -> int | None:
        """The count suppressed since the last line for ``key``, or None if it is not time yet."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        suppressed = self._due(key)
        if suppressed is None:
            return
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args)

    def info(self, key: str, msg: str, *args: Any) -> None:
        self.log(logging.INFO, key, msg, *args)

    def warning(self, key: str, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, key, msg, *args)
