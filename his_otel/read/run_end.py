"""Which row ends a run: what :meth:`SessionCursor.follow` stops after by default."""

from __future__ import annotations

from typing import Any

from ..schema import BidiEventType, EventType, MultiAgentEventType

_AGENT, _ORCHESTRATION = "agent", "orchestration"
_STARTS = {
    EventType.START.value: _AGENT,
    BidiEventType.SESSION_START.value: _AGENT,
    MultiAgentEventType.MULTIAGENT_START.value: _ORCHESTRATION,
}
# The text of the ERROR row an invocation that raised ends with (nothing follows it).
INVOCATION_FAILED = "Invocation failed"


class RunEnd:
    """A stateful ``until`` for :meth:`SessionCursor.follow`: true for the row that ends the first
    run the cursor sees start, whatever kind it is.

    - an agent invocation (START) or a voice session (SESSION_START): its RESULT, or its AGENT_STATS
      (the last row when the answer had no text, or of a voice session; RESULT, when there is one,
      comes next from the same hook), or the ERROR of an invocation that raised;
    - a Swarm or Graph (MULTIAGENT_START): its MULTIAGENT_STATS, after every node's rows; a node's
      own rows never end it.

    Rows are matched by the ``agent_id`` of the start row. A cursor that starts mid-run (from a token)
    has not seen the start: until a start row comes, an orchestration row decides the kind, else any
    agent's end counts.
    """

    def __init__(self) -> None:
        self.kind: str | None = None
        self.agent_id: str | None = None

    def __call__(self, row: dict[str, Any]) -> bool:
        evt_type, agent_id = str(row.get("evt_type", "")), row.get("agent_id")
        if self.kind is None:
            if evt_type in _STARTS:
                self.kind, self.agent_id = _STARTS[evt_type], agent_id
            elif evt_type in MultiAgentEventType.__members__:
                self.kind, self.agent_id = _ORCHESTRATION, agent_id
        if self.agent_id is not None and agent_id != self.agent_id:
            return False
        if self.kind == _ORCHESTRATION:
            return evt_type == MultiAgentEventType.MULTIAGENT_STATS.value
        if evt_type in (EventType.RESULT.value, EventType.AGENT_STATS.value):
            return True
        return evt_type == EventType.ERROR.value and str(row.get("evt_message", "")).startswith(
            INVOCATION_FAILED
        )
