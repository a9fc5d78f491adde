"""The OTLP/HTTP bridge: the real OTLP exporter sending real Strands spans over loopback."""

from __future__ import annotations

import base64
import gzip
import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fault_proxy import FaultProxy
from helpers import new_session, wait_for
from his_otel import DynamoDBSpanExporter, HISAgent, ScriptedModel, ToolCall
from his_otel.serve.bridge import Bridge
from his_otel.serve.table import session_rows


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def read(self) -> bytes:
        return self.body


def post(
    url: str, body: bytes, content_type: str = "application/x-protobuf", **headers: str
) -> tuple[int, Answer]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as e:
        return e.code, Answer(e.code, e.headers, e.read())


def healthy(bridge: Bridge) -> bool:
    with urllib.request.urlopen(f"{bridge.url}/health", timeout=5) as response:
        return bool(json.loads(response.read())["status"] == "ok")


@pytest.fixture
def bridge_for(moto_endpoint: str) -> Iterator[Any]:
    started: list[Bridge] = []

    def start(table: str, **kw: Any) -> Bridge:
        exporter = kw.pop("exporter", None) or DynamoDBSpanExporter(table, honor_event_table=False)
        b = Bridge(table, port=0, exporter=exporter, **kw).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.shutdown(timeout_s=5)


def run_agent(table: str, spans: InMemorySpanExporter) -> tuple[str, list[ReadableSpan]]:
    """A real HISAgent run; returns its session and its finished Strands spans."""
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


def test_real_otlp_exporter_with_gzip_gives_the_same_rows_as_in_process(
    table: str, new_table: Any, rows: Any, spans: InMemorySpanExporter, bridge_for: Any, ddb: Any
) -> None:
    bridge_table = new_table()
    session, agent_spans = run_agent(table, spans)
    bridge = bridge_for(bridge_table)
    exporter = OTLPSpanExporter(endpoint=f"{bridge.url}/v1/traces", compression=Compression.Gzip)
    assert exporter.export(agent_spans) == SpanExportResult.SUCCESS
    in_process = rows(table, session)
    bridged = session_rows(ddb, bridge_table, session)
    assert len(in_process) >= 9
    assert bridged == in_process  # every attribute of every row, in the same order


def test_with_both_paths_on_each_milestone_has_one_row(
    table: str, rows: Any, spans: InMemorySpanExporter, bridge_for: Any
) -> None:
    session, agent_spans = run_agent(table, spans)
    before = rows(table, session)
    bridge = bridge_for(table)
    exporter = OTLPSpanExporter(endpoint=f"{bridge.url}/v1/traces", compression=Compression.Gzip)
    assert exporter.export(agent_spans) == SpanExportResult.SUCCESS
    assert exporter.export(agent_spans) == SpanExportResult.SUCCESS  # and a collector retry
    assert rows(table, session) == before


def otlp_json(agent_spans: list[ReadableSpan]) -> bytes:
    """OTLP/JSON as the spec writes it: lowerCamelCase keys, hex trace and span ids."""
    document = json_format.MessageToDict(encode_spans(agent_spans))

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


def test_json_bodies(
    table: str, new_table: Any, rows: Any, spans: InMemorySpanExporter, bridge_for: Any, ddb: Any
) -> None:
    bridge_table = new_table()
    session, agent_spans = run_agent(table, spans)
    bridge = bridge_for(bridge_table)
    status, response = post(f"{bridge.url}/v1/traces", otlp_json(agent_spans), "application/json")
    assert status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert session_rows(ddb, bridge_table, session) == rows(table, session)


def test_protobuf_answer_is_an_export_response(
    table: str, bridge_for: Any, spans: InMemorySpanExporter
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    _, agent_spans = run_agent(table, spans)
    bridge = bridge_for(table)
    status, response = post(f"{bridge.url}/v1/traces", encode_spans(agent_spans).SerializeToString())
    assert status == 200
    assert response.headers["Content-Type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse.FromString(response.read())
    assert response.read() == b"" or not parsed.HasField("partial_success")
    assert parsed == ExportTraceServiceResponse()


def test_malformed_events_are_a_partial_success(table: str, bridge_for: Any) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = "s", b"\x01" * 16, b"\x02" * 8
    event = span.events.add()
    event.name = "his.milestone"
    kv = event.attributes.add()
    kv.key, kv.value.string_value = "his.evt_type", "START"  # no session, no event id
    bridge = bridge_for(table)
    status, response = post(f"{bridge.url}/v1/traces", request.SerializeToString())
    assert status == 200
    parsed = ExportTraceServiceResponse.FromString(response.read())
    assert parsed.partial_success.rejected_spans == 1


def raw_http(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        return s.recv(4096)


def test_bad_requests_get_4xx_and_the_bridge_keeps_serving(
    table: str, bridge_for: Any, spans: InMemorySpanExporter
) -> None:
    _, agent_spans = run_agent(table, spans)
    good = encode_spans(agent_spans).SerializeToString()
    bridge = bridge_for(table, max_body_bytes=64 * 1024, token="s3cret")
    url = f"{bridge.url}/v1/traces"
    auth = {"Authorization": "Bearer s3cret"}
    bomb = gzip.compress(b"\0" * (10 * 1024 * 1024))  # ~10 KB that inflates to 10 MB
    cases = [
        (post(url, good)[0], 401),  # no token
        (post(url, good, Authorization="Bearer wrong")[0], 401),
        (post(url, good, "text/plain", **auth)[0], 415),
        (post(url, good, "application/x-protobuf", **{**auth, "Content-Encoding": "br"})[0], 415),
        (post(url, b"\xff\xff\xff\xff", **auth)[0], 400),
        (post(url, good[: len(good) // 2], **auth)[0], 400),  # truncated
        (post(url, b"{not json", "application/json", **auth)[0], 400),
        (
            post(
                url,
                b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
                "application/json",
                **auth,
            )[0],
            400,
        ),
        (post(url, b"\0" * (65 * 1024), **auth)[0], 413),  # over the limit
        (post(url, bomb, "application/x-protobuf", **{**auth, "Content-Encoding": "gzip"})[0], 413),
        (
            post(
                url,
                gzip.compress(good)[:-20],
                "application/x-protobuf",
                **{**auth, "Content-Encoding": "gzip"},
            )[0],
            400,
        ),
        (post(f"{bridge.url}/v1/metrics", good, **auth)[0], 404),
    ]
    assert [got for got, _ in cases] == [want for _, want in cases]
    no_length = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n"
    assert raw_http(bridge.address[1], no_length).startswith(b"HTTP/1.1 411")
    assert healthy(bridge)
    # ...and good requests still work, with gzip or deflate.
    assert post(url, gzip.compress(good), **{**auth, "Content-Encoding": "gzip"})[0] == 200
    assert post(url, zlib.compress(good), **{**auth, "Content-Encoding": "deflate"})[0] == 200
    assert bridge.stats.rejected_requests == 13


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048), as_json=st.booleans(), gzipped=st.booleans())
def test_fuzzed_bodies_never_break_the_bridge(
    body: bytes, as_json: bool, gzipped: bool, fuzz_bridge: Bridge
) -> None:
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    status, _ = post(
        f"{fuzz_bridge.url}/v1/traces",
        body,
        "application/json" if as_json else "application/x-protobuf",
        **headers,
    )
    # Random bytes are sometimes a valid (empty) protobuf message: 200 is right then.
    assert status in (200, 400)


@pytest.fixture(scope="module")
def fuzz_bridge(moto_endpoint: str, ddb: Any) -> Iterator[Bridge]:
    from his_otel.serve.table import create_table

    create_table(ddb, "fuzz-table")
    bridge = Bridge(
        "fuzz-table", port=0, exporter=DynamoDBSpanExporter("fuzz-table", honor_event_table=False)
    )
    bridge.start()
    yield bridge
    assert healthy(bridge)
    bridge.shutdown(timeout_s=5)


def proxied_exporter(table: str, proxy: FaultProxy) -> DynamoDBSpanExporter:
    import boto3

    client = boto3.client(
        "dynamodb",
        endpoint_url=proxy.endpoint,
        config=Config(connect_timeout=0.5, read_timeout=2, retries={"mode": "standard", "max_attempts": 2}),
    )
    return DynamoDBSpanExporter(table, client=client, honor_event_table=False)


def test_dynamodb_down_gives_503_and_the_rows_arrive_after_it_is_back(
    table: str,
    new_table: Any,
    rows: Any,
    bridge_for: Any,
    spans: InMemorySpanExporter,
    proxy: FaultProxy,
    ddb: Any,
) -> None:
    session, agent_spans = run_agent(table, spans)
    expected = [r["event_id"] for r in rows(table, session)]
    assert expected
    down_table = new_table()
    bridge = bridge_for(down_table, exporter=proxied_exporter(down_table, proxy), write_timeout_millis=1000)
    body = encode_spans(agent_spans).SerializeToString()
    with proxy.refusing():
        status, response = post(f"{bridge.url}/v1/traces", body)
        assert status == 503
        assert response.headers["Retry-After"] == "2"
    assert session_rows(ddb, down_table, session) == []
    assert post(f"{bridge.url}/v1/traces", body)[0] == 200  # the sender's retry
    assert [r["event_id"] for r in session_rows(ddb, down_table, session)] == expected


def test_throttling_gives_429(
    table: str, bridge_for: Any, spans: InMemorySpanExporter, proxy: FaultProxy
) -> None:
    _, agent_spans = run_agent(table, spans)
    bridge = bridge_for(table, exporter=proxied_exporter(table, proxy), write_timeout_millis=500)
    with proxy.injecting(throttle=1.0):
        status, response = post(f"{bridge.url}/v1/traces", encode_spans(agent_spans).SerializeToString())
    assert status == 429
    assert response.headers["Retry-After"] == "2"


def test_real_otlp_exporter_retries_a_503_until_written(
    table: str,
    new_table: Any,
    rows: Any,
    bridge_for: Any,
    spans: InMemorySpanExporter,
    proxy: FaultProxy,
    ddb: Any,
) -> None:
    session, agent_spans = run_agent(table, spans)
    retry_table = new_table()
    bridge = bridge_for(retry_table, exporter=proxied_exporter(retry_table, proxy), write_timeout_millis=300)
    exporter = OTLPSpanExporter(endpoint=f"{bridge.url}/v1/traces", compression=Compression.Gzip, timeout=30)
    with proxy.injecting(server_error=1.0):
        # DynamoDB answers 500/503 until the bridge has answered the sender 503, then recovers;
        # the exporter honours Retry-After and sends again.
        def recover() -> None:
            wait_for(lambda: bridge.stats.retry_requests >= 1, timeout_s=60)
            proxy.faults = type(proxy.faults)()

        threading.Thread(target=recover, daemon=True).start()
        assert exporter.export(agent_spans) == SpanExportResult.SUCCESS
    assert bridge.stats.retry_requests >= 1
    assert len(session_rows(ddb, retry_table, session)) == len(rows(table, session)) > 0


def test_concurrent_requests(table: str, bridge_for: Any, ddb: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    mem = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mem))
    sessions = [new_session() for _ in range(12)]
    for s in sessions:
        with provider.get_tracer("t").start_as_current_span("work") as span:
            for i in range(30):
                # Raw span events (not milestone()): only the bridge writes them to this table.
                span.add_event("his.milestone", {
                    "his.session_id": s, "his.event_id": f"{s}-{i:03d}", "his.evt_type": "PROGRESS",
                    "his.evt_message": str(i), "his.agent_id": "a",
                })  # fmt: skip
    bridge = bridge_for(table, max_concurrency=4)
    exporter = OTLPSpanExporter(endpoint=f"{bridge.url}/v1/traces")
    by_session = {
        s: [x for x in mem.get_finished_spans() if x.events[0].attributes["his.session_id"] == s]
        for s in sessions
    }
    results: list[SpanExportResult] = []
    threads = [
        threading.Thread(target=lambda b=b: results.append(exporter.export(b))) for b in by_session.values()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [SpanExportResult.SUCCESS] * 12  # 503s for the busy moments were retried
    assert [len(session_rows(ddb, table, s)) for s in sessions] == [30] * 12


def test_shutdown_drains_accepted_requests(
    table: str,
    new_table: Any,
    rows: Any,
    bridge_for: Any,
    spans: InMemorySpanExporter,
    proxy: FaultProxy,
    ddb: Any,
) -> None:
    session, agent_spans = run_agent(table, spans)
    drain_table = new_table()
    bridge = bridge_for(drain_table, exporter=proxied_exporter(drain_table, proxy))
    statuses: list[int] = []
    with proxy.injecting(slow=1.0, slow_s=1.0):
        sender = threading.Thread(
            target=lambda: statuses.append(
                post(f"{bridge.url}/v1/traces", encode_spans(agent_spans).SerializeToString())[0]
            )
        )
        sender.start()
        wait_for(lambda: proxy.counters.requests >= 1, timeout_s=30)  # accepted, and writing
        assert bridge.shutdown(timeout_s=10) is True
        sender.join()
    assert statuses == [200]
    assert len(session_rows(ddb, drain_table, session)) == len(rows(table, session)) > 0


def test_bridge_refuses_an_exporter_that_lets_senders_pick_the_table(table: str) -> None:
    with pytest.raises(ValueError, match="senders never pick the table"):
        Bridge(table, exporter=DynamoDBSpanExporter(table))
    with pytest.raises(ValueError, match="needs a table"):
        Bridge("")


def test_cli_bridge_serves_and_stops_on_sigterm(table: str, moto_endpoint: str) -> None:
    from his_otel.serve.local_dynamodb import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "his_otel.serve.cli", "bridge", "--table", table, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1/traces -> table {table}" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert json.loads(response.read())["table"] == table
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "drained" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_demo_over_otlp_into_the_bridge_writes_each_row_once(
    table: str, bridge_for: Any, moto_endpoint: str, ddb: Any
) -> None:
    """The compose flow without Docker: the demo exports OTLP (here straight to the bridge, where
    compose puts the collector in between) and writes its rows in process; one row per milestone."""
    import os

    bridge = bridge_for(table)
    session = new_session()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": bridge.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "his_otel.serve.cli", "demo", "--turn-delay", "0", "--table", table,
         "--session-id", session, "--endpoint", moto_endpoint],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "in Jaeger: http://localhost:16686/trace/" in proc.stdout
    rows = session_rows(ddb, table, session)
    assert len(rows) == 15  # the demo's milestones, each one row though both paths wrote it
    assert bridge.stats.rows_written >= len(rows)  # the bridge wrote every one of them again
