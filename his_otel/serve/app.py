"""The read side's HTTP routes (Starlette, already in the tree through Strands' MCP support).

- ``GET /sessions/{id}/rows?cursor=...``: the rows the caller has not seen and its next cursor;
- ``GET /sessions/{id}/events``: AG-UI events over server-sent events, a replay of the session then
  its rows as they land; ``Last-Event-ID`` (sent by browsers when they reconnect) resumes after the
  last row the client received, through a restart of this service too: each event id is a cursor;
- ``GET /sessions/{id}``: the session page; ``GET /health``; ``GET /stats``.

Every route but ``/health`` needs the bearer token when one is set, as ``Authorization: Bearer`` or,
for a browser's page and its event stream (which cannot send headers), ``?access_token=``
(RFC 6750, section 2.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import json
import logging
from collections.abc import AsyncIterator
from importlib import resources

from ag_ui.encoder import EventEncoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..agui import AGUIMapper
from ..bridge.auth import TokenCheck
from ..read.cursor import Position, Row
from .hub import Feed, SessionHub

logger = logging.getLogger(__name__)

HEARTBEAT_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
RETRY_MS = 1000  # how soon a browser reconnects after the stream breaks (the SSE ``retry`` field)
MAX_SESSION_ID = 2048  # DynamoDB's partition key limit


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class StatusApp:
    """The routes, over one :class:`SessionHub`."""

    def __init__(self, hub: SessionHub, token: str | None, trace_url: str) -> None:
        self.hub = hub
        self.trace_url = trace_url
        self.stopping = asyncio.Event()
        self._check = TokenCheck(token)
        self._token_set = token is not None
        self.app = Starlette(
            routes=[
                Route("/health", self.health),
                Route("/stats", self.stats),
                Route("/sessions/{session_id:path}/rows", self.rows),
                Route("/sessions/{session_id:path}/events", self.events),
                Route("/sessions/{session_id:path}", self.page),
                Route("/", self.index),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        self.stopping.set()
        await self.hub.close()

    def _allowed(self, request: Request) -> bool:
        if not self._token_set:
            return True
        header = request.headers.get("authorization")
        if header is not None:
            return self._check.allows(header)
        return self._check.allows(f"Bearer {request.query_params.get('access_token', '')}")

    def _refusal(self, request: Request) -> Response | None:
        if not self._allowed(request):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer, or ?access_token=)")
        session_id = request.path_params.get("session_id")
        if session_id is not None and not 0 < len(session_id.encode()) <= MAX_SESSION_ID:
            return _error(400, f"a session id is 1 to {MAX_SESSION_ID} bytes")
        return None

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {"status": "stopping" if self.stopping.is_set() else "ok", "table": self.hub.table}
        )

    async def stats(self, request: Request) -> Response:
        return self._refusal(request) or JSONResponse(dataclasses.asdict(self.hub.stats()))

    async def rows(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        session_id = request.path_params["session_id"]
        cursor = request.query_params.get("cursor")
        try:
            position = Position.from_token(cursor, session_id) if cursor else Position()
        except ValueError as e:
            return _error(400, str(e))
        async with self.hub.watch(session_id) as feed:
            if feed.polls == 0:
                return _error(503, f"cannot read session {session_id!r} yet: {feed.error}")
            fresh = _undelivered(feed, feed.rows, position)
            for row in fresh:
                position.remember(row["event_id"], feed.times[row["event_id"]])
            return JSONResponse({"rows": fresh, "cursor": position.token(feed.window_ms, session_id)})

    async def events(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        session_id = request.path_params["session_id"]
        last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        try:
            position = Position.from_token(last, session_id) if last else Position()
        except ValueError as e:
            return _error(400, f"Last-Event-ID: {e}")
        return StreamingResponse(
            self._stream(request, session_id, position),
            media_type=EventEncoder().get_content_type(),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _stream(self, request: Request, session_id: str, position: Position) -> AsyncIterator[str]:
        encoder = EventEncoder()
        mapper = AGUIMapper(session_id)
        yield f"retry: {RETRY_MS}\n\n"
        async with self.hub.watch(session_id) as feed:
            seen = len(feed.rows)  # the feed grows while this generator waits on its client
            resumed = position.resume_window_ms is not None
            fresh = _undelivered(feed, feed.rows[:seen], position)
            if resumed:
                # The mapper learns the runs and tool calls still open from the rows sent before.
                sending = {r["event_id"] for r in fresh}
                for row in feed.rows[:seen]:
                    if row["event_id"] not in sending:
                        mapper.events(row)
            for row in fresh:
                yield self._frame(encoder, mapper, position, feed, row)
            while not self.stopping.is_set():
                for row in feed.rows[seen:]:
                    seen += 1
                    if not position.delivered(row["event_id"], feed.times[row["event_id"]], feed.window_ms):
                        yield self._frame(encoder, mapper, position, feed, row)
                if not await self._wait(feed, seen):
                    if await request.is_disconnected():
                        return
                    yield ": keep-alive\n\n"

    async def _wait(self, feed: Feed, seen: int) -> bool:
        stop = asyncio.ensure_future(self.stopping.wait())
        grow = asyncio.ensure_future(feed.wait_beyond(seen, HEARTBEAT_S))
        done, pending = await asyncio.wait({stop, grow}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return grow in done and grow.result()

    @staticmethod
    def _frame(encoder: EventEncoder, mapper: AGUIMapper, position: Position, feed: Feed, row: Row) -> str:
        """One row's events, written at once; the last carries the cursor after the row as its id."""
        position.remember(row["event_id"], feed.times[row["event_id"]])
        events = mapper.events(row)
        frames = [encoder.encode(event) for event in events]
        frames[-1] = f"id: {position.token(feed.window_ms, feed.session_id)}\n{frames[-1]}"
        return "".join(frames)

    async def page(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        template = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
        settings = {"session": request.path_params["session_id"], "traceUrl": self.trace_url}
        body = template.replace("{{SETTINGS}}", html.escape(json.dumps(settings), quote=True))
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    async def index(self, request: Request) -> Response:
        return HTMLResponse(
            "<!doctype html><title>his-otel</title><p>Open <code>/sessions/&lt;session id&gt;</code>"
            " to watch a session.</p>"
        )


def _undelivered(feed: Feed, rows: list[Row], position: Position) -> list[Row]:
    """The rows of ``rows`` (the feed's, in the order read) that ``position`` has not delivered, in
    the order to send them."""
    if position.resume_window_ms is not None:
        after = position.resume_bound()
        in_window = sorted((r for r in rows if after is None or r["event_id"] > after), key=_key)
        return position.resume(in_window, feed.session_id)[0]
    return [
        r for r in rows if not position.delivered(r["event_id"], feed.times[r["event_id"]], feed.window_ms)
    ]


def _key(row: Row) -> str:
    return str(row["event_id"])


__all__ = ["StatusApp"]
