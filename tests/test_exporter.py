"""DynamoDBSpanExporter as a SpanExporter: real spans from a real SDK provider, rows in moto."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from his_otel import DynamoDBSpanExporter, milestone
from his_otel.read import session_rows
from his_otel.schema import EVENT_NAME


def _spans_with_milestones(n_spans: int, per_span: int, session: str, table: str = "") -> list[Any]:
    mem = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("t")
    for i in range(n_spans):
        with tracer.start_as_current_span(f"span-{i}") as span:
            span.add_event("not ours", {"x": 1})
            for j in range(per_span):
                milestone("PROGRESS", f"{i}-{j}", span=span, session_id=session, agent_id="a", table=table)
    return list(mem.get_finished_spans())


def test_exports_milestone_events_as_rows(ddb: Any, table: str) -> None:
    spans = _spans_with_milestones(3, 2, "s-exp")
    exporter = DynamoDBSpanExporter(table)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    rows = session_rows(ddb, table, "s-exp")
    assert [r["evt_message"] for r in rows] == ["0-0", "0-1", "1-0", "1-1", "2-0", "2-1"]
    by_span = {s.name: s for s in spans}
    for r in rows:
        span = by_span[r["span_name"]]
        assert r["trace_id"] == format(span.context.trace_id, "032x")
        assert r["span_id"] == format(span.context.span_id, "016x")
        (event,) = [
            e for e in span.events if e.name == EVENT_NAME and e.attributes["his.event_id"] == r["event_id"]
        ]
        assert r["evt_datetime"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(event.timestamp / 1e9)))
    assert exporter.rows_written == 6


def test_spans_without_milestones_write_nothing(ddb: Any, table: str) -> None:
    spans = _spans_with_milestones(2, 0, "s-none")
    calls: list[str] = []
    exporter = DynamoDBSpanExporter(table)
    exporter.client.meta.events.register("before-call.dynamodb", lambda **kw: calls.append("call"))
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert calls == []


def test_event_table_is_honoured_in_process_and_ignored_by_the_bridge_mode(ddb: Any, table: str) -> None:
    other = f"{table}-other"
    from his_otel.write.table import create_table

    create_table(ddb, other)
    spans = _spans_with_milestones(1, 1, "s-route", table=other)
    assert DynamoDBSpanExporter(table).export(spans) == SpanExportResult.SUCCESS
    assert len(session_rows(ddb, other, "s-route")) == 1
    assert session_rows(ddb, table, "s-route") == []
    # A sender never picks the table when honor_event_table is off.
    assert DynamoDBSpanExporter(table, honor_event_table=False).export(spans) == SpanExportResult.SUCCESS
    assert len(session_rows(ddb, table, "s-route")) == 1


def test_exporting_the_same_spans_twice_leaves_one_row_each(ddb: Any, table: str) -> None:
    spans = _spans_with_milestones(2, 3, "s-twice")
    exporter = DynamoDBSpanExporter(table)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert len(session_rows(ddb, table, "s-twice")) == 6


def test_concurrent_exports_all_land(ddb: Any, table: str) -> None:
    exporter = DynamoDBSpanExporter(table)
    batches = [_spans_with_milestones(5, 4, f"s-conc-{i}") for i in range(6)]
    results: list[SpanExportResult] = []
    threads = [threading.Thread(target=lambda b=b: results.append(exporter.export(b))) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [SpanExportResult.SUCCESS] * 6
    assert [len(session_rows(ddb, table, f"s-conc-{i}")) for i in range(6)] == [20] * 6


def test_unreachable_dynamodb_fails_within_the_timeout_without_raising() -> None:
    spans = _spans_with_milestones(1, 3, "s-down")
    exporter = DynamoDBSpanExporter("t", endpoint_url="http://127.0.0.1:9", export_timeout_millis=500)
    assert exporter.export(spans) == SpanExportResult.FAILURE


def test_shutdown_is_idempotent_and_export_after_it_fails(ddb: Any, table: str) -> None:
    exporter = DynamoDBSpanExporter(table)
    exporter.shutdown()
    exporter.shutdown()
    assert exporter.export(_spans_with_milestones(1, 1, "s-shut")) == SpanExportResult.FAILURE
    assert session_rows(ddb, table, "s-shut") == []
    assert exporter.force_flush(10) is True


def test_message_redaction_options(ddb: Any, table: str) -> None:
    spans = _spans_with_milestones(1, 1, "s-drop")
    DynamoDBSpanExporter(table, message_mode="drop").export(spans)
    assert session_rows(ddb, table, "s-drop")[0]["evt_message"] == ""
    spans = _spans_with_milestones(1, 1, "s-filter")
    DynamoDBSpanExporter(table, message_filter=lambda m: m.evt_message.replace("0", "#")).export(spans)
    assert session_rows(ddb, table, "s-filter")[0]["evt_message"] == "#-#"


def test_milestone_without_any_table_is_rejected_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIS_OTEL_TABLE", raising=False)
    exporter = DynamoDBSpanExporter()
    assert exporter.export(_spans_with_milestones(1, 2, "s-notable")) == SpanExportResult.SUCCESS
    assert exporter.rows_rejected == 2


def test_bad_arguments_raise_at_construction() -> None:
    with pytest.raises(ValueError, match="one of"):
        DynamoDBSpanExporter("t", message_mode="shout")
    with pytest.raises(ValueError, match="integer"):
        DynamoDBSpanExporter("t", export_timeout_millis=0)


def test_a_bad_environment_value_is_refused_like_a_bad_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_OTEL_EXPORT_TIMEOUT_MS", "soon")
    with pytest.raises(
        ValueError, match=r"HIS_OTEL_EXPORT_TIMEOUT_MS='soon' is not valid: expected an integer"
    ):
        DynamoDBSpanExporter("t")
