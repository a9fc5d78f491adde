"""Swarm and Graph runs (real Strands orchestrations, scripted models) and the rows they write."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from strands import Agent, tool
from strands.hooks import BeforeNodeCallEvent, HookProvider, HookRegistry
from strands.multiagent import GraphBuilder, Swarm

from helpers import new_session, wait_for
from his_otel import (
    HISAgent,
    HISGraphBuilder,
    HISMultiAgentHooks,
    HISSwarm,
    ScriptedModel,
    TimeoutConcurrentToolExecutor,
    ToolCall,
)
from his_otel.read import SessionCursor, session_rows
from his_otel.schema import ATTR_EVENT_ID, EVENT_NAME

Rows = Callable[[str, str], list[dict[str, Any]]]


def plain(name: str, turns: list[Any], tools: list[Any] | None = None) -> Agent:
    return Agent(name=name, model=ScriptedModel(turns), tools=tools or [], callback_handler=None)


@tool
def slow() -> str:
    """A tool that takes longer than its executor allows."""
    import time

    time.sleep(2)
    return "late"


def handoff(to: str, message: str) -> ToolCall:
    return ToolCall("handoff_to_agent", {"agent_name": to, "message": message})


@tool
def lookup(order: str) -> str:
    """Look an order up."""
    return f"order {order}: paid"


@tool
def explode(order: str) -> str:
    """Fail."""
    raise RuntimeError(f"refund service down for {order}")


def kinds(rows: list[dict[str, Any]], agent_id: str | None = None) -> list[str]:
    return [r["evt_type"] for r in rows if agent_id is None or r["agent_id"] == agent_id]


def only(rows: list[dict[str, Any]], evt_type: str) -> dict[str, Any]:
    found = [r for r in rows if r["evt_type"] == evt_type]
    assert len(found) == 1, (evt_type, [(r["agent_id"], r["evt_type"]) for r in rows])
    return found[0]


def test_a_swarm_hand_off_chain_writes_the_orchestration_rows_and_each_nodes_own(
    his: Any, table: str, rows: Rows, spans: InMemorySpanExporter, ddb: Any
) -> None:
    session = new_session()
    triage = plain(
        "triage", [ToolCall("lookup", {"order": "A-1"}), handoff("refunds", "refund A-1"), "ok"], [lookup]
    )
    refunds = plain("refunds", [handoff("notify", "tell the customer"), "ok"])
    notify = plain("notify", ["Customer told: refund of A-1 is on its way."])
    swarm = HISSwarm([triage, refunds, notify], table, session, id="support", user="u-7")

    result = swarm("Customer wants a refund for A-1")

    assert result.status.value == "completed"
    # The run returned once its rows were written, as an agent invocation does: no flush needed.
    assert "MULTIAGENT_STATS" in kinds(session_rows(ddb, table, session))
    got = rows(table, session)
    assert kinds(got, "support") == [
        "MULTIAGENT_START",
        "NODE_START",
        "NODE_COMPLETION",
        "HANDOFF",
        "NODE_START",
        "NODE_COMPLETION",
        "HANDOFF",
        "NODE_START",
        "NODE_COMPLETION",
        "MULTIAGENT_COMPLETION",
        "MULTIAGENT_STATS",
    ]
    handoffs = [r["evt_message"] for r in got if r["evt_type"] == "HANDOFF"]
    assert handoffs == ["triage -> refunds: refund A-1", "refunds -> notify: tell the customer"]
    assert only(got, "MULTIAGENT_COMPLETION")["evt_message"].endswith("triage -> refunds -> notify")
    # Each node wrote its own agent rows, under its name, in the same session.
    for name in ("triage", "refunds", "notify"):
        own = kinds(got, name)
        assert own[:2] == ["EVENT_LOOP", "START"] and "COMPLETION" in own and "AGENT_STATS" in own, (
            name,
            own,
        )
    assert "TOOLING" in kinds(got, "triage")
    stats = json.loads(only(got, "MULTIAGENT_STATS")["evt_message"])
    assert stats["status"] == "completed" and stats["node_history"] == ["triage", "refunds", "notify"]
    assert stats["handoffs"] == 2 and stats["user"] == "u-7"
    assert stats["nodes"]["triage"]["tools"]["lookup"]["call_count"] == 1
    assert stats["nodes"]["triage"]["tool_calls"] == 2  # lookup and the hand-off
    assert stats["tool_calls"] == 3
    assert stats["total_tokens"] == sum(n["total_tokens"] for n in stats["nodes"].values()) > 0

    # The rows and the trace tell the same story: orchestration rows on invoke_swarm, node rows on
    # the node agents' spans under it, all one trace.
    finished = {s.context.span_id: s for s in spans.get_finished_spans()}
    swarm_rows = [r for r in got if r["agent_id"] == "support"]
    (swarm_span_id,) = {r["span_id"] for r in swarm_rows}
    swarm_span = finished[int(swarm_span_id, 16)]
    assert swarm_span.name.startswith("invoke_swarm")
    assert {r["trace_id"] for r in got} == {format(swarm_span.context.trace_id, "032x")}
    on_span = [e.attributes[ATTR_EVENT_ID] for e in swarm_span.events if e.name == EVENT_NAME]
    assert on_span == [r["event_id"] for r in swarm_rows]
    start = only([r for r in got if r["agent_id"] == "refunds"], "START")
    node_span = finished[int(start["span_id"], 16)]
    assert node_span.name == "invoke_agent refunds"
    assert node_span.parent is not None and node_span.parent.span_id == swarm_span.context.span_id


def test_a_graph_node_whose_tool_fails_completes_and_its_agent_writes_the_tools_error(
    his: Any, table: str, rows: Rows
) -> None:
    session = new_session()
    builder = HISGraphBuilder(table, session)
    builder.add_node(plain("research", ["Found: A-1 was paid twice."]), "research")
    builder.add_node(
        plain("refund", [ToolCall("explode", {"order": "A-1"}), "could not refund"], [explode]), "refund"
    )
    builder.add_node(plain("never", ["unreachable"]), "report")
    builder.add_edge("research", "refund")
    builder.add_edge("refund", "report")
    builder.set_graph_id("refund-flow").set_execution_timeout(300)
    graph = builder.build()

    result = graph("Refund the double charge on A-1")

    got = rows(table, session)
    # A tool that raises does not fail the agent (the model sees the error), so the node completes;
    # its agent wrote the tool's ERROR row.
    assert "ERROR" in kinds(got, "refund")
    assert result.status.value == "completed"
    assert kinds(got, "refund-flow")[-2:] == ["MULTIAGENT_COMPLETION", "MULTIAGENT_STATS"]
    assert kinds(got, "report") and "NODE_START" in kinds(got, "refund-flow")


class Boom(ScriptedModel):
    """A model whose first call raises: the node's agent fails, so the node does."""

    def __init__(self) -> None:
        super().__init__(["never"])

    async def stream(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise RuntimeError("model endpoint gone")
        yield  # pragma: no cover


def test_a_node_whose_agent_raises_is_a_node_error_and_ends_the_graph_with_a_multiagent_error(
    his: Any, table: str, rows: Rows
) -> None:
    session = new_session()
    builder = HISGraphBuilder(table, session, agent_id="pipeline")
    builder.add_node(plain("research", ["Found it."]), "research")
    builder.add_node(Agent(name="writer", model=Boom(), callback_handler=None), "writer")
    builder.add_edge("research", "writer")
    builder.set_execution_timeout(300)
    graph = builder.build()

    with pytest.raises(Exception, match="model endpoint gone"):
        graph("Write the report")

    got = rows(table, session)
    assert kinds(got, "pipeline") == [
        "MULTIAGENT_START",
        "NODE_START",
        "NODE_COMPLETION",
        "NODE_START",
        "NODE_ERROR",
        "MULTIAGENT_ERROR",
        "MULTIAGENT_STATS",
    ]
    assert "Node writer failed after" in only(got, "NODE_ERROR")["evt_message"]
    assert "model endpoint gone" in only(got, "NODE_ERROR")["evt_message"]
    assert "node writer failed" in only(got, "MULTIAGENT_ERROR")["evt_message"]
    assert "ERROR" in kinds(got, "writer")  # the node's agent wrote its own failure
    stats = json.loads(only(got, "MULTIAGENT_STATS")["evt_message"])
    assert stats["status"] == "failed" and stats["nodes"]["writer"]["status"] == "failed"


class CancelNode(HookProvider):
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def register_hooks(self, registry: HookRegistry, **kwargs: Any) -> None:
        registry.add_callback(BeforeNodeCallEvent, self.check)

    def check(self, event: BeforeNodeCallEvent) -> None:
        if event.node_id == self.node_id:
            event.cancel_node = "refunds are frozen today"


def test_a_node_cancelled_by_a_hook_is_reported_with_the_hooks_reason(
    his: Any, table: str, rows: Rows
) -> None:
    session = new_session()
    triage = plain("triage", [handoff("refunds", "refund it"), "ok"])
    refunds = plain("refunds", ["Refunded."])
    swarm = Swarm(
        [triage, refunds],
        # his-otel's first: its node-start callback must still run after the hook that cancels.
        hooks=[HISMultiAgentHooks(table, session, agent_id="desk"), CancelNode("refunds")],
    )

    result = swarm("refund please")

    assert result.status.value == "failed"
    got = rows(table, session)
    assert kinds(got, "desk") == [
        "MULTIAGENT_START",
        "NODE_START",
        "NODE_COMPLETION",
        "HANDOFF",
        "NODE_ERROR",
        "MULTIAGENT_ERROR",
        "MULTIAGENT_STATS",
    ]
    assert (
        only(got, "NODE_ERROR")["evt_message"]
        == "Node refunds cancelled before it ran: refunds are frozen today"
    )
    assert "refunds are frozen today" in only(got, "MULTIAGENT_ERROR")["evt_message"]
    assert kinds(got, "refunds") == []  # it never ran


STARTED = threading.Event()


@tool
async def wait_forever(reason: str) -> str:
    """Block until cancelled."""
    STARTED.set()
    await asyncio.sleep(3600)
    return "never"


def test_a_cancelled_orchestration_ends_with_a_multiagent_error_and_the_running_nodes_rows(
    his: Any, table: str, rows: Rows, ddb: Any
) -> None:
    session = new_session()
    triage = plain("triage", [handoff("worker", "do it"), "ok"])
    worker = plain("worker", [ToolCall("wait_forever", {"reason": "x"}), "never"], [wait_forever])
    swarm = HISSwarm([triage, worker], table, session, id="ops")
    STARTED.clear()
    live: list[list[str]] = []

    async def main() -> None:
        task = asyncio.ensure_future(swarm.invoke_async("go"))
        await asyncio.get_running_loop().run_in_executor(None, STARTED.wait, 30)

        # Live: while the worker node runs, the rows so far are already in the table.
        def so_far() -> list[str] | None:
            k = kinds(session_rows(ddb, table, session), "ops")
            return k if k.count("NODE_START") == 2 else None

        live.append(await asyncio.to_thread(wait_for, so_far))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())

    assert live == [["MULTIAGENT_START", "NODE_START", "NODE_COMPLETION", "HANDOFF", "NODE_START"]]
    got = wait_for(lambda: (r := rows(table, session)) and "MULTIAGENT_STATS" in kinds(r) and r)
    assert kinds(got, "ops") == [
        "MULTIAGENT_START",
        "NODE_START",
        "NODE_COMPLETION",
        "HANDOFF",
        "NODE_START",
        "NODE_ERROR",
        "MULTIAGENT_ERROR",
        "MULTIAGENT_STATS",
    ]
    assert only(got, "NODE_ERROR")["evt_message"].startswith("Node worker stopped after")
    assert "ops cancelled after" in only(got, "MULTIAGENT_ERROR")["evt_message"]
    assert "(worker)" in only(got, "MULTIAGENT_ERROR")["evt_message"]
    assert "ERROR" in kinds(got, "worker")  # the node's agent saw its invocation cancelled
    assert json.loads(only(got, "MULTIAGENT_STATS")["evt_message"])["status"] == "cancelled"


def test_a_graph_node_that_is_a_swarm_writes_its_rows_under_the_nodes_id(
    his: Any, table: str, rows: Rows, ddb: Any
) -> None:
    session = new_session()
    inner = Swarm([plain("a", [handoff("b", "your turn"), "ok"]), plain("b", ["B done."])], id="inner")
    builder = GraphBuilder()
    builder.add_node(plain("plan", ["Plan: ask the team."]), "plan")
    builder.add_node(inner, "team")
    # Half a second after the inner Swarm's last row: a reader stopping there would miss the rest.
    slow = Agent(name="report", model=ScriptedModel(["Reported."], delay_s=0.5), callback_handler=None)
    builder.add_node(slow, "report")
    builder.add_edge("plan", "team")
    builder.add_edge("team", "report")
    builder.set_hook_providers([HISMultiAgentHooks(table, session, agent_id="outer")]).set_execution_timeout(
        300
    )
    graph = builder.build()
    followed: list[dict[str, Any]] = []
    cursor = SessionCursor(table, session, client=ddb)
    reader = threading.Thread(target=lambda: followed.extend(cursor.follow(interval_s=0.05, timeout_s=120)))
    reader.start()

    graph("do the work")

    reader.join(120)
    # The reader's default end is the outer Graph's MULTIAGENT_STATS, not the inner Swarm's.
    assert [(r["agent_id"], r["evt_type"]) for r in followed][-1] == ("outer", "MULTIAGENT_STATS")
    assert len(followed) == len(session_rows(ddb, table, session))

    got = rows(table, session)
    assert kinds(got, "outer")[0] == "MULTIAGENT_START"
    assert kinds(got, "outer")[-2:] == ["MULTIAGENT_COMPLETION", "MULTIAGENT_STATS"]
    assert kinds(got, "team") == [
        "MULTIAGENT_START",
        "NODE_START",
        "NODE_COMPLETION",
        "HANDOFF",
        "NODE_START",
        "NODE_COMPLETION",
        "MULTIAGENT_COMPLETION",
        "MULTIAGENT_STATS",
    ]
    assert "START" in kinds(got, "team/a") and "COMPLETION" in kinds(got, "team/b")
    assert "START" in kinds(got, "plan")
    outer_stats = json.loads([r for r in got if r["agent_id"] == "outer"][-1]["evt_message"])
    inner_stats = json.loads([r for r in got if r["agent_id"] == "team"][-1]["evt_message"])
    assert outer_stats["nodes"]["team"]["kind"] == "swarm"
    assert outer_stats["nodes"]["team"]["total_tokens"] == inner_stats["total_tokens"] > 0


def test_a_hisagent_node_writes_to_the_orchestrations_session_once(his: Any, table: str, rows: Rows) -> None:
    """Every row a HISAgent node causes goes where its lifecycle rows go: its model's write_dynamo
    reports and its tools' TOOL_TIMEOUT rows too, never to the session it was built with."""
    session, elsewhere = new_session(), new_session()
    report = ToolCall("write_dynamo", {"table_name": "t", "agent_id": "a", "session_id": "s",
                                       "event_type": "PROGRESS", "message": "clerk reports"})  # fmt: skip
    named = HISAgent(
        table, elsewhere, model=ScriptedModel([report, handoff("anon", "go"), "ok"]), name="named",
        agent_id="clerk",
    )  # fmt: skip
    anon = HISAgent(
        table, elsewhere, model=ScriptedModel([ToolCall("slow", {}), "done"]), name="anon", tools=[slow],
        tool_executor=TimeoutConcurrentToolExecutor(timeout_seconds=0.2),
    )  # fmt: skip
    HISSwarm([named, anon], table, session)("go")

    got = rows(table, session)
    assert kinds(got, "clerk").count("START") == 1  # its explicit agent_id, one set of hooks
    assert kinds(got, "anon").count("START") == 1  # "default" would name every node alike
    assert [r["evt_message"] for r in got if r["agent_id"] == "clerk" and r["evt_type"] == "PROGRESS"] == [
        "clerk reports"
    ]
    assert kinds(got, "anon").count("TOOL_TIMEOUT") == 1
    assert rows(table, elsewhere) == []


class AskFirst(HookProvider):
    def register_hooks(self, registry: HookRegistry, **kwargs: Any) -> None:
        registry.add_callback(BeforeNodeCallEvent, self.check)

    def check(self, event: BeforeNodeCallEvent) -> None:
        if event.node_id == "refunds":
            event.interrupt("manager-approval", reason="refunds over 100 EUR need a manager")


def test_an_interrupted_swarm_says_where_and_what_it_waits_for(his: Any, table: str, rows: Rows) -> None:
    session = new_session()
    swarm = HISSwarm(
        [plain("triage", [handoff("refunds", "refund 250 EUR"), "ok"]), plain("refunds", ["Refunded."])],
        table,
        session,
        id="desk",
        hooks=[AskFirst()],
    )

    result = swarm("refund 250 EUR")

    assert result.status.value == "interrupted"
    got = rows(table, session)
    assert kinds(got, "desk")[-2:] == ["INTERRUPT", "MULTIAGENT_STATS"]
    assert only(got, "INTERRUPT")["evt_message"] == (
        "Swarm desk interrupted at refunds, waiting for a response:"
        " manager-approval (refunds over 100 EUR need a manager)"
    )


def test_a_nodes_figures_are_its_own_run_not_everything_its_agent_ever_did(
    his: Any, table: str, rows: Rows
) -> None:
    first, second = new_session(), new_session()
    asker = Agent(
        name="asker",
        model=ScriptedModel([ToolCall("lookup", {"order": "A-1"}), "ok"], loop=True),
        tools=[lookup],
        callback_handler=None,
    )
    for session in (first, second):  # the same agent object in two graphs, run one after the other
        builder = HISGraphBuilder(table, session)
        builder.add_node(asker, "asker")
        builder.set_execution_timeout(300).build()("go")

    def node(session: str) -> dict[str, Any]:
        stats = json.loads(only(rows(table, session), "MULTIAGENT_STATS")["evt_message"])
        return dict(stats["nodes"]["asker"])

    one, two = node(first), node(second)
    assert two["tools"] == one["tools"] == {"lookup": {"call_count": 1, "success_count": 1, "error_count": 0}}
    # Strands' counters add both runs up (its NodeResult for run two says so too); the rows do not.
    assert asker.event_loop_metrics.tool_metrics["lookup"].call_count == 2
    total = asker.event_loop_metrics.accumulated_usage["totalTokens"]
    assert 0 < one["total_tokens"] < two["total_tokens"] < total == one["total_tokens"] + two["total_tokens"]


def test_a_graphs_parallel_nodes_are_drawn_side_by_side(his: Any, table: str, rows: Rows) -> None:
    """The demo's Graph runs two lookups at once, then the policy, then the decision: its completion
    row draws the two lookups side by side, not as a sequence."""
    from his_otel.scenarios import BUILDERS

    session = new_session()
    BUILDERS["graph"](table, session, 0.05).run()
    text = only(rows(table, session), "MULTIAGENT_COMPLETION")["evt_message"]
    assert text.endswith(("order-lookup + shipping-lookup -> policy -> decide",
                          "shipping-lookup + order-lookup -> policy -> decide")), text  # fmt: skip
