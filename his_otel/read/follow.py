"""Rendering a session's rows as a readable timeline, and following new ones as they land."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, TextIO

from .session import session_rows

_MESSAGE_WIDTH = 90
# Rows can land out of order (a retried batch lands after a later one); re-read this far back.
_LOOKBACK_MS = 15_000


def _event_ms(event_id: str) -> int | None:
    """The millisecond timestamp of a UUIDv7 event id (None for other ids, e.g. here-i-strand's UUID4)."""
    digits = event_id.replace("-", "")
    if len(digits) != 32 or digits[12] != "7":
        return None
    try:
        return int(digits[:12], 16)
    except ValueError:
        return None


def _lower_bound(ms: int) -> str:
    """The smallest UUIDv7 string made at ``ms``: a sort-key bound for DynamoDB queries."""
    digits = f"{max(0, ms):012x}"
    return f"{digits[:8]}-{digits[8:12]}"


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
    """Polls a session's rows and prints each new one once, in ``event_id`` order."""

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
    ) -> None:
        self._client = client
        self._table = table
        self._session = session_id
        self._out = out
        self._interval = interval_s
        self._json = as_json
        self._on_row = on_row
        self.rows: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._newest_ms: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> int:
        """Print rows newer than the last one printed; return how many."""
        after = None if self._newest_ms is None else _lower_bound(self._newest_ms - _LOOKBACK_MS)
        rows = [
            r
            for r in session_rows(self._client, self._table, self._session, after=after)
            if r["event_id"] not in self._seen
        ]
        if rows:
            for row in rows:
                self._seen.add(row["event_id"])
                ms = _event_ms(row["event_id"])
                if ms is not None and (self._newest_ms is None or ms > self._newest_ms):
                    self._newest_ms = ms
            self.rows.extend(rows)
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
