"""``write_dynamo``: the tool through which the model reports milestones (PROGRESS, custom types).

It keeps here-i-strand's name and parameters so prompts written for it keep working, but the
model no longer chooses where rows go: ``table_name``, ``session_id`` and ``agent_id`` are read
and ignored, and the row goes to the calling agent's own table, session and agent id. In the
default ``hooks`` mode every type a hook records belongs to the hooks (``HOOK_OWNED_TYPES``: the
agent's lifecycle, a Swarm's or Graph's, a voice session's, TOOL_TIMEOUT), so the model cannot add a
second START, a forged RESULT, or tell a UI that an orchestration ended or failed. Called directly
from Python (no ``tool_context``), it is the developer's code, and writes where its arguments say,
as here-i-strand's did.
"""

from __future__ import annotations

import logging
import re

from strands import ToolContext, tool

from ..emit import Identity, current_identity, milestone
from ..schema import HOOK_OWNED_TYPES

logger = logging.getLogger(__name__)

_NOT_A_NAME = re.compile(r"[^A-Z0-9_]+")


def _identity_of(tool_context: ToolContext) -> Identity | None:
    agent = getattr(tool_context, "agent", None)
    identity = getattr(agent, "his_identity", None)
    return identity if isinstance(identity, Identity) else current_identity()


@tool(context=True)
def write_dynamo(
    table_name: str,
    agent_id: str,
    session_id: str,
    event_type: str,
    message: str,
    tool_context: ToolContext | None = None,
) -> str:
    """Record a status event for this session (for example PROGRESS with a short description).

    Each call appends one event to the session's status timeline. The event is stored for the
    current session and agent whatever table_name, agent_id and session_id say.

    Args:
        table_name: Ignored; kept for compatibility with existing prompts.
        agent_id: Ignored; the current agent's id is used.
        session_id: Ignored; the current session's id is used.
        event_type: Upper-case event type, e.g. START, TOOLING, PROGRESS, COMPLETION, ERROR.
        message: Short description of the status or a JSON payload.
    """
    if tool_context is None:
        # A direct call from Python: the developer's code names the destination, so it must name one.
        from .compat import record

        missing = [n for n, v in (("table_name", table_name), ("session_id", session_id)) if not v]
        if missing or not isinstance(event_type, str):
            what = ", ".join(missing) or f"event_type ({type(event_type).__name__})"
            return f"error: nothing recorded: {what} must be given as text"
        evt_type = _NOT_A_NAME.sub("_", event_type.strip().upper()).strip("_") or "PROGRESS"
        event_id = record(
            str(table_name), str(session_id), str(agent_id or "default"), evt_type, str(message)
        )
        return f"recorded {evt_type}" if event_id else f"error: event {evt_type[:80]!r} not recorded"
    evt_type = _NOT_A_NAME.sub("_", str(event_type).strip().upper()).strip("_") or "PROGRESS"
    identity = _identity_of(tool_context)
    if identity is None:
        return "error: not running inside a HISAgent session; nothing recorded"
    if evt_type in HOOK_OWNED_TYPES and getattr(tool_context.agent, "his_reporting", "hooks") == "hooks":
        return (
            f"not recorded: {evt_type} is recorded by the agent itself; report progress with"
            " event_type PROGRESS (or a type of your own)"
        )
    if (table_name, session_id, agent_id) != (identity.table, identity.session_id, identity.agent_id):
        # The model asked for another destination; that is never honoured, only noted.
        logger.debug(
            "requested_table=<%s>, requested_session=<%s> | write_dynamo uses the agent's own destination",
            table_name,
            session_id,
        )
    event_id = milestone(
        evt_type,
        str(message),
        session_id=identity.session_id,
        agent_id=identity.agent_id,
        table=identity.table,
    )
    if event_id is None:
        return f"error: event_type {str(event_type)[:80]!r} is not a valid event type; nothing recorded"
    return f"recorded {evt_type}"
