"""Bedrock AgentCore Runtime: the session a request belongs to.

The runtime sends its session id in the ``X-Amzn-Bedrock-AgentCore-Runtime-Session-Id`` header;
``bedrock-agentcore``'s app keeps it in a context variable for the duration of the request, which
is where a ``HISAgent`` created without ``session_id`` takes it from.
"""

from __future__ import annotations


def runtime_session_id() -> str | None:
    """The AgentCore Runtime session of the current request, or None (not in a request, or
    ``bedrock-agentcore`` not installed)."""
    try:
        from bedrock_agentcore.runtime.context import BedrockAgentCoreContext
    except ImportError:
        return None
    try:
        session_id = BedrockAgentCoreContext.get_session_id()
    except Exception:
        return None
    return str(session_id) if session_id else None
