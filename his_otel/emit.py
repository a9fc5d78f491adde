"""Emitting milestones: a ``his.milestone`` event on the current span, handed to the live capture.

The span event is what backends such as Jaeger show and what the end-of-span and bridge paths read.
The hand-off to the live sinks is what makes a row appear while the invocation still runs, and is
why a milestone survives a span that never ends, a trace that is sampled out, and a span that drops
old events past the SDK's event limit.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import trace as trace_api

from .schema import (
    EVENT_NAME,
    EventType,
    InvalidMilestoneError,
    Milestone,
    event_attributes,
    normalize_evt_type,
)

if sys.version_info >= (3, 14):
    from uuid import uuid7 as _uuid7
else:
    from uuid_utils import uuid7 as _uuid7

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """Where a milestone's row goes: the table, the session (partition) and the agent id."""

    session_id: str
    agent_id: str = "default"
    table: str = ""


_current_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "his_otel_identity", default=None
)

Sink = Callable[[Milestone], object]
# Copy-on-write so the hot path reads it without a lock.
_sinks: tuple[Sink, ...] = ()
_sinks_lock = threading.Lock()
_dropped_no_identity = 0
_warned_no_identity = False


def new_event_id() -> str:
    """A UUIDv7 string: unique, and ordered by creation time within this process."""
    return str(_uuid7())


def current_identity() -> Identity | None:
    """The identity of the HISAgent run this code executes in, if any."""
    return _current_identity.get()


def set_identity(identity: Identity | None) -> contextvars.Token[Identity | None]:
    return _current_identity.set(identity)


def reset_identity(token: contextvars.Token[Identity | None], fallback: Identity | None) -> None:
    try:
        _current_identity.reset(token)
    except ValueError:
        # The token belongs to another context (an async generator resumed from another task).
        _current_identity.set(fallback)


@contextmanager
def session(session_id: str, agent_id: str = "default", table: str = "") -> Iterator[Identity]:
    """Make ``milestone()`` calls in this block default to the given session, agent and table."""
    identity = Identity(session_id=session_id, agent_id=agent_id, table=table)
    token = _current_identity.set(identity)
    try:
        yield identity
    finally:
        _current_identity.reset(token)


def add_sink(sink: Sink) -> None:
    global _sinks
    with _sinks_lock:
        if sink not in _sinks:
            _sinks = (*_sinks, sink)


def remove_sink(sink: Sink) -> None:
    global _sinks
    with _sinks_lock:
        _sinks = tuple(s for s in _sinks if s != sink)


def dropped_without_identity() -> int:
    """How many ``milestone()`` calls had no session to write to."""
    return _dropped_no_identity


def milestone(
    evt_type: str | EventType,
    message: str = "",
    *,
    span: trace_api.Span | None = None,
    session_id: str | None = None,
    agent_id: str | None = None,
    table: str | None = None,
) -> str | None:
    """Record a milestone on ``span`` (default: the current span) and hand it to the live capture.

    Inside a HISAgent run (a hook, a tool body, code a tool calls) the session, agent id and table
    come from that run; elsewhere pass them, or wrap the code in :func:`session`.

    Args:
        evt_type: An :class:`EventType` or any upper-case name (``[A-Z][A-Z0-9_]*``).
        message: Text for ``evt_message``; JSON text for structured payloads.
        span: The span to add the event to. Defaults to the current span.
        session_id: Overrides the run's session id.
        agent_id: Overrides the run's agent id.
        table: Overrides the run's table (in-process only; the bridge always uses its own table).

    Returns:
        The milestone's ``event_id``, or ``None`` when it could not be recorded (bad type, no
        session). Never raises: a status row is not worth failing the agent for.
    """
    global _dropped_no_identity, _warned_no_identity
    try:
        identity = _current_identity.get()
        sid = session_id if session_id is not None else (identity.session_id if identity else "")
        if not sid:
            _dropped_no_identity += 1
            if not _warned_no_identity:
                _warned_no_identity = True
                logger.warning(
                    "evt_type=<%s> | milestone outside a HISAgent run and without session_id, not recorded"
                    " (logged once)",
                    evt_type,
                )
            return None
        aid = agent_id if agent_id is not None else (identity.agent_id if identity else "default")
        tbl = table if table is not None else (identity.table if identity else "")
        target = span if span is not None else trace_api.get_current_span()
        ctx = target.get_span_context()
        m = Milestone(
            event_id=new_event_id(),
            session_id=str(sid),
            agent_id=str(aid or "default"),
            evt_type=normalize_evt_type(evt_type),
            evt_message=message if isinstance(message, str) else str(message),
            timestamp_ns=time.time_ns(),
            trace_id=ctx.trace_id,
            span_id=ctx.span_id,
            # Only SDK spans know their name; a non-recording span leaves it empty.
            span_name=str(getattr(target, "name", "") or ""),
            table=str(tbl or ""),
        )
        target.add_event(EVENT_NAME, event_attributes(m), timestamp=m.timestamp_ns)
        for sink in _sinks:
            try:
                sink(m)
            except Exception:
                # One broken sink must not keep the milestone from the others.
                logger.exception("sink=<%r> | live sink failed", sink)
        return m.event_id
    except InvalidMilestoneError as e:
        logger.warning("evt_type=<%s> | milestone not recorded: %s", evt_type, e)
        return None
    except Exception:
        logger.exception("evt_type=<%s> | milestone not recorded", evt_type)
        return None
