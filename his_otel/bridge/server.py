"""``Bridge``: OTLP/HTTP (uvicorn) and OTLP/gRPC (grpcio) receivers writing milestones as rows.

For deployments whose agents only export OTLP (e.g. on AgentCore Runtime, through a collector). Both
receivers feed one append-only ``DynamoDBSpanExporter``, so rows are those the in-process path writes,
and a request is acknowledged only once its rows are in the table.

uvicorn serves HTTP: it is the ASGI server most Python services already run (Starlette, FastAPI,
and strands-agents' own MCP dependency), parses HTTP with h11 or httptools rather than by hand, and
brings what a receiver facing many senders needs: chunked bodies, keep-alive, flow control, a cap on
connections (``limit_concurrency``), graceful drain, and a supervisor for several worker processes.
grpcio's asyncio server runs in the same event loop, so both share one concurrency limit.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import uvicorn

from .. import config
from ..write.exporter import DynamoDBSpanExporter, MessageFilter
from .auth import TokenCheck, check_bind, resolve_token
from .grpc_service import start_grpc
from .guard import GuardedH11Protocol
from .http_app import OTLPHttpApp
from .ingest import BridgeStats, Ingest
from .limits import Limits, Readers, Slots

logger = logging.getLogger(__name__)

ENV_HOST = "HIS_OTEL_BRIDGE_HOST"
ENV_PORT = "HIS_OTEL_BRIDGE_PORT"
ENV_GRPC = "HIS_OTEL_BRIDGE_GRPC"
ENV_GRPC_PORT = "HIS_OTEL_BRIDGE_GRPC_PORT"
ENV_APPEND_ONLY = "HIS_OTEL_BRIDGE_APPEND_ONLY"
ENV_PUTS_IN_FLIGHT = "HIS_OTEL_BRIDGE_PUTS_IN_FLIGHT"
ENV_DRAIN_TIMEOUT = "HIS_OTEL_BRIDGE_DRAIN_TIMEOUT_MS"

# 4317/4318 belong to the collector (and Jaeger) on the same host.
DEFAULT_PORT = 4319
DEFAULT_GRPC_PORT = 4320
DEFAULT_DRAIN_TIMEOUT_MS = 30_000
KEEP_ALIVE_S = 30  # longer than a collector's batch timeout, so its connections are reused


def switch(arg: bool | None, env: str) -> bool:
    """An on-by-default switch: the argument, else ``env`` (a yes/no; anything else raises)."""
    if arg is not None:
        return arg
    return config.env_flag(env, default=True)


def bound_socket(host: str, port: int) -> socket.socket:
    """A socket bound (not yet listening) to ``host:port``, as uvicorn binds one, but failing with
    an ``OSError`` that names the address (uvicorn's own bind logs and exits the process)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.set_inheritable(True)  # worker processes serve it
    return sock


class Bridge:
    """The OTLP -> DynamoDB bridge. Every argument falls back to its ``HIS_OTEL_*`` variable.

    Args:
        table_name: The one table it writes (``HIS_OTEL_TABLE``). A sender can never choose another.
        host, port: HTTP address (``HIS_OTEL_BRIDGE_HOST``/``_PORT``; 127.0.0.1:4319). Port 0: a free one.
        grpc, grpc_port: Serve OTLP/gRPC too (``HIS_OTEL_BRIDGE_GRPC``, on) on the same host,
            ``HIS_OTEL_BRIDGE_GRPC_PORT`` (4320).
        token, token_file: Require ``Authorization: Bearer <token>`` on both protocols
            (``HIS_OTEL_BRIDGE_TOKEN``, ``HIS_OTEL_BRIDGE_TOKEN_FILE``). Without one, only a loopback
            address is allowed unless ``allow_unauthenticated`` (``HIS_OTEL_BRIDGE_ALLOW_UNAUTHENTICATED``).
        max_body_bytes, max_concurrency, max_connections, body_timeout_millis, write_timeout_millis,
        header_timeout_millis, max_connections_per_peer: see :class:`~his_otel.bridge.limits.Limits`.
        append_only: Never replace an existing row (``HIS_OTEL_BRIDGE_APPEND_ONLY``, on). Off uses
            BatchWriteItem, faster, but a sender can then rewrite any row.
        puts_in_flight: Conditional puts at once (``HIS_OTEL_BRIDGE_PUTS_IN_FLIGHT``, 16).
        client, endpoint_url: The DynamoDB client, or its endpoint; else boto3's environment.
        message_filter: Rewrites each row's text before it is written (redaction); with
            ``HIS_OTEL_MESSAGE_MODE=drop`` rows carry no text at all.
        reuse_port: Let other bridge processes listen for gRPC on the same port (``--workers``).
    """

    def __init__(
        self,
        table_name: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        grpc: bool | None = None,
        grpc_port: int | None = None,
        token: str | None = None,
        token_file: str | None = None,
        allow_unauthenticated: bool | None = None,
        max_body_bytes: int | None = None,
        max_concurrency: int | None = None,
        max_connections: int | None = None,
        body_timeout_millis: int | None = None,
        write_timeout_millis: int | None = None,
        header_timeout_millis: int | None = None,
        max_connections_per_peer: int | None = None,
        append_only: bool | None = None,
        puts_in_flight: int | None = None,
        client: Any = None,
        endpoint_url: str | None = None,
        message_filter: MessageFilter | None = None,
        reuse_port: bool = False,
    ) -> None:
        table = config.resolve_str(table_name, config.ENV_TABLE)
        if not table:
            raise ValueError(f"the bridge needs a table: pass table_name or set {config.ENV_TABLE}")
        self._host = config.resolve_str(host, ENV_HOST, "127.0.0.1").strip()
        if not self._host:
            # An empty host would listen on every interface, which no one means by leaving it blank.
            raise ValueError("the listen address is empty: give a host, e.g. 127.0.0.1 or 0.0.0.0")
        self._port = config.resolve_int(port, ENV_PORT, DEFAULT_PORT, minimum=0, maximum=65535)
        self._grpc = switch(grpc, ENV_GRPC)
        self._grpc_port = config.resolve_int(
            grpc_port, ENV_GRPC_PORT, DEFAULT_GRPC_PORT, minimum=0, maximum=65535
        )
        if self._grpc and self._port and self._port == self._grpc_port:
            raise ValueError(
                f"OTLP/HTTP and OTLP/gRPC cannot share port {self._port}: give --grpc-port another one"
                " (or --no-grpc)"
            )
        secret = resolve_token(token, token_file)
        check_bind(self._host, secret, allow_unauthenticated)
        self.limits = Limits.resolve(
            max_body_bytes,
            max_concurrency,
            max_connections,
            body_timeout_millis,
            write_timeout_millis,
            header_timeout_millis,
            max_connections_per_peer,
        )
        self.exporter = DynamoDBSpanExporter(
            table,
            client=client,
            endpoint_url=endpoint_url,
            honor_event_table=False,
            append_only=switch(append_only, ENV_APPEND_ONLY),
            puts_in_flight=config.resolve_int(puts_in_flight, ENV_PUTS_IN_FLIGHT, 16),
            message_filter=message_filter,
        )
        self.ingest = Ingest(self.exporter, self.limits.write_timeout_s)
        self._slots = Slots(self.limits)
        self._readers = Readers(self.limits)
        self._token = TokenCheck(secret)
        self._reuse_port = reuse_port
        self.app = OTLPHttpApp(
            self.ingest,
            self.limits,
            self._slots,
            self._readers,
            self._token,
            on_startup=self._startup,
            on_shutdown=self._on_shutdown,
        )
        self._drain_s = config.resolve_int(None, ENV_DRAIN_TIMEOUT, DEFAULT_DRAIN_TIMEOUT_MS) / 1000
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grpc_server: Any = None
        self._grpc_stopping: asyncio.Task[None] | None = None
        self._stopped = False
        self.grpc_bound_port: int | None = None

    # -- addresses -------------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        if self._socket is None:
            raise RuntimeError("bridge not bound")
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the gRPC receiver (once started)."""
        if self.grpc_bound_port is None:
            raise RuntimeError("gRPC receiver not started")
        host = self.address[0]
        return f"[{host}]:{self.grpc_bound_port}" if ":" in host else f"{host}:{self.grpc_bound_port}"

    @property
    def serves_grpc(self) -> bool:
        return self._grpc

    @property
    def socket(self) -> socket.socket | None:
        """The bound HTTP socket (after :meth:`bind`)."""
        return self._socket

    @property
    def stats(self) -> BridgeStats:
        return self.ingest.stats

    # -- serving ---------------------------------------------------------------------------------
    def uvicorn_config(self, app: Any = None, **overrides: Any) -> uvicorn.Config:
        cfg = uvicorn.Config(
            app if app is not None else self.app,
            host=self._host,
            port=self._port,
            lifespan="on",
            loop="asyncio",  # grpcio's asyncio server needs the standard loop
            http=GuardedH11Protocol,  # h11, with a header deadline and a per-peer cap
            log_config=None,  # a library does not configure logging; the CLI does
            access_log=False,
            limit_concurrency=self.limits.max_connections,
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=math.ceil(self._drain_s),
            **overrides,
        )
        # Read by GuardedH11Protocol in every worker process (the config travels to them).
        cfg.his_otel_header_timeout_s = self.limits.header_timeout_s  # type: ignore[attr-defined]
        cfg.his_otel_max_per_peer = self.limits.max_per_peer  # type: ignore[attr-defined]
        return cfg

    def bind(self) -> None:
        """Listen for HTTP now (so ``address`` is known); serving starts with :meth:`start`."""
        if self._socket is None:
            cfg = self.uvicorn_config()
            self._server = uvicorn.Server(cfg)
            self._socket = bound_socket(self._host, self._port)
            if self._grpc and self._grpc_port and not self._reuse_port:
                # Found now, in words, rather than by grpcio's C core (a log line, then a failed start).
                try:
                    bound_socket(self._host, self._grpc_port).close()
                except OSError:
                    self._socket.close()
                    self._socket = None
                    raise

    def start(self, timeout_s: float = 30.0) -> Bridge:
        """Serve both protocols on a background thread; returns once both listen.

        Raises:
            OSError: an address cannot be bound.
        """
        self.bind()
        assert self._server is not None and self._socket is not None
        server, sock = self._server, self._socket
        failure: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as e:
                failure.append(e)

        self._thread = threading.Thread(target=run, name="his-otel-bridge", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        # uvicorn says it serves (``started``) only after the lifespan startup and the listen call.
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if failure or not server.started:
            self._stopped = True
            sock.close()
            # uvicorn ends a failed startup with SystemExit(3); the app kept the reason.
            reason = self.app.startup_error or (failure[0] if failure else "startup failed (see the log)")
            raise OSError(f"the bridge did not start: {reason}")
        return self

    async def _startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._grpc:
            self._grpc_server, self.grpc_bound_port = await start_grpc(
                self._host,
                self._grpc_port,
                self.ingest,
                self.limits,
                self._slots,
                self._readers,
                self._token,
                lambda: self.app.stopping,
                reuse_port=self._reuse_port,
            )

    async def _stop_grpc(self, grace_s: float) -> None:
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace_s)

    async def _on_shutdown(self) -> None:
        """The server's lifespan end: HTTP is drained; let gRPC calls finish, then stop writing."""
        if self._grpc_stopping is None:
            self._grpc_stopping = asyncio.ensure_future(self._stop_grpc(self._drain_s))
        await self._grpc_stopping
        self.exporter.shutdown()
        self._slots.executor.shutdown(wait=False)

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Stop accepting, finish accepted requests (up to ``timeout_s``, default the drain timeout),
        stop. Idempotent. True when no accepted request was cut off."""
        if self._stopped or self._server is None:
            return True
        self._stopped = True
        grace = self._drain_s if timeout_s is None else max(0.0, timeout_s)
        self.app.stopping = True
        self._server.config.timeout_graceful_shutdown = math.ceil(grace)
        loop = self._loop
        if loop is not None and self._grpc_server is not None:

            def stop_grpc_now() -> None:
                # Both protocols stop taking work at once; HTTP drains on uvicorn's side meanwhile.
                self._grpc_stopping = asyncio.ensure_future(self._stop_grpc(grace))

            loop.call_soon_threadsafe(stop_grpc_now)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(grace + 10)
        cut_off = self.stats.cut_off_requests
        if cut_off:
            logger.error("requests=<%d> | bridge stopped before every accepted request was written", cut_off)
        return cut_off == 0 and not (self._thread and self._thread.is_alive())


def app_from_env() -> Any:
    """The ASGI app of a bridge configured only by ``HIS_OTEL_*`` variables: what each ``--workers``
    process runs (uvicorn's supervisor imports it by name in every worker)."""
    return Bridge(reuse_port=True).app


def serve_workers(bridge: Bridge, workers: int, sockets: Sequence[socket.socket]) -> None:
    """Run ``workers`` processes under uvicorn's supervisor, sharing the HTTP socket; each serves
    gRPC on the same port (SO_REUSEPORT). Returns after SIGTERM/SIGINT once every worker has drained."""
    from uvicorn.supervisors import Multiprocess

    cfg = bridge.uvicorn_config(app=f"{__name__}:app_from_env", factory=True, workers=workers)
    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn before 0.36 took the target
        Multiprocess(cfg, target=uvicorn.Server(cfg).run, sockets=list(sockets)).run()  # type: ignore[call-arg]
    else:
        Multiprocess(cfg, sockets=list(sockets)).run()
