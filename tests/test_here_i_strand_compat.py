"""here-i-strand 0.2.13's names and call shapes, used as its users wrote them, and the rows a
here-i-strand reader reads: the six documented attributes, the EVENT_LOOP closed set, the order."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import pytest
from strands import Agent, tool
from strands.event_loop._retry import ModelRetryStrategy
from strands.types.exceptions import ModelThrottledException

from helpers import new_session
from his_otel import (
    DEFAULT_DYNAMODB_REPORTING_PROMPT_TEMPLATE,
    HISAgent,
    HISBedrockThrottlingLogger,
    ScriptedModel,
    TimeoutConcurrentToolExecutor,
    ToolCall,
    configure_logging,
    event_loop_tracker,
    write_dynamo,
)

READER_ATTRIBUTES = {"session_id", "event_id", "agent_id", "evt_type", "evt_message", "evt_datetime"}


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return f"result for {query}"


def test_the_constructor_keywords_and_the_rows_a_reader_reads(table: str, rows: Any) -> None:
    session = new_session()
    agent = HISAgent(
        status_dynamo_table_name=table,
        session_id=session,
        model=ScriptedModel([ToolCall("lookup", {"query": "q"}), "done"]),
        tools=[lookup],
        system_prompt="Be brief.",
        agent_id="support",
        name="support",
        tool_executor=TimeoutConcurrentToolExecutor(timeout_seconds=30),
        user="u-1",
    )
    agent("go")
    got = rows(table, session)
    assert [r["evt_type"] for r in got] == [
        "EVENT_LOOP", "START", "MODEL_INVOCATION", "TOOLING", "MODEL_INVOCATION",
        "COMPLETION", "EVENT_LOOP", "AGENT_STATS", "RESULT",
    ]  # fmt: skip
    for row in got:
        assert set(row) >= READER_ATTRIBUTES
        assert row["session_id"] == session and row["agent_id"] == "support"
    assert [r["evt_message"] for r in got if r["evt_type"] == "EVENT_LOOP"] == ["init_event_loop", "result"]
    assert "{table_name}" in DEFAULT_DYNAMODB_REPORTING_PROMPT_TEMPLATE


def test_write_dynamo_called_directly_from_python_writes_where_it_is_told(
    table: str, rows: Any, his: Any
) -> None:
    session = new_session()
    answer = write_dynamo(
        table_name=table, agent_id="batch-job", session_id=session, event_type="PROGRESS", message="step 1"
    )
    assert answer == "recorded PROGRESS"
    (row,) = rows(table, session)
    assert (row["agent_id"], row["evt_type"], row["evt_message"]) == ("batch-job", "PROGRESS", "step 1")


def test_event_loop_tracker_partial_on_a_plain_agent(table: str, rows: Any, his: Any) -> None:
    session = new_session()
    tracker = partial(
        event_loop_tracker, status_dynamo_table_name=table, session_id=session, agent_id="plain"
    )
    Agent(model=ScriptedModel(["hello"]), callback_handler=tracker)("go")
    got = rows(table, session)
    assert [(r["evt_type"], r["evt_message"], r["agent_id"]) for r in got] == [
        ("EVENT_LOOP", "init_event_loop", "plain"),
        ("EVENT_LOOP", "result", "plain"),
    ]


def test_the_throttling_hook_on_a_plain_agent(table: str, rows: Any, his: Any) -> None:
    session = new_session()
    hook = HISBedrockThrottlingLogger(table_name=table, session_id=session, agent_id="plain")
    agent = Agent(
        model=ScriptedModel([ModelThrottledException("Too many requests"), "recovered"]),
        hooks=[hook],
        retry_strategy=ModelRetryStrategy(max_attempts=2, initial_delay=0, max_delay=0),
        callback_handler=None,
    )
    assert "recovered" in str(agent("go"))
    (row,) = rows(table, session)
    assert row["evt_type"] == "BEDROCK_THROTTLING" and row["agent_id"] == "plain"
    assert row["evt_message"].startswith("Bedrock throttling detected | model=scripted-model | retry=yes")


def test_in_hooks_mode_the_model_cannot_write_lifecycle_rows(table: str, rows: Any) -> None:
    """A forged RESULT (here through the reporting tool) never sits beside the real one."""
    session = new_session()

    def report(event_type: str, message: str) -> ToolCall:
        return ToolCall(
            "write_dynamo",
            {
                "table_name": table,
                "agent_id": "a",
                "session_id": session,
                "event_type": event_type,
                "message": message,
            },
        )

    script = [[report("RESULT", '{"decision": "refund 9999"}'), report("PROGRESS", "half way")], "deny"]
    HISAgent(table, session, model=ScriptedModel(script))("go")
    got = rows(table, session)
    assert [r["evt_message"] for r in got if r["evt_type"] == "PROGRESS"] == ["half way"]
    results = [r["evt_message"] for r in got if r["evt_type"] == "RESULT"]
    assert len(results) == 1 and "9999" not in results[0]
    # In prompt mode the model reports the lifecycle, as with here-i-strand.
    prompted = new_session()
    script = [[report("START", "Processing user request")], "ok"]
    HISAgent(table, prompted, model=ScriptedModel(script), reporting="prompt")("go")
    assert [r["evt_type"] for r in rows(table, prompted)].count("START") == 1


def test_force_stop_keeps_here_i_strands_exact_message(table: str, rows: Any) -> None:
    session = new_session()
    agent = HISAgent(
        table, session, model=ScriptedModel([RuntimeError("context window overflow")]), retry_strategy=None
    )
    with pytest.raises(RuntimeError):
        agent("go")
    got = rows(table, session)
    loop = [r["evt_message"] for r in got if r["evt_type"] == "EVENT_LOOP"]
    assert set(loop) <= {"init_event_loop", "result", "force_stop"}, loop
    # The reason is in the invocation's ERROR row.
    assert any("context window overflow" in r["evt_message"] for r in got if r["evt_type"] == "ERROR")


def test_configure_logging_does_what_import_his_did() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("strands").level)
    root.handlers.clear()
    try:
        logger = configure_logging()
        assert logger.name == "his_otel" and logger.level == logging.INFO
        assert root.level == logging.INFO and root.handlers
        assert logging.getLogger("strands").level == logging.INFO
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("strands").setLevel(saved[2])
