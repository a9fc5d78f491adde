"""The reader's live cursor: every row once, late rows included, bounded memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from fault_proxy import FaultProxy
from helpers import new_session
from his_otel import DynamoDBSpanExporter, HISAgent, HISSpanProcessor, ScriptedModel, milestone
from his_otel.read import Position, SessionCursor, iter_rows, session_rows
from his_otel.scenarios import BUILDERS, SCENARIOS


@pytest.fixture
def pipeline(table: str) -> Iterator[Any]:
    """pipeline(endpoint) -> (tracer, processor): an independent his-otel pipeline (its own writer
    thread and client) writing to ``endpoint``; all shut down after the test."""
    made: list[HISSpanProcessor] = []

    def build(endpoint: str) -> tuple[Any, HISSpanProcessor]:
        exporter = DynamoDBSpanExporter(table, endpoint_url=endpoint, export_timeout_millis=30_000)
        processor = HISSpanProcessor(exporter, schedule_delay_millis=5)
        made.append(processor)
        provider = TracerProvider()
        provider.add_span_processor(processor)
        return provider.get_tracer("w"), processor

    yield build
    for processor in made:
        processor.shutdown()


@pytest.fixture
def writers(pipeline: Any, proxy: FaultProxy) -> list[Any]:
    return [pipeline(proxy.endpoint) for _ in range(4)]


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_the_live_cursor_delivers_every_row_once_from_several_writers_with_latency_and_jitter(
    pipeline: Any, proxy: FaultProxy, moto_endpoint: str, ddb: Any, table: str
) -> None:
    """Four writers through a proxy adding 10 ms + up to 150 ms a write and 20% throttling; one of
    them cannot reach DynamoDB for its first second, so its first rows land after later rows of the
    others: the late rows a poller asking for keys after the last one it saw misses."""
    session, per_writer = new_session(), 150
    late = FaultProxy(moto_endpoint).start()
    writers = [pipeline(late.endpoint)] + [pipeline(proxy.endpoint) for _ in range(3)]
    emitted: list[str] = []
    lock = threading.Lock()

    def emit(tracer: Any, n: int) -> None:
        for i in range(per_writer):
            with tracer.start_as_current_span("work"):
                event_id = milestone("PROGRESS", f"writer {n} step {i}", session_id=session)
            with lock:
                emitted.append(str(event_id))
            time.sleep(0.005)

    cursor = SessionCursor(table, session, client=ddb, window_s=30)
    naive_seen: set[str] = set()
    naive_last = ""
    delivered: list[str] = []

    def read() -> None:
        nonlocal naive_last
        delivered.extend(r["event_id"] for r in cursor.poll())
        # What a poller asking only for keys after the last one it saw gets.
        for row in iter_rows(ddb, table, session, after=naive_last or None):
            naive_seen.add(row["event_id"])
            naive_last = max(naive_last, row["event_id"])

    try:
        with proxy.injecting(delay_s=0.01, jitter_s=0.15, throttle=0.2):
            threads = [
                threading.Thread(target=emit, args=(tracer, n)) for n, (tracer, _) in enumerate(writers)
            ]
            with late.refusing():
                for t in threads:
                    t.start()
                until = time.monotonic() + 1.0
                while time.monotonic() < until:
                    read()
                    time.sleep(0.02)
            while any(t.is_alive() for t in threads):
                read()
                time.sleep(0.02)
            for _, processor in writers:
                assert processor.force_flush(60_000)
        read()  # everything has landed now
    finally:
        late.stop()

    assert len(emitted) == 4 * per_writer and "None" not in emitted
    assert len(delivered) == len(set(delivered)), "a row was delivered twice"
    assert set(delivered) == set(emitted), "a row was never delivered"
    # The scenario really has late rows: the naive poller missed some of them.
    assert len(naive_seen) < len(emitted)
    assert proxy.counters.injected.get("throttle", 0) > 0


def test_the_cursor_remembers_only_its_window_and_resumes_from_a_token(
    writers: list[Any], ddb: Any, table: str
) -> None:
    session = new_session()
    tracer, processor = writers[0]

    def emit(n: int) -> None:
        for i in range(n):
            with tracer.start_as_current_span("work"):
                milestone("PROGRESS", f"step {i}", session_id=session)
        assert processor.force_flush(30_000)

    cursor = SessionCursor(table, session, client=ddb, window_s=0.5)
    emit(20)
    assert len(cursor.poll()) == 20
    time.sleep(1.0)
    emit(5)
    assert len(cursor.poll()) == 5
    # Ids emitted more than the window before the newest are forgotten: memory is the window's.
    assert len(cursor.position.recent) == 5

    token = cursor.position.token()
    emit(3)
    resumed = SessionCursor(table, session, client=ddb, window_s=0.5, position=Position.from_token(token))
    assert [r["evt_message"] for r in resumed.poll()] == ["step 0", "step 1", "step 2"]
    assert resumed.poll() == []
    with pytest.raises(ValueError, match="not a session cursor token"):
        Position.from_token("garbage")


def test_follow_stops_after_the_row_the_caller_waits_for(writers: list[Any], ddb: Any, table: str) -> None:
    session = new_session()
    tracer, processor = writers[0]
    for evt_type in ("START", "PROGRESS", "COMPLETION", "AGENT_STATS"):
        with tracer.start_as_current_span("work"):
            milestone(evt_type, "x", session_id=session)
    assert processor.force_flush(30_000)

    got = SessionCursor(table, session, client=ddb).follow(
        interval_s=0.05, until=lambda r: r["evt_type"] == "COMPLETION", timeout_s=30
    )
    assert [r["evt_type"] for r in got] == ["START", "PROGRESS", "COMPLETION", "AGENT_STATS"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_follow_stops_by_itself_after_the_row_that_ends_the_run(
    scenario: str, his: Any, ddb: Any, table: str
) -> None:
    """Each demo scenario (an agent, a Swarm of three whose nodes each end their own invocation, a
    Graph, a voice session) runs while a cursor follows its session with no ``until``: the cursor
    stops on its own, after the run's last row, having delivered every row of the session once."""
    session = new_session()
    run = BUILDERS[scenario](table, session, 0.05)
    got: list[dict[str, Any]] = []
    cursor = SessionCursor(table, session, client=ddb)
    follower = threading.Thread(target=lambda: got.extend(cursor.follow(interval_s=0.05)))
    follower.start()
    run.run()
    follower.join(60)
    assert not follower.is_alive(), "follow() did not stop after the run ended"
    landed = session_rows(ddb, table, session)
    assert sorted(r["event_id"] for r in got) == sorted(r["event_id"] for r in landed)
    last = {
        "agent": "RESULT",
        "swarm": "MULTIAGENT_STATS",
        "graph": "MULTIAGENT_STATS",
        "bidi": "AGENT_STATS",
    }
    assert got[-1]["evt_type"] == last[scenario]
    if scenario in ("swarm", "graph"):  # nodes' RESULT rows came before, and did not stop it
        assert [r["evt_type"] for r in got].count("RESULT") >= 3


def test_follow_stops_after_the_error_of_an_invocation_that_raised(his: Any, ddb: Any, table: str) -> None:
    session = new_session()

    class Broken(ScriptedModel):
        async def stream(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            raise RuntimeError("model unavailable")
            yield  # an async generator

    agent = HISAgent(table, session, model=Broken([]))
    got: list[dict[str, Any]] = []
    follower = threading.Thread(
        target=lambda: got.extend(SessionCursor(table, session, client=ddb).follow(interval_s=0.05))
    )
    follower.start()
    with pytest.raises(RuntimeError):
        agent("hello")
    follower.join(60)
    assert not follower.is_alive(), "follow() did not stop after the failed invocation"
    assert got[-1]["evt_type"] == "ERROR" and got[-1]["evt_message"].startswith("Invocation failed")
