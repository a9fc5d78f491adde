"""Where one milestone's CPU goes: ``python -m benchmarks.profile [both|span]`` (needs ``pip install
yappi``); and where one DynamoDB call's goes: ``python -m benchmarks.profile call``.

Benchmark 1's loop (ten milestones a span, the live processor writing to the DynamoDB stand-in, a
LoggerProvider whose batch processor encodes OTLP) runs under yappi's CPU clock on every thread;
the table gives each part's share of the profiled CPU and that share of the same loop's CPU per
milestone measured without the profiler (yappi slows the code it watches, unevenly, so the µs are
estimates: read the shares)."""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from benchmarks.agent_thread import install_logs
from benchmarks.common import standin
from his_otel import DynamoDBSpanExporter, HISSpanProcessor, milestone

# First match wins: (part, a fragment of the module's path, a function name or "").
PARTS: list[tuple[str, str, str]] = [
    ("botocore: signing (SigV4)", "botocore/auth.py", ""),
    ("botocore: signing (SigV4)", "botocore/signers.py", ""),
    ("botocore: endpoint rules", "botocore/endpoint_provider.py", ""),
    ("botocore: endpoint rules", "botocore/regions.py", ""),
    ("botocore: HTTP glue (AWSRequest, urllib3 session)", "botocore/awsrequest.py", ""),
    ("botocore: HTTP glue (AWSRequest, urllib3 session)", "botocore/httpsession.py", ""),
    ("botocore: response parsing", "botocore/parsers.py", ""),
    ("botocore: events, retries, user agent, the rest", "botocore/", ""),
    ("HTTP: urllib3, http.client, email header parsing, sockets", "urllib3/", ""),
    ("HTTP: urllib3, http.client, email header parsing, sockets", "/http/", ""),
    ("HTTP: urllib3, http.client, email header parsing, sockets", "/email/", ""),
    ("HTTP: urllib3, http.client, email header parsing, sockets", "socket.py", ""),
    ("OpenTelemetry: OTLP encoding of the log copies", "exporter/otlp/", ""),
    ("OpenTelemetry: OTLP encoding of the log copies", "google/protobuf", ""),
    ("OpenTelemetry: SDK (span events, log records, attribute checks)", "opentelemetry/", ""),
    ("his-otel: milestone() and the hand-off to the writer", "his_otel/emit.py", ""),
    ("his-otel: milestone() and the hand-off to the writer", "his_otel/capture/routing.py", ""),
    ("his-otel: milestone() and the hand-off to the writer", "his_otel/log_copy.py", ""),
    ("his-otel: row mapping (schema.to_item, ids, text)", "his_otel/schema.py", ""),
    ("his-otel: writer (queue, batches, calls in flight, request body)", "his_otel/", ""),
    ("JSON encoding (request bodies, responses)", "/json/", ""),
    ("threads, locks, queues (stdlib)", "threading.py", ""),
    ("threads, locks, queues (stdlib)", "concurrent/", ""),
    ("threads, locks, queues (stdlib)", "queue.py", ""),
]


def part_of(module: str) -> str:
    return next((name for name, fragment, _ in PARTS if fragment in module), "other (uuid, contextvars, ...)")


def loop(tracer: Any, processor: HISSpanProcessor, logs: Any, session: str, n: int) -> None:
    for _ in range(n // 10):
        with tracer.start_as_current_span("execute_event_loop_cycle"):
            for _ in range(10):
                milestone("PROGRESS", "step done", session_id=session)
    assert processor.force_flush(60_000) and logs.force_flush(60_000)


# The steps of one botocore call, by the function that runs each (cumulative time under cProfile).
CALL_STEPS: list[tuple[str, str, str]] = [
    ("signing (SigV4), botocore's by rule", "botocore/signers.py", "sign"),
    ("endpoint rules, botocore's by rule", "botocore/client.py", "_resolve_endpoint_ruleset"),
    ("retry decision, botocore's by rule", "botocore/retries/standard.py", "needs_retry"),
    ("HTTP send and receive (urllib3, http.client)", "botocore/httpsession.py", "send"),
    ("building the AWSRequest", "botocore/awsrequest.py", "prepare"),
    ("user agent string", "botocore/useragent.py", "to_string"),
    ("response parsing", "botocore/parsers.py", "parse"),
    ("request serialization (the prebuilt body's stand-in)", "botocore/serialize.py", "serialize_to_request"),
]


def call() -> None:
    """One conditional PutItem (the bridge's append-only write), as his-otel makes it."""
    import cProfile
    import pstats

    from his_otel.schema import Milestone, to_item
    from his_otel.write import request_body
    from his_otel.write.client import ClientSource
    from his_otel.write.dynamodb import APPEND_ONLY_CONDITION

    store = standin(0)
    table = store.new_table()
    client = ClientSource(endpoint_url=store.endpoint).factory()()

    def put() -> None:
        m = Milestone(str(uuid.uuid4()), "s", "a", "PROGRESS", "step done", time.time_ns(), 1, 2, "span")
        item = to_item(m)
        with request_body.prebuilt(request_body.put_item(table, item, APPEND_ONLY_CONDITION)):
            client.put_item(TableName=table, Item={}, ConditionExpression=APPEND_ONLY_CONDITION)

    for _ in range(100):
        put()
    n = 1_000
    c0 = time.thread_time()
    for _ in range(n):
        put()
    per_call = (time.thread_time() - c0) / n * 1e6
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for _ in range(n):
        put()
    profiler.disable()
    stats: Any = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def cumulative(path: str, name: str) -> float:
        return float(sum(v[3] for k, v in stats.items() if k[0].endswith(path) and k[2] == name))

    whole = cumulative("botocore/client.py", "_make_api_call")
    store.stop()
    print(f"CPU per conditional PutItem: {per_call:.0f} µs (measured without the profiler)")
    print()
    print("| step | share of the call | µs (estimate) |")
    print("|---|---|---|")
    for label, path, name in CALL_STEPS:
        share = cumulative(path, name) / whole
        print(f"| {label} | {share * 100:.1f}% | {share * per_call:.0f} |")


def main() -> None:
    if sys.argv[1:2] == ["call"]:
        call()
        return
    import yappi

    copies = sys.argv[1] if len(sys.argv) > 1 else "both"
    store = standin(0)
    table = store.new_table()
    logs, _ = install_logs()
    processor = HISSpanProcessor(DynamoDBSpanExporter(table), copies=copies)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("profile")
    session = f"profile-{uuid.uuid4().hex[:6]}"
    loop(tracer, processor, logs, session, 2_000)  # warm: clients, connections, imports
    n = 10_000
    c0 = time.process_time()
    loop(tracer, processor, logs, session, n)
    per_milestone = (time.process_time() - c0) / n * 1e6
    yappi.set_clock_type("cpu")
    yappi.start()
    loop(tracer, processor, logs, session, n)
    yappi.stop()
    shares: Counter[str] = Counter()
    for stat in yappi.get_func_stats():
        shares[part_of(stat.module)] += stat.tsub
    total = sum(shares.values())
    store.stop()
    print(f"CPU per milestone, copies={copies}: {per_milestone:.1f} µs (measured without the profiler)")
    print()
    print("| part | share | µs a milestone (estimate) |")
    print("|---|---|---|")
    for name, value in shares.most_common():
        print(f"| {name} | {value / total * 100:.1f}% | {value / total * per_milestone:.1f} |")


if __name__ == "__main__":
    main()
