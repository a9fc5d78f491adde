"""6. The bridge: spans/s and rows/s from the real OTLP exporter (HTTP/protobuf, gzip, batches of
512 spans as the collector's batch processor sends) through `his-otel bridge` (its own process,
as deployed) into moto, vs the in-process exporter writing the same milestones. One sender, then
four at once (the collector's sending queue sends concurrently); rounds alternate."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks.common import Moto, Row, median
from his_otel import DynamoDBSpanExporter
from his_otel.schema import EVENT_NAME, Milestone, event_attributes
from his_otel.testing.local_dynamodb import free_port

BATCH = 512
SPANS_PER_MILESTONE_SPAN = 4  # an agent's trace: most spans (chat, tools) carry no milestone


def make_spans(n_spans: int, session: str) -> list[ReadableSpan]:
    """Spans like an agent's: one in four carries two milestones, all carry a Strands-sized event."""
    mem = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("bench")
    for i in range(n_spans):
        with tracer.start_as_current_span("execute_event_loop_cycle") as span:
            span.add_event("gen_ai.user.message", {"content": "x" * 200})
            if i % SPANS_PER_MILESTONE_SPAN == 0:
                for j in range(2):
                    m = Milestone(f"{uuid.uuid4()}", session, "agent", "PROGRESS", f"{i}.{j}", time.time_ns())
                    span.add_event(EVENT_NAME, event_attributes(m))
    return list(mem.get_finished_spans())


def send_all(spans: list[ReadableSpan], senders: int, send: object) -> float:
    batches = [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]
    todo = list(batches)
    lock = threading.Lock()
    failures: list[object] = []

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                batch = todo.pop()
            if send(batch) != SpanExportResult.SUCCESS:  # type: ignore[operator]
                failures.append(batch)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    return time.perf_counter() - t0


def run(moto: Moto, quick: bool) -> list[Row]:
    n_spans = 2_048 if quick else 8_192
    rounds = 2 if quick else 3
    table = moto.new_table()
    port = free_port()
    bridge = subprocess.Popen(
        [sys.executable, "-m", "his_otel.cli", "bridge", "--table", table, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert bridge.stdout is not None and "his-otel bridge on" in bridge.stdout.readline()
        otlp = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", compression=Compression.Gzip)
        direct = DynamoDBSpanExporter(table)
        results: dict[tuple[str, int], list[float]] = {}
        rows_per_run = (n_spans // SPANS_PER_MILESTONE_SPAN) * 2
        for r in range(rounds):
            for senders in (1, 4):
                ways = [("bridge", otlp.export), ("in-process", direct.export)]
                for name, send in ways if r % 2 == 0 else ways[::-1]:
                    spans = make_spans(n_spans, f"{name}-{uuid.uuid4().hex[:6]}")
                    results.setdefault((name, senders), []).append(send_all(spans, senders, send))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert b'"rows_rejected": 0' in response.read()
    finally:
        bridge.terminate()
        bridge.wait(timeout=30)
    rows: list[Row] = []
    label = "in-process DynamoDBSpanExporter, same spans"
    for senders in (1, 4):
        bridge_s = median(results[("bridge", senders)])
        direct_s = median(results[("in-process", senders)])
        tag = f"{senders} sender{'s' if senders > 1 else ''}"
        rows.append(
            Row(
                "6 bridge",
                f"spans/s, {tag}",
                n_spans / bridge_s,
                n_spans / direct_s,
                label,
                "spans/s",
                "higher",
            )
        )
        rows.append(
            Row(
                "6 bridge",
                f"rows/s, {tag}",
                rows_per_run / bridge_s,
                rows_per_run / direct_s,
                label,
                "rows/s",
                "higher",
            )
        )
    return rows
