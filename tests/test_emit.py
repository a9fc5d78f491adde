"""milestone(): the span event, the identity it takes from context, and that it never raises."""

from __future__ import annotations

import threading
import uuid

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import INVALID_SPAN

from his_otel import EventType, milestone, session
from his_otel.emit import add_sink, dropped_without_identity, remove_sink
from his_otel.schema import EVENT_NAME, Milestone

tracer = TracerProvider().get_tracer("test")  # a private provider: these tests need no global one


def test_event_on_the_given_span_with_all_attributes() -> None:
    with tracer.start_as_current_span("work") as span:
        event_id = milestone(EventType.PROGRESS, "half way", session_id="s", agent_id="a", table="t")
    assert event_id is not None
    (event,) = [e for e in span.events if e.name == EVENT_NAME]  # type: ignore[attr-defined]
    assert dict(event.attributes) == {
        "his.evt_type": "PROGRESS",
        "his.evt_message": "half way",
        "his.event_id": event_id,
        "his.session_id": "s",
        "his.agent_id": "a",
        "his.table": "t",
    }


def test_event_ids_are_uuid7_and_ordered_across_threads() -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def emit() -> None:
        for _ in range(500):
            eid = milestone("PROGRESS", "x", span=INVALID_SPAN, session_id="s")
            with lock:
                ids.append(str(eid))

    threads = [threading.Thread(target=emit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 2000
    assert all(uuid.UUID(i).version == 7 for i in ids)
    # Within a thread, later milestones sort later: the sort key is the emission order.
    one_thread = [milestone("PROGRESS", "x", span=INVALID_SPAN, session_id="s") for _ in range(1000)]
    assert one_thread == sorted(one_thread)  # type: ignore[type-var]


def test_identity_comes_from_the_session_block() -> None:
    seen: list[Milestone] = []
    add_sink(seen.append)
    try:
        with session("s-ctx", agent_id="a-ctx", table="t-ctx"):
            milestone("START", "go", span=INVALID_SPAN)
            milestone("START", "override", span=INVALID_SPAN, session_id="s-explicit")
        assert milestone("START", "outside", span=INVALID_SPAN) is None
    finally:
        remove_sink(seen.append)
    assert [(m.session_id, m.agent_id, m.table) for m in seen] == [
        ("s-ctx", "a-ctx", "t-ctx"),
        ("s-explicit", "a-ctx", "t-ctx"),
    ]


def test_without_a_session_nothing_is_recorded_and_it_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    before = dropped_without_identity()
    assert milestone("START", "nowhere", span=INVALID_SPAN) is None
    assert dropped_without_identity() == before + 1


def test_bad_type_returns_none_and_adds_no_event() -> None:
    with tracer.start_as_current_span("work") as span:
        assert milestone("no spaces allowed", "x", session_id="s") is None
    assert not span.events  # type: ignore[attr-defined]


def test_a_failing_sink_neither_raises_nor_starves_other_sinks() -> None:
    seen: list[Milestone] = []

    def broken(m: Milestone) -> None:
        raise RuntimeError("sink down")

    add_sink(broken)
    add_sink(seen.append)
    try:
        assert milestone("PROGRESS", "x", span=INVALID_SPAN, session_id="s") is not None
    finally:
        remove_sink(broken)
        remove_sink(seen.append)
    assert len(seen) == 1


def test_non_recording_span_still_reaches_sinks_with_its_ids() -> None:
    seen: list[Milestone] = []
    add_sink(seen.append)
    try:
        milestone("PROGRESS", "x", span=INVALID_SPAN, session_id="s")
    finally:
        remove_sink(seen.append)
    assert seen[0].span_name == ""
    assert seen[0].trace_id == 0
