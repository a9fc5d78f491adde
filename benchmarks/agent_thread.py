"""1. Cost of one milestone: his_otel.milestone() inside a recording span, with the live processor
writing to moto in the background, vs here-i-strand's way (BASELINE: a fresh boto3.client("dynamodb")
and a synchronous put_item per milestone), against the same moto server. Wall time on the agent's
thread per call, and CPU per milestone of the whole process (the agent's thread plus the writer
threads, whose botocore work takes the GIL from the agent), also against a bare span event (what
OpenTelemetry alone costs). Blocks of each alternate so machine noise hits all alike."""

from __future__ import annotations

import time
import uuid

from opentelemetry.sdk.trace import TracerProvider

from benchmarks.common import Moto, Row, median, percentile
from his_otel import DynamoDBSpanExporter, HISSpanProcessor, milestone


def here_i_strand_way(table: str, session: str, evt_type: str, message: str) -> None:
    """BASELINE, written after here-i-strand 0.2.13's write_dynamo: a new client and a put_item."""
    import boto3

    client = boto3.client("dynamodb")
    client.put_item(
        TableName=table,
        Item={
            "session_id": {"S": session},
            "event_id": {"S": str(uuid.uuid4())},
            "agent_id": {"S": "agent"},
            "evt_type": {"S": evt_type},
            "evt_message": {"S": message},
            "evt_datetime": {"S": str(time.time())},
        },
    )


def run(moto: Moto, quick: bool) -> list[Row]:
    rounds = 3 if quick else 5
    ours_per_round = 2_000 if quick else 10_000
    base_per_round = 40 if quick else 150
    table = moto.new_table()
    processor = HISSpanProcessor(DynamoDBSpanExporter(table))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    ours: list[float] = []
    base: list[float] = []
    cpu = {"ours": 0.0, "base": 0.0, "event": 0.0}
    timed: list[int] = []
    session = f"bench-{uuid.uuid4().hex[:8]}"
    here_i_strand_way(table, session, "START", "warm-up")
    for _ in range(rounds):
        c0 = time.process_time()
        for _ in range(ours_per_round // 10):
            # Ten milestones a span, as a Strands cycle would carry.
            with tracer.start_as_current_span("execute_event_loop_cycle"):
                for _ in range(10):
                    t0 = time.perf_counter_ns()
                    milestone("PROGRESS", "step done", session_id=session)
                    ours.append((time.perf_counter_ns() - t0) / 1000)
        assert processor.force_flush(60_000)  # the writer's share of the CPU is in the figure
        cpu["ours"] += time.process_time() - c0
        c0 = time.process_time()
        for _ in range(ours_per_round // 10):
            with tracer.start_as_current_span("execute_event_loop_cycle") as span:
                for _ in range(10):
                    timed.append(time.perf_counter_ns())  # as the loop above pays for its timing
                    span.add_event("progress", {"message": "step done", "session": session})
        cpu["event"] += time.process_time() - c0
        c0 = time.process_time()
        for _ in range(base_per_round):
            t0 = time.perf_counter_ns()
            here_i_strand_way(table, session, "PROGRESS", "step done")
            base.append((time.perf_counter_ns() - t0) / 1000)
        cpu["base"] += time.process_time() - c0
    stats = processor.stats()
    processor.shutdown()
    assert stats.dropped == 0 and stats.written == len(ours), stats
    label = "here-i-strand way: new client + put_item (baseline)"
    per_ours = cpu["ours"] / len(ours) * 1e6
    per_base = cpu["base"] / len(base) * 1e6
    per_event = cpu["event"] / len(ours) * 1e6
    return [
        Row("1 agent thread", "per milestone, median", median(ours), median(base), label, "us"),
        Row("1 agent thread", "per milestone, p99", percentile(ours, 99), percentile(base, 99), label, "us"),
        Row("1 CPU", "per milestone, agent + writer threads", per_ours, per_base, label, "us"),
        Row(
            "1 CPU",
            "per milestone, agent + writer threads",
            per_ours,
            per_event,
            "span.add_event alone",
            "us",
        ),
    ]
