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
import hashlib
import heapq
import logging
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import config
from .run_end import RunEnd
from .sketch import Sketch

logger = logging.getLogger(__name__)

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


def believable_ms(event_id: str, latest_ms: int) -> int | None:
    """The id's time, or None for an id without one or one too far ahead to believe."""
    ms = event_ms(event_id)
    return None if ms is None or ms > latest_ms else ms


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


_TOKEN_VERSION = 3
_NO_TIME = (1 << 48) - 1
# version, newest ms, window ms, newest timed id, the session's tag
_TOKEN_HEAD = struct.Struct(">B6sI16s4s")


def session_tag(session_id: str) -> bytes:
    """Four bytes naming a session in a token: a token of another session is refused, not
    misread (its window would skip the older rows of this one)."""
    return hashlib.blake2b(session_id.encode(), digest_size=4).digest()


@dataclass
class Position:
    """Where a cursor stands: the newest emission time delivered and the ids delivered since
    ``newest - window`` (plus ids without a believable time). Serialisable with :meth:`token`.

    In memory the ids are kept exactly. A token keeps them as a fixed-size :class:`Sketch`, so it is
    about 450 characters however many rows the window holds; resuming from one re-reads the window
    and recovers the rows that landed since from the sketch (see :meth:`SessionCursor.stream`).
    """

    newest_ms: int | None = None
    recent: dict[str, int | None] = field(default_factory=dict)
    newest_id: str | None = None
    """The newest delivered id with a believable time: any later one has not been delivered."""
    sketch: Sketch = field(default_factory=Sketch)
    """The ids of ``recent``, summarised; kept in step with it."""
    resume_window_ms: int | None = None
    """Set for a position read from a token: the window the token's sketch covers, re-read once."""
    session: bytes = b""
    """For a position read from a token: the tag of the session it was made for."""

    by_time: list[tuple[int, str]] = field(default_factory=list, repr=False)
    """A heap of the timed ids of ``recent``, so pruning costs what it removes."""

    def remember(self, event_id: str, ms: int | None) -> None:
        self.recent[event_id] = ms
        self.sketch.add(event_id)
        if ms is not None:
            heapq.heappush(self.by_time, (ms, event_id))
            if self.newest_ms is None or ms > self.newest_ms:
                self.newest_ms = ms
            if self.newest_id is None or event_id > self.newest_id:
                self.newest_id = event_id

    def delivered(self, event_id: str, ms: int | None, window_ms: int) -> bool:
        """Whether a row was delivered (or, older than the window, is never to be)."""
        if event_id in self.recent:
            return True
        return ms is not None and self.newest_ms is not None and ms < self.newest_ms - window_ms

    def prune(self, window_ms: int) -> None:
        if self.newest_ms is None:
            return
        horizon = self.newest_ms - window_ms
        while self.by_time and self.by_time[0][0] < horizon:
            _, event_id = heapq.heappop(self.by_time)
            if event_id in self.recent:
                del self.recent[event_id]
                self.sketch.remove(event_id)

    def resume_bound(self) -> str | None:
        """For a position read from a token: the sort key after which its window starts."""
        window = self.resume_window_ms or DEFAULT_READ_WINDOW_MS
        return None if self.newest_ms is None else lower_bound(self.newest_ms - window)

    def resume(self, window_rows: list[Row], session_id: str) -> tuple[list[Row], bool]:
        """For a position read from a token, given the rows after :meth:`resume_bound` in
        ``event_id`` order: remember the ones delivered before (the sketch tells them from the ones
        that landed since) and return the rest, for the caller to deliver and :meth:`remember`;
        and whether the sketch told them apart (when not, every row it could not clear is returned:
        repeated, never skipped)."""
        latest_believable = int(time.time() * 1000) + FUTURE_SLACK_MS
        times = {row["event_id"]: believable_ms(row["event_id"], latest_believable) for row in window_rows}
        # Rows after the newest timed id delivered are new; the rest were maybe delivered before.
        maybe = [
            event_id
            for event_id, ms in times.items()
            if ms is None or (self.newest_id is not None and event_id <= self.newest_id)
        ]
        landed_since = self.sketch.difference(maybe)
        told_apart = landed_since is not None
        if not told_apart:
            logger.warning(
                "his-otel: a session cursor token for %r could not tell which of the %d rows of its"
                " window it had delivered (more rows landed late since it was made than it can tell"
                " apart): they are delivered again, never skipped",
                session_id,
                len(window_rows),
            )
        before = set(maybe) - (landed_since if landed_since is not None else set(maybe))
        self.recent, self.sketch, self.by_time, self.resume_window_ms = {}, Sketch(), [], None
        for event_id in before:
            self.remember(event_id, times[event_id])
        return [row for row in window_rows if row["event_id"] not in before], told_apart

    def token(self, window_ms: int = DEFAULT_READ_WINDOW_MS, session_id: str | None = None) -> str:
        """A small text that :meth:`from_token` turns back into this position (URL-safe). It covers
        ``window_ms``: ids older than that are forgotten first (they would only crowd the sketch)."""
        self.prune(window_ms)
        newest = _NO_TIME if self.newest_ms is None else self.newest_ms
        ident = uuid.UUID(self.newest_id).bytes if self.newest_id else bytes(16)
        tag = session_tag(session_id) if session_id is not None else bytes(4)
        head = _TOKEN_HEAD.pack(_TOKEN_VERSION, newest.to_bytes(6, "big"), window_ms, ident, tag)
        return base64.urlsafe_b64encode(head + self.sketch.to_bytes()).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str, session_id: str | None = None) -> Position:
        """Raises ValueError for a token this module did not make, or one made for another session
        than ``session_id`` (when given)."""
        try:
            data = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
            version, newest, window_ms, ident, tag = _TOKEN_HEAD.unpack_from(data)
            if version != _TOKEN_VERSION:
                raise ValueError(f"version {version}")
            sketch = Sketch.from_bytes(data[_TOKEN_HEAD.size :])
        except (ValueError, UnicodeError, struct.error) as e:
            raise ValueError(f"not a session cursor token: {e}") from None
        newest_ms = int.from_bytes(newest, "big")
        position = cls(
            newest_ms=None if newest_ms == _NO_TIME else newest_ms,
            newest_id=str(uuid.UUID(bytes=ident)) if any(ident) else None,
            sketch=sketch,
            resume_window_ms=max(1, window_ms),
            session=tag if any(tag) else b"",
        )
        if session_id is not None:
            position.check_session(session_id)
        return position

    def check_session(self, session_id: str) -> None:
        """Raises ValueError when this position was read from a token of another session."""
        if self.session and self.session != session_tag(session_id):
            raise ValueError(f"this cursor token was made for another session than {session_id[:200]!r}")


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
        if position is not None:
            position.check_session(session_id)
        self.position = position or Position()
        self.resume_failures = 0
        """Resumes from a token whose sketch could not tell the rows apart (they were re-delivered)."""

    @property
    def window_ms(self) -> int:
        return self._window_ms

    def token(self) -> str:
        """The position as a small URL-safe text, for :meth:`Position.from_token`."""
        return self.position.token(self._window_ms, self._session)

    def poll(self) -> list[Row]:
        """The rows not delivered yet, in ``event_id`` order."""
        return list(self.stream())

    def stream(self) -> Iterator[Row]:
        """:meth:`poll` as the pages arrive: the rows not delivered yet, in ``event_id`` order.
        A row counts as delivered once it is yielded."""
        pos = self.position
        if pos.resume_window_ms is not None:
            yield from self._resume()
            return
        after = None if pos.newest_ms is None else lower_bound(pos.newest_ms - self._window_ms)
        latest_believable = int(time.time() * 1000) + FUTURE_SLACK_MS
        delivered = 0
        for row in iter_rows(self._client, self._table, self._session, after=after):
            event_id = row["event_id"]
            if event_id in pos.recent:
                continue
            pos.remember(event_id, believable_ms(event_id, latest_believable))
            delivered += 1
            if delivered % _PRUNE_EVERY == 0:
                pos.prune(self._window_ms)
            yield row
        if delivered:
            pos.prune(self._window_ms)

    def _resume(self) -> Iterator[Row]:
        """The first poll from a token: re-read the token's window and deliver what it lacks."""
        pos = self.position
        rows = list(iter_rows(self._client, self._table, self._session, after=pos.resume_bound()))
        fresh, told_apart = pos.resume(rows, self._session)
        self.resume_failures += not told_apart
        latest_believable = int(time.time() * 1000) + FUTURE_SLACK_MS
        for row in fresh:
            pos.remember(row["event_id"], believable_ms(row["event_id"], latest_believable))
            yield row
        pos.prune(self._window_ms)

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
