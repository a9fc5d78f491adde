"""his-otel next to ADOT (aws-opentelemetry-distro), as AgentCore users run it: a HISAgent under
``opentelemetry-instrument`` with ADOT's distro and configurator, exporting over OTLP to the real
collector. Needs aws-opentelemetry-distro installed (CI's matrix row "adot" installs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from binaries import collector
from helpers import TOOL_RUN_ROWS, new_session, wait_for
from his_otel.read import session_rows
from his_otel.testing.local_dynamodb import free_port

pytestmark = pytest.mark.adot

AGENT = """
import json
from opentelemetry import trace
from strands import tool
import his_otel
from his_otel import HISAgent, HISSpanProcessor, ScriptedModel, ToolCall, milestone

@tool
def lookup(query: str) -> str:
    \"\"\"Look something up.\"\"\"
    milestone("PROGRESS", f"looked up {query}")
    return "found"

model = ScriptedModel([ToolCall("lookup", {"query": "q1"}), "done"])
agent = HISAgent(TABLE, SESSION, model=model, tools=[lookup])
agent("go")
handle = his_otel.current_handle()
provider = trace.get_tracer_provider()
from opentelemetry import _logs
logger_provider = _logs.get_logger_provider()
processors = provider._active_span_processor._span_processors  # the SDK keeps them privately
print(json.dumps({
    "provider": type(provider).__module__ + "." + type(provider).__name__,
    "his_otel_installed_it": handle.installed_provider,
    "attached_to_the_global_one": handle.provider is provider,
    "his_processors": sum(isinstance(p, HISSpanProcessor) for p in processors),
    "flushed": handle.force_flush(10_000) and logger_provider.force_flush(10_000),
    "dropped": handle.stats().dropped,
    "logger_provider": type(logger_provider).__module__ + "." + type(logger_provider).__name__,
    "his_otel_installed_logs": handle.logs is not None,
}))
"""


def spans_of(path: Path) -> list[dict[str, Any]]:
    spans = []
    if path.exists():
        for line in path.read_text().splitlines():
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    spans.extend(ss["spans"])
    return spans


def records_of(path: Path) -> list[dict[str, Any]]:
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            for rl in json.loads(line)["resourceLogs"]:
                for sl in rl["scopeLogs"]:
                    records.extend(sl["logRecords"])
    return records


def test_a_his_agent_under_adot_attaches_to_adots_provider_and_writes_every_row(
    ddb: Any, table: str, tmp_path: Path
) -> None:
    pytest.importorskip("amazon.opentelemetry.distro", reason="aws-opentelemetry-distro is not installed")
    port = free_port()
    config = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {
            "file": {"path": str(tmp_path / "spans.json")},
            "file/logs": {"path": str(tmp_path / "logs.json")},
        },
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["file"]},
                "logs": {"receivers": ["otlp"], "exporters": ["file/logs"]},
            },
        },
    }
    session = new_session()
    env = {
        **os.environ,
        "OTEL_PYTHON_DISTRO": "aws_distro",
        "OTEL_PYTHON_CONFIGURATOR": "aws_configurator",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces",
        "OTEL_METRICS_EXPORTER": "none",
        # ADOT sets up a LoggerProvider only with its logging instrumentation on (AgentCore's agent
        # observability mode turns it on): the milestones' log copies then go where its logs go.
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"http://127.0.0.1:{port}/v1/logs",
        "OTEL_SERVICE_NAME": "his-otel-adot-test",
    }
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    code = f"TABLE, SESSION = {table!r}, {session!r}\n" + AGENT
    with collector(config, tmp_path, port):
        proc = subprocess.run(
            [str(instrument), sys.executable, "-c", code],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr  # and so a clean shutdown, ADOT's included
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        # One provider: ADOT's SDK provider, with his-otel attached once, never a second provider.
        assert report == {
            "provider": "opentelemetry.sdk.trace.TracerProvider",
            "his_otel_installed_it": False,
            "attached_to_the_global_one": True,
            "his_processors": 1,
            "flushed": True,
            "dropped": 0,
            "logger_provider": "opentelemetry.sdk._logs._internal.LoggerProvider",
            "his_otel_installed_logs": False,
        }
        exported = tmp_path / "spans.json"

        def root_arrived() -> list[dict[str, Any]]:
            spans = spans_of(exported)
            return spans if any(s["name"].startswith("invoke_agent") for s in spans) else []

        spans = wait_for(root_arrived, timeout_s=60)
    rows = session_rows(ddb, table, session)
    assert [r["evt_type"] for r in rows] == TOOL_RUN_ROWS
    # The milestones sit on the spans ADOT exported, with their attributes.
    events = [
        {a["key"]: a["value"].get("stringValue") for a in e["attributes"]}
        for s in spans
        for e in s.get("events", [])
        if e["name"] == "his.milestone"
    ]
    assert {e["his.event_id"] for e in events} == {r["event_id"] for r in rows}
    assert {e["his.session_id"] for e in events} == {session}
    assert sorted(e["his.evt_type"] for e in events) == sorted(TOOL_RUN_ROWS)
    # his-otel's own BatchWriteItem calls are not traced, though ADOT instruments botocore.
    assert not [s["name"] for s in spans if "DynamoDB" in s["name"] or "BatchWriteItem" in s["name"]]
    assert "ERROR" not in proc.stderr and "Traceback" not in proc.stderr
    # The log copies went through ADOT's LoggerProvider, untouched: the event name, every his.*
    # attribute as emitted (ADOT's gen_ai handling moves only gen_ai.* names), the span's ids.
    logged = [r for r in wait_for(lambda: records_of(tmp_path / "logs.json"), timeout_s=30)
              if r.get("eventName") == "his.milestone"]  # fmt: skip
    by_id = {
        a["value"]["stringValue"]: r for r in logged for a in r["attributes"] if a["key"] == "his.event_id"
    }
    assert set(by_id) == {r["event_id"] for r in rows}
    for row in rows:
        record = by_id[row["event_id"]]
        attrs = {a["key"]: next(iter(a["value"].values())) for a in record["attributes"]}
        assert attrs["his.evt_type"] == row["evt_type"] and attrs["his.session_id"] == session
        assert attrs["his.evt_message"] == row["evt_message"] and attrs["his.span_name"] == row["span_name"]
        assert record["traceId"] == row["trace_id"] and record["spanId"] == row["span_id"]
