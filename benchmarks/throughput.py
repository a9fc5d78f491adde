"""2. Write throughput into moto's server (its own process): the exporter, and the whole live path
(milestone() -> processor -> table), vs the ceiling of plain boto3 batch_write_item loops of 25, and
vs the per-milestone put_item baseline. Rounds alternate; medians are reported."""

from __future__ import annotations

import gc
import itertools
import threading
import time
import uuid

from opentelemetry.sdk.trace import TracerProvider

from benchmarks.agent_thread import here_i_strand_way
from benchmarks.common import Moto, Row, median
from his_otel import DynamoDBSpanExporter, HISSpanProcessor, milestone
from his_otel.emit import new_event_id
from his_otel.schema import Milestone, to_item
from his_otel.write.client import ClientSource


def milestones(n: int, session: str) -> list[Milestone]:
    return [
        Milestone(new_event_id(), session, "agent", "PROGRESS", f"step {i}", time.time_ns(), 1, 1, "span")
        for i in range(n)
    ]


def run(moto: Moto, quick: bool) -> list[Row]:
    n = 3_000 if quick else 18_000  # whole cycles of the six orders
    block = 500  # what the live processor hands the exporter at a time
    n_put = 100 if quick else 300
    table = moto.new_table()
    # Seconds each way spent, per cycle of the six orders: ratios are taken per cycle (same minute,
    # same server state), then the median over cycles.
    cycles: list[dict[str, float]] = []
    spent: dict[str, float] = {}
    # Each way has its own client, as in real use: sharing one connection pool across the writer
    # thread and this one made stale-connection retries (moto's server closes every connection)
    # land on whichever way picked the stale connection, ~100 ms each.
    exporter = DynamoDBSpanExporter(table)
    processor = HISSpanProcessor(DynamoDBSpanExporter(table))
    ceiling_client = ClientSource().factory()()
    live_session = f"l-{uuid.uuid4().hex[:6]}"

    def exporter_block(b: int) -> None:
        ms = milestones(block, f"x-{b}")
        t0 = time.perf_counter()
        outcome = exporter.export_milestones(ms, timeout_s=300)
        spent["exporter"] += time.perf_counter() - t0
        assert outcome.written == block and not outcome.unwritten

    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")

    def live_block(b: int) -> None:
        # The whole live path: milestone() on this thread, the writer thread, until flushed. In a
        # real span, so its rows carry trace_id, span_id and span_name like the others' rows.
        t0 = time.perf_counter()
        with tracer.start_as_current_span("span"):
            for i in range(block):
                milestone("PROGRESS", f"step {i}", session_id=live_session)
        assert processor.force_flush(300_000)
        spent["live"] += time.perf_counter() - t0

    def ceiling_block(b: int) -> None:
        items = [{"PutRequest": {"Item": to_item(m)}} for m in milestones(block, f"c-{b}")]
        t0 = time.perf_counter()
        for i in range(0, block, 25):
            ceiling_client.batch_write_item(RequestItems={table: items[i : i + 25]})
        spent["ceiling"] += time.perf_counter() - t0

    # Blocks cycle through all six orders of the three ways, so each sees the same server state
    # and noise and follows each other way equally often; garbage is collected (untimed) between
    # blocks so one way's allocations are not paid for in the next way's timing. All of it runs off
    # the main thread: the same boto3 call measured ~15% slower from CPython's main thread than
    # from any other thread, and the live path's writer is a thread (as Strands' agent() runs on one).
    orders = list(itertools.permutations([exporter_block, live_block, ceiling_block]))

    def rotate() -> None:
        nonlocal spent
        for b in range(n // block):
            if b % len(orders) == 0:
                spent = {"exporter": 0.0, "live": 0.0, "ceiling": 0.0}
                cycles.append(spent)
            for way in orders[b % len(orders)]:
                gc.collect()
                way(b)

    runner = threading.Thread(target=rotate)
    runner.start()
    runner.join()
    processor.shutdown()

    t0 = time.perf_counter()
    for _ in range(n_put):
        here_i_strand_way(table, "put", "PROGRESS", "step")
    put_rate = n_put / (time.perf_counter() - t0)
    assert moto.count(table) == 3 * (n // block) * block + n_put
    ceiling = "boto3 batch_write_item loop of 25 (ceiling)"
    put = "new client + put_item per milestone (baseline)"
    rows_per_cycle = len(orders) * block
    rates = {k: median([rows_per_cycle / c[k] for c in cycles]) for k in ("exporter", "live", "ceiling")}
    exp_ratio = median([c["ceiling"] / c["exporter"] for c in cycles])
    live_ratio = median([c["ceiling"] / c["live"] for c in cycles])
    name, unit, ref = "2 throughput", "rows/s", rates["ceiling"]
    return [
        Row(name, "exporter rows/s", rates["exporter"], ref, ceiling, unit, "higher", paired_ratio=exp_ratio),
        Row(name, "live path rows/s", rates["live"], ref, ceiling, unit, "higher", paired_ratio=live_ratio),
        Row(name, "exporter rows/s", rates["exporter"], put_rate, put, unit, "higher"),
    ]
