"""The bridge over OTLP/gRPC: the real Python OTLP gRPC exporter, and raw calls for the status codes
and trailers a collector reads (RetryInfo in the status details, as the Go exporter looks for it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from bridge_kit import (
    bridge_for,
    export_while_the_table_appears,
    milestone_spans,
    protobuf_body,
    proxied_client,
    run_agent,
)
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fault_proxy import FaultProxy
from helpers import new_session, wait_for
from his_otel.bridge import Bridge
from his_otel.read import session_rows
from his_otel.write.table import create_table

__all__ = ["bridge_for"]

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Call:
    """One raw Export call: its code, details, trailers and response."""

    def __init__(self, target: str, body: bytes, token: str | None = None, compression: Any = None) -> None:
        metadata = [("authorization", token)] if token else []
        with grpc.insecure_channel(target) as channel:
            export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            try:
                raw = export(body, metadata=metadata, timeout=60, compression=compression)
                self.code, self.details, self.trailers = grpc.StatusCode.OK, "", {}
                self.response = ExportTraceServiceResponse.FromString(raw)
            except grpc.RpcError as e:
                self.code, self.details = e.code(), e.details()  # type: ignore[attr-defined]
                self.trailers = dict(e.trailing_metadata() or ())  # type: ignore[attr-defined]
                self.response = ExportTraceServiceResponse()

    def retry_delay_s(self) -> float | None:
        """The RetryInfo delay from the status details, checked against the Python SDK's trailer."""
        if "grpc-status-details-bin" not in self.trailers:
            return None
        status = Status.FromString(self.trailers["grpc-status-details-bin"])
        assert status.code == self.code.value[0]
        info = RetryInfo()
        assert status.details[0].Unpack(info)
        assert RetryInfo.FromString(self.trailers["google.rpc.retryinfo-bin"]) == info
        return info.retry_delay.seconds + info.retry_delay.nanos / 1e9


def test_real_grpc_exporter_with_gzip_gives_the_same_rows_as_in_process(
    table: str, new_table: Any, rows: Any, spans: InMemorySpanExporter, bridge_for: Any, ddb: Any
) -> None:
    bridge_table = new_table()
    session, agent_spans = run_agent(table, spans)
    bridge = bridge_for(bridge_table, token="s3cret")
    exporter = OTLPSpanExporter(
        endpoint=bridge.grpc_target,
        insecure=True,
        compression=grpc.Compression.Gzip,
        headers={"authorization": "Bearer s3cret"},
    )
    assert exporter.export(agent_spans) == SpanExportResult.SUCCESS
    in_process = rows(table, session)
    assert len(in_process) >= 9
    assert session_rows(ddb, bridge_table, session) == in_process
    exporter.shutdown()


def test_grpc_checks_the_token(table: str, bridge_for: Any, ddb: Any) -> None:
    bridge = bridge_for(table, token="s3cret")
    session = new_session()
    body = protobuf_body(milestone_spans(session, 2))
    codes = [
        Call(bridge.grpc_target, body).code,
        Call(bridge.grpc_target, body, "Bearer wrong").code,
        Call(bridge.grpc_target, body, "Basic s3cret").code,
    ]
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3
    assert session_rows(ddb, table, session) == []
    assert Call(bridge.grpc_target, body, "bearer s3cret").code == grpc.StatusCode.OK
    assert len(session_rows(ddb, table, session)) == 2
    assert bridge.stats.rejected_requests == 3


def test_a_missing_table_is_unavailable_with_retry_info_then_the_exporter_lands_the_rows(
    ddb: Any, rows: Any, table: str, spans: InMemorySpanExporter, bridge_for: Any
) -> None:
    session, agent_spans = run_agent(table, spans)
    missing = f"not-yet-{new_session()}"
    bridge = bridge_for(missing, write_timeout_millis=500)
    call = Call(bridge.grpc_target, protobuf_body(agent_spans))
    assert call.code == grpc.StatusCode.UNAVAILABLE
    assert "ResourceNotFoundException" in call.details
    assert f"his-otel create-table {missing}" in call.details  # the placeholder filled in
    assert call.retry_delay_s() == 2
    exporter = OTLPSpanExporter(endpoint=bridge.grpc_target, insecure=True, timeout=60)
    assert (
        export_while_the_table_appears(exporter.export, agent_spans, bridge, ddb, missing)
        == SpanExportResult.SUCCESS
    )
    assert len(session_rows(ddb, missing, session)) == len(rows(table, session)) > 0


def test_throttling_is_resource_exhausted_with_retry_info(
    table: str, bridge_for: Any, proxy: FaultProxy
) -> None:
    bridge = bridge_for(table, client=proxied_client(proxy), write_timeout_millis=500)
    with proxy.injecting(throttle=1.0):
        call = Call(bridge.grpc_target, protobuf_body(milestone_spans(new_session(), 3)))
    assert call.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert call.retry_delay_s() == 2


def test_busy_is_unavailable_with_retry_info(table: str, bridge_for: Any, proxy: FaultProxy) -> None:
    bridge = bridge_for(table, client=proxied_client(proxy), max_concurrency=1)
    body = protobuf_body(milestone_spans(new_session(), 1))
    first: list[Call] = []
    with proxy.injecting(slow=1.0, slow_s=1.0):
        holder = threading.Thread(target=lambda: first.append(Call(bridge.grpc_target, body)))
        holder.start()
        wait_for(lambda: proxy.counters.requests >= 1, timeout_s=30)  # the one slot is writing
        busy = Call(bridge.grpc_target, body)
        holder.join()
    assert busy.code == grpc.StatusCode.UNAVAILABLE and busy.details == "bridge busy"
    assert busy.retry_delay_s() == 1
    assert first[0].code == grpc.StatusCode.OK


def test_bad_data_is_invalid_argument_and_malformed_events_a_partial_success(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    bridge = bridge_for(table)
    assert Call(bridge.grpc_target, b"\xff\xff\xff").code == grpc.StatusCode.INVALID_ARGUMENT
    session = new_session()
    request = ExportTraceServiceRequest.FromString(protobuf_body(milestone_spans(session, 2)))
    bad = request.resource_spans[0].scope_spans[0].spans.add()
    bad.name = "bad"
    event = bad.events.add()
    event.name = "his.milestone"
    call = Call(bridge.grpc_target, request.SerializeToString(), compression=grpc.Compression.Gzip)
    assert call.code == grpc.StatusCode.OK
    assert call.response.partial_success.rejected_spans == 1
    assert (
        "1 his.milestone events in 1 spans can never become rows"
        in call.response.partial_success.error_message
    )
    assert len(session_rows(ddb, table, session)) == 2


def test_a_body_over_the_limit_is_refused_and_the_next_one_lands(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    bridge = bridge_for(table, max_body_bytes=64 * 1024)
    big = protobuf_body(milestone_spans(new_session(), 40, message="x" * 2000))
    assert len(big) > 64 * 1024
    assert Call(bridge.grpc_target, big).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    session = new_session()
    assert Call(bridge.grpc_target, protobuf_body(milestone_spans(session, 3))).code == grpc.StatusCode.OK
    assert len(session_rows(ddb, table, session)) == 3


@pytest.fixture(scope="module")
def grpc_fuzz_bridge(moto_endpoint: str, ddb: Any) -> Iterator[Bridge]:
    create_table(ddb, "grpc-fuzz-table")
    bridge = Bridge("grpc-fuzz-table", port=0, grpc_port=0).start()
    yield bridge
    bridge.shutdown(timeout_s=5)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048))
def test_fuzzed_grpc_bodies_never_break_the_bridge(body: bytes, grpc_fuzz_bridge: Bridge) -> None:
    assert Call(grpc_fuzz_bridge.grpc_target, body).code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    message=st.text(max_size=200),
    session_id=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != ""),
)
def test_fuzzed_grpc_milestones_land_as_written(
    message: str, session_id: str, grpc_fuzz_bridge: Bridge, ddb: Any
) -> None:
    session = f"{new_session()}-{session_id}"
    call = Call(grpc_fuzz_bridge.grpc_target, protobuf_body(milestone_spans(session, 1, message=message)))
    assert call.code == grpc.StatusCode.OK
    (row,) = session_rows(ddb, "grpc-fuzz-table", session.strip())
    assert row["evt_message"] == message
