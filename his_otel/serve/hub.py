"""One reader per session, shared by everyone watching it.

Every viewer polling DynamoDB itself costs one Query per viewer per interval. A :class:`SessionHub`
keeps one :class:`~his_otel.read.SessionCursor` per session that someone watches (or asked for in the
last ``linger_s``), polls it every ``interval_s`` on a worker thread, and keeps the session's rows in
memory in the order they were read: each viewer reads from that list at its own pace. So the Query
rate is one per interval per watched session, whatever the number of viewers; memory is the rows of
the watched sessions, released ``linger_s`` after the last viewer leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..read.cursor import FUTURE_SLACK_MS, Row, SessionCursor, believable_ms

logger = logging.getLogger(__name__)

# A reader that fails (DynamoDB unreachable, throttled) retries after this, doubling up to the cap.
_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 10.0


@dataclass
class HubStats:
    sessions: int
    viewers: int
    polls: int
    rows: int
    poll_errors: int


class Feed:
    """One session's rows as read so far, and the reader that adds to them."""

    def __init__(self, hub: SessionHub, session_id: str) -> None:
        self.session_id = session_id
        self.rows: list[Row] = []
        self.times: dict[str, int | None] = {}
        """Each row's emission time (None: none to believe), worked out once for every viewer."""
        self.viewers = 0
        self.polls = 0
        self.error: str | None = None
        self.loaded = asyncio.Event()
        self._grown = asyncio.Event()
        self._hub = hub
        self._left_at = time.monotonic()
        self._cursor = SessionCursor(hub.table, session_id, client=hub.client, window_s=hub.window_s)
        self.window_ms = self._cursor.window_ms
        self.task: asyncio.Task[None] | None = None

    async def wait_beyond(self, count: int, timeout_s: float) -> bool:
        """Wait until the feed holds more than ``count`` rows; False after ``timeout_s``."""
        if len(self.rows) > count:
            return True
        grown = self._grown
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(grown.wait(), timeout_s)
        return len(self.rows) > count

    async def run(self) -> None:
        retry = _RETRY_MIN_S
        while self.viewers > 0 or time.monotonic() - self._left_at < self._hub.linger_s:
            try:
                fresh = await asyncio.to_thread(self._cursor.poll)
            except Exception as e:
                self.error = f"{type(e).__name__}: {e}"
                self._hub.poll_errors += 1
                logger.warning("his-otel serve: reading session %r failed (%s); retrying", self.session_id, e)
                self.loaded.set()  # the waiting requests answer with the error instead of hanging
                await asyncio.sleep(retry)
                retry = min(retry * 2, _RETRY_MAX_S)
                continue
            retry, self.error = _RETRY_MIN_S, None
            self.polls += 1
            self._hub.polls += 1
            if fresh:
                latest = int(time.time() * 1000) + FUTURE_SLACK_MS
                self.times.update((r["event_id"], believable_ms(r["event_id"], latest)) for r in fresh)
                self.rows.extend(fresh)
                self._grown.set()
                self._grown = asyncio.Event()
            self.loaded.set()
            await asyncio.sleep(self._hub.interval_s)
        self._hub.forget(self)


class SessionHub:
    """The feeds of the sessions being watched in this process (one event loop)."""

    def __init__(
        self, table: str, client: Any, *, interval_s: float, window_s: float | None, linger_s: float = 30.0
    ) -> None:
        self.table, self.client = table, client
        self.interval_s, self.window_s, self.linger_s = interval_s, window_s, linger_s
        self._feeds: dict[str, Feed] = {}
        self.polls = 0
        self.poll_errors = 0

    @contextlib.asynccontextmanager
    async def watch(self, session_id: str) -> AsyncIterator[Feed]:
        """The session's feed, started if nobody watched it, after its first read (which may have
        failed: ``error`` says so and the reader retries)."""
        feed = self._feeds.get(session_id)
        if feed is None:
            feed = self._feeds[session_id] = Feed(self, session_id)
            feed.task = asyncio.create_task(feed.run(), name=f"his-otel-feed-{session_id[:32]}")
        feed.viewers += 1
        try:
            await feed.loaded.wait()
            yield feed
        finally:
            feed.viewers -= 1
            if feed.viewers == 0:
                feed._left_at = time.monotonic()

    def forget(self, feed: Feed) -> None:
        if self._feeds.get(feed.session_id) is feed:
            del self._feeds[feed.session_id]

    def stats(self) -> HubStats:
        feeds = list(self._feeds.values())
        return HubStats(
            sessions=len(feeds),
            viewers=sum(f.viewers for f in feeds),
            polls=self.polls,
            rows=sum(len(f.rows) for f in feeds),
            poll_errors=self.poll_errors,
        )

    async def close(self) -> None:
        for feed in list(self._feeds.values()):
            if feed.task is not None:
                feed.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feed.task
        self._feeds.clear()


__all__ = ["Feed", "HubStats", "SessionHub"]
