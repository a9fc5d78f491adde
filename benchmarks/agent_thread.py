"""1. Cost of one milestone: his_otel.milestone() inside a recording span, with the live processor
writing to moto in the background, vs here-i-strand's way (BASELINE: a fresh boto3.client("dynamodb")
and a synchronous put_item per milestone), against the same moto server. Wall time on the agent's
thread per call, and CPU per milestone of the whole process (the agent's thread plus the writer
threads, whose botocore work takes the GIL from the agent), also against a bare span event (what
OpenTelemetry alone costs). The log copy of each milestone goes to a global LoggerProvider whose
batch processor encodes each batch as OTLP protobuf (what its OTLP exporter does before sending);
"span copy only" is the same with the log copy off. Blocks of each alternate so machine noise hits
all alike."""

from __future__ import annotations

import time
import uuid
from typing import Any

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


def run(moto: Moto, quick: bool) -> list[Row]:
    rounds = 3 if quick else 5
    ours_per_round = 2_000 if quick else 10_000
    base_per_round = 40 if quick else 150
    table = moto.new_table()
    logs, log_exporter = install_logs()
    processor = HISSpanProcessor(DynamoDBSpanExporter(table))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    ours: list[float] = []
    base: list[float] = []
    cpu = {"ours": 0.0, "base": 0.0, "event": 0.0, "span_only": 0.0}
    timed: list[int] = []
    session = f"bench-{uuid.uuid4().hex[:8]}"
    here_i_strand_way(table, session, "START", "warm-up")
    span_only: list[float] = []
    for _ in range(rounds):
        for copies, samples, key in (("both", ours, "ours"), ("span", span_only, "span_only")):
            processor.copies = copies
            c0 = time.process_time()
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
    assert stats.dropped == 0 and stats.written == len(ours) + len(span_only), stats
    assert log_exporter.records == len(ours), log_exporter.records
    label = "here-i-strand way: new client + put_item (baseline)"
    per_ours = cpu["ours"] / len(ours) * 1e6
    per_base = cpu["base"] / len(base) * 1e6
    per_event = cpu["event"] / len(ours) * 1e6
    per_span_only = cpu["span_only"] / len(span_only) * 1e6
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
        Row(
            "1 CPU",
            "per milestone, agent + writer threads",
            per_ours,
            per_span_only,
            "his-otel with the span copy only (no log copy)",
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
