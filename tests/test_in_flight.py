"""Several writes in flight, with today's guarantees: bounded, exactly once, one backoff for every
writer when DynamoDB throttles, and no row waiting behind another row's slow call.

All through the fault proxy in front of moto's server, which counts the write requests it holds at
once and the puts it forwarded per key."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from opentelemetry.sdk.trace import TracerProvider

from fault_proxy import FaultProxy, Faults
from helpers import new_session, wait_for
from his_otel import DynamoDBSpanExporter, HISSpanProcessor, milestone
from his_otel.emit import new_event_id
from his_otel.read import session_rows
from his_otel.schema import Milestone


def milestones(n: int, session: str) -> list[Milestone]:
    return [
        Milestone(new_event_id(), session, "agent", "PROGRESS", f"step {i}", time.time_ns(), 1, 1, "span")
        for i in range(n)
    ]


def puts_of(proxy: FaultProxy, table: str, session: str) -> list[int]:
    return [n for (t, s, _), n in proxy.counters.puts.items() if t == table and s == session]


def test_a_far_dynamodb_gets_several_calls_at_once_never_more_than_the_bound(
    proxy: FaultProxy, ddb: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 ms a call: the writer overlaps calls (up to ``writes_in_flight``, else the environment's
    ``HIS_OTEL_WRITES_IN_FLIGHT``), every row once."""
    proxy.faults = Faults(delay_s=0.04)
    monkeypatch.setenv("HIS_OTEL_WRITES_IN_FLIGHT", "1")
    for bound in (None, 4):
        exporter = DynamoDBSpanExporter(table, endpoint_url=proxy.endpoint, writes_in_flight=bound)
        exporter.export_milestones(milestones(25, new_session()))  # sizes the writer to the latency
        proxy.counters.peak_in_flight = 0
        session = new_session()
        outcome = exporter.export_milestones(milestones(500, session), timeout_s=120)
        assert outcome.written == 500 and not outcome.unwritten
        if bound is None:
            assert proxy.counters.peak_in_flight == 1
        else:
            assert 2 <= proxy.counters.peak_in_flight <= bound
        assert len(session_rows(ddb, table, session)) == 500
        assert puts_of(proxy, table, session) == [1] * 500  # each row sent once
        exporter.shutdown()


def test_a_throttled_call_holds_back_every_caller_of_the_writer(
    proxy: FaultProxy, ddb: Any, table: str
) -> None:
    """Two callers share a writer (as the bridge's requests do). While DynamoDB throttles every
    call, their retries wait out one shared backoff instead of each hammering on; when it stops,
    every row lands once. The client makes one attempt a call, so botocore's own retry backoff does
    not hide the writer's."""
    client = boto3.client(
        "dynamodb",
        endpoint_url=proxy.endpoint,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    exporter = DynamoDBSpanExporter(table, client=client, writes_in_flight=8)
    proxy.faults = Faults(delay_s=0.03)
    exporter.export_milestones(milestones(200, new_session()))  # several calls in flight from here on
    sessions = [new_session(), new_session()]
    outcomes: list[Any] = []
    with proxy.injecting(throttle=1.0):
        before = proxy.counters.requests
        callers = [
            threading.Thread(
                target=lambda s=s: outcomes.append(
                    exporter.export_milestones(milestones(200, s), timeout_s=120)
                )
            )
            for s in sessions
        ]
        for caller in callers:
            caller.start()
        time.sleep(3)
        during = proxy.counters.requests - before
    for caller in callers:
        caller.join(120)
    # 16 calls of 25 are owed. Retrying with no backoff sends hundreds of requests in three seconds;
    # one backoff for all (50 ms doubling to 2 s) sends a few dozen.
    assert proxy.counters.injected.get("throttle", 0) >= 8
    assert during <= 60, f"{during} write requests in 3 s of throttling"
    assert [o.written for o in outcomes] == [200, 200]
    for session in sessions:
        assert len(session_rows(ddb, table, session)) == 200
        assert puts_of(proxy, table, session).count(1) + puts_of(proxy, table, session).count(0) == 200
    exporter.shutdown()


def test_a_slow_call_holds_up_only_its_own_rows(proxy: FaultProxy, ddb: Any, table: str) -> None:
    """The live processor: a call that takes 4 s (a slow DynamoDB partition, a stalled connection)
    does not keep the next milestone out of the table: another writer thread takes it."""
    exporter = DynamoDBSpanExporter(table, endpoint_url=proxy.endpoint)
    processor = HISSpanProcessor(exporter, schedule_delay_millis=0)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    slow, fast = new_session(), new_session()
    try:
        proxy.faults = Faults(slow=1.0, slow_s=4.0)
        with tracer.start_as_current_span("work"):
            milestone("PROGRESS", "stuck behind a slow call", session_id=slow)
        wait_for(lambda: proxy.counters.injected.get("slow"), timeout_s=10)
        proxy.faults = Faults()  # the next call is fast
        with tracer.start_as_current_span("work"):
            milestone("PROGRESS", "written at once", session_id=fast)
        wait_for(lambda: session_rows(ddb, table, fast), timeout_s=3.5)
        assert session_rows(ddb, table, slow) == [], "the slow call had returned: nothing was shown"
        assert processor.force_flush(30_000)
        assert [r["evt_message"] for r in session_rows(ddb, table, slow)] == ["stuck behind a slow call"]
        assert puts_of(proxy, table, slow) == [1] and puts_of(proxy, table, fast) == [1]
    finally:
        processor.shutdown()


@pytest.mark.parametrize("append_only", [False, True], ids=["batches", "conditional-puts"])
def test_several_callers_of_one_writer_share_one_bound(
    proxy: FaultProxy, ddb: Any, table: str, append_only: bool
) -> None:
    """Eight threads writing through one exporter at once (as the bridge's requests and the
    processor's writer threads do): the calls in flight at DynamoDB never exceed the writer's bound,
    however many callers there are (a pool alone bounds only its own submissions)."""
    proxy.faults = Faults(delay_s=0.05)
    bound = 3
    exporter = DynamoDBSpanExporter(
        table,
        endpoint_url=proxy.endpoint,
        writes_in_flight=bound,
        puts_in_flight=bound,
        append_only=append_only,
    )
    exporter.export_milestones(milestones(25, new_session()))  # sizes the writer to the latency
    proxy.counters.peak_in_flight = 0
    sessions = [new_session() for _ in range(8)]
    results: list[Any] = []
    # Writes of one call each (a batch of 20; one conditional put), which run on their caller's
    # thread: only the writer's gate stands between eight callers and DynamoDB.
    per_call = 1 if append_only else 20

    def write(session: str) -> None:
        for _ in range(5):
            results.append(exporter.export_milestones(milestones(per_call, session), 120))

    callers = [threading.Thread(target=write, args=(s,)) for s in sessions]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(results) == 40 and all(r.written == per_call and not r.unwritten for r in results)
    assert 1 <= proxy.counters.peak_in_flight <= bound, proxy.counters.peak_in_flight
    exporter.shutdown()
