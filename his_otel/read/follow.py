"""Rendering a session's rows as a readable timeline, and following new ones as they land."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, TextIO

from .cursor import SessionCursor

_MESSAGE_WIDTH = 90


def format_row(row: dict[str, Any]) -> str:
    """``HH:MM:SS.mmm  TYPE  span  trace=…  message`` on one line."""
    when = str(row.get("evt_datetime", ""))
    clock = when[11:23] if len(when) >= 23 else when
    message = str(row.get("evt_message", "")).replace("\n", " ")
    if len(message) > _MESSAGE_WIDTH:
        message = message[: _MESSAGE_WIDTH - 1] + "…"
    trace = str(row.get("trace_id", ""))
    span = str(row.get("span_name", ""))
    return (
        f"{clock}  {row.get('evt_type', ''):<21} {span[:28]:<28} trace={trace[:12] or '-':<12}  "
        f"{row.get('agent_id', '')}: {message}"
    )


def print_rows(rows: list[dict[str, Any]], out: TextIO, *, as_json: bool = False) -> None:
    for row in rows:
        out.write((json.dumps(row) if as_json else format_row(row)) + "\n")
    out.flush()


class Follower:
    """Prints a session's rows as they land, each once (a :class:`SessionCursor` underneath, so
    late rows are shown and memory stays bounded however long the session runs)."""

    def __init__(
        self,
        client: Any,
        table: str,
        session_id: str,
        out: TextIO,
        *,
        interval_s: float = 0.25,
        as_json: bool = False,
        on_row: Callable[[dict[str, Any]], None] | None = None,
        window_s: float | None = None,
    ) -> None:
        self._cursor = SessionCursor(table, session_id, client=client, window_s=window_s)
        self._out = out
        self._interval = interval_s
        self._json = as_json
        self._on_row = on_row
        self.count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def poll(self) -> int:
        """Print the rows not printed yet; return how many."""
        with self._lock:  # stop() polls once more from another thread
            rows = self._cursor.poll()
            self.count += len(rows)
        print_rows(rows, self._out, as_json=self._json)
        if self._on_row:
            for row in rows:
                self._on_row(row)
        return len(rows)

    def run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self._interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="his-otel-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.poll()
