"""OTLP/HTTP as an ASGI app (served by uvicorn): ``POST /v1/traces`` and ``/v1/logs``, ``/health``,
``/ready``, ``/stats``.

HTTP itself (chunked and Content-Length bodies, keep-alive, flow control, the connection cap) is the
server's; this app decides, before it reads a body, whether the request may go on (auth, declared
size, a free slot), then reads the body under a deadline and a size cap, and answers as OTLP/HTTP
specifies. A response sent before the body was read whole closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from google.protobuf import json_format
from google.rpc.status_pb2 import Status

from ..write.throttled_log import ThrottledLog
from .auth import TokenCheck
from .decode import (
    JSON,
    PROTOBUF,
    SIGNALS,
    BadRequestError,
    Signal,
    TooLargeError,
    UnsupportedError,
    decompress,
)
from .ingest import RETRY_AFTER_S, Answer, Ingest
from .limits import Limits, Readers, Slots

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BY_PATH = {signal.path: signal for signal in SIGNALS}
LIVE_PATHS = ("/health", "/healthz", "/livez")
READY_PATHS = ("/ready", "/readyz")


class _DisconnectedError(Exception):
    """The sender went away mid-body: nobody is left to answer."""


class _ReplyError(Exception):
    """Answer now with ``status`` and an OTLP ``Status`` message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: int | None = None,
        close: bool = False,
        unread: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.close = close
        self.unread = unread
        """Refused before the body was read: read (and drop) a little of it before answering."""


class OTLPHttpApp:
    """The ASGI app. ``on_startup``/``on_shutdown`` run in the server's lifespan (the gRPC receiver
    shares the server's event loop)."""

    def __init__(
        self,
        ingest: Ingest,
        limits: Limits,
        slots: Slots,
        readers: Readers,
        token: TokenCheck,
        *,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.ingest = ingest
        self.limits = limits
        self.slots = slots
        self.readers = readers
        self.token = token
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.stopping = False
        self.startup_error = ""
        self._log = ThrottledLog(logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.on_startup is not None:
                        await self.on_startup()
                except Exception as e:
                    self.startup_error = f"{type(e).__name__}: {e}"
                    await send({"type": "lifespan.startup.failed", "message": self.startup_error})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stopping = True
                if self.on_shutdown is not None:
                    await self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        as_json = headers.get("content-type", "").split(";", 1)[0].strip().lower() == JSON
        path = scope.get("path", "").rstrip("/") or "/"
        method = scope.get("method", "GET")
        if path not in BY_PATH:
            as_json = True  # /stats, /health, a wrong path: answered in JSON, whoever asks
        try:
            signal = BY_PATH.get(path)
            if signal is not None:
                if method != "POST":
                    raise _ReplyError(405, f"{path} takes POST", close=True)
                peer = str((scope.get("client") or ("",))[0])
                await self._export(signal, headers, receive, send, as_json, peer)
            elif method in ("GET", "HEAD") and path in LIVE_PATHS:
                # Liveness says only that the process answers: it names nothing a stranger could use.
                await _send_json(send, 200, {"status": "ok"})
            elif method in ("GET", "HEAD") and path in READY_PATHS:
                loop = asyncio.get_running_loop()
                ready, cause = await loop.run_in_executor(self.slots.executor, self.ingest.readiness)
                body = {"status": "ready"} if ready else {"status": "unavailable", "cause": cause}
                await _send_json(send, 200 if ready else 503, body)
            elif method == "GET" and path == "/stats":
                if not self.token.allows(headers.get("authorization")):
                    raise _ReplyError(401, "missing or wrong bearer token")
                table = self.ingest.exporter.table_name
                await _send_json(send, 200, {"table": table, "pid": os.getpid(), **self.ingest.snapshot()})
            else:
                raise _ReplyError(
                    404, f"no such path {path[:100]!r}; OTLP goes to {', '.join(BY_PATH)}", close=True
                )
        except _ReplyError as reply:
            if reply.status in (429, 503):
                self.ingest.count(retry_requests=1)
            elif reply.status >= 400:
                self.ingest.count(rejected_requests=1)
                self._log.info(
                    str(reply.status), "status=<%d>, reason=<%s> | request refused", reply.status, reply
                )
            if reply.unread:
                await _drain(receive)
            await _send_status(send, reply, as_json)
        except _DisconnectedError:
            logger.debug("sender disconnected mid-body")

    async def _export(
        self, signal: Signal, headers: dict[str, str], receive: Receive, send: Send, as_json: bool, peer: str
    ) -> None:
        if self.stopping:
            raise _ReplyError(503, "bridge shutting down", retry_after=RETRY_AFTER_S, close=True, unread=True)
        if not self.token.allows(headers.get("authorization")):
            raise _ReplyError(401, "missing or wrong bearer token", close=True, unread=True)
        content_type = headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() not in (JSON, PROTOBUF):
            raise _ReplyError(
                415, f"unsupported Content-Type {content_type[:100]!r}; use {PROTOBUF} or {JSON}", close=True
            )
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise _ReplyError(
                413,
                f"body of {declared} bytes is over the {self.limits.max_body_bytes}-byte limit",
                close=True,
            )
        if "transfer-encoding" in headers and "content-length" in headers:
            # RFC 9112 6.1: a proxy that went by the other header would see another request here.
            raise _ReplyError(400, "both Content-Length and Transfer-Encoding", close=True)
        # A place among the bodies in transit, in all and for this peer, before the body is read: a
        # slow body holds only its own place, and their memory is bounded.
        if not self.readers.take(peer):
            raise _ReplyError(503, "bridge busy", retry_after=1, close=True, unread=True)
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.limits.body_timeout_s)
        except asyncio.TimeoutError:
            raise _ReplyError(
                408, f"body not received within {self.limits.body_timeout_s:g}s", close=True
            ) from None
        finally:
            self.readers.give(peer)
        # A slot to decode and write: only whole bodies wait for one.
        if not self.slots.take():
            raise _ReplyError(503, "bridge busy", retry_after=1)
        try:
            loop = asyncio.get_running_loop()
            try:
                status, payload = await loop.run_in_executor(
                    self.slots.executor,
                    self._process,
                    signal,
                    body,
                    headers.get("content-encoding", ""),
                    content_type,
                    as_json,
                )
            except asyncio.CancelledError:
                self.ingest.count(cut_off_requests=1)  # a forced shutdown: the sender will send it again
                raise
        finally:
            self.slots.give()
        if isinstance(payload, _ReplyError):
            raise payload
        media = JSON if as_json else PROTOBUF
        await _send(send, status, payload, media)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _DisconnectedError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise _ReplyError(413, f"body over the {self.limits.max_body_bytes}-byte limit", close=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _process(
        self, signal: Signal, body: bytes, encoding: str, content_type: str, as_json: bool
    ) -> tuple[int, bytes | _ReplyError]:
        """On a worker thread: decode, write, and say what to answer."""
        try:
            received = signal.parse(decompress(body, encoding, self.limits.max_body_bytes), content_type)
        except UnsupportedError as e:
            return 415, _ReplyError(415, str(e))
        except TooLargeError as e:
            return 413, _ReplyError(413, str(e))
        except BadRequestError as e:
            return 400, _ReplyError(400, str(e))
        verdict = self.ingest.handle(received)
        if verdict.answer is Answer.THROTTLED:
            return 429, _ReplyError(429, verdict.message, retry_after=verdict.retry_after_s)
        if verdict.answer is Answer.UNAVAILABLE:
            return 503, _ReplyError(503, verdict.message, retry_after=verdict.retry_after_s)
        response = signal.answer(verdict.rejected, verdict.message)
        payload = json_format.MessageToJson(response).encode() if as_json else response.SerializeToString()
        return 200, payload


DRAIN_BYTES = 1024 * 1024
DRAIN_S = 1.0


async def _drain(receive: Receive) -> None:
    """Read and drop up to ``DRAIN_BYTES`` of an unread body for at most ``DRAIN_S``. A connection
    closed with request bytes unread is reset, and a sender still sending then sees the reset, not
    the answer (a 503's Retry-After, a 401's reason); a small body is taken whole, so it reads them."""

    async def drop() -> None:
        taken = 0
        while taken <= DRAIN_BYTES:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return
            taken += len(message.get("body", b""))

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(drop(), DRAIN_S)


async def _send(
    send: Send, status: int, body: bytes, media: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", media.encode()),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, document: dict[str, Any]) -> None:
    await _send(send, status, json.dumps(document).encode(), JSON)


async def _send_status(send: Send, reply: _ReplyError, as_json: bool) -> None:
    """An error answer: OTLP's ``google.rpc.Status`` in the request's encoding."""
    status = Status(code=reply.status, message=str(reply))
    extra: list[tuple[bytes, bytes]] = []
    if reply.retry_after is not None:
        extra.append((b"retry-after", str(reply.retry_after).encode()))
    if reply.close:
        # The body was not read (or not whole): the connection cannot carry another request.
        extra.append((b"connection", b"close"))
    if reply.status == 401:
        extra.append((b"www-authenticate", b"Bearer"))
    if reply.status == 405:
        extra.append((b"allow", b"POST"))
    body = json_format.MessageToJson(status).encode() if as_json else status.SerializeToString()
    await _send(send, reply.status, body, JSON if as_json else PROTOBUF, extra)
