"""Rendering a session's rows as a readable timeline, and following new ones as they land."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from .cursor import SessionCursor

_MESSAGE_WIDTH = 90
# C0 and C1 controls, DEL, and the line/paragraph separators: what moves a terminal's cursor, changes
# its colours or starts a new line. Any sender with a bridge token chooses every field of a row.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _safe(value: Any) -> str:
    """``value`` as text with every control character shown as an escape (``\x1b``, ``\n``)."""
    text = str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def format_row(row: dict[str, Any]) -> str:
    """``HH:MM:SS.mmm  TYPE  span  trace=…  message`` on one line, whatever the row holds."""
    when = _safe(row.get("evt_datetime", ""))
    clock = when[11:23] if len(when) >= 23 else when
    message = _safe(str(row.get("evt_message", "")).replace("\n", " "))
    if len(message) > _MESSAGE_WIDTH:
        message = message[: _MESSAGE_WIDTH - 1] + "…"
    trace = _safe(row.get("trace_id", ""))
    span = _safe(row.get("span_name", ""))
    return (
        f"{clock}  {_safe(row.get('evt_type', '')):<21} {span[:28]:<28} trace={trace[:12] or '-':<12}  "
        f"{_safe(row.get('agent_id', ''))[:64]}: {message}"
    )


def print_rows(rows: Iterable[dict[str, Any]], out: TextIO, *, as_json: bool = False) -> None:
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
        """Print the rows not printed yet, as they are read; return how many."""
        printed = 0
        with self._lock:  # stop() polls once more from another thread
            for row in self._cursor.stream():
                self._out.write((json.dumps(row) if self._json else format_row(row)) + "\n")
                printed += 1
                if self._on_row:
                    self._on_row(row)
            self.count += printed
        self._out.flush()
        return printed

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
