"""1. Cost of one milestone: his_otel.milestone() inside a recording span, with the live processor
writing in the background, vs here-i-strand's way (BASELINE: a fresh boto3.client("dynamodb") and a
synchronous put_item per milestone), against the same DynamoDB stand-in (``benchmarks.standin``:
keep-alive connections and no delay, as DynamoDB's own; moto's server closes each connection). Wall
time on the agent's thread per call, and CPU per milestone of the whole process (the agent's thread,
the writer threads, whose botocore work takes the GIL from the agent, and the log exporter's thread).
The log copy of each milestone goes to a global LoggerProvider whose batch processor encodes each
batch as OTLP protobuf (what its OTLP exporter does before sending); "span copy only" is the same
with the log copy off. The references are what OpenTelemetry alone costs for the same copies (the
same span event, and the same log event through the same provider, no row written), and that plus
the rows written by a plain boto3 client in BatchWriteItems of 25. Blocks of
each alternate so machine noise hits all alike."""

from __future__ import annotations

import time
import uuid
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from benchmarks.common import Moto, Row, median, percentile, standin
from his_otel import DynamoDBSpanExporter, HISSpanProcessor, log_copy, milestone
from his_otel.emit import new_event_id
from his_otel.schema import EVENT_NAME, Milestone, event_attributes, to_item


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


class EncodingLogExporter:
    """Encodes each batch as the OTLP log exporter does, and sends nothing."""

    def __init__(self) -> None:
        self.records = 0

    def export(self, batch: Any) -> Any:
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
        from opentelemetry.sdk._logs.export import LogExportResult

        encode_logs(batch).SerializeToString()
        self.records += len(batch)
        return LogExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def install_logs() -> tuple[Any, EncodingLogExporter]:
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    exporter = EncodingLogExporter()
    # As configure() installs it: a 200 ms delay, a queue that holds a burst.
    processor = BatchLogRecordProcessor(exporter, schedule_delay_millis=200, max_queue_size=100_000)  # type: ignore[arg-type]
    provider = LoggerProvider()
    provider.add_log_record_processor(processor)
    _logs.set_logger_provider(provider)
    return processor, exporter


def otel_alone(tracer: Any, session: str, copies: str, rows: list[Milestone] | None = None) -> None:
    """What OpenTelemetry alone costs for one milestone's copies: the same span event (and the same
    log event through the same LoggerProvider); into ``rows`` if given, for a plain writer."""
    with tracer.start_as_current_span("execute_event_loop_cycle") as span:
        ctx = span.get_span_context()
        for _ in range(10):
            m = Milestone(new_event_id(), session, "default", "PROGRESS", "step done", time.time_ns(),
                          ctx.trace_id, ctx.span_id, "execute_event_loop_cycle")  # fmt: skip
            span.add_event(EVENT_NAME, event_attributes(m), timestamp=m.timestamp_ns)
            if copies == "both":
                log_copy.emit(m, ctx)
            if rows is not None:
                rows.append(m)


def boto3_batches(client: Any, table: str, rows: list[Milestone]) -> None:
    """The rows written as a plain boto3 user would: BatchWriteItem calls of 25 on one thread."""
    items = [{"PutRequest": {"Item": to_item(m)}} for m in rows]
    for i in range(0, len(items), 25):
        assert not client.batch_write_item(RequestItems={table: items[i : i + 25]}).get("UnprocessedItems")


def run(moto: Moto, quick: bool) -> list[Row]:
    rounds = 3 if quick else 5
    ours_per_round = 2_000 if quick else 10_000
    base_per_round = 40 if quick else 150
    # A DynamoDB that keeps its connections open and answers at once, as DynamoDB does: moto's
    # server closes every connection, which costs the client a connect per call.
    store = standin(0)
    table = store.new_table()
    logs, log_exporter = install_logs()
    processor = HISSpanProcessor(DynamoDBSpanExporter(table))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    # Without his-otel's processor: it would read the span events of the reference as milestones.
    plain_tracer = TracerProvider().get_tracer("bench")
    ours: list[float] = []
    base: list[float] = []
    parts = ("ours", "base", "event", "span_only", "otel_both", "otel_span", "boto3_both", "boto3_span")
    cpu = dict.fromkeys(parts, 0.0)
    his_calls = 0
    timed: list[int] = []
    session = f"bench-{uuid.uuid4().hex[:8]}"
    here_i_strand_way(table, session, "START", "warm-up")
    span_only: list[float] = []
    for _ in range(rounds):
        for copies, samples, key in (("both", ours, "ours"), ("span", span_only, "span_only")):
            processor.copies = copies
            c0 = time.process_time()
            calls_before = store.calls()["BatchWriteItem"]
            for _ in range(ours_per_round // 10):
                # Ten milestones a span, as a Strands cycle would carry.
                with tracer.start_as_current_span("execute_event_loop_cycle"):
                    for _ in range(10):
                        t0 = time.perf_counter_ns()
                        milestone("PROGRESS", "step done", session_id=session)
                        samples.append((time.perf_counter_ns() - t0) / 1000)
            # The writer's and the log exporter's shares of the CPU are in the figure.
            assert processor.force_flush(60_000) and logs.force_flush(60_000)
            cpu[key] += time.process_time() - c0
            his_calls += store.calls()["BatchWriteItem"] - calls_before
        c0 = time.process_time()
        for _ in range(ours_per_round // 10):
            with tracer.start_as_current_span("execute_event_loop_cycle") as span:
                for _ in range(10):
                    timed.append(time.perf_counter_ns())  # as the loop above pays for its timing
                    span.add_event("progress", {"message": "step done", "session": session})
        cpu["event"] += time.process_time() - c0
        for copies in ("both", "span"):
            c0 = time.process_time()
            for _ in range(ours_per_round // 10):
                otel_alone(plain_tracer, session, copies)
            assert logs.force_flush(60_000)
            cpu[f"otel_{copies}"] += time.process_time() - c0
            c0 = time.process_time()
            written: list[Milestone] = []
            for _ in range(ours_per_round // 10):
                otel_alone(plain_tracer, session, copies, written)
            boto3_batches(store.client, table, written)
            assert logs.force_flush(60_000)
            cpu[f"boto3_{copies}"] += time.process_time() - c0
        c0 = time.process_time()
        for _ in range(base_per_round):
            t0 = time.perf_counter_ns()
            here_i_strand_way(table, session, "PROGRESS", "step done")
            base.append((time.perf_counter_ns() - t0) / 1000)
        cpu["base"] += time.process_time() - c0
    stats = processor.stats()
    processor.shutdown()
    assert stats.dropped == 0 and stats.written == len(ours) + len(span_only), stats
    per_call = stats.written / max(1, his_calls)
    assert log_exporter.records == len(ours) * 3, log_exporter.records
    label = "here-i-strand way: new client + put_item (baseline)"
    per_ours = cpu["ours"] / len(ours) * 1e6
    per_base = cpu["base"] / len(base) * 1e6
    per_event = cpu["event"] / len(ours) * 1e6
    per_span_only = cpu["span_only"] / len(span_only) * 1e6
    per_otel_both = cpu["otel_both"] / len(ours) * 1e6
    per_otel_span = cpu["otel_span"] / len(ours) * 1e6
    goal = "≤ 40 us"
    plain = "OpenTelemetry + boto3 alone: the same {}, rows in BatchWriteItems of 25 from one client"
    return [
        Row(
            "1 CPU",
            "per milestone, both copies, agent + writer + log export threads",
            per_ours,
            cpu["boto3_both"] / len(ours) * 1e6,
            plain.format("span and log events"),
            "us",
        ),
        Row(
            "1 CPU",
            "per milestone, span copy only",
            per_span_only,
            cpu["boto3_span"] / len(ours) * 1e6,
            plain.format("span event"),
            "us",
        ),
        Row(
            "1 CPU",
            "per milestone, both copies, agent + writer + log export threads",
            per_ours,
            per_otel_both,
            "OpenTelemetry alone: the same span event + log event (SDK, OTLP encoding), no row",
            "us",
            target=goal,
        ),
        Row(
            "1 CPU",
            f"per milestone, span copy only (both: {per_call:.1f} rows a call)",
            per_span_only,
            per_otel_span,
            "OpenTelemetry alone: the same span event, no row",
            "us",
            target=goal,
        ),
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
        Row(
            "1 agent thread",
            "per milestone, median",
            median(ours),
            median(span_only),
            "his-otel with the span copy only (no log copy)",
            "us",
        ),
    ]
