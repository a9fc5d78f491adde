"""HISAgent: real Strands runs with the scripted model, rows read back from moto's DynamoDB."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from strands import Agent, tool
from strands.event_loop._retry import ModelRetryStrategy
from strands.types.exceptions import ModelThrottledException

from helpers import TOOL_RUN_ROWS, new_session
from his_otel import (
    DEFAULT_DYNAMODB_REPORTING_PROMPT_TEMPLATE,
    EventType,
    HISAgent,
    ScriptedModel,
    TimeoutConcurrentToolExecutor,
    ToolCall,
    milestone,
)
from his_otel.schema import EVENT_NAME


@tool
def lookup(query: str) -> str:
    """Look something up."""
    milestone(EventType.PROGRESS, f"looked up {query}")  # code inside a tool: identity from context
    return f"result for {query}"


@tool
def slow_tool(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "slept"


async def async_slow(seconds: float) -> None:
    await asyncio.sleep(seconds)


SLEEPY_FINISHED: list[float] = []


@tool
async def sleepy(seconds: float) -> str:
    """Sleep asynchronously, then answer."""
    await asyncio.sleep(seconds)
    SLEEPY_FINISHED.append(seconds)
    return "done"


def agent_for(table: str, session: str, turns: list[Any], **kw: Any) -> HISAgent:
    kw.setdefault("tools", [lookup])
    return HISAgent(table, session, model=ScriptedModel(turns), agent_id=kw.pop("agent_id", "agent-1"), **kw)


def types(rows: list[dict[str, Any]]) -> list[str]:
    return [r["evt_type"] for r in rows]


def test_lifecycle_rows_of_a_tool_run(table: str, rows: Any, spans: InMemorySpanExporter) -> None:
    session = new_session()
    agent = agent_for(table, session, [ToolCall("lookup", {"query": "q1"}), '{"answer": 1}'], user="u-7")
    result = agent("go")
    assert "answer" in str(result)
    got = rows(table, session)
    assert types(got) == TOOL_RUN_ROWS
    assert {r["agent_id"] for r in got} == {"agent-1"}
    assert got[0]["evt_message"] == "init_event_loop" and got[7]["evt_message"] == "result"
    assert got[3]["evt_message"].startswith("Calling lookup")
    assert got[4]["evt_message"] == "looked up q1"
    # Every row links to the agent's trace, and sits on the Strands span it happened in.
    tagged = [s for s in spans.get_finished_spans() if s.attributes.get("session.id") == session]
    invoke = [s for s in tagged if s.name.startswith("invoke_agent")]
    assert len(invoke) == 1
    # Every span of the run carries session.id, so backends can search a session's traces.
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == invoke[0].context.trace_id]
    assert {s.name for s in in_trace} >= {"chat", "execute_tool lookup", "execute_event_loop_cycle"}
    assert tagged == in_trace
    trace_id = format(invoke[0].context.trace_id, "032x")
    assert {r["trace_id"] for r in got} == {trace_id}
    span_of = {r["evt_type"]: r["span_name"] for r in got}
    assert span_of["START"].startswith("invoke_agent")
    assert span_of["MODEL_INVOCATION"] == "execute_event_loop_cycle"
    assert span_of["TOOLING"] == "execute_event_loop_cycle"
    assert span_of["PROGRESS"] == "execute_tool lookup"
    # ...and the same milestones are span events on those spans, for Jaeger.
    ids_on_spans = {
        e.attributes["his.event_id"]
        for s in spans.get_finished_spans()
        if s.context.trace_id == invoke[0].context.trace_id
        for e in s.events
        if e.name == EVENT_NAME
    }
    assert ids_on_spans == {r["event_id"] for r in got}


def test_agent_stats_and_result_use_here_i_strand_fields(table: str, rows: Any) -> None:
    session = new_session()
    agent = agent_for(
        table,
        session,
        [ToolCall("lookup", {"query": "x"}), 'Here it is: ```json\n{"total": 3}\n```'],
        user="alice",
    )
    agent("go")
    by_type = {r["evt_type"]: r for r in rows(table, session)}
    stats = json.loads(by_type["AGENT_STATS"]["evt_message"])
    assert set(stats) >= {
        "total_tokens",
        "input_tokens",
        "output_tokens",
        "cache_write_tokens",
        "cache_read_tokens",
        "user",
        "execution_time_in_seconds",
        "tools",
        "model_id",
    }
    assert stats["user"] == "alice"
    assert stats["model_id"] == "scripted-model"
    assert stats["total_tokens"] == stats["input_tokens"] + stats["output_tokens"] > 0
    assert stats["tools"]["lookup"]["call_count"] == 1
    assert stats["execution_time_in_seconds"] > 0
    assert json.loads(by_type["RESULT"]["evt_message"]) == {"total": 3}


def test_result_falls_back_to_raw_text(table: str, rows: Any) -> None:
    session = new_session()
    agent_for(table, session, ["plain words, no json"])("go")
    result = [r for r in rows(table, session) if r["evt_type"] == "RESULT"]
    assert json.loads(result[0]["evt_message"]) == {"raw": "plain words, no json"}


def test_structured_output_becomes_the_result_row(table: str, rows: Any) -> None:
    from pydantic import BaseModel

    class Decision(BaseModel):
        refund: bool
        amount: float

    session = new_session()
    agent = agent_for(table, session, [ToolCall("Decision", {"refund": True, "amount": 4.5})])
    assert agent("go", structured_output_model=Decision).structured_output == Decision(
        refund=True, amount=4.5
    )
    result = [r for r in rows(table, session) if r["evt_type"] == "RESULT"]
    assert json.loads(result[0]["evt_message"]) == {"refund": True, "amount": 4.5}


def test_stream_async_writes_stats_and_result_too(table: str, rows: Any) -> None:
    session = new_session()
    agent = agent_for(table, session, [ToolCall("lookup", {"query": "s"}), '{"streamed": true}'])

    async def consume() -> list[Any]:
        return [event async for event in agent.stream_async("go")]

    events = asyncio.run(consume())
    assert any("result" in e for e in events)
    got = types(rows(table, session))
    assert got.count("AGENT_STATS") == 1 and got.count("RESULT") == 1 and got.count("COMPLETION") == 1


def test_write_dynamo_ignores_the_table_and_session_the_model_names(table: str, rows: Any, ddb: Any) -> None:
    from his_otel.read import session_rows
    from his_otel.write.table import create_table

    victim_table = f"{table}-victim"
    create_table(ddb, victim_table)
    session = new_session()
    hostile = ToolCall(
        "write_dynamo",
        {
            "table_name": victim_table,
            "agent_id": "admin",
            "session_id": "victim-session",
            "event_type": "progress",
            "message": "model-reported progress",
        },
    )
    agent_for(table, session, [hostile, "done"])("go")
    got = rows(table, session)
    progress = [r for r in got if r["evt_type"] == "PROGRESS"]
    assert [(r["evt_message"], r["agent_id"]) for r in progress] == [("model-reported progress", "agent-1")]
    assert session_rows(ddb, victim_table, "victim-session") == []
    assert session_rows(ddb, victim_table, session) == []
    assert session_rows(ddb, table, "victim-session") == []
    # The report tool is not itself announced as a TOOLING milestone.
    assert "TOOLING" not in types(got)


def test_write_dynamo_with_a_hopeless_type_tells_the_model(table: str, rows: Any) -> None:
    session = new_session()
    bad = ToolCall(
        "write_dynamo",
        {"table_name": "", "agent_id": "", "session_id": "", "event_type": "!!!", "message": "m"},
    )
    agent = agent_for(table, session, [bad, "done"])
    agent("go")
    tool_results = [
        block["toolResult"]
        for msg in agent.messages
        for block in msg["content"]
        if isinstance(block, dict) and "toolResult" in block
    ]
    assert tool_results[0]["content"][0]["text"].startswith("recorded PROGRESS")  # sanitised to a default


def test_two_agents_write_their_own_tables(table: str, rows: Any, ddb: Any) -> None:
    from his_otel.write.table import create_table

    table_b = f"{table}-b"
    create_table(ddb, table_b)
    session = new_session()
    agent_for(table, session, ["a"], agent_id="agent-a")("go")
    agent_for(table_b, session, ["b"], agent_id="agent-b")("go")
    assert {r["agent_id"] for r in rows(table, session)} == {"agent-a"}
    assert {r["agent_id"] for r in rows(table_b, session)} == {"agent-b"}


def test_concurrent_agents_in_threads_and_tasks_keep_their_sessions(table: str, rows: Any) -> None:
    import threading

    sessions = [new_session() for _ in range(6)]

    def run(s: str) -> None:
        agent_for(table, s, [ToolCall("lookup", {"query": s}), "ok"])("go")

    async def run_async(s: str) -> None:
        await agent_for(table, s, [ToolCall("lookup", {"query": s}), "ok"]).invoke_async("go")

    async def tasks() -> None:
        await asyncio.gather(*(run_async(s) for s in sessions[3:]))

    threads = [threading.Thread(target=run, args=(s,)) for s in sessions[:3]]
    for t in threads:
        t.start()
    asyncio.run(tasks())
    for t in threads:
        t.join()
    for s in sessions:
        got = rows(table, s)
        progress = [r["evt_message"] for r in got if r["evt_type"] == "PROGRESS"]
        assert progress == [f"looked up {s}"], s  # the tool's milestone went to its own session
        assert types(got).count("START") == 1


def test_throttled_model_call_records_bedrock_throttling(table: str, rows: Any) -> None:
    session = new_session()
    agent = agent_for(
        table,
        session,
        [ModelThrottledException("Too many requests"), "recovered"],
        retry_strategy=ModelRetryStrategy(max_attempts=3, initial_delay=0, max_delay=0),
    )
    assert "recovered" in str(agent("go"))
    got = rows(table, session)
    throttled = [r for r in got if r["evt_type"] == "BEDROCK_THROTTLING"]
    assert len(throttled) == 1
    assert "Bedrock throttling detected" in throttled[0]["evt_message"]
    assert "model=scripted-model" in throttled[0]["evt_message"]
    assert types(got).count("COMPLETION") == 1


def test_failed_invocation_records_error(table: str, rows: Any) -> None:
    session = new_session()
    agent = agent_for(table, session, [RuntimeError("model exploded")], retry_strategy=None)
    with pytest.raises(RuntimeError, match="model exploded"):
        agent("go")
    got = rows(table, session)
    errors = [r for r in got if r["evt_type"] == "ERROR"]
    assert len(errors) == 1 and "model exploded" in errors[0]["evt_message"]
    assert "COMPLETION" not in types(got)
    assert "EVENT_LOOP" in types(got)


def test_cancelled_invocation_keeps_milestones_of_spans_that_never_end(table: str, rows: Any) -> None:
    session = new_session()
    agent = agent_for(table, session, [ToolCall("sleepy", {"seconds": 30}), "never"], tools=[sleepy])

    async def cancel_mid_tool() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(agent.invoke_async("go"), timeout=1.0)

    asyncio.run(cancel_mid_tool())
    got = rows(table, session)
    # MODEL_INVOCATION and TOOLING sit on the cycle span, which Strands never ends on cancellation.
    assert types(got)[:4] == ["EVENT_LOOP", "START", "MODEL_INVOCATION", "TOOLING"]
    assert got[2]["span_name"] == got[3]["span_name"] == "execute_event_loop_cycle"
    assert "ERROR" in types(got)


def test_prompt_mode_reproduces_here_i_strand(table: str, rows: Any) -> None:
    session = new_session()
    start = ToolCall(
        "write_dynamo",
        {
            "table_name": table,
            "agent_id": "agent-1",
            "session_id": session,
            "event_type": "START",
            "message": "s",
        },
    )
    agent = agent_for(table, session, [start, "done"], system_prompt="Be brief.", reporting="prompt")
    assert isinstance(agent.system_prompt, str)
    expected = DEFAULT_DYNAMODB_REPORTING_PROMPT_TEMPLATE.format(
        table_name=table, session_id=session, agent_id="agent-1"
    )
    assert agent.system_prompt == f"{expected}\n\nBe brief."
    agent("go")
    got = types(rows(table, session))
    # Lifecycle rows come from the model; the code still records stats, result and the event loop.
    assert got.count("START") == 1
    assert "MODEL_INVOCATION" not in got and "COMPLETION" not in got
    assert {"AGENT_STATS", "RESULT", "EVENT_LOOP"} <= set(got)


def test_hooks_mode_leaves_the_system_prompt_alone(table: str) -> None:
    agent = agent_for(table, new_session(), ["x"], system_prompt="Be brief.")
    assert agent.system_prompt == "Be brief."


def test_user_callback_handler_and_hooks_still_run(table: str, rows: Any) -> None:
    from strands.hooks import BeforeInvocationEvent, HookProvider, HookRegistry

    seen: list[str] = []

    class Mine(HookProvider):
        def register_hooks(self, registry: HookRegistry, **kwargs: Any) -> None:
            registry.add_callback(BeforeInvocationEvent, lambda e: seen.append("hook"))

    session = new_session()
    agent_for(table, session, ["hi"], hooks=[Mine()], callback_handler=lambda **kw: seen.append("cb"))("go")
    assert "hook" in seen and "cb" in seen
    assert types(rows(table, session)).count("EVENT_LOOP") == 2


def test_a_failing_milestone_never_breaks_the_agent(
    table: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A mock, because nothing real makes emitting fail: the point is that the agent does not care.
    from his_otel.agent import hooks

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("telemetry broke")

    monkeypatch.setattr(hooks, "_milestone", broken)
    result = agent_for(table, new_session(), [ToolCall("lookup", {"query": "x"}), "still fine"])("go")
    assert "still fine" in str(result)
    assert "his-otel hook failed" in caplog.text


def test_timeout_executor_cuts_off_slow_tool_and_others_go_on(table: str, rows: Any) -> None:
    session = new_session()
    agent = agent_for(
        table,
        session,
        [[ToolCall("sleepy", {"seconds": 10}), ToolCall("lookup", {"query": "fast"})], "carried on"],
        tools=[sleepy, lookup],
        tool_executor=TimeoutConcurrentToolExecutor(timeout_seconds=0.5),
    )
    assert "carried on" in str(agent("go"))
    assert SLEEPY_FINISHED == []  # the agent went on while the slow tool was still asleep
    results = [
        block["toolResult"]
        for msg in agent.messages
        for block in msg["content"]
        if isinstance(block, dict) and "toolResult" in block
    ]
    by_status = sorted((r["status"], r["content"][0]["text"]) for r in results)
    assert by_status == [("error", "Tool execution timed out after 0.5s."), ("success", "result for fast")]
    got = rows(table, session)
    assert [r["evt_message"] for r in got if r["evt_type"] == "TOOL_TIMEOUT"] == [
        "Tool sleepy timed out after 0.5s"
    ]


def test_timeout_executor_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="timeout_seconds"):
        TimeoutConcurrentToolExecutor(timeout_seconds=0)


def test_constructor_rejects_missing_table_or_session() -> None:
    with pytest.raises(ValueError, match="status_dynamo_table_name"):
        HISAgent("", "s", model=ScriptedModel(["x"]))
    with pytest.raises(ValueError, match="session_id"):
        HISAgent("t", " ", model=ScriptedModel(["x"]))
    with pytest.raises(ValueError, match="reporting"):
        HISAgent("t", "s", model=ScriptedModel(["x"]), reporting="loud")


def test_write_dynamo_is_always_registered_once(table: str) -> None:
    from his_otel import write_dynamo

    agent = agent_for(table, new_session(), ["x"], tools=[lookup, write_dynamo])
    assert sorted(agent.tool_names) == ["lookup", "write_dynamo"]
    assert "write_dynamo" in HISAgent(table, new_session(), model=ScriptedModel(["x"])).tool_names


def test_plain_strands_agent_with_the_report_tool_outside_a_session(table: str) -> None:
    from his_otel import write_dynamo

    call = ToolCall(
        "write_dynamo",
        {"table_name": "t", "agent_id": "a", "session_id": "s", "event_type": "X", "message": "m"},
    )
    agent = Agent(model=ScriptedModel([call, "ok"]), tools=[write_dynamo], callback_handler=None)
    agent("go")
    texts = [
        block["toolResult"]["content"][0]["text"]
        for msg in agent.messages
        for block in msg["content"]
        if isinstance(block, dict) and "toolResult" in block
    ]
    assert texts == ["error: not running inside a HISAgent session; nothing recorded"]


def test_s3_session_persistence_with_here_i_strand_prefix(table: str, moto_endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = f"b-{new_session()}"
    s3.create_bucket(Bucket=bucket)
    session = new_session()
    agent_for(table, session, ["remembered"], bucket_name=bucket, name="planner")("go")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys and all(k.startswith(f"ac-sessions/planner/session_{session}/") for k in keys)
    # A new agent on the same session picks the conversation back up from S3.
    again = agent_for(table, session, ["second"], bucket_name=bucket, name="planner")
    assert any("remembered" in json.dumps(m) for m in again.messages)
