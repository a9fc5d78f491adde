"""Which pipeline takes a milestone, and that each is taken once: observed as the PutRequests that
reach DynamoDB (through a recording proxy in front of moto's server)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import INVALID_SPAN

from fault_proxy import FaultProxy
from helpers import new_session
from his_otel import DynamoDBSpanExporter, Handle, HISSpanProcessor, milestone
from his_otel.read import session_rows


@pytest.fixture
def pipeline(proxy: FaultProxy) -> Iterator[Callable[..., tuple[TracerProvider, HISSpanProcessor]]]:
    """pipeline(table, **kw) -> a private provider and its own pipeline, writing through the proxy."""
    made: list[HISSpanProcessor] = []

    def build(table: str, **kw: Any) -> tuple[TracerProvider, HISSpanProcessor]:
        exporter = DynamoDBSpanExporter(table, endpoint_url=proxy.endpoint)
        processor = HISSpanProcessor(exporter, schedule_delay_millis=0, **kw)
        made.append(processor)
        provider = TracerProvider()
        provider.add_span_processor(processor)
        return provider, processor

    yield build
    for p in made:
        p.shutdown()


def puts_for(proxy: FaultProxy, session: str) -> dict[tuple[str, str, str], int]:
    return {k: n for k, n in proxy.counters.puts.items() if k[1] == session}


def test_each_provider_writes_only_its_own_milestones(
    ddb: Any, new_table: Callable[[], str], proxy: FaultProxy, pipeline: Any
) -> None:
    table_a, table_b = new_table(), new_table()
    provider_a, processor_a = pipeline(table_a)
    provider_b, processor_b = pipeline(table_b)
    session_a, session_b = new_session(), new_session()
    with provider_a.get_tracer("a").start_as_current_span("tenant a"):
        for i in range(3):
            milestone("PROGRESS", f"a {i}", session_id=session_a)
    with provider_b.get_tracer("b").start_as_current_span("tenant b"):
        for i in range(2):
            milestone("PROGRESS", f"b {i}", session_id=session_b)
    assert processor_a.force_flush(10_000) and processor_b.force_flush(10_000)
    assert [r["evt_message"] for r in session_rows(ddb, table_a, session_a)] == ["a 0", "a 1", "a 2"]
    assert [r["evt_message"] for r in session_rows(ddb, table_b, session_b)] == ["b 0", "b 1"]
    # Nothing crossed over: no request for the other tenant's table, no other pipeline took them.
    assert {k[0] for k in puts_for(proxy, session_a)} == {table_a}
    assert {k[0] for k in puts_for(proxy, session_b)} == {table_b}
    assert (processor_a.stats().submitted, processor_b.stats().submitted) == (3, 2)


def test_a_span_that_does_not_record_goes_to_the_global_providers_pipeline_only(
    ddb: Any, table: str, his: Handle, pipeline: Any
) -> None:
    _, private = pipeline(table)
    before = his.stats().submitted
    session = new_session()
    milestone("PROGRESS", "sampled out", span=INVALID_SPAN, session_id=session, table=table)
    assert his.force_flush(10_000)
    assert [r["evt_message"] for r in session_rows(ddb, table, session)] == ["sampled out"]
    assert his.stats().submitted == before + 1
    assert private.stats().submitted == 0


def test_a_span_started_before_its_pipeline_was_added_still_reaches_it_once(
    ddb: Any, table: str, proxy: FaultProxy
) -> None:
    provider = TracerProvider()
    session = new_session()
    with provider.get_tracer("t").start_as_current_span("early"):
        processor = HISSpanProcessor(
            DynamoDBSpanExporter(table, endpoint_url=proxy.endpoint),
            schedule_delay_millis=0,
            tracer_provider=provider,
        )
        provider.add_span_processor(processor)
        milestone("PROGRESS", "after configure", session_id=session)
    try:
        assert processor.force_flush(10_000)
        assert [r["evt_message"] for r in session_rows(ddb, table, session)] == ["after configure"]
        assert set(puts_for(proxy, session).values()) == {1}  # live, then end of span: one write
    finally:
        processor.shutdown()


def test_live_and_end_of_span_copies_are_written_once(
    ddb: Any, table: str, proxy: FaultProxy, pipeline: Any
) -> None:
    provider, processor = pipeline(table)
    session = new_session()
    with provider.get_tracer("t").start_as_current_span("work") as span:
        for i in range(5):
            milestone("PROGRESS", str(i), session_id=session)
        # The direct API too: an event the live path never saw is taken at span end, once.
        span.add_event(
            "his.milestone",
            {
                "his.evt_type": "PROGRESS",
                "his.event_id": "direct-1",
                "his.session_id": session,
                "his.evt_message": "d",
            },
        )
    assert processor.force_flush(10_000)
    puts = puts_for(proxy, session)
    assert len(puts) == 6 and set(puts.values()) == {1}
    assert processor.stats().submitted == 6 and processor.stats().written == 6


def test_the_dedupe_of_a_long_span_never_forgets(table: str) -> None:
    # 70,000 milestones on other spans between a live milestone and the end of its span: the end of
    # span must still know it was taken. Nothing is written here (a minute of batching delay).
    provider = TracerProvider()
    processor = HISSpanProcessor(
        DynamoDBSpanExporter(table),
        schedule_delay_millis=60_000,
        shutdown_timeout_millis=0,
        max_queue_size=200_000,
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    try:
        with tracer.start_as_current_span("long"):
            milestone("PROGRESS", "first", session_id="s")
            with tracer.start_as_current_span("busy"):
                for _ in range(70_000):
                    milestone("PROGRESS", "", session_id="s")
        assert processor.stats().submitted == 70_001
    finally:
        processor.shutdown()
