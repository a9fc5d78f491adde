"""Reading a session's rows back, in sort-key (emission) order."""

from __future__ import annotations

from typing import Any

from .cursor import iter_rows


def session_rows(
    client: Any, table: str, session_id: str, *, after: str | None = None
) -> list[dict[str, Any]]:
    """A session's rows in ``event_id`` order (emission order), optionally only those after ``after``."""
    return list(iter_rows(client, table, session_id, after=after))
