"""The identity every his-otel entry point takes from its arguments: table, session and agent id."""

from __future__ import annotations

from ..emit import Identity
from ..schema import InvalidMilestoneError, check_ids
from .agentcore import runtime_session_id


def resolve_identity(table: str, session_id: str | None, agent_id: str | None) -> Identity:
    """Check the arguments here-i-strand's ``HISAgent`` took, with the same errors.

    Raises:
        ValueError: a blank table or session id, no session id outside AgentCore, or ids beyond
            DynamoDB's key limits (such rows could never be written: say so now, not per row).
    """
    if not isinstance(table, str) or not table.strip():
        raise ValueError("status_dynamo_table_name must be a non-empty string")
    if session_id is None:
        session_id = runtime_session_id()
        if session_id is None:
            raise ValueError(
                "session_id is required (it is taken from the request only inside a Bedrock"
                " AgentCore Runtime invocation)"
            )
    if not isinstance(session_id, str) or not session_id.strip():
        raise ValueError("session_id must be a non-empty string")
    try:
        check_ids(session_id, "-", agent_id or "default")
    except InvalidMilestoneError as e:
        raise ValueError(str(e)) from None
    return Identity(session_id=session_id, agent_id=agent_id or "default", table=table)
