"""milestone(): the span event, the identity it takes from context, and that it never raises."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import INVALID_SPAN

from his_otel import EventType, milestone, session
from his_otel.emit import dropped_without_identity
from his_otel.schema import EVENT_NAME

tracer = TracerProvider().get_tracer("test")  # a private provider: these tests need no global one


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
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
        "his.evt_message_length": len("half way"),
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


def _events(span: object) -> list[dict[str, object]]:
    return [dict(e.attributes) for e in span.events if e.name == EVENT_NAME]  # type: ignore[attr-defined]


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_identity_comes_from_the_session_block(his: Any) -> None:
    # ``his``: the session block configures his-otel if nothing has; here the test session's own
    # provider and pipeline are in place first.
    with tracer.start_as_current_span("work") as span:
        with session("s-ctx", agent_id="a-ctx", table="t-ctx"):
            milestone("START", "go")
            milestone("START", "override", session_id="s-explicit")
        assert milestone("START", "outside") is None
    assert [(e["his.session_id"], e["his.agent_id"], e["his.table"]) for e in _events(span)] == [
        ("s-ctx", "a-ctx", "t-ctx"),
        ("s-explicit", "a-ctx", "t-ctx"),
    ]


def test_without_a_session_nothing_is_recorded_and_it_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    before = dropped_without_identity()
    assert milestone("START", "nowhere", span=INVALID_SPAN) is None
    assert dropped_without_identity() == before + 1


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_bad_type_returns_none_and_adds_no_event() -> None:
    with tracer.start_as_current_span("work") as span:
        assert milestone("no spaces allowed", "x", session_id="s") is None
    assert not span.events  # type: ignore[attr-defined]


def test_lone_surrogates_are_replaced_on_the_span_event_and_the_log_never_shows_the_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with tracer.start_as_current_span("work") as span:
        assert milestone("PROGRESS", 'secret {"e": "\ud83d"} \ud83d\ude00', session_id="s\udc80") is not None
    (event,) = _events(span)
    assert event["his.evt_message"] == 'secret {"e": "\ufffd"} \U0001f600'
    assert event["his.session_id"] == "s\ufffd"
    assert "secret" not in caplog.text


@pytest.mark.filterwarnings("ignore::his_otel.notice.HISOtelWarning")  # the loss it provokes is said
def test_ids_beyond_dynamodbs_key_limits_are_refused_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with tracer.start_as_current_span("work") as span:
        assert milestone("PROGRESS", "x", session_id="s" * 2049) is None
        assert milestone("PROGRESS", "x", session_id="s", agent_id="a" * 1025) is None
    assert not _events(span)
    assert "session_id is 2049 bytes in UTF-8; the limit is 2048" in caplog.text
    assert "agent_id is 1025 bytes" in caplog.text


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text here")


def test_refusals_at_emission_are_counted_by_cause_and_said_once(his: Any) -> None:
    """Every milestone() call that cannot become a milestone returns None, is counted under its cause
    in the pipeline's stats(), and each cause is said once as a HISOtelWarning (bounded, no text)."""
    import warnings

    from his_otel import HISOtelWarning

    before = dict(his.stats().refused_causes)
    calls: list[tuple[Any, Any, dict[str, Any]]] = [
        (123, "m", {}),
        ("Progress update", "m", {}),
        ("A" * 65, "m", {}),
        ("PRÖGRESS", "m", {}),
        ("NUL\0", "m", {}),
        (None, "m", {}),
        ("X" * 1_000_000, "m", {}),
        ("PROGRESS", "m", {"session_id": "s" * 2049}),
        ("PROGRESS", "m", {"agent_id": "a" * 1025}),
        ("PROGRESS", _Unprintable(), {}),
    ]
    from opentelemetry import trace

    # A span of the global provider, which the ``his`` pipeline serves.
    with trace.get_tracer("t").start_as_current_span("work"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for evt_type, message, ids in calls:
            assert milestone(evt_type, message, **{"session_id": "s-refused", **ids}) is None
    after = his.stats().refused_causes
    grown = {cause: after.get(cause, 0) - before.get(cause, 0) for cause in after}
    assert grown == {
        "invalid evt_type": 7,
        "session_id too long": 1,
        "agent_id too long": 1,
        "message not text": 1,
    }
    said = [str(w.message) for w in caught if issubclass(w.category, HISOtelWarning)]
    assert all(len(text) < 600 for text in said) and not any("X" * 100 in text for text in said)


def test_write_dynamo_called_from_python_without_a_destination_records_nothing(his: Any) -> None:
    from his_otel import write_dynamo

    assert write_dynamo(None, None, None, None, None) == (  # type: ignore[arg-type]
        "error: nothing recorded: table_name, session_id must be given as text"
    )
    answer = write_dynamo("t", "a", "s", "X" * 1_000_000, "m")
    assert answer.startswith("error:") and len(answer) < 300
