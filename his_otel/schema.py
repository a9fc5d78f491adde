"""The two formats his-otel speaks: the ``his.milestone`` span event and the DynamoDB row.

Every emitter writes the event through :func:`event_attributes`; every exporter reads it back through
:func:`milestone_from_event` and writes it with :func:`to_item`. Keeping the three here is what makes
the in-process path and the bridge produce identical rows.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

Item = dict[str, dict[str, Any]]
"""A DynamoDB item in the low-level client's attribute-value form."""

EVENT_NAME = "his.milestone"

ATTR_EVT_TYPE = "his.evt_type"
ATTR_EVT_MESSAGE = "his.evt_message"
ATTR_EVENT_ID = "his.event_id"
ATTR_SESSION_ID = "his.session_id"
ATTR_AGENT_ID = "his.agent_id"
# The message's UTF-8 length as emitted: the SDK's attribute limit (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT)
# may cut the text on its way to a collector, but never an int, so a reader of the event knows.
ATTR_EVT_MESSAGE_LENGTH = "his.evt_message_length"
# The name of the span a milestone sits on, carried by its log copy (a log record has no span name).
ATTR_SPAN_NAME = "his.span_name"
# Routes an in-process row to its agent's table. The bridge ignores it: a sender never picks the table.
ATTR_TABLE = "his.table"
# The attribute AgentCore and OTel's session convention use, so backends can search spans by session.
SPAN_ATTR_SESSION_ID = "session.id"
# Set on a span when a milestone is added to it, so a collector's filter processor can keep only
# the spans that carry milestones (span conditions cannot look at a span's events).
SPAN_ATTR_HAS_MILESTONE = "his.has_milestone"

# Item attribute names: here-i-strand's six, then the trace link and the truncation flags.
KEY_SESSION_ID = "session_id"
KEY_EVENT_ID = "event_id"

# DynamoDB's item limit, "400 KB", counting attribute names and values in UTF-8 bytes. Read as
# decimal: the smallest reading, and below moto's 405,000 and dynalite's limits.
MAX_ITEM_BYTES = 400_000
# DynamoDB's key limits: a partition key of at most 2,048 bytes, a sort key of at most 1,024.
MAX_SESSION_ID_BYTES = 2048
MAX_EVENT_ID_BYTES = 1024
# Ours, so that every other attribute together stays small next to the message.
MAX_AGENT_ID_BYTES = 1024
MAX_SPAN_NAME_BYTES = 1024
DEFAULT_MAX_MESSAGE_BYTES = 350_000
# The largest message setting that fits beside the other attributes at their limits (~6 KB).
MAX_MESSAGE_BYTES_LIMIT = 390_000

_EVT_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


class EventType(str, Enum):
    """The milestone types here-i-strand defined. Any other upper-case name is accepted too."""

    START = "START"
    TOOLING = "TOOLING"
    MODEL_INVOCATION = "MODEL_INVOCATION"
    PROGRESS = "PROGRESS"
    COMPLETION = "COMPLETION"
    ERROR = "ERROR"
    BEDROCK_THROTTLING = "BEDROCK_THROTTLING"
    EVENT_LOOP = "EVENT_LOOP"
    AGENT_STATS = "AGENT_STATS"
    RESULT = "RESULT"

    def __str__(self) -> str:
        return self.value


class MultiAgentEventType(str, Enum):
    """The milestone types of a Swarm or Graph run (the orchestration's own rows; its node agents
    write the :class:`EventType` rows under their own ``agent_id``)."""

    MULTIAGENT_START = "MULTIAGENT_START"
    NODE_START = "NODE_START"
    NODE_COMPLETION = "NODE_COMPLETION"
    NODE_ERROR = "NODE_ERROR"
    HANDOFF = "HANDOFF"
    INTERRUPT = "INTERRUPT"
    MULTIAGENT_COMPLETION = "MULTIAGENT_COMPLETION"
    MULTIAGENT_ERROR = "MULTIAGENT_ERROR"
    MULTIAGENT_STATS = "MULTIAGENT_STATS"

    def __str__(self) -> str:
        return self.value


class BidiEventType(str, Enum):
    """The milestone types of a BidiAgent session besides TOOLING, ERROR and AGENT_STATS."""

    SESSION_START = "SESSION_START"
    CONNECTION_RESTART = "CONNECTION_RESTART"
    CONNECTION_RESTARTED = "CONNECTION_RESTARTED"
    BARGE_IN = "BARGE_IN"
    RESPONSE_COMPLETION = "RESPONSE_COMPLETION"
    SESSION_END = "SESSION_END"

    def __str__(self) -> str:
        return self.value


TOOL_TIMEOUT = "TOOL_TIMEOUT"
"""What :class:`~his_otel.TimeoutConcurrentToolExecutor` records for a tool that ran out of time."""

HOOK_OWNED_TYPES = frozenset(
    {
        *(str(t) for t in EventType if t is not EventType.PROGRESS),
        *(str(t) for t in MultiAgentEventType),
        *(str(t) for t in BidiEventType),
        TOOL_TIMEOUT,
    }
)
"""Every type his-otel's hooks and executor record. In the default ``hooks`` reporting mode the model
may not write these through ``write_dynamo`` (it could tell a UI that a run ended or failed);
``tests/test_hook_types.py`` checks that every type a hook writes is here."""


class InvalidMilestoneError(ValueError):
    """A span event that cannot become a row (missing ids, malformed type). ``cause`` names the kind
    (``invalid evt_type``, ``session_id too long``, ...): a short, fixed text, for counting."""

    def __init__(self, message: str, cause: str = "invalid milestone") -> None:
        super().__init__(message)
        self.cause = cause


def normalize_evt_type(evt_type: str | EventType) -> str:
    """Return ``evt_type`` upper-cased, or raise :class:`InvalidMilestoneError` if it is not a valid name."""
    if not isinstance(evt_type, (str, Enum)):
        # None would become "NONE", a number "123...": neither is a name someone chose.
        raise InvalidMilestoneError(
            f"evt_type must be a string, got {type(evt_type).__name__}", "invalid evt_type"
        )
    value = evt_type.value if isinstance(evt_type, Enum) else str(evt_type).strip().upper()
    if not _EVT_TYPE_RE.match(value):
        # Bounded: the type may be a sender's megabyte, and this text is logged and answered.
        raise InvalidMilestoneError(
            f"evt_type must match {_EVT_TYPE_RE.pattern!r}, got {value[:80]!r}", "invalid evt_type"
        )
    return value


@dataclass(frozen=True, slots=True)
class Milestone:
    """One milestone, as emitted and as read back from a span event."""

    event_id: str
    session_id: str
    agent_id: str
    evt_type: str
    evt_message: str
    timestamp_ns: int
    trace_id: int = 0
    span_id: int = 0
    span_name: str = ""
    table: str = ""
    message_length: int = 0
    """The message's UTF-8 length when it was emitted, as an event carries it (0: not known)."""

    def approx_bytes(self) -> int:
        """Memory this milestone holds while queued, O(1): measured at about 360 bytes of object and
        id strings plus the message (``getsizeof`` knows its real width: 1, 2 or 4 bytes a char)."""
        return 360 + sys.getsizeof(self.evt_message)


def event_attributes(m: Milestone, *, include_table: bool = True) -> dict[str, str | int]:
    """The ``his.milestone`` event attributes for ``m`` (DESIGN section 2)."""
    attrs: dict[str, str | int] = {
        ATTR_EVT_TYPE: m.evt_type,
        ATTR_EVT_MESSAGE: m.evt_message,
        ATTR_EVENT_ID: m.event_id,
        ATTR_SESSION_ID: m.session_id,
        ATTR_AGENT_ID: m.agent_id,
        ATTR_EVT_MESSAGE_LENGTH: _utf8_len(m.evt_message),
    }
    if include_table and m.table:
        attrs[ATTR_TABLE] = m.table
    return attrs


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD; valid text comes back as is.

    A lone surrogate (model JSON with half an emoji escape, ``JSON.stringify`` output) cannot be
    encoded as UTF-8, so botocore would fail a whole batch on it and OTLP exporters a whole span.
    A surrogate pair split into two code points is joined back into its character.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _text(value: Any) -> str:
    """Coerce an attribute value to text that DynamoDB accepts (valid UTF-8)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return clean_text(value if isinstance(value, str) else str(value))


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def check_ids(session_id: str, event_id: str, agent_id: str) -> None:
    """Raise :class:`InvalidMilestoneError` when an id cannot be stored (DynamoDB's key limits)."""
    if not session_id:
        raise InvalidMilestoneError("missing his.session_id", "no session_id")
    if not event_id:
        raise InvalidMilestoneError("missing his.event_id", "no event_id")
    for name, value, limit in (
        ("session_id", session_id, MAX_SESSION_ID_BYTES),
        ("event_id", event_id, MAX_EVENT_ID_BYTES),
        ("agent_id", agent_id, MAX_AGENT_ID_BYTES),
    ):
        if len(value) * 4 <= limit:
            continue  # no character takes more than four bytes
        size = _utf8_len(value)
        if size > limit:
            raise InvalidMilestoneError(
                f"{name} is {size} bytes in UTF-8; the limit is {limit}", f"{name} too long"
            )


def truncate_utf8(text: str, max_bytes: int) -> tuple[str, int]:
    """``text`` cut to at most ``max_bytes`` of UTF-8 on a character boundary, and its full length."""
    if len(text) * 4 <= max_bytes:  # no character takes more than four bytes
        return text, _utf8_len(text)
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, len(encoded)
    return encoded[:max_bytes].decode("utf-8", errors="ignore"), len(encoded)


def milestone_from_event(
    attributes: Mapping[str, Any] | None,
    timestamp_ns: int,
    *,
    trace_id: int = 0,
    span_id: int = 0,
    span_name: str = "",
) -> Milestone:
    """Read a ``his.milestone`` event back into a :class:`Milestone`.

    Raises:
        InvalidMilestoneError: when the event lacks a session or event id, or its type is malformed.
    """
    attrs = attributes or {}
    session_id = _text(attrs.get(ATTR_SESSION_ID, "")).strip()
    event_id = _text(attrs.get(ATTR_EVENT_ID, "")).strip()
    agent_id = _text(attrs.get(ATTR_AGENT_ID, "")).strip() or "default"
    check_ids(session_id, event_id, agent_id)
    return Milestone(
        event_id=event_id,
        session_id=session_id,
        agent_id=agent_id,
        evt_type=normalize_evt_type(_text(attrs.get(ATTR_EVT_TYPE, ""))),
        evt_message=_text(attrs.get(ATTR_EVT_MESSAGE, "")),
        timestamp_ns=int(timestamp_ns),
        trace_id=trace_id,
        span_id=span_id,
        span_name=_text(span_name),
        table=_text(attrs.get(ATTR_TABLE, "")).strip(),
        message_length=_length(attrs.get(ATTR_EVT_MESSAGE_LENGTH)),
    )


def _length(value: Any) -> int:
    """A declared length (an int, or its string form in OTLP/JSON); 0 when absent or malformed."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


_last_second: tuple[int, str] = (-1, "")


def iso_utc(timestamp_ns: int) -> str:
    """ISO-8601 UTC with microseconds, e.g. ``2026-11-21T14:05:00.123456+00:00``."""
    global _last_second
    # To the nearest microsecond, ties to even, as datetime rounds.
    whole, rest = divmod(timestamp_ns, 1000)
    whole += rest > 500 or (rest == 500 and whole % 2 == 1)
    second, micros = divmod(whole, 1_000_000)
    cached = _last_second
    if cached[0] != second:
        # A run's rows share their second: the calendar arithmetic is done once a second.
        cached = (second, datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
        _last_second = cached
    return f"{cached[1]}.{micros:06d}+00:00"


# Room kept for the truncation flags: names plus a BOOL and a number of up to 21 digits.
_FLAGS_BYTES = len("evt_message_truncated") + 1 + len("evt_message_length") + 21


def item_bytes(item: Item) -> int:
    """An upper bound of DynamoDB's size of ``item``: names and values in UTF-8 bytes."""
    total = 0
    for name, value in item.items():
        total += _utf8_len(name)
        if "S" in value:
            total += _utf8_len(value["S"])
        elif "N" in value:
            total += len(value["N"]) + 1
        else:
            total += 1
    return total


def to_item(m: Milestone, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Item:
    """The DynamoDB item (low-level attribute-value form) for ``m`` (DESIGN section 3).

    The item always fits DynamoDB's 400 KB: the span name is cut to 1,024 bytes and the message to
    what is left (and to ``max_message_bytes``), flagged with its original length.

    Raises:
        InvalidMilestoneError: when a key or the agent id is beyond its limit (see :func:`check_ids`).
    """
    check_ids(m.session_id, m.event_id, m.agent_id)
    item: Item = {
        KEY_SESSION_ID: {"S": m.session_id},
        KEY_EVENT_ID: {"S": m.event_id},
        "agent_id": {"S": m.agent_id},
        "evt_type": {"S": m.evt_type},
        "evt_datetime": {"S": iso_utc(m.timestamp_ns)},
    }
    if m.trace_id:
        item["trace_id"] = {"S": format(m.trace_id, "032x")}
    if m.span_id:
        item["span_id"] = {"S": format(m.span_id, "016x")}
    if m.span_name:
        item["span_name"] = {"S": truncate_utf8(m.span_name, MAX_SPAN_NAME_BYTES)[0]}
    limit = max_message_bytes
    if limit > MAX_MESSAGE_BYTES_LIMIT:
        # Below that limit the other attributes, each within its own limit, always leave room.
        limit = min(limit, MAX_ITEM_BYTES - item_bytes(item) - len("evt_message") - _FLAGS_BYTES)
    message, length = truncate_utf8(m.evt_message, max(0, limit))
    if len(message) < len(m.evt_message) or m.message_length > length:
        # Cut here (keep the row rather than fail its whole batch) or before it reached us (a span
        # attribute limit): the flags tell a reader, with the length the text had when emitted.
        item["evt_message_truncated"] = {"BOOL": True}
        item["evt_message_length"] = {"N": str(max(length, m.message_length))}
    item["evt_message"] = {"S": message}
    return item
