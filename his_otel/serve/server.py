"""``StatusServer``: the session stream and page on uvicorn, with the bridge's conventions."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import uvicorn

from .. import config
from ..bridge.auth import check_bind, resolve_token
from ..bridge.server import bound_socket
from ..write.client import configured_endpoint
from ..write.table import make_client
from .app import StatusApp
from .hub import SessionHub

logger = logging.getLogger(__name__)

ENV_HOST = "HIS_OTEL_SERVE_HOST"
ENV_PORT = "HIS_OTEL_SERVE_PORT"
ENV_TOKEN = "HIS_OTEL_SERVE_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_TOKEN_FILE = "HIS_OTEL_SERVE_TOKEN_FILE"  # noqa: S105
ENV_ALLOW_UNAUTHENTICATED = "HIS_OTEL_SERVE_ALLOW_UNAUTHENTICATED"
ENV_POLL_MS = "HIS_OTEL_SERVE_POLL_MS"
ENV_TRACE_URL = "HIS_OTEL_SERVE_TRACE_URL"
DEFAULT_PORT = 4321
DEFAULT_POLL_MS = 250
DEFAULT_TRACE_URL = "http://localhost:16686/trace/{trace_id}"
DRAIN_S = 5  # open streams end at once on SIGTERM; this bounds a slow request's finish


class StatusServer:
    """Serves ``/sessions/{id}`` (page), ``/events`` (AG-UI over SSE) and ``/rows`` for one table.
    Every argument falls back to its ``HIS_OTEL_*`` variable.

    Args:
        table_name: The status table (``HIS_OTEL_TABLE``). Needs ``dynamodb:Query`` only.
        host, port: Address (``HIS_OTEL_SERVE_HOST``/``_PORT``; 127.0.0.1:4321). Port 0: a free one.
        token, token_file: Require the bearer token (``HIS_OTEL_SERVE_TOKEN``, ``..._TOKEN_FILE``).
            Without one, only a loopback address is allowed unless ``allow_unauthenticated``
            (``HIS_OTEL_SERVE_ALLOW_UNAUTHENTICATED``).
        poll_ms: How often each watched session is read (``HIS_OTEL_SERVE_POLL_MS``, 250).
        trace_url: The page's link for a row's trace, ``{trace_id}`` filled in
            (``HIS_OTEL_SERVE_TRACE_URL``, Jaeger on localhost).
        window_s: The cursor's re-read window (``HIS_OTEL_READ_WINDOW_MS``, 60 s).
        client, endpoint_url: The DynamoDB client, or its endpoint; else boto3's environment.
    """

    def __init__(
        self,
        table_name: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        token: str | None = None,
        token_file: str | None = None,
        allow_unauthenticated: bool | None = None,
        poll_ms: int | None = None,
        trace_url: str | None = None,
        window_s: float | None = None,
        client: Any = None,
        endpoint_url: str | None = None,
    ) -> None:
        table = config.resolve_str(table_name, config.ENV_TABLE)
        if not table:
            raise ValueError(f"his-otel serve needs a table: pass --table or set {config.ENV_TABLE}")
        self._host = config.resolve_str(host, ENV_HOST, "127.0.0.1").strip()
        if not self._host:
            raise ValueError("the listen address is empty: give a host, e.g. 127.0.0.1 or 0.0.0.0")
        self._port = config.resolve_int(port, ENV_PORT, DEFAULT_PORT, minimum=0, maximum=65535)
        secret = resolve_token(token, token_file, ENV_TOKEN, ENV_TOKEN_FILE)
        check_bind(
            self._host,
            secret,
            allow_unauthenticated,
            env=ENV_TOKEN,
            env_file=ENV_TOKEN_FILE,
            env_allow=ENV_ALLOW_UNAUTHENTICATED,
            danger="read every session's status rows",
        )
        interval_s = config.resolve_int(poll_ms, ENV_POLL_MS, DEFAULT_POLL_MS, minimum=10) / 1000
        link = config.resolve_str(trace_url, ENV_TRACE_URL, DEFAULT_TRACE_URL)
        if client is None:
            client = make_client(configured_endpoint(endpoint_url))
        self.hub = SessionHub(table, client, interval_s=interval_s, window_s=window_s)
        self.status = StatusApp(self.hub, secret, link)
        self._server: uvicorn.Server | None = None
        self._socket: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._socket is not None, "call bind() or start() first"
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def bind(self) -> None:
        """Take the address now (a clash is an ``OSError`` naming it); serving starts with :meth:`start`."""
        if self._socket is None:
            self._socket = bound_socket(self._host, self._port)
            cfg = uvicorn.Config(
                self.status.app,
                lifespan="on",
                loop="asyncio",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=DRAIN_S,
            )
            self._server = uvicorn.Server(cfg)

    def start(self, timeout_s: float = 30.0) -> StatusServer:
        """Serve on a background thread; returns once it listens."""
        self.bind()
        server, sock = self._server, self._socket
        assert server is not None
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._serve(server, sock))
            except BaseException as e:
                failure.append(e)

        self._thread = threading.Thread(target=run, name="his-otel-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if failure or not server.started:
            sock.close()
            raise OSError(f"his-otel serve did not start: {failure[0] if failure else 'see the log'}")
        return self

    async def _serve(self, server: uvicorn.Server, sock: Any) -> None:
        self._loop = asyncio.get_running_loop()
        await server.serve(sockets=[sock])

    def shutdown(self) -> None:
        """End every open stream, stop accepting, finish the requests in progress. Idempotent."""
        if self._server is None or self._thread is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # Streams never end by themselves: tell them first, so uvicorn's drain is short.
            loop.call_soon_threadsafe(self.status.stopping.set)
        self._server.should_exit = True
        self._thread.join(DRAIN_S + 10)
        self._thread = None
