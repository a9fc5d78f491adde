"""An HTTP proxy in front of moto's server that injects the faults moto never produces.

DynamoDB's API is JSON over HTTP POST, so the faults are real HTTP: throttling errors with
DynamoDB's error bodies, BatchWriteItem answers that leave ``UnprocessedItems``, 500/503, refused
connections, answers slower than the client's timeout, and connections reset mid-response.
Faults apply to BatchWriteItem only (reads pass through, so tests can check the table).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

THROTTLE_CODES = ("ProvisionedThroughputExceededException", "ThrottlingException")


@dataclass
class Faults:
    """What to do to each write request (BatchWriteItem, PutItem). Shares are probabilities in [0, 1]."""

    throttle: float = 0.0
    unprocessed: float = 0.0
    """Share of requests of which half the items come back unprocessed (and are not written)."""
    server_error: float = 0.0
    slow: float = 0.0
    slow_s: float = 1.0
    reset: float = 0.0
    """Share of requests forwarded (so written) whose answer is cut off by a TCP reset."""
    error: float = 0.0
    """Share of requests answered with ``error_code`` (HTTP 400), e.g. AccessDeniedException."""
    error_code: str = "AccessDeniedException"
    delay_s: float = 0.0
    """Added to every write request: a DynamoDB that is a round trip away, not on loopback."""
    jitter_s: float = 0.0
    """A further uniform random wait of up to this, per write request."""


@dataclass
class Counters:
    requests: int = 0
    answered: int = 0
    """Requests whose answer was sent in full (a hung or reset request is not answered)."""
    in_flight: int = 0
    """Write requests received and not yet answered (or given up)."""
    peak_in_flight: int = 0
    """The most write requests that were in flight here at once: how many calls a writer overlaps."""
    injected: dict[str, int] = field(default_factory=dict)
    operations: dict[str, int] = field(default_factory=dict)
    """Requests received per DynamoDB operation (``Query``, ``BatchWriteItem``, ...)."""
    puts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(table, session_id, event_id) -> puts (BatchWriteItem PutRequests, PutItems) forwarded for that key."""

    def add(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "injected"})
        self._reply(status, body.encode(), {"x-amzn-ErrorType": code})

    def do_POST(self) -> None:
        proxy = self.server.proxy
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        target = self.headers.get("X-Amz-Target", "")
        writes = target.endswith(("BatchWriteItem", "PutItem"))
        faults = proxy.faults if writes else Faults()
        with proxy.lock:
            proxy.counters.requests += 1
            operation = target.rpartition(".")[2]
            proxy.counters.operations[operation] = proxy.counters.operations.get(operation, 0) + 1
            if writes:
                proxy.counters.in_flight += 1
                proxy.counters.peak_in_flight = max(proxy.counters.peak_in_flight, proxy.counters.in_flight)
        try:
            self._handle(proxy, faults, body, target, writes)
        finally:
            if writes:
                with proxy.lock:
                    proxy.counters.in_flight -= 1

    def _handle(self, proxy: FaultProxy, faults: Faults, body: bytes, target: str, writes: bool) -> None:
        rnd = proxy.random
        with proxy.lock:
            roll = {
                k: rnd.random()
                for k in ("throttle", "unprocessed", "server_error", "slow", "reset", "error", "jitter")
            }
        if faults.delay_s or faults.jitter_s:
            time.sleep(faults.delay_s + roll["jitter"] * faults.jitter_s)
        if roll["error"] < faults.error:
            proxy.count(faults.error_code)
            self._error(400, faults.error_code)
            return
        if roll["throttle"] < faults.throttle:
            proxy.count("throttle")
            self._error(400, THROTTLE_CODES[int(roll["slow"] * 2) % 2])
            return
        if roll["server_error"] < faults.server_error:
            proxy.count("server_error")
            if roll["slow"] < 0.5:
                self._error(500, "InternalServerError")
            else:
                self._error(503, "ServiceUnavailable")
            return
        if roll["slow"] < faults.slow:
            proxy.count("slow")
            time.sleep(faults.slow_s)
        held_back: dict[str, list[Any]] = {}
        if roll["unprocessed"] < faults.unprocessed and target.endswith("BatchWriteItem"):
            request = json.loads(body)
            for table, reqs in request["RequestItems"].items():
                keep = (len(reqs) + 1) // 2
                request["RequestItems"][table], held_back[table] = reqs[:keep], reqs[keep:]
            held_back = {t: r for t, r in held_back.items() if r}
            if held_back:
                proxy.count("unprocessed")
            body = json.dumps(request).encode()
        if writes:
            proxy.record_puts(body)
        status, headers, answer = proxy.forward(self.command, self.path, dict(self.headers), body)
        if held_back:
            parsed = json.loads(answer)
            parsed.setdefault("UnprocessedItems", {}).update(held_back)
            answer = json.dumps(parsed).encode()
            headers = {k: v for k, v in headers.items() if k.lower() != "x-amz-crc32"}
        if roll["reset"] < faults.reset:
            proxy.count("reset")
            # Headers then half the body, then RST: the write happened, the answer never arrives.
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer[: len(answer) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        with proxy.lock:
            proxy.counters.answered += 1

    do_GET = do_POST  # noqa: N815 - http.server dispatches on this name


class FaultProxy:
    """Listens on 127.0.0.1 and forwards to ``upstream`` (moto's server), injecting ``faults``."""

    def __init__(self, upstream: str, seed: int = 7) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults = Faults()
        self.counters = Counters()
        self.lock = threading.Lock()
        self.random = random.Random(seed)
        self._server: _Server | None = None
        self.port = 0
        self._local = threading.local()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, kind: str) -> None:
        with self.lock:
            self.counters.add(kind)

    def record_puts(self, body: bytes) -> None:
        request = json.loads(body)
        if "Item" in request:  # PutItem
            request = {"RequestItems": {request["TableName"]: [{"PutRequest": {"Item": request["Item"]}}]}}
        with self.lock:
            for table, reqs in request.get("RequestItems", {}).items():
                for req in reqs:
                    item = req["PutRequest"]["Item"]
                    key = (table, item["session_id"]["S"], item["event_id"]["S"])
                    self.counters.puts[key] = self.counters.puts.get(key, 0) + 1

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            conn.request(method, path, body=body, headers={**headers, "Content-Length": str(len(body))})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def start(self) -> FaultProxy:
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.proxy = self
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: new connections are refused until ``start()``."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @contextlib.contextmanager
    def refusing(self) -> Iterator[None]:
        """Connections refused (nothing listens on the port) for the duration of the block."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def injecting(self, **faults: Any) -> Iterator[Faults]:
        previous, self.faults = self.faults, Faults(**faults)
        try:
            yield self.faults
        finally:
            self.faults = previous
