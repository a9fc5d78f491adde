"""Emitting milestones: a ``his.milestone`` event on the current span, handed to the live capture.

The span event is what backends such as Jaeger show and what the end-of-span and bridge paths read.
The hand-off to the pipelines of the span's provider (``capture.routing``) is what makes a row
appear while the invocation still runs, and is why a milestone survives a span that never ends, a
trace that is sampled out, and a span that drops old events past the SDK's event limit.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace as trace_api

from . import config, log_copy, notice
from .capture import routing
from .schema import (
    EVENT_NAME,
    SPAN_ATTR_HAS_MILESTONE,
    EventType,
    InvalidMilestoneError,
    Milestone,
    check_ids,
    clean_text,
    event_attributes,
    normalize_evt_type,
)

if TYPE_CHECKING:
    from .capture.live import HISSpanProcessor

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

_dropped_no_identity = 0
_dropped_no_pipeline = 0
_warned_no_identity = False
_warned_no_pipeline = False


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
    """Make ``milestone()`` calls in this block default to the given session, agent and table, and
    set his-otel up (``configure(table)``) if nothing has: the block alone is enough for rows."""
    from .tracing import ensure_configured

    ensure_configured(table or None)
    identity = Identity(session_id=session_id, agent_id=agent_id, table=table)
    token = _current_identity.set(identity)
    try:
        yield identity
    finally:
        _current_identity.reset(token)


def dropped_without_identity() -> int:
    """How many ``milestone()`` calls had no session to write to."""
    return _dropped_no_identity


def dropped_without_pipeline() -> int:
    """How many milestones had no his-otel pipeline to go to (``configure()`` never ran)."""
    return _dropped_no_pipeline


@functools.lru_cache(maxsize=4)
def _copies_from_env(raw: str | None) -> str:
    return config.resolve_choice(None, config.ENV_COPIES, config.DEFAULT_COPIES, config.COPIES)


def _copies(pipelines: list[HISSpanProcessor]) -> tuple[bool, bool]:
    """(span event?, log event?) for a milestone taken by ``pipelines``: what any of them asks for."""
    modes = (
        {p.copies for p in pipelines} if pipelines else {_copies_from_env(os.environ.get(config.ENV_COPIES))}
    )
    return bool(modes - {"log"}), bool(modes - {"span"})


_refused: Counter[str] = Counter()


def refused_at_emission() -> dict[str, int]:
    """``milestone()`` calls refused in this process, by cause (also in each pipeline's stats())."""
    return dict(_refused)


def _text_of(message: object) -> str:
    try:
        return clean_text(message if isinstance(message, str) else str(message))
    except Exception as e:
        raise InvalidMilestoneError(
            f"the message cannot be turned into text ({type(e).__name__})", "message not text"
        ) from None


def _refuse(cause: str, detail: str, span: trace_api.Span | None) -> None:
    """Count a refused ``milestone()`` call where its pipelines' stats show it, and say it once per
    cause. The detail names the field and its size (bounded), never the message text."""
    _refused[cause] += 1
    try:
        target = span if span is not None else trace_api.get_current_span()
        for pipeline in routing.pipelines_for(target):
            pipeline.refused(cause)
    except Exception:  # pragma: no cover - counting must never fail the caller
        logger.debug("refusal not counted in a pipeline", exc_info=True)
    logger.warning("cause=<%s>, error=<%s> | milestone not recorded", cause, detail[:200])
    notice.tell(
        f"refused:{cause}",
        f"a milestone was refused ({cause}: {detail[:200]}); no row written. Each refusal is"
        " counted in stats().refused_causes",
    )


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
    global _dropped_no_identity, _warned_no_identity, _dropped_no_pipeline, _warned_no_pipeline
    try:
        identity = _current_identity.get()
        sid = session_id if session_id is not None else (identity.session_id if identity else "")
        if not sid:
            _dropped_no_identity += 1
            if not _warned_no_identity:
                _warned_no_identity = True
                notice.tell(
                    "no-session",
                    f"milestone {evt_type!s} outside a HISAgent run and without session_id: no row written"
                    " (pass session_id=, or wrap the code in his_otel.session(...))",
                )
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
            # Stripped as every reader of an event strips them (the bridge), so one milestone has one
            # key on every path, whatever whitespace (a newline, an NBSP) the caller's id carries.
            session_id=clean_text(str(sid)).strip(),
            agent_id=clean_text(str(aid or "default")).strip() or "default",
            evt_type=normalize_evt_type(evt_type),
            # Replaced here, so the span event, every exporter and the row carry the same valid text.
            evt_message=_text_of(message),
            timestamp_ns=time.time_ns(),
            trace_id=ctx.trace_id,
            span_id=ctx.span_id,
            # Only SDK spans know their name; a non-recording span leaves it empty.
            span_name=clean_text(str(getattr(target, "name", "") or "")),
            table=str(tbl or ""),
        )
        check_ids(m.session_id, m.event_id, m.agent_id)
        pipelines = routing.pipelines_for(target)
        # Redaction happens before the event exists: what the filters return is the only text that
        # leaves the process, on the span event (and so every OTLP backend) as on the row.
        for pipeline in pipelines:
            m = pipeline.prepare(m)
        # Taken before the event exists: an on_end racing on another thread then either sees the
        # event already taken, or does not see the event at all.
        for pipeline in pipelines:
            pipeline.submit(m, target)
        span_copy, log_event = _copies(pipelines)
        # An ended span keeps its context (the row's trace link) but takes no more events.
        if span_copy and target.is_recording():
            target.add_event(EVENT_NAME, event_attributes(m), timestamp=m.timestamp_ns)
            # Once a span: each set is another pass of the SDK's attribute checks.
            if not (getattr(target, "attributes", None) or {}).get(SPAN_ATTR_HAS_MILESTONE):
                target.set_attribute(SPAN_ATTR_HAS_MILESTONE, True)
        if log_event:
            # Leaves the process within the log processor's delay, whether or not the span ever ends.
            log_copy.emit(m, ctx)
        if not pipelines:
            _dropped_no_pipeline += 1
            if not _warned_no_pipeline:
                _warned_no_pipeline = True
                notice.tell(
                    "no-pipeline",
                    f"{config.ENV_DISABLED} is set: milestones are recorded on spans, but no row is written"
                    if config.env_flag(config.ENV_DISABLED)
                    else "a milestone was recorded but no row written: his-otel is not configured for this"
                    " span's tracer provider (call his_otel.configure(TABLE) or use HISAgent)",
                )
                logger.warning(
                    "evt_type=<%s> | no his-otel pipeline for this span's tracer provider, no row written"
                    " (call his_otel.configure(); logged once)",
                    m.evt_type,
                )
        return m.event_id
    except InvalidMilestoneError as e:
        _refuse(e.cause, str(e), span)
        return None
    except Exception as e:
        _refuse("emission failed", type(e).__name__, span)
        return None
