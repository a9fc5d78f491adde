"""``his-otel bridge``: an OTLP/HTTP trace receiver that writes ``his.milestone`` events as rows.

For deployments whose agents only export OTLP (e.g. on AgentCore Runtime, through a collector):
the collector's ``otlphttp`` exporter posts to ``/v1/traces`` and the bridge feeds the same
``DynamoDBSpanExporter`` as the in-process path, so rows are identical. It answers as OTLP/HTTP
specifies, so the collector's retry logic is what makes it lossless: a request is acknowledged
(200) only once its rows are written; 429/503 with ``Retry-After`` tell the collector to send it
again, and rewriting a row is harmless (the key is fixed at emission).

Served by the standard library's ``ThreadingHTTPServer`` (a thread per connection) behind a
concurrency limit: its load is a collector's batches, not browsers, and the benchmark shows it
keeps up with DynamoDB, which is the real bottleneck. No web framework to keep up to date.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .. import config
from ..write.exporter import DynamoDBSpanExporter, milestones_of
from .otlp_decode import (
    JSON,
    BadRequestError,
    TooLargeError,
    UnsupportedError,
    decompress,
    milestone_spans,
    parse_request,
)

logger = logging.getLogger(__name__)

ENV_HOST = "HIS_OTEL_BRIDGE_HOST"
ENV_PORT = "HIS_OTEL_BRIDGE_PORT"
ENV_TOKEN = "HIS_OTEL_BRIDGE_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_MAX_BODY = "HIS_OTEL_BRIDGE_MAX_BODY_BYTES"
ENV_MAX_CONCURRENCY = "HIS_OTEL_BRIDGE_MAX_CONCURRENCY"
ENV_WRITE_TIMEOUT = "HIS_OTEL_BRIDGE_WRITE_TIMEOUT_MS"

DEFAULT_PORT = 4319  # 4317/4318 belong to the collector (and Jaeger) on the same host
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_WRITE_TIMEOUT_MS = 5_000
RETRY_AFTER_S = 2


@dataclass
class BridgeStats:
    requests: int = 0
    spans: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rejected_requests: int = 0
    """Requests answered 4xx."""
    retry_requests: int = 0
    """Requests answered 429/503: the sender keeps them and sends them again."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up shutdown
    bridge: Bridge


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: collectors reuse connections
    server: _Server
    timeout = 60  # an idle keep-alive connection is closed after this

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("client=<%s> | %s", self.client_address[0], format % args)

    def _send(
        self, status: int, body: bytes = b"", content_type: str = JSON, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _error(
        self, status: int, message: str, as_json: bool = True, headers: dict[str, str] | None = None
    ) -> None:
        bridge = self.server.bridge
        with bridge._lock:
            if status in (429, 503):
                bridge.stats.retry_requests += 1
            else:
                bridge.stats.rejected_requests += 1
        status_msg = Status(code=int(status), message=message)
        if as_json:
            self._send(status, json_format.MessageToJson(status_msg).encode(), JSON, headers)
        else:
            self._send(status, status_msg.SerializeToString(), "application/x-protobuf", headers)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/health", "/healthz"):
            bridge = self.server.bridge
            with bridge._lock:
                payload = {"status": "ok", "table": bridge.exporter.table_name, **asdict(bridge.stats)}
            self._send(200, json.dumps(payload).encode())
        else:
            self._error(404, f"no such path {self.path!r}")

    def do_POST(self) -> None:
        bridge = self.server.bridge
        content_type = self.headers.get("Content-Type", "")
        as_json = content_type.split(";", 1)[0].strip().lower() == JSON
        with bridge._lock:
            bridge.stats.requests += 1
        if bridge._stopped:
            # A keep-alive connection outlived the accept loop: send the sender elsewhere, later.
            self.close_connection = True
            self._error(503, "bridge shutting down", as_json, {"Retry-After": str(RETRY_AFTER_S)})
            return
        if self.path.split("?", 1)[0].rstrip("/") != "/v1/traces":
            self._drain_or_close()
            self._error(404, f"no such path {self.path!r}; traces go to /v1/traces", as_json)
            return
        if bridge._token is not None:
            supplied = self.headers.get("Authorization", "")
            if not hmac.compare_digest(supplied.encode(), f"Bearer {bridge._token}".encode()):
                self._drain_or_close()
                self._error(401, "missing or wrong bearer token", as_json, {"WWW-Authenticate": "Bearer"})
                return
        length_header = self.headers.get("Content-Length")
        if length_header is None or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._error(411, "Content-Length is required", as_json)
            return
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self.close_connection = True
            self._error(400, f"bad Content-Length {length_header!r}", as_json)
            return
        if length > bridge._max_body:
            self.close_connection = True  # the unread body must not be parsed as the next request
            self._error(413, f"body of {length} bytes is over the {bridge._max_body}-byte limit", as_json)
            return
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            self._error(400, "body shorter than Content-Length", as_json)
            return
        if not bridge._slots.acquire(blocking=False):
            self._error(503, "bridge busy", as_json, {"Retry-After": "1"})
            return
        try:
            with bridge._inflight_cond:
                bridge._inflight += 1
            self._handle(body, content_type, as_json)
        finally:
            with bridge._inflight_cond:
                bridge._inflight -= 1
                bridge._inflight_cond.notify_all()
            bridge._slots.release()

    def _drain_or_close(self) -> None:
        """Read a small body so the connection can be reused; close it for a large or unknown one."""
        try:
            length = int(self.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if 0 <= length <= 65536:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _handle(self, body: bytes, content_type: str, as_json: bool) -> None:
        bridge = self.server.bridge
        try:
            raw = decompress(body, self.headers.get("Content-Encoding", ""), bridge._max_body)
            request = parse_request(raw, content_type)
        except UnsupportedError as e:
            self._error(415, str(e), as_json)
            return
        except TooLargeError as e:
            self._error(413, str(e), as_json)
            return
        except BadRequestError as e:
            self._error(400, str(e), as_json)
            return
        spans, total = milestone_spans(request)
        milestones = []
        bad_spans = 0
        for span in spans:
            found, bad = milestones_of(span)
            milestones.extend(found)
            bad_spans += 1 if bad else 0
        outcome = bridge.exporter.export_milestones(milestones, timeout_s=bridge._write_timeout_s)
        with bridge._lock:
            bridge.stats.spans += total
            bridge.stats.rows_written += outcome.written
            bridge.stats.rows_rejected += outcome.rejected
        if outcome.unwritten:
            # Nothing is acknowledged until it is written: the sender retries the whole request.
            status = 429 if outcome.throttled else 503
            reason = "DynamoDB is throttling" if status == 429 else "DynamoDB is unavailable"
            self._error(
                status,
                f"{reason}: {len(outcome.unwritten)} of {len(milestones)} rows not yet written; retry",
                as_json,
                {"Retry-After": str(RETRY_AFTER_S)},
            )
            return
        response = ExportTraceServiceResponse()
        if bad_spans or outcome.rejected:
            response.partial_success.rejected_spans = bad_spans
            response.partial_success.error_message = (
                f"{outcome.rejected} his.milestone events could not become rows (see the bridge's log)"
            )
        if as_json:
            self._send(200, json_format.MessageToJson(response).encode(), JSON)
        else:
            self._send(200, response.SerializeToString(), "application/x-protobuf")


class Bridge:
    """The OTLP/HTTP -> DynamoDB bridge.

    Args:
        table_name: The one table it writes (``HIS_OTEL_TABLE``). A sender can never choose another.
        host, port: Where to listen (``HIS_OTEL_BRIDGE_HOST``/``_PORT``; 127.0.0.1:4319). Port 0
            picks a free port.
        token: Require ``Authorization: Bearer <token>`` (``HIS_OTEL_BRIDGE_TOKEN``).
        max_body_bytes: Largest body, before and after decompression (413 beyond).
        max_concurrency: Requests written at once; more get 503 with ``Retry-After``.
        write_timeout_millis: How long one request may spend writing before it is answered 429/503.
        exporter: Use this exporter (tests, custom clients); else one is built for ``table_name``
            with boto3's environment (``AWS_ENDPOINT_URL_DYNAMODB``, region, credentials).
    """

    def __init__(
        self,
        table_name: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        token: str | None = None,
        max_body_bytes: int | None = None,
        max_concurrency: int | None = None,
        write_timeout_millis: int | None = None,
        exporter: DynamoDBSpanExporter | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        table = config.resolve_str(table_name, config.ENV_TABLE)
        if exporter is None and not table:
            raise ValueError(f"the bridge needs a table: pass table_name or set {config.ENV_TABLE}")
        self.exporter = exporter or DynamoDBSpanExporter(
            table, honor_event_table=False, endpoint_url=endpoint_url
        )
        if self.exporter.honor_event_table:
            raise ValueError("the bridge's exporter must not honour his.table: senders never pick the table")
        self._host = config.resolve_str(host, ENV_HOST, "127.0.0.1")
        self._port = config.resolve_int(port, ENV_PORT, DEFAULT_PORT, minimum=0)
        token = config.resolve_str(token, ENV_TOKEN)
        self._token = token or None
        self._max_body = config.resolve_int(max_body_bytes, ENV_MAX_BODY, DEFAULT_MAX_BODY)
        self._slots = threading.BoundedSemaphore(
            config.resolve_int(max_concurrency, ENV_MAX_CONCURRENCY, DEFAULT_MAX_CONCURRENCY)
        )
        self._write_timeout_s = (
            config.resolve_int(write_timeout_millis, ENV_WRITE_TIMEOUT, DEFAULT_WRITE_TIMEOUT_MS) / 1000
        )
        self.stats = BridgeStats()
        self._lock = threading.Lock()
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("bridge not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def bind(self) -> None:
        self._server = _Server((self._host, self._port), _Handler)
        self._server.bridge = self

    def start(self) -> Bridge:
        """Serve on a background thread; returns once it listens."""
        if self._server is None:
            self.bind()
        assert self._server is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="his-otel-bridge", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        if self._server is None:
            self.bind()
        assert self._server is not None
        self._server.serve_forever()

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Stop accepting, let accepted requests finish writing (up to ``timeout_s``). Idempotent.
        True when nothing was cut off."""
        if self._stopped or self._server is None:
            return True
        self._stopped = True
        self._server.shutdown()  # the accept loop ends; handler threads go on
        deadline = time.monotonic() + timeout_s
        with self._inflight_cond:
            while self._inflight and time.monotonic() < deadline:
                self._inflight_cond.wait(max(0.0, deadline - time.monotonic()))
            drained = self._inflight == 0
        self._server.server_close()
        self.exporter.shutdown()
        if not drained:
            logger.error(
                "inflight=<%d> | bridge stopped before every accepted request was written", self._inflight
            )
        return drained
