"""The bridge takes OTLP logs: each ``his.milestone`` log event (the live copy of a milestone)
becomes the row the in-process path writes, over HTTP (protobuf, JSON, gzip, chunked) and gRPC, with
the traces side's guarantees (auth, retryable answers, partial success); other log records are
acknowledged and ignored; a milestone's span copy after its log copy costs no DynamoDB write."""

from __future__ import annotations

import gzip
import http.client
from typing import Any

import grpc
import pytest
from bridge_kit import (
    bridge_for,
    export_while_the_table_appears,
    otlp_json_of,
    post,
    proxied_client,
    run_agent,
)
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fault_proxy import FaultProxy
from helpers import new_session
from his_otel.read import session_rows

__all__ = ["bridge_for"]

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def run_with_log_copies(
    table: str, spans: InMemorySpanExporter, log_records: Any
) -> tuple[str, list[Any], list[Any]]:
    """A real HISAgent run: its session, its finished spans, and the log records of its milestones."""
    session, agent_spans = run_agent(table, spans)
    records = [
        r
        for r in log_records.get_finished_logs()
        if (getattr(r, "log_record", r).attributes or {}).get("his.session_id") == session
    ]
    return session, agent_spans, records


def succeeded(result: Any) -> bool:
    return getattr(result, "name", "") == "SUCCESS"


def test_the_real_log_exporters_over_http_and_grpc_give_the_rows_the_in_process_path_writes(
    table: str,
    new_table: Any,
    rows: Any,
    spans: InMemorySpanExporter,
    log_records: Any,
    bridge_for: Any,
    ddb: Any,
) -> None:
    session, _, records = run_with_log_copies(table, spans, log_records)
    expected = rows(table, session)
    assert len(records) == len(expected) >= 9
    over_http, over_grpc = new_table(), new_table()
    http_bridge = bridge_for(over_http, token="t0ken")
    grpc_bridge = bridge_for(over_grpc, token="t0ken")
    auth = {"Authorization": "Bearer t0ken"}
    sent_http = OTLPLogExporter(
        endpoint=f"{http_bridge.url}/v1/logs", compression=Compression.Gzip, headers=auth
    ).export(records)
    sent_grpc = GrpcLogExporter(
        endpoint=grpc_bridge.grpc_target, insecure=True, headers={"authorization": "Bearer t0ken"},
        compression=grpc.Compression.Gzip,
    ).export(records)  # fmt: skip
    assert succeeded(sent_http) and succeeded(sent_grpc)
    assert session_rows(ddb, over_http, session) == expected  # every attribute, span name included
    assert session_rows(ddb, over_grpc, session) == expected
    for bridge in (http_bridge, grpc_bridge):
        assert (bridge.stats.log_requests, bridge.stats.log_records) == (1, len(records))
        assert bridge.stats.rows_written == len(expected)


def test_json_and_chunked_log_bodies_land(
    table: str,
    new_table: Any,
    rows: Any,
    spans: InMemorySpanExporter,
    log_records: Any,
    bridge_for: Any,
    ddb: Any,
) -> None:
    session, _, records = run_with_log_copies(table, spans, log_records)
    expected = rows(table, session)
    as_json, chunked = new_table(), new_table()
    answer = post(
        f"{bridge_for(as_json).url}/v1/logs", otlp_json_of(encode_logs(records)), "application/json"
    )
    assert (answer.status, answer.headers["Content-Type"]) == (200, "application/json")
    bridge = bridge_for(chunked)
    body = gzip.compress(encode_logs(records).SerializeToString())
    conn = http.client.HTTPConnection(*bridge.address, timeout=30)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    conn.request("POST", "/v1/logs", body=iter([body[:5], body[5:]]), headers=headers, encode_chunked=True)
    assert conn.getresponse().status == 200
    conn.close()
    assert session_rows(ddb, as_json, session) == expected
    assert session_rows(ddb, chunked, session) == expected


def _record(request: ExportLogsServiceRequest, event_name: str = "", **attributes: str) -> None:
    record = request.resource_logs[0].scope_logs[0].log_records.add()
    record.time_unix_nano = 1_790_000_000_000_000_000
    if event_name:
        # Field 12, event_name, as a sender writes it; opentelemetry-proto before 1.35 lacks the field.
        record.MergeFromString(b"\x62" + bytes([len(event_name)]) + event_name.encode())
    for key, value in attributes.items():
        kv = record.attributes.add()
        kv.key, kv.value.string_value = key, value


def test_only_his_milestone_log_events_become_rows_and_bad_ones_are_a_partial_success(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    session = new_session()
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add()
    milestone = {"his.session_id": session, "his.evt_type": "PROGRESS", "his.agent_id": "a"}
    _record(request, **{"his.session_id": session, "message": "an ordinary log line"})
    _record(request, "his.milestone", **milestone, **{"his.event_id": "e1"})
    # Senders before LogRecord had an event name (OpenTelemetry Python < 1.35) name it in an attribute.
    _record(request, "", **milestone, **{"his.event_id": "e2", "event.name": "his.milestone"})
    _record(request, "his.milestone", **{"his.session_id": session, "his.evt_type": "START"})  # no event id
    _record(request, "his.milestone", **{**milestone, "his.event_id": "e3", "his.evt_type": "not a type"})
    bridge = bridge_for(table)
    answer = post(f"{bridge.url}/v1/logs", request.SerializeToString())
    assert answer.status == 200
    partial = ExportLogsServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_log_records == 2
    assert "2 his.milestone events in 2 log records can never become rows" in partial.error_message
    assert [(r["event_id"], r["evt_type"]) for r in session_rows(ddb, table, session)] == [
        ("e1", "PROGRESS"),
        ("e2", "PROGRESS"),
    ]
    stats = bridge.stats
    assert (stats.log_records, stats.rejected_log_records, stats.rows_written) == (5, 2, 2)


def test_logs_need_the_token_on_both_protocols(table: str, bridge_for: Any, ddb: Any) -> None:
    bridge = bridge_for(table, token="s3cret")
    session = new_session()
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add()
    _record(
        request, "his.milestone", **{"his.session_id": session, "his.event_id": "e1", "his.evt_type": "START"}
    )
    body = request.SerializeToString()
    assert post(f"{bridge.url}/v1/logs", body).status == 401
    assert post(f"{bridge.url}/v1/logs", body, Authorization="Bearer wrong").status == 401
    with grpc.insecure_channel(bridge.grpc_target) as channel:
        export = channel.unary_unary(LOGS_EXPORT, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as refused:
            export(body, timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert session_rows(ddb, table, session) == []
        raw = export(body, metadata=[("authorization", "Bearer s3cret")], timeout=30)
    assert ExportLogsServiceResponse.FromString(raw).partial_success.rejected_log_records == 0
    assert [r["event_id"] for r in session_rows(ddb, table, session)] == ["e1"]
    assert bridge.stats.rejected_requests == 3


def test_a_missing_table_is_retryable_and_the_log_exporter_lands_the_rows_once_it_exists(
    table: str, rows: Any, spans: InMemorySpanExporter, log_records: Any, bridge_for: Any, ddb: Any
) -> None:
    session, _, records = run_with_log_copies(table, spans, log_records)
    missing = f"not-yet-{new_session()}"
    bridge = bridge_for(missing, write_timeout_millis=500)
    exporter = OTLPLogExporter(endpoint=f"{bridge.url}/v1/logs", timeout=60)
    assert succeeded(export_while_the_table_appears(exporter.export, records, bridge, ddb, missing))  # type: ignore[arg-type]
    assert session_rows(ddb, missing, session) == rows(table, session)


def test_a_milestones_span_copy_after_its_log_copy_costs_no_dynamodb_write(
    table: str,
    new_table: Any,
    rows: Any,
    spans: InMemorySpanExporter,
    log_records: Any,
    bridge_for: Any,
    proxy: FaultProxy,
    ddb: Any,
) -> None:
    session, agent_spans, records = run_with_log_copies(table, spans, log_records)
    expected = rows(table, session)
    via_bridge = new_table()
    bridge = bridge_for(via_bridge, client=proxied_client(proxy))
    assert succeeded(OTLPLogExporter(endpoint=f"{bridge.url}/v1/logs").export(records))
    spans_sender = OTLPSpanExporter(endpoint=f"{bridge.url}/v1/traces")
    assert spans_sender.export(agent_spans) == SpanExportResult.SUCCESS  # at span end
    assert spans_sender.export(agent_spans) == SpanExportResult.SUCCESS  # and a collector's retry
    assert session_rows(ddb, via_bridge, session) == expected
    # DynamoDB received exactly one put per milestone.
    puts = {key: n for key, n in proxy.counters.puts.items() if key[0] == via_bridge}
    assert sorted(puts) == sorted((via_bridge, session, r["event_id"]) for r in expected)
    assert set(puts.values()) == {1}
    assert (bridge.stats.rows_written, bridge.stats.rows_seen) == (len(expected), 2 * len(expected))


def test_a_session_id_with_surrounding_whitespace_is_one_row_on_both_paths(
    table: str, rows: Any, spans: InMemorySpanExporter, log_records: Any, bridge_for: Any, ddb: Any
) -> None:
    """In process and through the bridge a milestone has one key, whatever whitespace its session id
    carries: both paths strip it, so running both writes one row, not one per spelling."""
    from his_otel import milestone

    padded = f" \u00a0{new_session()}\n"
    event_id = milestone("PROGRESS", "padded", session_id=padded, table=table)
    session = padded.strip()
    written = rows(table, session)
    assert [r["event_id"] for r in written] == [event_id]
    records = [
        r for r in log_records.get_finished_logs()
        if (getattr(r, "log_record", r).attributes or {}).get("his.event_id") == event_id
    ]  # fmt: skip
    bridge = bridge_for(table)
    assert succeeded(OTLPLogExporter(endpoint=f"{bridge.url}/v1/logs").export(records))
    assert (bridge.stats.rows_existing, bridge.stats.rows_written) == (1, 0)  # the same key: found
    assert session_rows(ddb, table, padded) == []
    assert session_rows(ddb, table, session) == written
