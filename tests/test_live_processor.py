"""HISSpanProcessor: rows land while spans are open, and every milestone gets exactly one row."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import SpanLimits, TracerProvider

from helpers import new_session, wait_for
from his_otel import DynamoDBSpanExporter, HISSpanProcessor, milestone
from his_otel.read import session_rows
from his_otel.schema import EVENT_NAME, Milestone, event_attributes
from his_otel.write.table import create_table

DOWN = "http://127.0.0.1:9"  # the discard port: nothing answers


@pytest.fixture
def make(moto_endpoint: str) -> Iterator[Any]:
    """make(table, **processor_args) -> (provider, tracer, processor); all shut down after the test."""
    made: list[HISSpanProcessor] = []

    def build(table: str, endpoint: str | None = None, export_timeout_millis: int = 2000, **kw: Any) -> Any:
        exporter = DynamoDBSpanExporter(
            table, endpoint_url=endpoint, export_timeout_millis=export_timeout_millis
        )
        processor = HISSpanProcessor(exporter, **kw)
        made.append(processor)
        provider = TracerProvider(span_limits=kw.pop("limits", None))
        provider.add_span_processor(processor)
        return provider, provider.get_tracer("t"), processor

    yield build
    for p in made:
        p.shutdown()


def test_row_lands_while_its_span_is_still_open(ddb: Any, table: str, make: Any) -> None:
    _, tracer, _ = make(table)
    session = new_session()
    with tracer.start_as_current_span("long running") as span:
        milestone("PROGRESS", "still going", session_id=session)
        rows = wait_for(lambda: session_rows(ddb, table, session), timeout_s=5)
        assert span.end_time is None  # type: ignore[attr-defined]
    assert rows[0]["span_name"] == "long running"


def test_a_calls_worth_of_rows_is_written_at_once_and_only_in_full_calls(
    ddb: Any, table: str, make: Any, proxy: Any
) -> None:
    """The batching delay is the most a row waits for company: 25 rows (a BatchWriteItem's worth)
    go at once, and while the delay runs only whole calls go; the rest waits to fill the next."""
    _, tracer, processor = make(table, endpoint=proxy.endpoint, schedule_delay_millis=60_000)
    session = new_session()
    with tracer.start_as_current_span("burst"):
        for i in range(60):
            milestone("PROGRESS", f"step {i}", session_id=session)
        # Long before the 60 s delay: two full calls' worth, and not the 10 left over.
        rows = wait_for(lambda: [r for r in [session_rows(ddb, table, session)] if len(r) >= 50], 30)[0]
        assert len(rows) == 50
    assert proxy.counters.operations.get("BatchWriteItem") == 2
    assert processor.force_flush(10_000)
    assert len(session_rows(ddb, table, session)) == 60
    assert proxy.counters.operations.get("BatchWriteItem") == 3


def test_milestone_pushed_out_of_the_span_by_the_event_limit_still_has_its_row(
    ddb: Any, table: str, moto_endpoint: str
) -> None:
    exporter = DynamoDBSpanExporter(table)
    processor = HISSpanProcessor(exporter)
    provider = TracerProvider(span_limits=SpanLimits(max_events=128))
    provider.add_span_processor(processor)
    session = new_session()
    try:
        with provider.get_tracer("t").start_as_current_span("chatty") as span:
            milestone("PROGRESS", "early", session_id=session)
            for i in range(300):  # Strands adds one event per conversation message
                span.add_event("gen_ai.user.message", {"content": str(i)})
        assert not [e for e in span.events if e.name == EVENT_NAME]  # type: ignore[attr-defined]
        assert span.dropped_events > 0  # type: ignore[attr-defined]
        assert processor.force_flush(5000)
        assert [r["evt_message"] for r in session_rows(ddb, table, session)] == ["early"]
    finally:
        processor.shutdown()


def test_live_and_end_of_span_delivery_make_one_row(ddb: Any, table: str, make: Any) -> None:
    _, tracer, processor = make(table)
    session = new_session()
    with tracer.start_as_current_span("s") as span:
        ids = [milestone("PROGRESS", str(i), session_id=session) for i in range(5)]
    assert processor.force_flush(5000)
    # And once more, as a bridge or a second exporter would deliver it.
    processor.on_end(span)  # type: ignore[arg-type]
    DynamoDBSpanExporter(table).export([span])  # type: ignore[list-item]
    assert processor.force_flush(5000)
    assert [r["event_id"] for r in session_rows(ddb, table, session)] == ids


def test_events_added_without_milestone_are_written_at_span_end(ddb: Any, table: str, make: Any) -> None:
    _, tracer, processor = make(table, live=False)
    session = new_session()
    m = Milestone("0190b4c2-7d3e-7abc-8def-000000000001", session, "a", "PROGRESS", "raw", time.time_ns())
    with tracer.start_as_current_span("raw") as span:
        span.add_event(EVENT_NAME, event_attributes(m))
        assert processor.force_flush(2000)
        assert session_rows(ddb, table, session) == []  # not live: nothing before the span ends
    assert processor.force_flush(5000)
    assert [r["event_id"] for r in session_rows(ddb, table, session)] == [m.event_id]


def test_provider_force_flush_writes_pending_rows(ddb: Any, table: str, make: Any) -> None:
    provider, tracer, _ = make(table, schedule_delay_millis=60_000)
    session = new_session()
    with tracer.start_as_current_span("s"):
        for i in range(40):
            milestone("PROGRESS", str(i), session_id=session)
    assert provider.force_flush(10_000)  # True: the 60 s batching delay did not hold the flush
    assert len(session_rows(ddb, table, session)) == 40


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_dynamodb_down_keeps_everything_queued_until_shutdown_counts_it(table: str, make: Any) -> None:
    _, tracer, processor = make(table, endpoint=DOWN, export_timeout_millis=200, shutdown_timeout_millis=300)
    session = new_session()
    with tracer.start_as_current_span("s"):
        for i in range(10):
            milestone("PROGRESS", str(i), session_id=session)
    assert processor.force_flush(300) is False
    stats = processor.stats()
    assert stats.queued == 10 and stats.dropped == 0 and stats.written == 0
    processor.shutdown()
    # A write still in flight at the shutdown timeout is counted when it comes back.
    stats = wait_for(lambda: processor.stats().queued == 0 and processor.stats(), timeout_s=30)
    assert (stats.dropped, stats.queued) == (10, 0)  # counted, not silently lost
    assert stats.dropped_causes == {"shutdown_timeout": 10}


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_a_full_queue_counts_what_it_drops_and_says_so_once(
    table: str, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, tracer, processor = make(
        table, endpoint=DOWN, export_timeout_millis=200, max_queue_size=5, shutdown_timeout_millis=200
    )
    session = new_session()
    with caplog.at_level(logging.ERROR, logger="his_otel"), tracer.start_as_current_span("s"):
        for i in range(20):
            milestone("PROGRESS", str(i), session_id=session)
    assert processor.stats().dropped == 15
    assert processor.stats().peak_queued <= 5
    assert caplog.text.count("status queue full") == 1


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_queue_byte_cap(table: str, make: Any) -> None:
    _, tracer, processor = make(
        table, endpoint=DOWN, export_timeout_millis=200, max_queue_bytes=50_000, shutdown_timeout_millis=200
    )
    big = "x" * 20_000  # about 20 KB each in memory
    with tracer.start_as_current_span("s"):
        for _ in range(10):
            milestone("PROGRESS", big, session_id="s")
    stats = processor.stats()
    assert (stats.submitted, stats.queued, stats.dropped) == (10, 2, 8)
    assert stats.queued_bytes <= 50_000


def test_shutdown_is_idempotent_and_later_milestones_are_counted_as_dropped(
    ddb: Any, table: str, make: Any
) -> None:
    _, tracer, processor = make(table)
    session = new_session()
    with tracer.start_as_current_span("s"):
        milestone("PROGRESS", "before", session_id=session)
    processor.shutdown()
    processor.shutdown()
    assert [r["evt_message"] for r in session_rows(ddb, table, session)] == ["before"]
    dropped = processor.stats().dropped
    with tracer.start_as_current_span("late"):
        assert milestone("PROGRESS", "after", session_id=session) is not None
    assert processor.stats().dropped == dropped + 1


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_a_missing_table_never_holds_up_another_tables_rows_and_its_rows_land_once_it_exists(
    ddb: Any, table: str, make: Any
) -> None:
    _, tracer, processor = make(table)
    session = new_session()
    late = f"late-{session}"
    with tracer.start_as_current_span("s"):
        for i in range(5):
            milestone("PROGRESS", f"late {i}", session_id=session, table=late)
            milestone("PROGRESS", f"kept {i}", session_id=session, table=table)
    # The missing table's rows are kept (it may still be CREATING), the other table's written.
    assert processor.force_flush(5000) is False
    assert [r["evt_message"] for r in session_rows(ddb, table, session)] == [f"kept {i}" for i in range(5)]
    stats = processor.stats()
    assert (stats.written, stats.queued, stats.rejected, stats.dropped) == (5, 5, 0, 0)
    create_table(ddb, late)
    wait_for(lambda: processor.stats().queued == 0, timeout_s=30)
    assert [r["evt_message"] for r in session_rows(ddb, late, session)] == [f"late {i}" for i in range(5)]
    assert processor.stats().written == 10
