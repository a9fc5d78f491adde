"""Reading a session as it grows: every row once, none missed that lands late, bounded memory.

Rows do not land in sort-key order: a batch retried after a throttle lands after later ones, several
writers and the bridge write at once. A poller that asks only for keys after the last one it saw
misses those. The cursor re-reads a window instead: each poll asks for every row emitted since
``newest - window`` (``event_id`` is a UUIDv7, so its first 48 bits are the emission time in
milliseconds and a time is a sort-key bound), and remembers the ids it delivered inside that window,
forgetting older ones. So:

- a row is delivered once (an id in the window is remembered; one before it is never asked for);
- a row is never missed if it lands less than ``window - interval`` after it was emitted (by the
  emitting host's clock). his-otel's writer lands a row within the batching delay plus the export
  timeout (10 s) while DynamoDB answers; during an outage it keeps rows for ``max_row_age`` (10 min)
  and they land when it ends: a follower that must show those too sets the window that long;
- memory is the ids emitted in the last ``window``, whatever the session's length.

Event ids that are not UUIDv7 (here-i-strand's UUID4 rows) carry no time: those are remembered for
the cursor's life. So are ids whose time is more than ``FUTURE_SLACK_MS`` ahead of this host's clock:
any bridge token holder may write a row with an id of its choosing, and a far-future id must not
move the window past every row still to come (it would blind the cursor for good); it is delivered
once, like any row, and the window stays where real time is.

A poll streams: rows are handed out as pages arrive, and the ids remembered are pruned as it goes,
so a first poll of a long session holds a page and a window, never the whole session.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import config
from .run_end import RunEnd

Row = dict[str, Any]

ENV_READ_WINDOW_MS = "HIS_OTEL_READ_WINDOW_MS"
DEFAULT_READ_WINDOW_MS = 60_000
# Clocks of the hosts that emit rows may run ahead of the reader's by this much.
FUTURE_SLACK_MS = 300_000
_PRUNE_EVERY = 1_000


def event_ms(event_id: str) -> int | None:
    """The millisecond timestamp of a UUIDv7 event id (None for other ids, e.g. UUID4)."""
    digits = event_id.replace("-", "")
    if len(digits) != 32 or digits[12] != "7":
        return None
    try:
        return int(digits[:12], 16)
    except ValueError:
        return None


def lower_bound(ms: int) -> str:
    """The smallest UUIDv7 string made at ``ms``: a sort-key bound for a query."""
    digits = f"{max(0, ms):012x}"
    return f"{digits[:8]}-{digits[8:12]}"


def _plain(item: dict[str, dict[str, Any]]) -> Row:
    out: Row = {}
    for key, typed in item.items():
        ((kind, value),) = typed.items()
        out[key] = int(value) if kind == "N" else value
    return out


def iter_rows(client: Any, table: str, session_id: str, *, after: str | None = None) -> Iterator[Row]:
    """A session's rows in ``event_id`` order, a page at a time (strongly consistent reads)."""
    condition = "session_id = :s"
    values: dict[str, Any] = {":s": {"S": session_id}}
    if after:
        condition += " AND event_id > :e"
        values[":e"] = {"S": after}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": values,
        "ConsistentRead": True,
    }
    while True:
        page = client.query(**kwargs)
        for item in page.get("Items", []):
            yield _plain(item)
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@dataclass
class Position:
    """Where a cursor stands: the newest emission time delivered and the ids delivered since
    ``newest - window`` (plus ids without a time). Serialisable with :meth:`token`."""

    newest_ms: int | None = None
    recent: dict[str, int | None] = field(default_factory=dict)

    def token(self) -> str:
        data = {"n": self.newest_ms, "r": self.recent}
        return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()

    @classmethod
    def from_token(cls, token: str) -> Position:
        """Raises ValueError for a token this module did not make."""
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            newest = data["n"]
            recent = {str(k): (int(v) if v is not None else None) for k, v in dict(data["r"]).items()}
            if newest is not None:
                newest = int(newest)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"not a session cursor token: {e}") from None
        return cls(newest, recent)


class SessionCursor:
    """Follows one session's rows: each row once, in ``event_id`` order within a poll.

    Args:
        table: The status table.
        session_id: The session to read.
        client: A boto3 DynamoDB client; default: one for ``AWS_ENDPOINT_URL_DYNAMODB`` (a loopback
            endpoint needs no region or credentials) or AWS.
        window_s: How far back each poll re-reads (``HIS_OTEL_READ_WINDOW_MS``, default 60 s): rows
            that land later than this after being emitted are not delivered.
        position: Where to resume (from :meth:`Position.from_token`); default: the beginning.
    """

    def __init__(
        self,
        table: str,
        session_id: str,
        *,
        client: Any = None,
        window_s: float | None = None,
        position: Position | None = None,
    ) -> None:
        window_ms = config.resolve_int(
            None if window_s is None else int(window_s * 1000),
            ENV_READ_WINDOW_MS,
            DEFAULT_READ_WINDOW_MS,
            minimum=1,
        )
        if client is None:
            from ..write.client import configured_endpoint
            from ..write.table import make_client

            client = make_client(configured_endpoint())
        self._client = client
        self._table = table
        self._session = session_id
        self._window_ms = window_ms
        self.position = position or Position()

    def poll(self) -> list[Row]:
        """The rows not delivered yet, in ``event_id`` order."""
        return list(self.stream())

    def stream(self) -> Iterator[Row]:
        """:meth:`poll` as the pages arrive: the rows not delivered yet, in ``event_id`` order.
        A row counts as delivered once it is yielded."""
        pos = self.position
        after = None if pos.newest_ms is None else lower_bound(pos.newest_ms - self._window_ms)
        latest_believable = int(time.time() * 1000) + FUTURE_SLACK_MS
        delivered = 0
        for row in iter_rows(self._client, self._table, self._session, after=after):
            event_id = row["event_id"]
            if event_id in pos.recent:
                continue
            ms = event_ms(event_id)
            if ms is not None and ms > latest_believable:
                ms = None  # remembered for good; it never moves the window
            pos.recent[event_id] = ms
            if ms is not None and (pos.newest_ms is None or ms > pos.newest_ms):
                pos.newest_ms = ms
            delivered += 1
            if delivered % _PRUNE_EVERY == 0:
                self._prune()
            yield row
        if delivered:
            self._prune()

    def _prune(self) -> None:
        pos = self.position
        if pos.newest_ms is not None:
            horizon = pos.newest_ms - self._window_ms
            pos.recent = {k: ms for k, ms in pos.recent.items() if ms is None or ms >= horizon}

    def follow(
        self,
        *,
        interval_s: float = 0.5,
        until: Callable[[Row], bool] | None = None,
        timeout_s: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Row]:
        """Yield rows as they land until ``until(row)`` is true for one, ``timeout_s`` passes, or
        ``stop`` is set. ``until`` defaults to a :class:`RunEnd`: the row that ends the run this
        cursor saw start. After that row come the rest of its poll and one more poll an interval
        later, for rows emitted with it that landed in another batch; ``until=lambda row: False``
        follows until the timeout or ``stop``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        stop = stop or threading.Event()
        ends = RunEnd() if until is None else until
        ending = False
        while True:
            for row in self.stream():
                yield row
                ending = ends(row) or ending
            wait = interval_s if deadline is None else min(interval_s, deadline - time.monotonic())
            if wait <= 0 or stop.wait(wait):
                return
            if ending:
                yield from self.stream()
                return
