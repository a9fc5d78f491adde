"""The types the model may not write: one list (``HOOK_OWNED_TYPES``), checked against what the hooks
really write, and refused from ``write_dynamo`` in the default ``hooks`` mode, every one of them."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import new_session
from his_otel import HISAgent, ScriptedModel, ToolCall
from his_otel.scenarios import BUILDERS, SCENARIOS
from his_otel.schema import HOOK_OWNED_TYPES


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_type_a_hook_writes_is_in_the_one_list(scenario: str, rows: Any, table: str) -> None:
    """The demo's agent, Swarm, Graph and voice sessions: every row that is not the model's own
    PROGRESS report has a hook-owned type. A hook that starts writing a new type fails here until
    the list has it."""
    session = new_session()
    BUILDERS[scenario](table, session, 0).run()
    written = {r["evt_type"] for r in rows(table, session)}
    assert written - {"PROGRESS"} <= HOOK_OWNED_TYPES, written - HOOK_OWNED_TYPES


def test_the_model_cannot_write_any_hook_owned_type(rows: Any, table: str) -> None:
    session = new_session()
    forged = sorted(HOOK_OWNED_TYPES)
    calls = [
        ToolCall("write_dynamo", {"table_name": "x", "agent_id": "x", "session_id": "x",
                                  "event_type": t, "message": "forged"})
        for t in forged
    ]  # fmt: skip
    HISAgent(table, session, model=ScriptedModel([calls, "done"]))("go")
    written = rows(table, session)
    assert not [r for r in written if r["evt_message"] == "forged"]
    assert {"MULTIAGENT_COMPLETION", "NODE_ERROR", "SESSION_END", "TOOL_TIMEOUT"} <= HOOK_OWNED_TYPES
