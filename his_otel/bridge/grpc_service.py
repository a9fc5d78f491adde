"""OTLP/gRPC: ``TraceService/Export`` and ``LogsService/Export`` on grpcio's asyncio server, in the
same event loop as HTTP.

Status codes as OTLP specifies: retryable failures are UNAVAILABLE (DynamoDB down, the table missing,
the bridge busy or stopping) or RESOURCE_EXHAUSTED (DynamoDB throttling), both with a RetryInfo
delay, which the collector needs to retry RESOURCE_EXHAUSTED at all; INVALID_ARGUMENT is never
retried; UNAUTHENTICATED for a missing or wrong token; partial success in the response.

The handler is registered as request-streaming, though senders make plain unary calls (the two
are the same on the wire): grpcio then runs it when the call starts, before the message arrives, so
the token is checked from the call's metadata and a call without it ends before its message is read;
a place among the bodies in transit is taken (or "busy", UNAVAILABLE with a delay, is answered);
and the message must arrive within the body deadline. grpcio's own call cap answers
RESOURCE_EXHAUSTED, which a collector drops as permanent: it is only a backstop, far above these.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

from ..write.throttled_log import ThrottledLog
from .auth import TokenCheck
from .decode import SIGNALS, BadRequestError, Signal
from .ingest import RETRY_AFTER_S, Answer, Ingest
from .limits import Limits, Readers, Slots

logger = logging.getLogger(__name__)


def _retry_trailers(code: grpc.StatusCode, message: str, delay_s: int) -> tuple[tuple[str, bytes], ...]:
    """RetryInfo where each kind of sender looks for it: in the status details (the collector, Go and
    Java SDKs) and as ``google.rpc.retryinfo-bin`` (the Python SDK)."""
    info = RetryInfo(retry_delay=Duration(seconds=delay_s))
    detail = AnyProto()
    detail.Pack(info)
    status = Status(code=code.value[0], message=message, details=[detail])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


class ExportService:
    """``<Signal>Service/Export``. It takes the request's bytes and parses them itself: grpcio answers
    a request its deserializer cannot parse with UNKNOWN, where OTLP wants INVALID_ARGUMENT."""

    def __init__(
        self,
        signal: Signal,
        ingest: Ingest,
        limits: Limits,
        slots: Slots,
        readers: Readers,
        token: TokenCheck,
        is_stopping: Any,
    ) -> None:
        self._signal = signal
        self._ingest = ingest
        self._limits = limits
        self._slots = slots
        self._readers = readers
        self._token = token
        self._is_stopping = is_stopping
        self._log = ThrottledLog(logger)

    async def _retry(
        self, context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str, delay_s: int
    ) -> None:
        self._ingest.count(retry_requests=1)
        await context.abort(code, message, trailing_metadata=_retry_trailers(code, message, delay_s))

    async def export(
        self, messages: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Message:
        metadata = {key.lower(): value for key, value in context.invocation_metadata() or ()}
        authorization = metadata.get("authorization")
        if not self._token.allows(authorization if isinstance(authorization, str) else None):
            self._ingest.count(rejected_requests=1)
            self._log.info("401", "request refused: missing or wrong bearer token (gRPC)")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        if self._is_stopping():
            await self._retry(context, grpc.StatusCode.UNAVAILABLE, "bridge shutting down", RETRY_AFTER_S)
        peer = _peer_host(context.peer())
        if not self._readers.take(peer):
            await self._retry(context, grpc.StatusCode.UNAVAILABLE, "bridge busy", 1)
        try:
            body = await asyncio.wait_for(anext(messages), self._limits.body_timeout_s)
        except asyncio.TimeoutError:
            self._ingest.count(rejected_requests=1)
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"message not received within {self._limits.body_timeout_s:g}s",
            )
        except StopAsyncIteration:
            self._ingest.count(rejected_requests=1)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message")
        finally:
            self._readers.give(peer)
        try:
            received = self._signal.from_grpc(body)
        except BadRequestError as e:
            self._ingest.count(rejected_requests=1)
            self._log.info(
                "400", "error=<%s> | request refused: not an OTLP %s request (gRPC)", e, self._signal.name
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if not self._slots.take():
            await self._retry(context, grpc.StatusCode.UNAVAILABLE, "bridge busy", 1)
        try:
            verdict = await asyncio.get_running_loop().run_in_executor(
                self._slots.executor, self._ingest.handle, received
            )
        except asyncio.CancelledError:
            self._ingest.count(cut_off_requests=1)  # the grace period ended: the sender will send it again
            raise
        finally:
            self._slots.give()
        if verdict.answer is Answer.THROTTLED:
            await self._retry(
                context, grpc.StatusCode.RESOURCE_EXHAUSTED, verdict.message, verdict.retry_after_s
            )
        if verdict.answer is Answer.UNAVAILABLE:
            await self._retry(context, grpc.StatusCode.UNAVAILABLE, verdict.message, verdict.retry_after_s)
        return self._signal.answer(verdict.rejected, verdict.message)


def _peer_host(peer: str) -> str:
    """The address part of grpcio's peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``)."""
    address = peer.split(":", 1)[-1]
    return address.rsplit(":", 1)[0] if address.count(":") else address


def grpc_options(limits: Limits, *, reuse_port: bool) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", limits.max_body_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        # Several bridge processes may share one port (``--workers``); one alone must not.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # Idle connections go, so a crowd of idle clients cannot hold resources for ever.
        ("grpc.max_connection_idle_ms", 5 * 60_000),
    ]


async def start_grpc(
    host: str,
    port: int,
    ingest: Ingest,
    limits: Limits,
    slots: Slots,
    readers: Readers,
    token: TokenCheck,
    is_stopping: Any,
    *,
    reuse_port: bool,
) -> tuple[grpc.aio.Server, int]:
    """Serve OTLP's trace and logs services on ``host:port`` (0: a free port); returns the server and
    its port."""
    server = grpc.aio.server(
        options=grpc_options(limits, reuse_port=reuse_port),
        maximum_concurrent_rpcs=4 * limits.max_connections,  # a backstop: see the module
    )
    handlers = []
    for signal in SIGNALS:
        service = ExportService(signal, ingest, limits, slots, readers, token, is_stopping)
        export: grpc.RpcMethodHandler[bytes, Message] = grpc.stream_unary_rpc_method_handler(
            service.export, response_serializer=lambda m: m.SerializeToString()
        )
        handlers.append(grpc.method_handlers_generic_handler(signal.service, {"Export": export}))
    server.add_generic_rpc_handlers(tuple(handlers))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"cannot listen for gRPC on {address}: {e}") from e
    if not bound:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server, bound
