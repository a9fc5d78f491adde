"""What the bridge tests share: senders, span builders, and bridges started in this process."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.config import Config
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fault_proxy import FaultProxy
from helpers import new_session, wait_for
from his_otel import HISAgent, ScriptedModel, ToolCall
from his_otel.bridge import Bridge
from his_otel.write.table import create_table


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def post(url: str, body: bytes, content_type: str = "application/x-protobuf", **headers: str) -> Answer:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, e.read())


def get(url: str, **headers: str) -> Answer:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, e.read())


def run_agent(table: str, spans: InMemorySpanExporter) -> tuple[str, list[ReadableSpan]]:
    """A real HISAgent run (written in process); returns its session and its finished Strands spans."""
    session = new_session()
    report = {
        "table_name": "x",
        "agent_id": "x",
        "session_id": "x",
        "event_type": "PROGRESS",
        "message": "half",
    }
    script = [[ToolCall("write_dynamo", report)], '{"ok": true}']
    HISAgent(table, session, model=ScriptedModel(script), agent_id="bridged")("go")
    mine = [s for s in spans.get_finished_spans() if (s.attributes or {}).get("session.id") == session]
    trace_ids = {s.context.trace_id for s in mine}
    return session, [s for s in spans.get_finished_spans() if s.context.trace_id in trace_ids]


def milestone_spans(
    session: str, n_spans: int, per_span: int = 1, provider: TracerProvider | None = None, message: str = "m"
) -> list[ReadableSpan]:
    """Spans carrying raw ``his.milestone`` events (not ``milestone()``: only a bridge writes them)."""
    mem = InMemorySpanExporter()
    provider = provider or TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("bridge-test")
    for i in range(n_spans):
        with tracer.start_as_current_span(f"work {i}") as span:
            for j in range(per_span):
                span.add_event("his.milestone", {
                    "his.session_id": session, "his.event_id": f"{session}-{i:04d}-{j:02d}",
                    "his.evt_type": "PROGRESS", "his.evt_message": message, "his.agent_id": "a",
                })  # fmt: skip
    return list(mem.get_finished_spans())


def protobuf_body(spans: list[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def otlp_json(spans: list[ReadableSpan]) -> bytes:
    """OTLP/JSON as the spec writes it: lowerCamelCase keys, hex ids, int64 values as strings."""
    return otlp_json_of(encode_spans(spans))


def otlp_json_of(message: Any) -> bytes:
    """Any OTLP request message as OTLP/JSON (hex ids, as the spec writes them)."""
    document = json_format.MessageToDict(message)

    def hexify(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("traceId", "spanId", "parentSpanId"):
                    node[k] = base64.b64decode(v).hex()
                else:
                    hexify(v)
        elif isinstance(node, list):
            for item in node:
                hexify(item)

    hexify(document)
    return json.dumps(document).encode()


def proxied_client(proxy: FaultProxy) -> Any:
    import boto3

    return boto3.client(
        "dynamodb",
        endpoint_url=proxy.endpoint,
        config=Config(connect_timeout=0.5, read_timeout=2, retries={"mode": "standard", "max_attempts": 2}),
    )


def export_while_the_table_appears(
    send: Callable[[list[ReadableSpan]], SpanExportResult],
    spans: list[ReadableSpan],
    bridge: Bridge,
    ddb: Any,
    table: str,
) -> SpanExportResult:
    """A real exporter sends ``spans`` while ``table`` is missing; once the bridge has told it to
    retry twice, the table is created. Returns what the exporter finally reported."""
    outcome: list[SpanExportResult] = []
    sender = threading.Thread(target=lambda: outcome.append(send(spans)))
    sender.start()
    wait_for(lambda: bridge.stats.retry_requests >= 2, timeout_s=60)
    create_table(ddb, table)
    sender.join(90)
    return outcome[0]


@pytest.fixture
def bridge_for(moto_endpoint: str) -> Iterator[Any]:
    """bridge_for(table, **Bridge kwargs) -> a started Bridge on free ports, stopped after the test."""
    started: list[Bridge] = []

    def start(table: str, **kw: Any) -> Bridge:
        b = Bridge(table, port=0, grpc_port=0, **kw).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.shutdown(timeout_s=5)


def milestone_logs_body(session: str, n: int, **resource: str) -> bytes:
    """An OTLP logs request of ``n`` ``his.milestone`` log events of ``session`` (one trace) from a
    resource with ``resource`` attributes, as protobuf."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for key, value in resource.items():
        kv = resource_logs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    scope_logs = resource_logs.scope_logs.add()
    trace_id = uuid.uuid4().bytes
    for i in range(n):
        record = scope_logs.log_records.add()
        record.time_unix_nano = time.time_ns()
        record.event_name = "his.milestone"
        record.trace_id, record.span_id = trace_id, uuid.uuid4().bytes[:8]
        for key, value in {
            "his.session_id": session, "his.event_id": f"{session}-{i:04d}",
            "his.evt_type": "PROGRESS", "his.evt_message": "m", "his.agent_id": "a",
        }.items():  # fmt: skip
            kv = record.attributes.add()
            kv.key, kv.value.string_value = key, value
    return request.SerializeToString()
