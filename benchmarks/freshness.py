"""3. Freshness: emit-to-row latency with the live processor while a HISAgent invocation runs, on
loopback and at a distance.

A tool of a real HISAgent run emits milestones at a fixed rate. A row counts as landed when the
BatchWriteItem call that carried it returned without listing it as unprocessed: from then on a
reader sees it. Latency = that moment minus the milestone's own timestamp. The reference is
here-i-strand's synchronous put_item (its emit-to-row latency: the emit is the write), measured in
the same run against the same endpoint; the 1 s p99 is a target."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from strands import tool

from benchmarks.agent_thread import here_i_strand_way
from benchmarks.common import Moto, Row, median, percentile
from his_otel import HISAgent, ScriptedModel, ToolCall, configure, milestone


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


def run(moto: Moto, quick: bool) -> list[Row]:
    seconds = 2.0 if quick else 5.0
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
        label = "here-i-strand: synchronous put_item (emit = write)"
        where = moto.distance
        rows.append(
            Row("3 freshness", f"emit-to-row p50 @ {rate}/s, {where}", median(lat), median(sync), label, "ms")
        )
        rows.append(
            Row(
                "3 freshness",
                f"emit-to-row p99 @ {rate}/s, {where}",
                percentile(lat, 99),
                percentile(sync, 99),
                label,
                "ms",
                target="≤ 1,000 ms",
            )
        )
    handle.shutdown()
    return rows
