"""The reader's live cursor: every row once, late rows included, bounded memory."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from fault_proxy import FaultProxy
from helpers import new_session, put_row, uuid7_at
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

    token = cursor.token()
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


def test_a_cursor_token_stays_small_whatever_its_window_holds(ddb: Any, table: str) -> None:
    session = new_session()
    now = int(time.time() * 1000)
    cursor = SessionCursor(table, session, client=ddb, window_s=600)
    sizes = []
    for batch in (1, 299, 2700):  # 1, 300, then 3,000 rows in the window
        for i in range(batch):
            put_row(ddb, table, session, uuid7_at(now - 60_000 + len(cursor.position.recent) + i), f"r{i}")
        cursor.poll()
        sizes.append(len(cursor.token()))
    assert len(cursor.position.recent) == 3000
    # The previous token grew about 71 characters a row (213,000 here); this one does not grow.
    assert sizes[0] == sizes[1] == sizes[2] < 500


def test_a_token_resumes_with_the_rows_that_landed_late_since_and_no_other(ddb: Any, table: str) -> None:
    session = new_session()
    now = int(time.time() * 1000)
    ids = [uuid7_at(now - 5_000 + i) for i in range(0, 1000, 10)]
    for event_id in ids[::2]:
        put_row(ddb, table, session, event_id, event_id)
    cursor = SessionCursor(table, session, client=ddb)
    assert len(cursor.poll()) == 50
    token = cursor.token()
    # Rows land after the token was made: six of them late (older ids than the newest delivered:
    # a retried batch, another writer), four after it.
    late = ids[1:12:2]
    after = [uuid7_at(now + i) for i in range(4)]
    for event_id in late + after:
        put_row(ddb, table, session, event_id, event_id)
    resumed = SessionCursor(table, session, client=ddb, position=Position.from_token(token))
    assert [r["event_id"] for r in resumed.poll()] == sorted(late + after)
    assert resumed.poll() == [] and resumed.resume_failures == 0
    # Its own token, and a new row: delivered once more, the rest never again.
    again = SessionCursor(table, session, client=ddb, position=Position.from_token(resumed.token()))
    newer = uuid7_at(now + 10)
    put_row(ddb, table, session, newer, newer)
    assert [r["event_id"] for r in again.poll()] == [newer]


def test_a_token_with_more_late_rows_than_it_can_tell_apart_repeats_rows_never_skips_them(
    ddb: Any, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    session = new_session()
    now = int(time.time() * 1000)
    ids = [uuid7_at(now - 5_000 + i) for i in range(0, 2000, 10)]
    for event_id in ids[::2]:
        put_row(ddb, table, session, event_id, event_id)
    cursor = SessionCursor(table, session, client=ddb)
    cursor.poll()
    token = cursor.token()
    late = ids[1::2][:60]
    for event_id in late:
        put_row(ddb, table, session, event_id, event_id)
    resumed = SessionCursor(table, session, client=ddb, position=Position.from_token(token))
    got = [r["event_id"] for r in resumed.poll()]
    assert set(late) <= set(got)  # none skipped
    assert resumed.resume_failures == 1 and "delivered again, never skipped" in caplog.text
    assert resumed.poll() == []


def test_untimed_and_far_future_ids_survive_a_token_once(ddb: Any, table: str) -> None:
    session = new_session()
    now = int(time.time() * 1000)
    odd = [str(uuid.uuid4()), uuid7_at(now + 86_400_000), uuid7_at(now - 1000)]
    for event_id in odd:
        put_row(ddb, table, session, event_id, event_id)
    cursor = SessionCursor(table, session, client=ddb)
    assert len(cursor.poll()) == 3
    fresh = uuid7_at(now)
    put_row(ddb, table, session, fresh, fresh)
    resumed = SessionCursor(table, session, client=ddb, position=Position.from_token(cursor.token()))
    assert [r["event_id"] for r in resumed.poll()] == [fresh]


def test_a_token_of_another_session_is_refused_not_misread(ddb: Any, table: str) -> None:
    """Its window would pass for this session's: rows older than it would never be delivered."""
    session, other = new_session(), new_session()
    put_row(ddb, table, session, uuid7_at(int(time.time() * 1000)), "x")
    cursor = SessionCursor(table, session, client=ddb)
    cursor.poll()
    token = cursor.token()
    with pytest.raises(ValueError, match="made for another session"):
        SessionCursor(table, other, client=ddb, position=Position.from_token(token))
    with pytest.raises(ValueError, match="made for another session"):
        Position.from_token(token, other)
    assert Position.from_token(token, session).newest_id == cursor.position.newest_id
