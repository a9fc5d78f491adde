"""Drop-in parity with here-i-strand, row for row, on real Strands runs with the scripted model:
failed tools, throttling retries, cancellation, structured output."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import BaseModel
from strands import tool
from strands.event_loop._retry import ModelRetryStrategy
from strands.types.exceptions import ModelThrottledException

from helpers import new_session
from his_otel import HISAgent, ScriptedModel, ToolCall


@tool
def refund(order_id: str) -> str:
    """Issue a refund."""
    raise RuntimeError(f"payment gateway refused order {order_id}")


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return f"result for {query}"


def types(got: list[dict[str, Any]]) -> list[str]:
    return [str(r["evt_type"]) for r in got]


def test_a_failing_tool_is_an_error_row_and_completion_says_so(table: str, rows: Any) -> None:
    session = new_session()
    script = [ToolCall("refund", {"order_id": "A-1"}), ToolCall("lookup", {"query": "q"}), "done"]
    HISAgent(table, session, model=ScriptedModel(script), tools=[refund, lookup])("go")
    got = rows(table, session)
    errors = [r["evt_message"] for r in got if r["evt_type"] == "ERROR"]
    assert errors == ["Tool refund failed: RuntimeError - payment gateway refused order A-1"]
    (completion,) = [r["evt_message"] for r in got if r["evt_type"] == "COMPLETION"]
    assert completion == "Process completed (1 tool call failed)"
    assert types(got).index("ERROR") < types(got).index("COMPLETION")


def test_a_run_whose_tools_all_succeed_completes_successfully(table: str, rows: Any) -> None:
    session = new_session()
    HISAgent(
        table, session, model=ScriptedModel([ToolCall("lookup", {"query": "q"}), "done"]), tools=[lookup]
    )("go")
    got = rows(table, session)
    assert "ERROR" not in types(got)
    assert [r["evt_message"] for r in got if r["evt_type"] == "COMPLETION"] == [
        "Process completed successfully"
    ]


def test_throttling_says_retry_yes_when_strands_retries_and_no_when_it_gives_up(
    table: str, rows: Any
) -> None:
    retried = new_session()
    agent = HISAgent(
        table,
        retried,
        model=ScriptedModel([ModelThrottledException("slow down"), "recovered"]),
        retry_strategy=ModelRetryStrategy(max_attempts=3, initial_delay=0, max_delay=0),
    )
    assert "recovered" in str(agent("go"))
    (message,) = [r["evt_message"] for r in rows(table, retried) if r["evt_type"] == "BEDROCK_THROTTLING"]
    assert "retry=yes" in message
    # On the last attempt Strands gives up: the row says so, and the invocation is an ERROR.
    gave_up = new_session()
    agent = HISAgent(
        table,
        gave_up,
        model=ScriptedModel([ModelThrottledException("slow down"), ModelThrottledException("still")]),
        retry_strategy=ModelRetryStrategy(max_attempts=2, initial_delay=0, max_delay=0),
    )
    with pytest.raises(ModelThrottledException):
        agent("go")
    got = rows(table, gave_up)
    messages = [r["evt_message"] for r in got if r["evt_type"] == "BEDROCK_THROTTLING"]
    assert ["retry=yes" in m for m in messages] == [True, False]
    assert "ERROR" in types(got)


def test_a_cancelled_invocation_is_an_error_row(table: str, rows: Any) -> None:
    session = new_session()
    started = threading.Event()

    @tool
    def wait_for_cancel() -> str:
        """Wait until the run is cancelled."""
        started.set()
        agent.cancel()
        return "cancelled meanwhile"

    agent = HISAgent(
        table,
        session,
        model=ScriptedModel([ToolCall("wait_for_cancel", {}), "never"]),
        tools=[wait_for_cancel],
    )
    result = agent("go")
    assert result.stop_reason == "cancelled"
    got = rows(table, session)
    assert "COMPLETION" not in types(got)
    assert [r["evt_message"] for r in got if r["evt_type"] == "ERROR"] == [
        "Invocation cancelled (stop_reason=cancelled)"
    ]


class Decision(BaseModel):
    """A refund decision."""

    decision: str


def test_strands_structured_output_tool_gets_no_tooling_row(table: str, rows: Any) -> None:
    session = new_session()
    script = [ToolCall("lookup", {"query": "q"}), ToolCall("Decision", {"decision": "refund"}), "done"]
    agent = HISAgent(table, session, model=ScriptedModel(script), tools=[lookup])
    result = agent("go", structured_output_model=Decision)
    assert result.structured_output == Decision(decision="refund")
    tooling = [r["evt_message"] for r in rows(table, session) if r["evt_type"] == "TOOLING"]
    assert tooling == ["Calling lookup: Look something up."]
