"""The bridge's limits, shared by both protocols, and the work they guard."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .. import config

ENV_MAX_BODY = "HIS_OTEL_BRIDGE_MAX_BODY_BYTES"
ENV_MAX_CONCURRENCY = "HIS_OTEL_BRIDGE_MAX_CONCURRENCY"
ENV_MAX_CONNECTIONS = "HIS_OTEL_BRIDGE_MAX_CONNECTIONS"
ENV_BODY_TIMEOUT = "HIS_OTEL_BRIDGE_BODY_TIMEOUT_MS"
ENV_WRITE_TIMEOUT = "HIS_OTEL_BRIDGE_WRITE_TIMEOUT_MS"
ENV_HEADER_TIMEOUT = "HIS_OTEL_BRIDGE_HEADER_TIMEOUT_MS"
ENV_MAX_PER_PEER = "HIS_OTEL_BRIDGE_MAX_CONNECTIONS_PER_PEER"

DEFAULT_MAX_BODY = 8 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_BODY_TIMEOUT_MS = 30_000
DEFAULT_WRITE_TIMEOUT_MS = 5_000
# A collector sends every few hundred ms while it has data; one idle longer reconnects, cheaply.
DEFAULT_HEADER_TIMEOUT_MS = 10_000
# A collector's sending queue uses ~10 connections; a quarter of the connection cap per host.
DEFAULT_MAX_PER_PEER = 64


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    """Largest request, compressed and decompressed (HTTP 413; gRPC RESOURCE_EXHAUSTED from grpcio)."""
    max_concurrency: int
    """Requests decoded and written at once; more are told to retry. Bodies in transit are capped
    apart: 4x this in all, half of that per peer address."""
    max_connections: int
    """Open HTTP connections (uvicorn answers 503 beyond) and gRPC calls in progress (grpcio's cap)."""
    body_timeout_s: float
    """Deadline to receive a whole HTTP body once its turn came (408 and the connection closed)."""
    write_timeout_s: float
    """How long one request may spend writing before it is answered "retry"."""
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_MS / 1000
    """Deadline for an HTTP request's headers, from the connection's start or its previous
    response (the connection is closed); also bounds how long an idle keep-alive connection stays."""
    max_per_peer: int = DEFAULT_MAX_PER_PEER
    """Open HTTP connections from one peer address (more are closed at once); 0: no cap."""

    @classmethod
    def resolve(
        cls,
        max_body_bytes: int | None = None,
        max_concurrency: int | None = None,
        max_connections: int | None = None,
        body_timeout_millis: int | None = None,
        write_timeout_millis: int | None = None,
        header_timeout_millis: int | None = None,
        max_per_peer: int | None = None,
    ) -> Limits:
        return cls(
            max_body_bytes=config.resolve_int(max_body_bytes, ENV_MAX_BODY, DEFAULT_MAX_BODY),
            max_concurrency=config.resolve_int(max_concurrency, ENV_MAX_CONCURRENCY, DEFAULT_MAX_CONCURRENCY),
            max_connections=config.resolve_int(max_connections, ENV_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS),
            body_timeout_s=config.resolve_int(body_timeout_millis, ENV_BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_MS)
            / 1000,
            write_timeout_s=config.resolve_int(
                write_timeout_millis, ENV_WRITE_TIMEOUT, DEFAULT_WRITE_TIMEOUT_MS
            )
            / 1000,
            header_timeout_s=config.resolve_int(
                header_timeout_millis, ENV_HEADER_TIMEOUT, DEFAULT_HEADER_TIMEOUT_MS
            )
            / 1000,
            max_per_peer=config.resolve_int(max_per_peer, ENV_MAX_PER_PEER, DEFAULT_MAX_PER_PEER, minimum=0),
        )


class Readers:
    """Requests whose bodies are being received, across both protocols, in all and per peer address:
    a body is read before it takes a slot, so slow senders wait for nobody, and these caps bound the
    memory bodies in transit hold (``limit`` x the body limit) and what one peer may take of it.
    Used from the server's event loop thread only."""

    def __init__(self, limits: Limits) -> None:
        self.limit = 4 * limits.max_concurrency
        self.per_peer = max(1, self.limit // 2)
        self.busy = 0
        self._peers: Counter[str] = Counter()

    def take(self, peer: str) -> bool:
        if self.busy >= self.limit or self._peers[peer] >= self.per_peer:
            return False
        self.busy += 1
        self._peers[peer] += 1
        return True

    def give(self, peer: str) -> None:
        self.busy -= 1
        self._peers[peer] -= 1
        if self._peers[peer] <= 0:
            del self._peers[peer]


class Slots:
    """Requests in progress across both protocols. Used from the server's one event loop thread only,
    so a counter is enough; a request over the limit is turned away at once, never queued."""

    def __init__(self, limits: Limits) -> None:
        self.limit = limits.max_concurrency
        self.busy = 0
        self.executor = ThreadPoolExecutor(limits.max_concurrency, thread_name_prefix="his-otel-bridge")

    def take(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def give(self) -> None:
        self.busy -= 1
