"""ScriptedModel drives real Strands agents offline."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from strands import Agent, tool

from his_otel import ScriptedModel, ScriptExhaustedError, ToolCall


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def test_text_and_tool_turns_drive_a_real_agent() -> None:
    model = ScriptedModel([ToolCall("add", {"a": 2, "b": 3}), "the sum is 5"])
    agent = Agent(model=model, tools=[add], callback_handler=None)
    assert str(agent("add")).strip() == "the sum is 5"
    assert model.calls == 2
    tool_result = agent.messages[2]["content"][0]["toolResult"]
    assert tool_result["status"] == "success" and tool_result["content"][0]["text"] == "5"
    usage = agent.event_loop_metrics.accumulated_usage
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] > 0


def test_a_callable_turn_sees_the_conversation() -> None:
    seen: list[Any] = []

    def echo(messages: Any) -> str:
        seen.append(messages)
        return "echo: " + messages[-1]["content"][0]["text"]

    agent = Agent(model=ScriptedModel([echo]), callback_handler=None)
    assert str(agent("hello")).strip() == "echo: hello"
    assert len(seen) == 1


def test_running_out_of_script_is_an_error() -> None:
    agent = Agent(model=ScriptedModel(["one"]), callback_handler=None, retry_strategy=None)
    agent("a")
    with pytest.raises(ScriptExhaustedError):
        agent("b")


def test_loop_replays_the_script() -> None:
    agent = Agent(model=ScriptedModel(["x"], loop=True), callback_handler=None)
    assert [str(agent(str(i))).strip() for i in range(3)] == ["x", "x", "x"]


def test_structured_output() -> None:
    class Answer(BaseModel):
        value: int

    # Strands asks for structured output through a tool named after the model.
    agent = Agent(model=ScriptedModel([ToolCall("Answer", {"value": 7})]), callback_handler=None)
    assert agent("q", structured_output_model=Answer).structured_output == Answer(value=7)
