"""6. The bridge: rows/s from real OTLP exporters (HTTP/protobuf and gRPC, gzip, batches of 512
spans as the collector's batch processor sends, 4 senders at once as its sending queue does) through
`his-otel bridge` in its own processes (1, 2, 4 workers), append-only (conditional PutItem) and plain
(BatchWriteItem, which a sender could use to overwrite rows), into moto. The reference is the
in-process DynamoDBSpanExporter writing the same kind of spans, measured in the same run, before
each bridge configuration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks.common import Moto, Row, median
from his_otel import DynamoDBSpanExporter
from his_otel.read import session_rows
from his_otel.schema import EVENT_NAME, Milestone, event_attributes

BATCH = 512
SENDERS = 4
SPANS_PER_MILESTONE_SPAN = 4  # an agent's trace: most spans (chat, tools) carry no milestone
LINE = re.compile(r"OTLP/HTTP on (http://[^ ]+)/v1/traces, OTLP/gRPC on ([^ ]+) -> table")

Send = Callable[[list[ReadableSpan]], SpanExportResult]


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


def send_all(spans: list[ReadableSpan], make_send: Callable[[], Send]) -> tuple[float, int]:
    """Seconds for SENDERS threads, each with its own exporter, to send ``spans`` in batches, and
    how many batches an exporter gave up on (its retries exhausted)."""
    batches = [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]
    lock = threading.Lock()
    failures: list[object] = []
    sends = [make_send() for _ in range(SENDERS)]

    def worker(send: Send) -> None:
        while True:
            with lock:
                if not batches:
                    return
                batch = batches.pop()
            if send(batch) != SpanExportResult.SUCCESS:
                failures.append(batch)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(send,)) for send in sends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, len(failures)


class BridgeProcesses:
    """``his-otel bridge --workers N`` on free ports, as deployed."""

    def __init__(self, table: str, workers: int, append_only: bool) -> None:
        env = {**os.environ, "HIS_OTEL_BRIDGE_APPEND_ONLY": "1" if append_only else "0"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "his_otel.cli", "bridge", "--table", table, "--port", "0",
             "--grpc-port", "0", "--workers", str(workers)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        match = LINE.search(self.proc.stdout.readline())
        assert match, "the bridge did not start"
        self.url, self.grpc_target = match.group(1), match.group(2)
        self.port = int(self.url.rsplit(":", 1)[1])

    def sender(self, protocol: str) -> Send:
        # 60 s for a batch, retries included, like a collector's retry_on_failure (the Python
        # exporters' default is 10 s: at moto's conditional-put rate a batch can need more).
        if protocol == "grpc":
            exporter = GrpcExporter(
                endpoint=self.grpc_target, insecure=True, compression=grpc.Compression.Gzip, timeout=60
            )
            return exporter.export
        return HttpExporter(endpoint=f"{self.url}/v1/traces", compression=Compression.Gzip, timeout=60).export

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def run(moto: Moto, quick: bool) -> list[Row]:
    n_spans = 1_024 if quick else 4_096
    rounds = 1 if quick else 2
    rows_per_run = (n_spans // SPANS_PER_MILESTONE_SPAN) * 2
    configs: list[tuple[int, bool, str]] = [
        (workers, True, protocol)
        for workers in ((1, 2) if quick else (1, 2, 4))
        for protocol in ("http", "grpc")
    ]
    configs += [(1, False, "http"), (1, False, "grpc")]
    table = moto.new_table()
    direct = DynamoDBSpanExporter(table)
    reference: list[float] = []
    results: dict[tuple[int, bool, str], list[float]] = {}
    # A sender gives up on a batch after its retries (6 for the Python exporters): such a row says so.
    given_up: Counter[tuple[int, bool, str]] = Counter()
    for _ in range(rounds):
        for workers, append_only, protocol in configs:
            session = f"ref-{uuid.uuid4().hex[:6]}"
            elapsed, failed = send_all(make_spans(n_spans, session), lambda: direct.export)
            assert not failed, "the in-process reference failed"
            reference.append(rows_per_run / elapsed)
            bridge = BridgeProcesses(table, workers, append_only)
            try:
                session = f"bridge-{uuid.uuid4().hex[:6]}"
                spans = make_spans(n_spans, session)
                elapsed, failed = send_all(spans, lambda b=bridge, p=protocol: b.sender(p))  # type: ignore[misc]
            finally:
                bridge.stop()
            landed = len(session_rows(moto.client, table, session))
            assert failed or landed == rows_per_run, f"{landed} of {rows_per_run} rows landed"
            given_up[(workers, append_only, protocol)] += failed
            results.setdefault((workers, append_only, protocol), []).append(landed / elapsed)
    label = f"in-process DynamoDBSpanExporter (BatchWriteItem), {SENDERS} senders, same run"
    ref = median(reference)
    out: list[Row] = []
    for (workers, append_only, protocol), rates in results.items():
        mode = "conditional" if append_only else "plain"
        metric = f"rows/s, {protocol}, {workers} proc, {mode}"
        if given_up[(workers, append_only, protocol)]:
            metric += f" ({given_up[(workers, append_only, protocol)]} batches given up)"
        out.append(Row("6 bridge", metric, median(rates), ref, label, "rows/s", "higher"))
    return out
