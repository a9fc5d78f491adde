"""6. The bridge: rows/s and CPU per row from real OTLP exporters (HTTP/protobuf and gRPC, gzip,
batches of 512 spans as the collector's batch processor sends, 4 senders at once as its sending queue
does) through `his-otel bridge` in its own processes (1 and 2 workers), append-only (conditional
PutItem) and plain (BatchWriteItem, which a sender could use to overwrite rows); and through the real
collector's load_balancing exporter to 2 bridges. Into the DynamoDB stand-in (``benchmarks.standin``)
10 ms away, never the bottleneck (its ceiling is benchmark 0). The bridge's CPU is its processes'
(all workers), read from /proc. The reference is the in-process DynamoDBSpanExporter writing the same
kind of spans, measured in the same run, before each bridge configuration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks.common import Moto, Row, median, standin
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


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` and all its descendants, from /proc."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total


def settled_cpu(pids: list[int], timeout_s: float = 60) -> float:
    """The CPU time of ``pids`` (and descendants) once they are idle: a worker process still starting
    (imports, first connections) must not count against the rows."""
    last = sum(cpu_seconds(p) for p in pids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = sum(cpu_seconds(p) for p in pids)
        if now - last < 0.01:
            return now
        last = now
    return last


def collector_lb_config(otlp_port: int, bridges: list[BridgeProcesses]) -> dict[str, Any]:
    """The real collector's load_balancing exporter spreading traces by trace id over ``bridges``
    (OTLP/gRPC, as ``collector/config.scale-out.yaml`` does), with the shipped batch settings."""
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{otlp_port}"}}}},
        "processors": {"batch": {"send_batch_size": 512, "send_batch_max_size": 2048, "timeout": "200ms"}},
        "exporters": {
            "load_balancing": {
                "routing_key": "traceID",
                "protocol": {
                    "otlp": {
                        "tls": {"insecure": True},
                        "retry_on_failure": {
                            "enabled": True,
                            "initial_interval": "1s",
                            "max_elapsed_time": 0,
                        },
                        "sending_queue": {"enabled": True, "queue_size": 5000},
                    }
                },
                "resolver": {"static": {"hostnames": [b.grpc_target for b in bridges]}},
            }
        },
        "service": {
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["load_balancing"]}
            },
            "telemetry": {"metrics": {"level": "none"}},
        },
    }


class Collector:
    """The real collector from ../shared/bin (or HIS_OTEL_OTELCOL) in front of ``bridges``."""

    def __init__(self, bridges: list[BridgeProcesses]) -> None:
        from benchmarks.collector_path import ROOT, wait_listening
        from his_otel.testing import otel_binaries
        from his_otel.testing.local_dynamodb import free_port

        binary = otel_binaries.find("otelcol-his", otel_binaries.shared_beside(ROOT))
        if binary is None:
            raise FileNotFoundError("no collector (../shared/bin or HIS_OTEL_OTELCOL)")
        port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="his-otel-lb-"))
        (self.workdir / "config.yaml").write_text(yaml.safe_dump(collector_lb_config(port, bridges)))
        self._log = (self.workdir / "collector.log").open("w")
        self.proc = subprocess.Popen(
            [str(binary), "--config", str(self.workdir / "config.yaml")], stdout=self._log, stderr=self._log
        )
        wait_listening(port)
        self.target = f"127.0.0.1:{port}"

    def sender(self) -> Send:
        return GrpcExporter(
            endpoint=self.target, insecure=True, compression=grpc.Compression.Gzip, timeout=60
        ).export

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self._log.close()


Config = tuple[str, int, bool]  # protocol ("http", "grpc", or "collector"), processes, append-only


def run(moto: Moto, quick: bool) -> list[Row]:
    """Into the stand-in 10 ms away: a DynamoDB that is never the bottleneck, at a distance where
    the number of calls in flight matters (moto's server took ~150 conditional puts a second)."""
    n_spans = 1_024 if quick else 4_096
    rounds = 1 if quick else 2
    rows_per_run = (n_spans // SPANS_PER_MILESTONE_SPAN) * 2
    store = standin(10)
    configs: list[Config] = [
        (protocol, processes, append_only)
        for protocol in ("http", "grpc")
        for processes in (1, 2)
        for append_only in (True, False)
    ]
    configs.append(("collector", 2, True))
    table = store.new_table()
    direct = DynamoDBSpanExporter(table)
    reference: list[tuple[float, float]] = []  # (rows/s, CPU per row)
    results: dict[Config, list[tuple[float, float]]] = {}
    # A sender gives up on a batch after its retries (6 for the Python exporters): such a row says so.
    given_up: Counter[Config] = Counter()
    for _ in range(rounds):
        for config in configs:
            protocol, processes, append_only = config
            session = f"ref-{uuid.uuid4().hex[:6]}"
            spans = make_spans(n_spans, session)
            c0 = time.process_time()
            elapsed, failed = send_all(spans, lambda: direct.export)
            assert not failed, "the in-process reference failed"
            reference.append((rows_per_run / elapsed, (time.process_time() - c0) / rows_per_run))
            count = processes if protocol == "collector" else 1
            workers = 1 if protocol == "collector" else processes
            bridges = [BridgeProcesses(table, workers, append_only) for _ in range(count)]
            collector = Collector(bridges) if protocol == "collector" else None
            session = f"bridge-{uuid.uuid4().hex[:6]}"
            spans = make_spans(n_spans, session)
            try:
                cpu0 = settled_cpu([b.proc.pid for b in bridges])
                t0 = time.perf_counter()
                if collector is not None:
                    _, failed = send_all(spans, collector.sender)
                    # The collector acknowledges at once; the rows are written when they are.
                    while len(session_rows(store.client, table, session)) < rows_per_run:
                        if time.perf_counter() - t0 > 300:
                            raise RuntimeError("rows did not land through the collector")
                        time.sleep(0.05)
                    elapsed = time.perf_counter() - t0
                else:
                    elapsed, failed = send_all(spans, lambda b=bridges[0], p=protocol: b.sender(p))  # type: ignore[misc]
                cpu = sum(cpu_seconds(b.proc.pid) for b in bridges) - cpu0
            finally:
                if collector is not None:
                    collector.stop()
                for bridge in bridges:
                    bridge.stop()
            landed = len(session_rows(store.client, table, session))
            assert failed or landed == rows_per_run, f"{landed} of {rows_per_run} rows landed"
            given_up[config] += failed
            results.setdefault(config, []).append((landed / elapsed, cpu / max(1, landed)))
    ref_rate = median([r for r, _ in reference])
    ref_cpu = median([c for _, c in reference]) * 1e6
    label = f"in-process DynamoDBSpanExporter (BatchWriteItem), {SENDERS} senders, same run"
    out: list[Row] = []
    for config, measured in results.items():
        protocol, processes, append_only = config
        mode = "append-only" if append_only else "plain"
        where = (
            f"collector load_balancing -> {processes} bridges (gRPC)"
            if protocol == "collector"
            else f"{protocol}, {processes} proc"
        )
        note = f" ({given_up[config]} batches given up)" if given_up[config] else ""
        rate = median([r for r, _ in measured])
        cpu = median([c for _, c in measured]) * 1e6
        out.append(
            Row(
                "6 bridge",
                f"rows/s, {where}, {mode}, +10 ms{note}",
                rate,
                ref_rate,
                label,
                "rows/s",
                "higher",
            )
        )
        out.append(
            Row(
                "6 bridge",
                f"CPU per row, {where}, {mode}",
                cpu,
                ref_cpu,
                label,
                "us",
                target="≤ 2x in-process",
            )
        )
        if append_only and protocol != "collector":
            plain = median([r for r, _ in results[(protocol, processes, False)]])
            out.append(
                Row(
                    "6 bridge",
                    f"rows/s, {where}, append-only vs plain, +10 ms",
                    rate,
                    plain,
                    "the same bridge, plain (BatchWriteItem)",
                    "rows/s",
                    "higher",
                    target="≥ 0.8",
                )
            )
    return out
