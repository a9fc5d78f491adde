"""Reliability and security of the status path, end to end."""

from __future__ import annotations

import logging
from typing import Any

import boto3
import pytest
from botocore.config import Config
from opentelemetry.sdk.trace import TracerProvider

from fault_proxy import FaultProxy
from helpers import new_session, wait_for
from his_otel import DynamoDBSpanExporter, HISAgent, HISSpanProcessor, ScriptedModel, ToolCall, milestone
from his_otel.read import session_rows


def test_milestones_do_not_wait_for_a_hung_dynamodb(table: str, proxy: FaultProxy) -> None:
    client = boto3.client(
        "dynamodb", endpoint_url=proxy.endpoint, config=Config(read_timeout=10, retries={"max_attempts": 1})
    )
    processor = HISSpanProcessor(DynamoDBSpanExporter(table, client=client), schedule_delay_millis=0)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    session = new_session()
    try:
        with proxy.injecting(slow=1.0, slow_s=3.0):  # every write hangs for 3 s
            with tracer.start_as_current_span("s"):
                milestone("PROGRESS", "first", session_id=session)
                wait_for(lambda: processor.stats().queued and proxy.counters.requests, timeout_s=5)
                # A write is now stuck in DynamoDB; the agent's thread goes on regardless.
                for i in range(1000):
                    assert milestone("PROGRESS", str(i), session_id=session) is not None
            stats = processor.stats()
            assert stats.written == 0  # nothing has come back from DynamoDB yet...
            assert stats.queued == 1001  # ...and all 1001 milestones are held, none lost
        assert processor.force_flush(30_000)
        assert processor.stats().written == 1001
    finally:
        processor.shutdown()


def test_an_oversized_message_is_stored_truncated_and_flagged(table: str, rows: Any) -> None:
    session = new_session()
    huge = "x" * 1_000_000  # a 1 MB tool output: over DynamoDB's 400 KB item limit
    agent = HISAgent(table, session, model=ScriptedModel(["ok"]))
    milestone("PROGRESS", huge, session_id=session, table=table)
    milestone("PROGRESS", "after", session_id=session, table=table)
    agent("go")
    got = {r["evt_message"][:5]: r for r in rows(table, session) if r["evt_type"] == "PROGRESS"}
    big = got["xxxxx"]
    assert big["evt_message_truncated"] is True
    assert big["evt_message_length"] == 1_000_000
    assert len(big["evt_message"].encode()) <= 350_000
    assert "after" in got  # its batch neighbour was written too


SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRETzz"
ACCESS_KEY = "AKIAHISOTELTESTKEY99"
TOKEN = "session-token-Zq9-secret"


def test_no_credentials_reach_rows_or_our_logs(
    table: str, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, ddb: Any
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    session = new_session()
    client = boto3.client("dynamodb", endpoint_url=proxy.endpoint, config=Config(retries={"max_attempts": 1}))
    processor = HISSpanProcessor(DynamoDBSpanExporter(table, client=client, export_timeout_millis=500))
    try:
        with caplog.at_level(logging.DEBUG, logger="his_otel"):
            # Failures make his-otel log the errors it saw; none of them may carry a credential.
            with proxy.injecting(throttle=0.5, server_error=0.3, reset=0.2):
                call = ToolCall("write_dynamo", {
                    "table_name": table, "agent_id": "a", "session_id": session,
                    "event_type": "PROGRESS", "message": "working",
                })  # fmt: skip
                HISAgent(table, session, model=ScriptedModel([call, "done"]))("go")
                processor.force_flush(10_000)
            assert processor.force_flush(30_000)
    finally:
        processor.shutdown()
    rows = session_rows(ddb, table, session)
    assert rows
    everything = caplog.text + repr(rows)
    assert "his_otel" in caplog.text  # there was something to read
    for secret in (SECRET_KEY, ACCESS_KEY, TOKEN):
        assert secret not in everything


def test_shutdown_honours_its_timeout_while_dynamodb_hangs(
    table: str, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    client = boto3.client("dynamodb", endpoint_url=proxy.endpoint, config=Config(read_timeout=30))
    processor = HISSpanProcessor(
        DynamoDBSpanExporter(table, client=client), shutdown_timeout_millis=500, schedule_delay_millis=60_000
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with proxy.injecting(slow=1.0, slow_s=20.0):
        with provider.get_tracer("t").start_as_current_span("s"):
            for i in range(10):
                milestone("PROGRESS", str(i), session_id=new_session(), table=table)
        # All ten are queued behind the batching delay; a flush sends them, as one write, into the hang.
        assert processor.force_flush(200) is False
        wait_for(lambda: proxy.counters.requests, timeout_s=5)
        processor.shutdown()
        # Shutdown came back while the write it gave up on still hangs (for 20 s): it kept to its
        # own timeout instead of the stuck request's.
        assert proxy.counters.answered == 0
    # Nothing is hidden: the stuck write shows as in flight, in the log and in stats().
    stats = processor.stats()
    assert (stats.written, stats.dropped, stats.queued) == (0, 0, 10)
    assert "dropped=<0>, in_flight=<10>" in caplog.text
