"""Errors that need a person, backoff, and honest accounting: every milestone counted once as
written, rejected (with its cause) or dropped (with its cause). Faults are real HTTP answers from a
proxy in front of moto's server."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from fault_proxy import FaultProxy
from helpers import new_session, wait_for
from his_otel import DynamoDBSpanExporter, HISSpanProcessor, ProcessorStats, milestone
from his_otel.read import session_rows
from his_otel.schema import Milestone, to_item
from his_otel.write.dynamodb import DynamoDBWriter


@pytest.fixture
def pipeline(proxy: FaultProxy) -> Iterator[Any]:
    """pipeline(table, **processor_kw) -> (tracer, processor) writing through the fault proxy."""
    made: list[HISSpanProcessor] = []

    def build(table: str, **kw: Any) -> tuple[Any, HISSpanProcessor]:
        kw.setdefault("schedule_delay_millis", 0)
        processor = HISSpanProcessor(
            DynamoDBSpanExporter(table, endpoint_url=proxy.endpoint, export_timeout_millis=1000), **kw
        )
        made.append(processor)
        provider = TracerProvider()
        provider.add_span_processor(processor)
        return provider.get_tracer("t"), processor

    yield build
    for p in made:
        p.shutdown()


def balanced(s: ProcessorStats) -> bool:
    return s.submitted == s.written + s.rejected + s.dropped + s.queued


def emit(tracer: Any, session: str, n: int, prefix: str = "") -> None:
    with tracer.start_as_current_span("work"):
        for i in range(n):
            milestone("PROGRESS", f"{prefix}{i}", session_id=session)


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_access_denied_is_retried_with_backoff_then_rejected_with_its_cause_logged_once(
    table: str, proxy: FaultProxy, pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tracer, processor = pipeline(table, max_row_age_millis=1500)
    with proxy.injecting(error=1.0, error_code="AccessDeniedException"):
        for _ in range(8):  # eight groups of rows, each refused on its own
            seen = proxy.counters.injected.get("AccessDeniedException", 0)
            emit(tracer, new_session(), 5)
            wait_for(lambda seen=seen: proxy.counters.injected.get("AccessDeniedException", 0) > seen)
        wait_for(lambda: processor.stats().rejected == 40, timeout_s=60)
    stats = processor.stats()
    assert stats.rejected_causes == {"AccessDeniedException": 40}
    assert (stats.written, stats.dropped, stats.queued) == (0, 0, 0) and balanced(stats)
    said = [r for r in caplog.records if "AccessDeniedException" in r.getMessage()]
    # Said when it started failing (with what to fix), and per group of rows given up on: never
    # once per attempt.
    assert any("status rows not written" in r.getMessage() for r in said)
    assert any("grant dynamodb:BatchWriteItem" in r.getMessage() for r in said)
    assert len(said) <= 5, [r.getMessage()[:80] for r in said]
    assert proxy.counters.injected["AccessDeniedException"] >= 2 * len(said)


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_rows_outlive_a_short_outage_of_a_person_fixable_kind(
    ddb: Any, table: str, proxy: FaultProxy, pipeline: Any
) -> None:
    tracer, processor = pipeline(table)  # the default row age: ten minutes
    session = new_session()
    with proxy.injecting(error=1.0, error_code="ExpiredTokenException"):
        emit(tracer, session, 5)
        wait_for(lambda: proxy.counters.injected.get("ExpiredTokenException", 0) >= 2, timeout_s=30)
        assert processor.stats().queued == 5
    # Credentials refreshed: the parked rows go at their next retry.
    wait_for(lambda: processor.stats().written == 5, timeout_s=30)
    assert [r["evt_message"] for r in session_rows(ddb, table, session)] == [str(i) for i in range(5)]


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_flushing_after_every_request_does_not_defeat_the_backoff(
    table: str, proxy: FaultProxy, pipeline: Any
) -> None:
    tracer, processor = pipeline(table)
    with proxy.injecting(error=1.0, error_code="AccessDeniedException"):
        emit(tracer, new_session(), 1)
        wait_for(lambda: proxy.counters.injected.get("AccessDeniedException"), timeout_s=30)
        for _ in range(30):
            assert processor.force_flush(30) is False  # an app flushing after each of 30 requests
        attempts = proxy.counters.injected["AccessDeniedException"]
    # The backoff doubles from 0.1 s, so ~1-2 s of flushing allows a handful of retries, not 30.
    assert attempts <= 10, attempts


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_a_full_queue_counts_each_lost_milestone_once(table: str, pipeline: Any) -> None:
    tracer, processor = pipeline(table, max_queue_size=2, schedule_delay_millis=60_000)
    emit(tracer, new_session(), 5)  # live: 2 queued, 3 refused; the span's end offers all 5 again
    stats = processor.stats()
    assert (stats.submitted, stats.queued, stats.dropped) == (5, 2, 3)
    assert stats.dropped_causes == {"queue_full": 3}
    assert processor.force_flush(10_000)
    stats = processor.stats()
    assert (stats.written, stats.dropped, stats.queued) == (2, 3, 0) and balanced(stats)


def test_milestones_after_shutdown_are_counted_as_dropped(table: str, pipeline: Any) -> None:
    tracer, processor = pipeline(table)
    emit(tracer, new_session(), 2)
    processor.shutdown()
    emit(tracer, new_session(), 3)  # what users do: milestone(), not submit()
    stats = processor.stats()
    assert (stats.written, stats.dropped, stats.submitted) == (2, 3, 5)
    assert stats.dropped_causes == {"after_shutdown": 3} and balanced(stats)


def test_an_invalid_item_is_isolated_while_throttling_is_retried_with_backoff(
    ddb: Any, table: str, proxy: FaultProxy
) -> None:
    import boto3

    client = boto3.client("dynamodb", endpoint_url=proxy.endpoint)
    rows = [(table, to_item(Milestone(f"e-{i:03d}", "s-split", "a", "PROGRESS", "m", i))) for i in range(24)]
    bad = to_item(Milestone("e-bad", "s-split", "a", "PROGRESS", "m", 99))
    bad["session_id"] = {"S": ""}  # DynamoDB refuses an empty key
    rows.insert(7, (table, bad))
    with proxy.injecting(throttle=0.4):
        result = DynamoDBWriter(lambda: client, base_backoff=0.01).write(rows, time.monotonic() + 60)
    assert (result.written, result.rejected, result.unwritten) == (24, 1, [])
    assert result.rejected_causes == {"ValidationException": 1}
    assert len(session_rows(ddb, table, "s-split")) == 24


class _HungCollector:
    """Accepts OTLP connections and answers none of them until ``release()``."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.released = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.released.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def release(self) -> None:
        self.released.set()
        for conn in self.held:
            conn.close()
        self.sock.close()


def test_flush_and_shutdown_keep_their_timeouts_while_the_collector_hangs(table: str) -> None:
    collector = _HungCollector()
    code = f"""
import os
from opentelemetry import trace
import his_otel
handle = his_otel.configure({table!r}, otlp=True, schedule_delay_millis=0)
with trace.get_tracer("t").start_as_current_span("work"):
    his_otel.milestone("PROGRESS", "x", session_id="s-hung")
print("flush", handle.force_flush(1000), flush=True)
handle.shutdown()
print("shutdown returned", flush=True)
os._exit(0)
"""
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "120",  # the exporter alone would wait two minutes
        "HIS_OTEL_SHUTDOWN_TIMEOUT_MS": "1000",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        # Both come back while the collector still holds the export open: each kept its own timeout.
        assert proc.stdout.readline().strip() == "flush False"
        assert proc.stdout.readline().strip() == "shutdown returned"
        assert not collector.released.is_set() and collector.held
    finally:
        collector.release()
        proc.kill()
        proc.communicate()


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_status_loss_is_logged_without_the_message_text(
    table: str, proxy: FaultProxy, pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tracer, processor = pipeline(table, max_row_age_millis=0)
    with caplog.at_level(logging.DEBUG, logger="his_otel"), proxy.injecting(error=1.0):
        emit(tracer, new_session(), 3, prefix="card 4111-1111-1111-1111 ")
        wait_for(lambda: processor.stats().rejected == 3, timeout_s=30)
    assert "4111" not in caplog.text and "AccessDeniedException" in caplog.text
