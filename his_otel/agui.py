"""A session's rows as AG-UI events (``ag-ui-protocol``'s own models), for any AG-UI client.

One :class:`AGUIMapper` per stream: feed it the rows in the order they are read, and it returns the
events each row makes. The mapping (README, "The session stream") in short:

- thread = the session; a run = one top-level invocation: an agent's START ... RESULT (RUN_ERROR for
  the ERROR of an invocation that raised), a Swarm's/Graph's MULTIAGENT_START ... MULTIAGENT_STATS,
  a voice session's SESSION_START ... AGENT_STATS. A row before any start opens a run of its own.
- a Swarm/Graph node (NODE_START ... NODE_COMPLETION/NODE_ERROR) and a voice turn (its first row ...
  RESPONSE_COMPLETION or BARGE_IN) are steps;
- TOOLING is TOOL_CALL_START (the tool's name from the row, the row's event_id as the call id); the
  call ends (TOOL_CALL_END) when its agent moves on: its next model call or the end of its run;
- PROGRESS is an ACTIVITY_SNAPSHOT; every other row is CUSTOM, named ``his.<evt_type>``, the row
  as its value.

Every event carries the row it came from as ``raw_event`` and its ``event_id``, ``trace_id``,
``agent_id`` and ``evt_type`` as ``metadata``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from ag_ui.core import (
    ActivitySnapshotEvent,
    BaseEvent,
    CustomEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
)

from .read.cursor import event_ms
from .read.run_end import INVOCATION_FAILED
from .schema import BidiEventType, EventType, MultiAgentEventType

Row = dict[str, Any]

__all__ = ["AGUIMapper", "agui_events"]

_AGENT, _ORCHESTRATION, _VOICE = "agent", "orchestration", "voice"
_STARTS = {
    EventType.START.value: _AGENT,
    MultiAgentEventType.MULTIAGENT_START.value: _ORCHESTRATION,
    BidiEventType.SESSION_START.value: _VOICE,
}
# An agent that records one of these has finished the tools of its last cycle.
_MOVES_ON = {
    EventType.MODEL_INVOCATION.value,
    EventType.COMPLETION.value,
    EventType.ERROR.value,
    EventType.AGENT_STATS.value,
    EventType.RESULT.value,
    BidiEventType.RESPONSE_COMPLETION.value,
    BidiEventType.SESSION_END.value,
}
_TOOL_NAME = re.compile(r"^Calling ([^\s:]+)")
_NODE_NAME = re.compile(r"^Node (\S+)")
_RESPONSE_NAME = re.compile(r"^Response (\S+)")


def row_ms(row: Row) -> int | None:
    """When the row was emitted, in milliseconds since the epoch."""
    ms = event_ms(str(row.get("event_id", "")))
    if ms is not None:
        return ms
    try:
        return int(datetime.fromisoformat(str(row.get("evt_datetime", ""))).timestamp() * 1000)
    except ValueError:
        return None


class _Run:
    def __init__(self, run_id: str, kind: str, agent_id: str | None, trace_id: Any) -> None:
        self.run_id, self.kind, self.agent_id, self.trace_id = run_id, kind, agent_id, trace_id
        self.failed = False
        self.turn: str | None = None  # a voice session's open turn
        self.turns = 0

    def holds(self, row: Row) -> bool:
        """A start inside this run's trace by another agent (an agent called as a tool) is nested."""
        return (
            bool(self.trace_id)
            and row.get("trace_id") == self.trace_id
            and row.get("agent_id") != self.agent_id
        )


class AGUIMapper:
    """Rows in, AG-UI events out, for one session (the AG-UI thread)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._run: _Run | None = None
        self._tools: dict[str, list[tuple[str, str, int | None]]] = {}  # agent -> (id, name, ms)
        self._steps: set[str] = set()

    def events(self, row: Row) -> list[BaseEvent]:
        """The events ``row`` makes, given the rows fed before it."""
        evt_type = str(row.get("evt_type", ""))
        agent_id = str(row.get("agent_id", ""))
        common = self._common(row)
        out: list[BaseEvent] = []
        if evt_type in _MOVES_ON:
            out += self._end_tools(agent_id, common)
        kind = _STARTS.get(evt_type)
        run = self._run
        if kind is not None and run is not None and run.agent_id is None and run.holds(row):
            # The start of the run a row before it opened (EVENT_LOOP comes before START).
            run.kind, run.agent_id = kind, agent_id
            return [*out, self._custom(evt_type, row, common)]
        if kind is not None and (run is None or (run.kind != _ORCHESTRATION and not run.holds(row))):
            if run is not None:  # the last run never said it ended (an answer with no text)
                out.append(self._finish(run, common, None))
            self._run = run = _Run(str(row.get("event_id", "")), kind, agent_id, row.get("trace_id"))
            out.append(RunStartedEvent(thread_id=self.session_id, run_id=run.run_id, **common))
            return out if kind != _VOICE else [*out, self._custom(evt_type, row, common)]
        if run is None:  # rows of a run whose start this stream did not see
            run_id = str(row.get("trace_id") or row.get("event_id", ""))
            self._run = run = _Run(run_id, _AGENT, None, row.get("trace_id"))
            out.append(RunStartedEvent(thread_id=self.session_id, run_id=run.run_id, **common))
        out += self._map(run, evt_type, agent_id, row, common)
        return out

    def _map(
        self, run: _Run, evt_type: str, agent_id: str, row: Row, common: dict[str, Any]
    ) -> list[BaseEvent]:
        own = run.agent_id is None or agent_id == run.agent_id
        message = str(row.get("evt_message", ""))
        out: list[BaseEvent] = []
        if run.kind == _VOICE and own and run.turn is None and evt_type not in _VOICE_OUTSIDE_TURNS:
            run.turns += 1
            run.turn = _voice_turn(message, evt_type) or f"turn-{run.turns}"
            self._steps.add(run.turn)
            out.append(StepStartedEvent(step_name=run.turn, **common))
        if evt_type == EventType.TOOLING.value:
            call_id = str(row.get("event_id", ""))
            match = _TOOL_NAME.match(message)
            name = match.group(1) if match else "tool"
            self._tools.setdefault(agent_id, []).append((call_id, name, common["timestamp"]))
            out.append(ToolCallStartEvent(tool_call_id=call_id, tool_call_name=name, **common))
        elif evt_type == EventType.PROGRESS.value:
            content = {"agent_id": agent_id, "message": message}
            out.append(
                ActivitySnapshotEvent(
                    message_id=str(row.get("event_id", "")),
                    activity_type="PROGRESS",
                    content=content,
                    **common,
                )
            )
        elif evt_type == MultiAgentEventType.NODE_START.value and own:
            step = _step_name(message)
            self._steps.add(step)
            out.append(StepStartedEvent(step_name=step, **common))
        else:
            out.append(self._custom(evt_type, row, common))
            out += self._ends(run, evt_type, own, message, row, common)
        return out

    def _ends(
        self, run: _Run, evt_type: str, own: bool, message: str, row: Row, common: dict[str, Any]
    ) -> list[BaseEvent]:
        """The step or run the row (already mapped to CUSTOM) closes."""
        if not own:
            return []
        if evt_type in (MultiAgentEventType.NODE_COMPLETION.value, MultiAgentEventType.NODE_ERROR.value):
            step = _step_name(message)
            if step in self._steps:
                self._steps.discard(step)
                return [StepFinishedEvent(step_name=step, **common)]
            return []
        if run.kind == _VOICE and run.turn is not None and evt_type in _VOICE_TURN_ENDS:
            step, run.turn = run.turn, None
            self._steps.discard(step)
            return [StepFinishedEvent(step_name=step, **common)]
        if evt_type == MultiAgentEventType.MULTIAGENT_ERROR.value:
            run.failed = True
        if evt_type == EventType.ERROR.value and message.startswith(INVOCATION_FAILED) and run.kind == _AGENT:
            self._run = None
            return [RunErrorEvent(message=message, code="his.invocation_failed", **common)]
        ends = {
            _AGENT: EventType.RESULT.value,
            _ORCHESTRATION: MultiAgentEventType.MULTIAGENT_STATS.value,
            _VOICE: EventType.AGENT_STATS.value,
        }[run.kind]
        if evt_type != ends:
            return []
        self._run = None
        if run.failed:
            return [
                RunErrorEvent(message=f"{row.get('agent_id', 'the run')} failed", code="his.failed", **common)
            ]
        return [self._finish(run, common, _result(message) if run.kind == _AGENT else None)]

    def _finish(self, run: _Run, common: dict[str, Any], result: Any) -> RunFinishedEvent:
        return RunFinishedEvent(thread_id=self.session_id, run_id=run.run_id, result=result, **common)

    def _end_tools(self, agent_id: str, common: dict[str, Any]) -> list[BaseEvent]:
        calls = self._tools.pop(agent_id, [])
        now = common.get("timestamp")
        out: list[BaseEvent] = []
        for call_id, name, started in calls:
            took = None if now is None or started is None else max(0, now - started)
            meta = {**common["metadata"], "tool_call_name": name, "duration_ms": took}
            out.append(ToolCallEndEvent(tool_call_id=call_id, **{**common, "metadata": meta}))
        return out

    @staticmethod
    def _custom(evt_type: str, row: Row, common: dict[str, Any]) -> CustomEvent:
        return CustomEvent(name=f"his.{evt_type}", value=row, **common)

    @staticmethod
    def _common(row: Row) -> dict[str, Any]:
        meta = {k: row.get(k) for k in ("event_id", "trace_id", "agent_id", "evt_type")}
        return {"timestamp": row_ms(row), "raw_event": row, "metadata": meta}


_VOICE_TURN_ENDS = {BidiEventType.RESPONSE_COMPLETION.value, BidiEventType.BARGE_IN.value}
# Rows of a voice session that belong to no turn.
_VOICE_OUTSIDE_TURNS = {
    BidiEventType.SESSION_END.value,
    EventType.AGENT_STATS.value,
    BidiEventType.CONNECTION_RESTART.value,
    BidiEventType.CONNECTION_RESTARTED.value,
}


def _step_name(message: str) -> str:
    match = _NODE_NAME.match(message)
    return match.group(1) if match else message[:64]


def _voice_turn(message: str, evt_type: str) -> str | None:
    match = _RESPONSE_NAME.match(message) if evt_type == BidiEventType.RESPONSE_COMPLETION.value else None
    return match.group(1) if match else None


def _result(message: str) -> Any:
    try:
        return json.loads(message)
    except ValueError:
        return message


def agui_events(rows: Iterable[Row], session_id: str) -> Iterator[BaseEvent]:
    """Every AG-UI event of ``rows`` (a session's, in the order read), for an app of your own."""
    mapper = AGUIMapper(session_id)
    for row in rows:
        yield from mapper.events(row)
