"""What each node of an orchestration run cost: time, tokens and tool calls, per run of the node.

Strands' figures do not give this directly: an agent's ``accumulated_usage`` and ``tool_metrics``
add up over every invocation the agent ever had, so a Swarm that returns to a node (or runs the same
agent object twice) would count the first run again. The tally takes the agent's counters before the
node runs and the difference after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..agent.payloads import jsonable

USAGE_KEYS = ("inputTokens", "outputTokens", "totalTokens", "cacheReadInputTokens", "cacheWriteInputTokens")
TOOL_KEYS = ("call_count", "success_count", "error_count")

Usage = dict[str, int]
Tools = dict[str, dict[str, int]]


def usage_of(executor: Any) -> Usage:
    metrics = getattr(executor, "event_loop_metrics", None)
    usage = getattr(metrics, "accumulated_usage", None) or {}
    return {k: int(usage.get(k, 0) or 0) for k in USAGE_KEYS}


def tools_of(executor: Any) -> Tools:
    metrics = getattr(executor, "event_loop_metrics", None)
    tool_metrics = getattr(metrics, "tool_metrics", None) or {}
    return {name: {k: int(getattr(tm, k, 0) or 0) for k in TOOL_KEYS} for name, tm in tool_metrics.items()}


def minus_usage(after: Usage, before: Usage) -> Usage:
    return {k: max(0, after.get(k, 0) - before.get(k, 0)) for k in USAGE_KEYS}


def minus_tools(after: Tools, before: Tools) -> Tools:
    out: Tools = {}
    for name, counts in after.items():
        was = before.get(name, {})
        diff = {k: max(0, counts.get(k, 0) - was.get(k, 0)) for k in TOOL_KEYS}
        if diff["call_count"]:
            out[name] = diff
    return out


def add_usage(into: Usage, more: Usage) -> None:
    for k in USAGE_KEYS:
        into[k] = into.get(k, 0) + more.get(k, 0)


def add_tools(into: Tools, more: Tools) -> None:
    for name, counts in more.items():
        mine = into.setdefault(name, dict.fromkeys(TOOL_KEYS, 0))
        for k in TOOL_KEYS:
            mine[k] += counts.get(k, 0)


def tool_calls(tools: Tools) -> int:
    return sum(t.get("call_count", 0) for t in tools.values())


@dataclass
class NodeTally:
    """One node's runs within one orchestration run."""

    agent: str
    kind: str
    status: str = "pending"
    runs: int = 0
    seconds: float = 0.0
    usage: Usage = field(default_factory=lambda: dict.fromkeys(USAGE_KEYS, 0))
    tools: Tools = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "kind": self.kind,
            "status": self.status,
            "runs": self.runs,
            "execution_time_in_seconds": round(self.seconds, 3),
            **usage_fields(self.usage),
            "tool_calls": tool_calls(self.tools),
            "tools": self.tools,
        }


def usage_fields(usage: Usage) -> dict[str, int]:
    """AGENT_STATS' token field names."""
    return {
        "total_tokens": usage.get("totalTokens", 0),
        "input_tokens": usage.get("inputTokens", 0),
        "output_tokens": usage.get("outputTokens", 0),
        "cache_read_tokens": usage.get("cacheReadInputTokens", 0),
        "cache_write_tokens": usage.get("cacheWriteInputTokens", 0),
    }


def stats_payload(
    *,
    kind: str,
    orchestration_id: str,
    status: str,
    seconds: float,
    history: list[str],
    handoffs: int,
    nodes: dict[str, NodeTally],
    user: Any,
) -> tuple[str, Usage, Tools]:
    """MULTIAGENT_STATS' JSON text, and the run's total usage and tools (for an enclosing run)."""
    usage: Usage = dict.fromkeys(USAGE_KEYS, 0)
    tools: Tools = {}
    for tally in nodes.values():
        add_usage(usage, tally.usage)
        add_tools(tools, tally.tools)
    payload = {
        "kind": kind,
        "id": orchestration_id,
        "status": status,
        "execution_time_in_seconds": round(seconds, 3),
        **usage_fields(usage),
        "tool_calls": tool_calls(tools),
        "node_history": history,
        "handoffs": handoffs,
        "user": jsonable(user),
        "nodes": {node_id: tally.as_json() for node_id, tally in nodes.items()},
    }
    return json.dumps(payload, default=str), usage, tools
