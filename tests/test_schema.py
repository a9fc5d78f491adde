"""The wire format (span event) and the row: round trip, validation, limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from his_otel.schema import (
    ATTR_TABLE,
    EventType,
    InvalidMilestoneError,
    Milestone,
    event_attributes,
    iso_utc,
    milestone_from_event,
    normalize_evt_type,
    to_item,
)

M = Milestone(
    event_id="0190b4c2-7d3e-7abc-8def-0123456789ab",
    session_id="s-1",
    agent_id="a-1",
    evt_type="START",
    evt_message="Processing user request",
    timestamp_ns=1_763_733_900_123_456_789,
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0x00F067AA0BA902B7,
    span_name="invoke_agent x",
    table="t",
    message_length=len("Processing user request"),
)


def test_event_round_trip_keeps_every_field() -> None:
    attrs = event_attributes(M)
    back = milestone_from_event(
        attrs, M.timestamp_ns, trace_id=M.trace_id, span_id=M.span_id, span_name=M.span_name
    )
    assert back == M


def test_event_attributes_are_the_documented_names() -> None:
    assert set(event_attributes(M, include_table=False)) == {
        "his.evt_type",
        "his.evt_message_length",
        "his.evt_message",
        "his.event_id",
        "his.session_id",
        "his.agent_id",
    }
    assert event_attributes(M)[ATTR_TABLE] == "t"


def test_item_has_here_i_strand_schema_and_trace_link() -> None:
    item = to_item(M)
    assert item["session_id"] == {"S": "s-1"}
    assert item["event_id"] == {"S": M.event_id}
    assert item["agent_id"] == {"S": "a-1"}
    assert item["evt_type"] == {"S": "START"}
    assert item["evt_message"] == {"S": "Processing user request"}
    # The event's own timestamp, in UTC, not the export time.
    assert item["evt_datetime"] == {"S": "2025-11-21T14:05:00.123457+00:00"}
    assert item["trace_id"] == {"S": "0af7651916cd43dd8448eb211c80319c"}
    assert item["span_id"] == {"S": "00f067aa0ba902b7"}
    assert item["span_name"] == {"S": "invoke_agent x"}
    assert "evt_message_truncated" not in item


def test_oversized_message_is_truncated_flagged_and_keeps_length() -> None:
    big = replace(M, evt_message="é" * 300_000)  # 600,000 bytes in UTF-8
    item = to_item(big, max_message_bytes=1000)
    assert item["evt_message_truncated"] == {"BOOL": True}
    assert item["evt_message_length"] == {"N": "600000"}
    stored = item["evt_message"]["S"]
    assert len(stored.encode()) <= 1000
    assert stored == "é" * 500  # cut on a character boundary


@pytest.mark.parametrize(
    ("attrs", "error"),
    [
        ({"his.event_id": "e", "his.evt_type": "START"}, "session_id"),
        ({"his.session_id": "s", "his.evt_type": "START"}, "event_id"),
        ({"his.session_id": "  ", "his.event_id": "e", "his.evt_type": "START"}, "session_id"),
        ({"his.session_id": "s", "his.event_id": "e", "his.evt_type": "not a type!"}, "evt_type"),
        (None, "session_id"),
    ],
)
def test_events_that_cannot_be_rows_are_rejected(attrs: dict[str, str] | None, error: str) -> None:
    with pytest.raises(InvalidMilestoneError, match=error):
        milestone_from_event(attrs, 0)


def test_wrong_types_and_bad_text_still_make_a_valid_row() -> None:
    m = milestone_from_event(
        {
            "his.session_id": 42,
            "his.event_id": b"e-1",
            "his.evt_type": "progress",
            "his.evt_message": "bad \udcff surrogate",
            "his.agent_id": ("a", "b"),
        },
        5,
    )
    assert (m.session_id, m.event_id, m.evt_type, m.agent_id) == ("42", "e-1", "PROGRESS", "a,b")
    m.evt_message.encode("utf-8")  # encodable: the surrogate was replaced
    assert to_item(m)["evt_message"]["S"] == "bad \ufffd surrogate"


def test_missing_agent_id_defaults_like_here_i_strand() -> None:
    m = milestone_from_event({"his.session_id": "s", "his.event_id": "e", "his.evt_type": "START"}, 1)
    assert m.agent_id == "default"


def test_event_types() -> None:
    assert [t.value for t in EventType] == [
        "START",
        "TOOLING",
        "MODEL_INVOCATION",
        "PROGRESS",
        "COMPLETION",
        "ERROR",
        "BEDROCK_THROTTLING",
        "EVENT_LOOP",
        "AGENT_STATS",
        "RESULT",
    ]
    assert normalize_evt_type(EventType.RESULT) == "RESULT"
    assert normalize_evt_type(" custom_step ") == "CUSTOM_STEP"
    with pytest.raises(InvalidMilestoneError):
        normalize_evt_type("")


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000000+00:00"


def test_a_message_cut_on_the_way_is_flagged_with_its_emitted_length() -> None:
    """The SDK's attribute limit cuts strings but not ints: the row says the text is incomplete."""
    whole = '{"answer": "' + "é" * 3000 + '"}'
    attrs = event_attributes(replace(M, evt_message=whole))
    attrs["his.evt_message"] = str(attrs["his.evt_message"])[:1024]  # what the SDK's limit does
    item = to_item(milestone_from_event(attrs, M.timestamp_ns))
    assert item["evt_message"]["S"] == whole[:1024]
    assert item["evt_message_truncated"] == {"BOOL": True}
    assert item["evt_message_length"] == {"N": str(len(whole.encode()))}
    # A whole message carries no flags.
    assert "evt_message_truncated" not in to_item(milestone_from_event(event_attributes(M), 1))


@given(st.integers(min_value=0, max_value=(1 << 63) - 1), st.integers(min_value=0, max_value=3))
def test_iso_utc_is_the_nearest_microsecond_whatever_came_before(timestamp_ns: int, before: int) -> None:
    # The calendar part is cached a second at a time: a call for another second first must not leak.
    iso_utc(max(0, timestamp_ns - before * 1_000_000_000))
    exact = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(
        microseconds=round(Fraction(timestamp_ns, 1000))
    )
    assert iso_utc(timestamp_ns) == exact.isoformat(timespec="microseconds")
