"""The real OpenTelemetry Collector (``../shared/bin``, or ``HIS_OTEL_OTELCOL``) delivering to the
bridge: its ``otlp_http`` and ``otlp_grpc`` exporters with the token header, its retries on the
bridge's retryable answers, and its ``load_balancing`` exporter spreading traces over two bridges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge_kit import bridge_for, milestone_spans, run_agent
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from binaries import collector
from helpers import new_session, wait_for
from his_otel.read import session_rows
from his_otel.testing.local_dynamodb import free_port
from his_otel.write.table import create_table

__all__ = ["bridge_for"]

TOKEN = "collector-token"
FAST_RETRY = {"enabled": True, "initial_interval": "200ms", "max_interval": "1s", "max_elapsed_time": "120s"}


def pipeline(port: int, exporters: dict[str, Any]) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": exporters,
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": list(exporters)}},
        },
    }


def to_http(bridge: Any) -> dict[str, Any]:
    return {
        "endpoint": bridge.url,
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "retry_on_failure": FAST_RETRY,
    }


def to_grpc(bridge: Any) -> dict[str, Any]:
    return {
        "endpoint": bridge.grpc_target,
        "tls": {"insecure": True},
        "headers": {"authorization": f"Bearer {TOKEN}"},
        "retry_on_failure": FAST_RETRY,
    }


def test_the_collector_delivers_over_http_and_grpc_and_retries_until_the_table_exists(
    table: str, rows: Any, spans: InMemorySpanExporter, bridge_for: Any, ddb: Any, tmp_path: Path
) -> None:
    session, agent_spans = run_agent(table, spans)
    expected = rows(table, session)
    missing = {kind: f"later-{kind}-{new_session()}" for kind in ("http", "grpc")}
    bridges = {
        kind: bridge_for(name, token=TOKEN, write_timeout_millis=500) for kind, name in missing.items()
    }
    port = free_port()
    config = pipeline(
        port, {"otlp_http/bridge": to_http(bridges["http"]), "otlp_grpc/bridge": to_grpc(bridges["grpc"])}
    )
    with collector(config, tmp_path, port):
        sender = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        assert sender.export(agent_spans) == SpanExportResult.SUCCESS
        # Neither table exists yet: both bridges answer "retry", and the collector keeps the data.
        for bridge in bridges.values():
            wait_for(lambda b=bridge: b.stats.retry_requests >= 2, timeout_s=60)
        for name in missing.values():
            create_table(ddb, name)
        for name in missing.values():
            wait_for(lambda n=name: len(session_rows(ddb, n, session)) == len(expected), timeout_s=90)
    for name in missing.values():
        assert session_rows(ddb, name, session) == expected  # every attribute of every row


def test_the_collectors_load_balancing_exporter_spreads_traces_over_two_bridges(
    table: str, bridge_for: Any, ddb: Any, tmp_path: Path
) -> None:
    """The scale-out recipe: routing by trace id to N bridges over OTLP/gRPC."""
    first, second = bridge_for(table, token=TOKEN), bridge_for(table, token=TOKEN)
    port = free_port()
    balancer = {
        "routing_key": "traceID",
        "protocol": {"otlp": {"tls": {"insecure": True}, "headers": {"authorization": f"Bearer {TOKEN}"}}},
        "resolver": {"static": {"hostnames": [first.grpc_target, second.grpc_target]}},
    }
    sessions = [new_session() for _ in range(24)]
    with collector(pipeline(port, {"load_balancing": balancer}), tmp_path, port):
        sender = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        for session in sessions:  # one trace per session
            assert sender.export(milestone_spans(session, 1, per_span=3)) == SpanExportResult.SUCCESS
        for session in sessions:
            wait_for(lambda s=session: len(session_rows(ddb, table, s)) == 3, timeout_s=90)
    assert first.stats.rows_written > 0 and second.stats.rows_written > 0
    assert first.stats.rows_written + second.stats.rows_written == 3 * len(sessions)
