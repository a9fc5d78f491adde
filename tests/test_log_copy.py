"""The log copy of each milestone: an OpenTelemetry log event named ``his.milestone`` with the span
event's attributes and the span's ids, emitted through the global LoggerProvider; which copies are
emitted is a setting, and rows are written once whatever the copies."""

from __future__ import annotations

from typing import Any

import pytest
from bridge_kit import proxied_client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from strands import tool

from fault_proxy import FaultProxy
from helpers import TOOL_RUN_ROWS, log_events, new_session
from his_otel import HISAgent, ScriptedModel, ToolCall, configure, milestone
from his_otel.read import session_rows
from his_otel.schema import EVENT_NAME


def of_session(log_records: Any, session: str) -> list[dict[str, Any]]:
    return [
        e for e in log_events(log_records.get_finished_logs()) if e["attributes"]["his.session_id"] == session
    ]


@tool
def lookup(query: str) -> str:
    """Look something up."""
    milestone("PROGRESS", f"looked up {query}")
    return "found"


def test_each_milestone_of_a_run_is_also_a_log_event_of_its_span(
    table: str, rows: Any, spans: InMemorySpanExporter, log_records: Any
) -> None:
    session = new_session()
    HISAgent(
        table, session, model=ScriptedModel([ToolCall("lookup", {"query": "q"}), "done"]), tools=[lookup]
    )("go")
    written = rows(table, session)
    assert [r["evt_type"] for r in written] == TOOL_RUN_ROWS
    span_events = {
        str(e.attributes["his.event_id"]): (s, e)
        for s in spans.get_finished_spans()
        for e in s.events
        if e.name == EVENT_NAME and (e.attributes or {}).get("his.session_id") == session
    }
    logged = of_session(log_records, session)
    # One log event per row, no more (the span event's copy is the same milestone).
    assert sorted(e["attributes"]["his.event_id"] for e in logged) == sorted(r["event_id"] for r in written)
    for event in logged:
        span, span_event = span_events[event["attributes"]["his.event_id"]]
        # The span event's attributes but the in-process table (the bridge picks its own), and the
        # span's name (a log record has none).
        expected = {k: v for k, v in (span_event.attributes or {}).items() if k != "his.table"}
        assert event["attributes"] == {**expected, "his.span_name": span.name}
        assert (event["trace_id"], event["span_id"]) == (span.context.trace_id, span.context.span_id)
        assert event["timestamp"] == span_event.timestamp
        assert (event["severity"], event["severity_text"]) == ("INFO", "INFO")


@pytest.mark.parametrize(
    ("copies", "span_events", "log_copies"), [("span", 1, 0), ("log", 0, 1), ("both", 1, 1)]
)
def test_the_copies_setting_chooses_what_is_emitted_and_the_row_is_written_once(
    ddb: Any, table: str, proxy: FaultProxy, log_records: Any, copies: str, span_events: int, log_copies: int
) -> None:
    otlp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(otlp))
    handle = configure(table, tracer_provider=provider, client=proxied_client(proxy), copies=copies)
    session = new_session()
    try:
        with provider.get_tracer("t").start_as_current_span("work"):
            event_id = milestone("PROGRESS", "half way", session_id=session)
        assert handle.force_flush(10_000)
    finally:
        handle.shutdown()
    found = [e for s in otlp.get_finished_spans() for e in s.events if e.name == EVENT_NAME]
    assert len(found) == span_events
    assert len(of_session(log_records, session)) == log_copies
    assert [r["event_id"] for r in session_rows(ddb, table, session)] == [event_id]
    # The in-process path sends each row to DynamoDB once, whatever copies exist.
    assert proxy.counters.puts == {(table, session, event_id): 1}


def test_a_bad_copies_value_is_refused_by_configure(table: str) -> None:
    with pytest.raises(ValueError, match="copies"):
        configure(table, tracer_provider=TracerProvider(), copies="logs")
