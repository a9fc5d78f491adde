"""The demo's scenarios: one support case played by a HISAgent, a Swarm, a Graph or a voice session.

Each is a real Strands run with scripted models (no network), so ``his-otel demo --scenario X``
shows the rows each kind writes, and the tests run exactly what users see.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strands import Agent, tool

from .agent.his_agent import HISAgent
from .bidi.agent import HISBidiAgent
from .emit import milestone
from .models.scripted import ScriptedModel, ToolCall
from .models.scripted_bidi import BARGE_IN, ScriptedBidiModel, Speech
from .multiagent.conveniences import HISGraphBuilder, HISSwarm
from .schema import EventType

TASK = "Customer says order A-1001 arrived damaged. Refund?"
_DECISION = (
    '```json\n{"decision": "refund", "order_id": "A-1001", "amount": 42.5,'
    ' "reason": "damaged on arrival"}\n```'
)


@tool
def search_knowledge_base(query: str) -> str:
    """Search the support knowledge base for articles matching a query."""
    time.sleep(0.2)
    milestone(EventType.PROGRESS, f"Knowledge base: 2 articles match {query!r}")
    return "Refunds are allowed within 30 days of delivery for damaged items."


@tool
def get_order(order_id: str) -> dict[str, Any]:
    """Fetch an order by id."""
    time.sleep(0.3)
    return {"order_id": order_id, "item": "kettle", "amount": 42.5, "delivered_days_ago": 4}


@tool
def get_shipping_status(order_id: str) -> str:
    """Fetch the shipping status of an order."""
    time.sleep(0.3)
    return f"order {order_id}: delivered, carrier reported damage on arrival"


TOOLS = [search_knowledge_base, get_order, get_shipping_status]


def agent_script() -> list[Any]:
    """Four model turns: a search, two tools at once, a model-reported milestone, the answer."""
    return [
        ToolCall("search_knowledge_base", {"query": "refund damaged item"}),
        [
            ToolCall("get_order", {"order_id": "A-1001"}),
            ToolCall("get_shipping_status", {"order_id": "A-1001"}),
        ],
        # The model names someone else's table and session: his-otel writes to the agent's own.
        ToolCall(
            "write_dynamo",
            {
                "table_name": "someone-elses-table",
                "agent_id": "not-me",
                "session_id": "someone-elses-session",
                "event_type": "PROGRESS",
                "message": "Order and shipping data retrieved; drafting the decision",
            },
        ),
        _DECISION,
    ]


@dataclass
class Scenario:
    """What the demo runs: ``run()`` returns the answer; ``cancel()`` stops it (Ctrl-C)."""

    run: Callable[[], str]
    expected: tuple[str, ...]
    cancel: Callable[[], None] | None = None


def _handoff(to: str, message: str) -> ToolCall:
    return ToolCall("handoff_to_agent", {"agent_name": to, "message": message})


def _node(name: str, turns: list[Any], delay: float, tools: list[Any] | None = None) -> Agent:
    return Agent(
        name=name,
        model=ScriptedModel(turns, model_id="scripted-demo-model", delay_s=delay),
        tools=tools or [],
        callback_handler=None,
    )


def _cancel_all(agents: list[Agent]) -> Callable[[], None]:
    def cancel() -> None:
        for agent in agents:
            agent.cancel(message="interrupted (Ctrl-C)")

    return cancel


def agent_scenario(table: str, session_id: str, delay: float) -> Scenario:
    agent = HISAgent(
        status_dynamo_table_name=table,
        session_id=session_id,
        agent_id="support-agent",
        name="support-agent",
        user="demo-user",
        model=ScriptedModel(agent_script(), model_id="scripted-demo-model", delay_s=delay),
        tools=TOOLS,
        system_prompt="You are a support agent deciding refunds.",
    )
    expected: tuple[str, ...] = (
        "START",
        "EVENT_LOOP",
        "MODEL_INVOCATION",
        "TOOLING",
        "COMPLETION",
        "AGENT_STATS",
        "RESULT",
    )
    return Scenario(
        lambda: str(agent(TASK)),
        expected,
        lambda: agent.cancel(message="interrupted (Ctrl-C)"),
    )


def swarm_scenario(table: str, session_id: str, delay: float) -> Scenario:
    """Triage hands off to refunds, refunds to the notifier: a hand-off chain of three agents."""
    triage = _node(
        "triage",
        [
            ToolCall("search_knowledge_base", {"query": "refund damaged item"}),
            _handoff("refunds", "Damaged on arrival, within 30 days: check the order and refund"),
            "Handed off.",
        ],
        delay,
        [search_knowledge_base],
    )
    refunds = _node(
        "refunds",
        [
            [
                ToolCall("get_order", {"order_id": "A-1001"}),
                ToolCall("get_shipping_status", {"order_id": "A-1001"}),
            ],
            _handoff("notifier", "Refund of 42.50 approved for A-1001: tell the customer"),
            "Handed off.",
        ],
        delay,
        [get_order, get_shipping_status],
    )
    notifier = _node("notifier", [_DECISION], delay)
    swarm = HISSwarm([triage, refunds, notifier], table, session_id, id="support-swarm", user="demo-user")
    expected: tuple[str, ...] = (
        "MULTIAGENT_START",
        "NODE_START",
        "NODE_COMPLETION",
        "HANDOFF",
        "MULTIAGENT_COMPLETION",
        "MULTIAGENT_STATS",
        "START",
        "TOOLING",
        "COMPLETION",
    )
    return Scenario(
        lambda: str(swarm(TASK).results["notifier"].result),
        expected,
        _cancel_all([triage, refunds, notifier]),
    )


def graph_scenario(table: str, session_id: str, delay: float) -> Scenario:
    """Two lookups run in parallel, a policy check waits for both, then the decision."""
    order = _node(
        "order-lookup",
        [ToolCall("get_order", {"order_id": "A-1001"}), "Order: kettle, 42.50."],
        delay,
        [get_order],
    )
    shipping = _node(
        "shipping-lookup",
        [ToolCall("get_shipping_status", {"order_id": "A-1001"}), "Delivered damaged."],
        delay,
        [get_shipping_status],
    )
    policy = _node(
        "policy",
        [ToolCall("search_knowledge_base", {"query": "refund damaged item"}), "Refund allowed."],
        delay,
        [search_knowledge_base],
    )
    decide = _node("decide", [_DECISION], delay)
    builder = HISGraphBuilder(table, session_id, user="demo-user")
    for node in (order, shipping, policy, decide):
        builder.add_node(node, node.name)
    builder.add_edge("order-lookup", "policy")
    builder.add_edge("shipping-lookup", "policy")
    builder.add_edge("policy", "decide")
    builder.set_graph_id("refund-graph").set_execution_timeout(600)
    graph = builder.build()
    expected: tuple[str, ...] = (
        "MULTIAGENT_START",
        "NODE_START",
        "NODE_COMPLETION",
        "MULTIAGENT_COMPLETION",
        "MULTIAGENT_STATS",
        "START",
        "TOOLING",
        "COMPLETION",
    )
    return Scenario(
        lambda: str(graph(TASK).results["decide"].result),
        expected,
        _cancel_all([order, shipping, policy, decide]),
    )


# What the caller says, one line after each answer (or barge-in).
BIDI_CALLER = [
    "Hi, where is my order A-1001?",
    "It arrived damaged. Can I get a refund?",
    "Yes, please just refund it.",
]


def bidi_script() -> list[Any]:
    from strands.bidi.models.model import ConnectionTimeoutError

    return [
        ToolCall("get_order", {"order_id": "A-1001"}),
        Speech("Your kettle was delivered four days ago."),
        [Speech("I'm sorry. Damaged items within thirty days"), BARGE_IN],
        [
            Speech("Refunding forty-two fifty now."),
            ConnectionTimeoutError("connection reached its 8 minute limit"),
            Speech("Done: the refund is on its way."),
        ],
    ]


def bidi_scenario(table: str, session_id: str, delay: float) -> Scenario:
    """A voice call: a tool call, an answer, a barge-in, a connection restart, the refund."""
    agent = HISBidiAgent(
        table,
        session_id,
        agent_id="voice-agent",
        user="demo-user",
        model=ScriptedBidiModel(bidi_script(), model_id="scripted-voice-model", delay_s=delay),
        tools=[get_order],
    )

    async def call() -> str:
        said: list[str] = []
        lines = list(BIDI_CALLER)
        async with agent:
            await agent.send(lines.pop(0))
            asked_tool = False
            async for event in agent.receive():
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "bidi_tool_use_blocks":
                    asked_tool = True
                elif kind == "bidi_transcript_stop" or kind == "bidi_transcript_block":
                    text = event.get("transcript") or ""
                    if text:
                        said.append(str(text))
                elif kind == "bidi_barge_in" or (kind == "bidi_response_stop" and not asked_tool):
                    if not lines:
                        break
                    await agent.send(lines.pop(0))
                elif kind == "bidi_response_stop":
                    asked_tool = False
        return said[-1] if said else ""

    expected: tuple[str, ...] = (
        "SESSION_START",
        "RESPONSE_COMPLETION",
        "BARGE_IN",
        "CONNECTION_RESTART",
        "CONNECTION_RESTARTED",
        "SESSION_END",
        "TOOLING",
        "AGENT_STATS",
    )
    return Scenario(lambda: asyncio.run(call()), expected)


BUILDERS: dict[str, Callable[[str, str, float], Scenario]] = {
    "agent": agent_scenario,
    "swarm": swarm_scenario,
    "graph": graph_scenario,
    "bidi": bidi_scenario,
}
SCENARIOS = tuple(BUILDERS)
