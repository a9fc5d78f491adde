"""2. Write throughput into moto's server (its own process): the exporter, and the whole live path
(milestone() -> processor -> table), vs the ceiling of plain boto3 batch_write_item loops of 25, and
vs the per-milestone put_item baseline. Rounds alternate; medians are reported."""

from __future__ import annotations

import time
import uuid

from opentelemetry.trace import INVALID_SPAN

from benchmarks.agent_thread import here_i_strand_way
from benchmarks.common import Moto, Row, median
from his_otel import DynamoDBSpanExporter, HISSpanProcessor, milestone
from his_otel.emit import new_event_id
from his_otel.schema import Milestone, to_item


def milestones(n: int, session: str) -> list[Milestone]:
    return [
        Milestone(new_event_id(), session, "agent", "PROGRESS", f"step {i}", time.time_ns(), 1, 1, "span")
        for i in range(n)
    ]


def run(moto: Moto, quick: bool) -> list[Row]:
    n = 2_000 if quick else 10_000
    n_put = 100 if quick else 300
    rounds = 3
    exporter_rates: list[float] = []
    live_rates: list[float] = []
    ceiling_rates: list[float] = []
    put_rates: list[float] = []
    for _ in range(rounds):
        table = moto.new_table()
        ms = milestones(n, f"s-{uuid.uuid4().hex[:6]}")
        exporter = DynamoDBSpanExporter(table, client=moto.client)
        t0 = time.perf_counter()
        outcome = exporter.export_milestones(ms, timeout_s=300)
        exporter_rates.append(outcome.written / (time.perf_counter() - t0))
        assert outcome.written == n and not outcome.unwritten

        # Ceiling: the same items, pre-built, in plain batch_write_item calls of 25 on one thread.
        items = [{"PutRequest": {"Item": to_item(m)}} for m in milestones(n, f"c-{uuid.uuid4().hex[:6]}")]
        t0 = time.perf_counter()
        for i in range(0, n, 25):
            moto.client.batch_write_item(RequestItems={table: items[i : i + 25]})
        ceiling_rates.append(n / (time.perf_counter() - t0))

        processor = HISSpanProcessor(
            DynamoDBSpanExporter(table, client=moto.client), schedule_delay_millis=50
        )
        session = f"l-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        for i in range(n):
            milestone("PROGRESS", f"step {i}", span=INVALID_SPAN, session_id=session)
        assert processor.force_flush(300_000)
        live_rates.append(n / (time.perf_counter() - t0))
        processor.shutdown()

        t0 = time.perf_counter()
        for _ in range(n_put):
            here_i_strand_way(table, "put", "PROGRESS", "step")
        put_rates.append(n_put / (time.perf_counter() - t0))
    ceiling = "plain boto3 batch_write_item loop of 25 (ceiling)"
    put = "new client + put_item per milestone (baseline)"
    return [
        Row(
            "2 throughput",
            "exporter rows/s",
            median(exporter_rates),
            median(ceiling_rates),
            ceiling,
            "rows/s",
            "higher",
        ),
        Row(
            "2 throughput",
            "live path rows/s",
            median(live_rates),
            median(ceiling_rates),
            ceiling,
            "rows/s",
            "higher",
        ),
        Row(
            "2 throughput",
            "exporter rows/s",
            median(exporter_rates),
            median(put_rates),
            put,
            "rows/s",
            "higher",
        ),
    ]
