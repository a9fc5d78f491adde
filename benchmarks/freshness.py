"""3. Freshness: emit-to-row latency with the live processor while a HISAgent invocation runs, on
loopback and at a distance.

A tool of a real HISAgent run emits milestones at a fixed rate. A row counts as landed when the
BatchWriteItem call that carried it returned without listing it as unprocessed: from then on a
reader sees it. Latency = that moment minus the milestone's own timestamp. The reference is the
same stream of rows written by 8 boto3 threads, each with its own client, each sending at once
whatever is queued (up to 25): what the server and the link allow at that rate, with no batching
delay and no agent. here-i-strand's synchronous put_item (the emit is the write) is a second
reference at 20/s. All against the same endpoint, in the same run: the DynamoDB stand-in
(``benchmarks.standin``) answering after the distance's latency; the 1 s p99 is a target, and at
2,000/s so is 1.2x the ideal writer's p99."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from typing import Any

from strands import tool

from benchmarks.agent_thread import here_i_strand_way
from benchmarks.common import STANDIN_LATENCIES_MS, Moto, Row, median, percentile, standin
from benchmarks.throughput import CEILING_THREADS, Ceiling, milestones
from his_otel import HISAgent, ScriptedModel, ToolCall, configure, milestone
from his_otel.schema import to_item


class LandingClock:
    """Wraps the DynamoDB client: records when each event_id's write was acknowledged."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.landed: dict[str, int] = {}
        self._lock = threading.Lock()

    def batch_write_item(self, **kwargs: Any) -> Any:
        response = self._client.batch_write_item(**kwargs)
        now = time.time_ns()
        unprocessed = {
            r["PutRequest"]["Item"]["event_id"]["S"]
            for reqs in (response.get("UnprocessedItems") or {}).values()
            for r in reqs
        }
        with self._lock:
            for reqs in kwargs["RequestItems"].values():
                for r in reqs:
                    event_id = r["PutRequest"]["Item"]["event_id"]["S"]
                    if event_id not in unprocessed:
                        self.landed.setdefault(event_id, now)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def ideal_writer(table: str, rate_per_s: float, seconds: float) -> list[float]:
    """Emit-to-row latencies (ms) of 8 boto3 threads writing a steady stream at ``rate_per_s``."""
    queue: deque[tuple[int, dict[str, Any]]] = deque()
    ready = threading.Condition()
    done = threading.Event()
    latencies: list[float] = []

    def write(client: Any) -> None:
        while True:
            with ready:
                while not queue and not done.is_set():
                    ready.wait(0.05)
                if not queue:
                    return
                batch = [queue.popleft() for _ in range(min(25, len(queue)))]
            response = client.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": i}} for _, i in batch]}
            )
            assert not response.get("UnprocessedItems")
            now = time.time_ns()
            latencies.extend((now - t) / 1e6 for t, _ in batch)

    threads = [threading.Thread(target=write, args=(c,)) for c in Ceiling(table).clients]
    for t in threads:
        t.start()
    items = [to_item(m) for m in milestones(int(rate_per_s * seconds), f"ideal-{uuid.uuid4().hex[:6]}")]
    start = time.perf_counter()
    for i, item in enumerate(items):
        with ready:
            queue.append((time.time_ns(), item))
            ready.notify()
        delay = start + (i + 1) / rate_per_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    done.set()
    for t in threads:
        t.join()
    return latencies


def run(moto: Moto, quick: bool) -> list[Row]:
    seconds = 2.0 if quick else 5.0
    if moto.latency_ms in STANDIN_LATENCIES_MS:
        # The stand-in answering after that latency: at 2,000/s moto's server, not the writer,
        # would be what a figure measures.
        moto = standin(moto.latency_ms)
    table = moto.new_table()
    clock = LandingClock(moto.client)
    handle = configure(table, client=clock)
    emitted: dict[str, int] = {}

    @tool
    def steady_work(rate_per_s: float, seconds: float) -> str:
        """Do work, reporting a milestone at a steady rate."""
        interval = 1.0 / rate_per_s
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            t = time.time_ns()
            event_id = milestone("PROGRESS", f"item {i}")
            if event_id:
                emitted[event_id] = t
            i += 1
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        return f"{i} items"

    rows: list[Row] = []
    sync: list[float] = []
    for _ in range(50 if quick else 200):
        t0 = time.perf_counter_ns()
        here_i_strand_way(table, "sync", "PROGRESS", "x")
        sync.append((time.perf_counter_ns() - t0) / 1e6)
    for rate in (20, 2000):
        emitted.clear()
        session = f"fresh-{uuid.uuid4().hex[:6]}"
        script = [ToolCall("steady_work", {"rate_per_s": rate, "seconds": seconds}), "done"]
        agent = HISAgent(table, session, model=ScriptedModel(script), tools=[steady_work])
        agent("work")
        assert handle.force_flush(60_000)
        lat = [(clock.landed[e] - t) / 1e6 for e, t in emitted.items() if e in clock.landed]
        assert len(lat) == len(emitted), f"{len(emitted) - len(lat)} milestones never landed"
        ideal = ideal_writer(table, rate, seconds)
        label = f"{CEILING_THREADS} boto3 threads writing the same stream at once (ideal writer)"
        where = moto.distance
        metric = f"emit-to-row %s @ {rate}/s, {where}"
        rows.append(Row("3 freshness", metric % "p50", median(lat), median(ideal), label, "ms"))
        if rate == 20:
            here = "here-i-strand: synchronous put_item (emit = write)"
            rows.append(Row("3 freshness", metric % "p50", median(lat), median(sync), here, "ms"))
        rows.append(
            Row(
                "3 freshness",
                metric % "p99",
                percentile(lat, 99),
                percentile(ideal, 99),
                label,
                "ms",
                target="≤ 1,000 ms" if rate == 20 else "≤ 1,000 ms and ≤ 1.2x",
            )
        )
    handle.shutdown()
    return rows
