"""What text leaves the process, and that every row fits: bad UTF-8 repaired, redaction applied to
the span event as to the row, items within DynamoDB's 400 KB whatever their fields."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from helpers import log_events, new_session
from his_otel import DynamoDBSpanExporter, Handle, Milestone, configure, milestone
from his_otel.read import session_rows
from his_otel.schema import EVENT_NAME, MAX_ITEM_BYTES, item_bytes, to_item

BROKEN = 'model said {"mood": "\ud83d"} then \ud83d\ude00'  # a lone surrogate, and a split pair
REPAIRED = 'model said {"mood": "\ufffd"} then \U0001f600'


def test_a_lone_surrogate_is_replaced_on_the_live_path_and_never_logged(
    table: str, rows: Any, caplog: pytest.LogCaptureFixture
) -> None:
    session = new_session()
    with caplog.at_level(logging.DEBUG, logger="his_otel"):
        assert milestone("PROGRESS", BROKEN, session_id=session, table=table) is not None
        got = rows(table, session)
    assert [r["evt_message"] for r in got] == [REPAIRED]
    assert "model said" not in caplog.text


@pytest.fixture
def traced() -> Iterator[Any]:
    """traced(**configure_args) -> (provider, spans exported over "OTLP", handle)."""
    made: list[Handle] = []

    def build(table: str, **kw: Any) -> tuple[TracerProvider, InMemorySpanExporter, Handle]:
        otlp = InMemorySpanExporter()  # stands in for every OTLP backend: what leaves the process
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(otlp))
        handle = configure(table, tracer_provider=provider, schedule_delay_millis=0, **kw)
        made.append(handle)
        return provider, otlp, handle

    yield build
    for h in made:
        h.shutdown()


def exported_messages(otlp: InMemorySpanExporter) -> list[str]:
    return [
        str((e.attributes or {})["his.evt_message"])
        for s in otlp.get_finished_spans()
        for e in s.events
        if e.name == EVENT_NAME
    ]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"message_filter": lambda m: m.evt_message.replace("4111-1111", "[card]")}, "paid with [card]"),
        ({"message_filter": lambda m: 1 / 0}, ""),  # a filter that raises drops the text
        ({"message_mode": "drop"}, ""),
    ],
    ids=["filter", "raising-filter", "drop-mode"],
)
def test_redaction_applies_to_the_span_event_and_the_log_event_as_to_the_row(
    ddb: Any, table: str, traced: Any, log_records: Any, policy: dict[str, Any], expected: str
) -> None:
    provider, otlp, handle = traced(table, **policy)
    session = new_session()
    with provider.get_tracer("t").start_as_current_span("pay"):
        milestone("PROGRESS", "paid with 4111-1111", session_id=session)
    assert handle.force_flush(10_000)
    assert [r["evt_message"] for r in session_rows(ddb, table, session)] == [expected]
    assert exported_messages(otlp) == [expected]
    logged = [
        e for e in log_events(log_records.get_finished_logs()) if e["attributes"]["his.session_id"] == session
    ]
    assert [e["attributes"]["his.evt_message"] for e in logged] == [expected]
    assert "4111-1111" not in repr(logged)


def test_every_row_fits_whatever_its_fields(ddb: Any, table: str) -> None:
    session = new_session()
    m = Milestone(
        event_id="e-" + "9" * 1000,
        session_id=session + "-" + "s" * (2040 - len(session)),
        agent_id="a" * 1024,
        evt_type="PROGRESS",
        evt_message="\u20ac" * 200_000,  # 600 KB of three-byte characters
        timestamp_ns=1,
        span_name="n" * 500_000,
    )
    exporter = DynamoDBSpanExporter(table, max_message_bytes=390_000)
    outcome = exporter.export_milestones([m])
    assert (outcome.written, outcome.rejected, outcome.unwritten) == (1, 0, [])
    (row,) = session_rows(ddb, table, m.session_id)
    assert row["evt_message_truncated"] is True and row["evt_message_length"] == 600_000
    assert len(row["span_name"]) == 1024


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    agent=st.integers(1, 1024),
    span=st.integers(0, 600_000),
    message=st.integers(0, 600_000),
    width=st.sampled_from(["a", "\u00e9", "\u20ac", "\U0001f600"]),
    limit=st.integers(64, 390_000),
)
def test_to_item_never_exceeds_400_kb(agent: int, span: int, message: int, width: str, limit: int) -> None:
    m = Milestone(
        "e" * 1024, "s" * 2048, "a" * agent, "PROGRESS", width * message, 1, 2**128 - 1, 2**64 - 1, "n" * span
    )
    assert item_bytes(to_item(m, max_message_bytes=limit)) <= MAX_ITEM_BYTES


def test_message_limits_that_cannot_fit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"max_message_bytes: expected an integer in \[64, 390000\]"):
        DynamoDBSpanExporter("t", max_message_bytes=450_000)
    monkeypatch.setenv("HIS_OTEL_MAX_MESSAGE_BYTES", "450000")
    with pytest.raises(ValueError, match=r"HIS_OTEL_MAX_MESSAGE_BYTES='450000' is not valid"):
        DynamoDBSpanExporter("t")  # the environment's value, refused as the argument is
