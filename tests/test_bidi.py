"""BidiAgent voice sessions (a real strands.bidi loop, the scripted bidi model) and their rows."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from strands import tool
from strands.bidi import BidiAgent
from strands.bidi.models.model import ConnectionTimeoutError
from strands.bidi.types.events import BidiResponseStopEvent

from helpers import new_session, wait_for
from his_otel import (
    BARGE_IN,
    HISBidiAgent,
    HISBidiHooks,
    Identity,
    ScriptedBidiModel,
    Speech,
    ToolCall,
    milestone,
)
from his_otel.read import session_rows
from his_otel.schema import ATTR_EVENT_ID, EVENT_NAME

Rows = Callable[[str, str], list[dict[str, Any]]]


@tool
def order_status(order: str) -> str:
    """Look up an order."""
    milestone("PROGRESS", f"looked up {order}")  # identity from the session's context
    return f"order {order} ships tomorrow"


@tool
def refund(order: str) -> str:
    """Refund an order."""
    raise RuntimeError(f"refunds are closed for {order}")


def kinds(rows: list[dict[str, Any]]) -> list[str]:
    return [r["evt_type"] for r in rows]


def test_a_voice_session_writes_each_milestone_while_it_is_live(
    his: Any, table: str, rows: Rows, ddb: Any, spans: InMemorySpanExporter
) -> None:
    session = new_session()
    model = ScriptedBidiModel(
        [
            ToolCall("order_status", {"order": "A-1"}),
            Speech("Your order A-1 ships tomorrow."),
            [Speech("Refunds take three to five"), BARGE_IN],
            ToolCall("refund", {"order": "A-1"}),
            "Sorry, I could not refund A-1.",
        ]
    )
    agent = HISBidiAgent(table, session, agent_id="voice", model=model, tools=[order_status, refund])
    seen_live: list[list[str]] = []

    async def main() -> None:
        async with agent:
            await agent.send("Where is my order A-1?")
            stops = 0
            async for event in agent.receive():
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "bidi_response_stop":
                    stops += 1
                    if stops == 2:
                        # Mid-session, the rows so far are already in the table.
                        def written() -> list[str] | None:
                            k = kinds(session_rows(ddb, table, session))
                            return k if k.count("RESPONSE_COMPLETION") >= 2 else None

                        seen_live.append(await asyncio.to_thread(wait_for, written))
                        await agent.send("And how long do refunds take?")
                    if stops == 4:
                        break
                if kind == "bidi_barge_in":
                    await agent.send("Just refund it.")

    asyncio.run(main())

    live = ["SESSION_START", "RESPONSE_COMPLETION", "TOOLING", "PROGRESS", "RESPONSE_COMPLETION"]
    assert seen_live == [live]
    got = rows(table, session)
    assert kinds(got) == [
        "SESSION_START",
        "RESPONSE_COMPLETION",  # the model asks for a tool: that response ends, then the tool runs
        "TOOLING",
        "PROGRESS",
        "RESPONSE_COMPLETION",
        "BARGE_IN",  # the user talked over the third response: it never completed
        "RESPONSE_COMPLETION",
        "TOOLING",
        "ERROR",
        "RESPONSE_COMPLETION",
        "SESSION_END",
        "AGENT_STATS",
    ]
    assert {r["agent_id"] for r in got} == {"voice"}
    started = "Bidi session started (model scripted-bidi-model, tools: order_status, refund)"
    assert got[0]["evt_message"] == started
    assert got[2]["evt_message"].startswith("Calling order_status: Look up an order.")
    assert got[8]["evt_message"] == "Tool refund failed: RuntimeError - refunds are closed for A-1"
    response = got[1]["evt_message"]
    assert response.startswith("Response response-") and "input /" in response and "session total" in response
    assert got[-2]["evt_message"].startswith("Bidi session ended after")
    assert "4 responses, 2 tool calls, 1 barge-ins, 0 connection restarts" in got[-2]["evt_message"]
    stats = json.loads(got[-1]["evt_message"])
    assert stats["responses"] == 4 and stats["barge_ins"] == 1
    # Each response's own tokens (not the running total), which add up to the session's.
    per_response = [
        tuple(
            map(
                int,
                re.findall(r": (\d+) input / (\d+) output tokens \(session total (\d+)\)", r["evt_message"])[
                    0
                ],
            )
        )
        for r in got
        if r["evt_type"] == "RESPONSE_COMPLETION"
    ]
    assert sum(i + o for i, o, _ in per_response) == per_response[-1][2] == stats["total_tokens"]
    assert stats["tools"] == {
        "order_status": {"call_count": 1, "success_count": 1, "error_count": 0},
        "refund": {"call_count": 1, "success_count": 0, "error_count": 1},
    }
    assert stats["total_tokens"] > 0 and stats["model_id"] == "scripted-bidi-model"

    # One trace: every row is an event of the bidi_session span, written while it was open.
    (span_id,) = {r["span_id"] for r in got}
    session_span = {s.context.span_id: s for s in spans.get_finished_spans()}[int(span_id, 16)]
    assert session_span.name.startswith("bidi_session")
    on_span = [e.attributes[ATTR_EVENT_ID] for e in session_span.events if e.name == EVENT_NAME]
    assert on_span == [r["event_id"] for r in got]


def test_a_connection_timeout_restarts_the_connection_with_rows_before_and_after(
    his: Any, table: str, rows: Rows, ddb: Any
) -> None:
    session = new_session()
    model = ScriptedBidiModel(
        [[Speech("Let me check"), ConnectionTimeoutError("connection limit reached"), "It ships tomorrow."]]
    )
    agent = HISBidiAgent(table, session, model=model)

    async def main() -> None:
        async with agent:
            await agent.send("Where is my order?")
            async for event in agent.receive():
                if isinstance(event, BidiResponseStopEvent):
                    break

    asyncio.run(main())

    # stop() returned once the session's last rows were written: no flush needed.
    assert "AGENT_STATS" in kinds(session_rows(ddb, table, session))
    assert model.starts == 2
    got = rows(table, session)
    assert kinds(got) == [
        "SESSION_START",
        "CONNECTION_RESTART",
        "CONNECTION_RESTARTED",
        "RESPONSE_COMPLETION",
        "SESSION_END",
        "AGENT_STATS",
    ]
    restarting = "Restarting the model connection (reason=timeout: connection limit reached)"
    assert got[1]["evt_message"] == restarting
    assert got[2]["evt_message"] == "Model connection restarted (reason=timeout)"
    assert json.loads(got[-1]["evt_message"])["restarts"] == 1


class FailingRestart(ScriptedBidiModel):
    async def start(self, *args: Any, **kwargs: Any) -> None:
        if self.starts:
            self.starts += 1
            raise ConnectionError("voice endpoint unreachable")
        await super().start(*args, **kwargs)


def test_a_failed_restart_is_an_error_row_and_the_session_still_ends_with_its_stats(
    his: Any, table: str, rows: Rows
) -> None:
    session = new_session()
    agent = HISBidiAgent(table, session, model=FailingRestart([[ConnectionTimeoutError("limit")]]))

    async def main() -> None:
        async with agent:
            await agent.send("hello")
            try:
                async for _ in agent.receive():
                    pass
            except ConnectionError:
                pass

    asyncio.run(main())

    got = rows(table, session)
    assert kinds(got) == ["SESSION_START", "CONNECTION_RESTART", "ERROR", "SESSION_END", "AGENT_STATS"]
    assert got[2]["evt_message"] == (
        "Model connection restart failed (reason=timeout): ConnectionError: voice endpoint unreachable"
    )


def test_the_hooks_on_a_plain_bidiagent_write_the_same_rows(
    his: Any, table: str, rows: Rows, caplog: pytest.LogCaptureFixture
) -> None:
    session = new_session()
    hooks = HISBidiHooks(Identity(session, "plain", table))
    agent = BidiAgent(model=ScriptedBidiModel(["Hello there."]), hooks=[hooks])

    async def main() -> None:
        async with agent:
            await agent.send("hi")
            async for event in agent.receive():
                if isinstance(event, BidiResponseStopEvent):
                    break

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())

    got = rows(table, session)
    assert kinds(got) == ["SESSION_START", "RESPONSE_COMPLETION", "SESSION_END", "AGENT_STATS"]
    # The end rows come after Strands ended the session span: still linked to it, and no
    # "add_event on an ended span" warning from the SDK for each of them.
    assert len({(r["trace_id"], r["span_id"]) for r in got}) == 1
    assert not [r for r in caplog.records if "ended span" in r.getMessage()]


class Unreachable(ScriptedBidiModel):
    async def start(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("voice endpoint unreachable")


def test_a_session_that_cannot_connect_is_an_error_row(his: Any, table: str, rows: Rows) -> None:
    session = new_session()
    agent = HISBidiAgent(table, session, model=Unreachable([]))

    async def main() -> None:
        async with agent:
            pass  # pragma: no cover - start raises

    try:
        asyncio.run(main())
    except ConnectionError:
        pass
    else:  # pragma: no cover
        raise AssertionError("start did not raise")

    got = rows(table, session)
    assert [(r["evt_type"], r["evt_message"]) for r in got] == [
        ("ERROR", "Bidi session could not start: ConnectionError: voice endpoint unreachable")
    ]
