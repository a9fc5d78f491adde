"""A HISAgent inside a Bedrock AgentCore Runtime app (``bedrock-agentcore``'s BedrockAgentCoreApp,
Starlette under uvicorn), run for real on loopback and called over HTTP as the runtime calls it:
status session = runtime session, streamed answers, concurrent sessions, and the runtime's SIGTERM
with invocations in flight. Needs bedrock-agentcore installed (CI's matrix row "adot")."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import SERVER_APP_PRELUDE, TOOL_RUN_ROWS, new_session, wait_for, wait_listening
from his_otel.read import session_rows
from his_otel.testing.local_dynamodb import free_port

pytestmark = pytest.mark.adot

APP = (
    SERVER_APP_PRELUDE
    + """
from bedrock_agentcore.runtime import BedrockAgentCoreApp

app = BedrockAgentCoreApp()


@app.entrypoint
async def invoke(payload):
    # No session id here: the HISAgent takes the runtime's, from the request.
    agent = HISAgent(
        os.environ["T"],
        model=ScriptedModel([ToolCall("slow_step", {"session": payload["session"]}), "all done"]),
        tools=[slow_step],
    )
    async for event in agent.stream_async(payload["prompt"]):
        if "data" in event:
            yield event["data"]


if __name__ == "__main__":
    app.run(port=int(os.environ["PORT"]))
"""
)

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"


def invoke(port: int, session: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        body = json.dumps({"prompt": "go", "session": session})
        conn.request(
            "POST", "/invocations", body, {"Content-Type": "application/json", SESSION_HEADER: session}
        )
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_agentcore_app_streams_concurrent_sessions_and_loses_no_row_on_sigterm(
    ddb: Any, table: str, tmp_path: Path
) -> None:
    pytest.importorskip("bedrock_agentcore", reason="bedrock-agentcore is not installed")
    (tmp_path / "app.py").write_text(APP)
    marks = tmp_path / "marks"
    marks.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=tmp_path,
        env={**os.environ, "T": table, "MARKS": str(marks), "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sessions = [new_session(), new_session()]
    answers: dict[str, tuple[int, str]] = {}
    try:
        wait_listening(port, server)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/ping")
        assert conn.getresponse().status == 200
        conn.close()
        calls = [threading.Thread(target=lambda s=s: answers.update({s: invoke(port, s)})) for s in sessions]
        for call in calls:
            call.start()
        wait_for(lambda: len(list(marks.iterdir())) == 2, timeout_s=60)  # both invocations in flight
        server.send_signal(signal.SIGTERM)  # what the runtime does to stop a session's host
        for call in calls:
            call.join(120)
        _, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    for session in sessions:
        status, body = answers[session]
        assert status == 200 and "all done" in body, (status, body, stderr)
        rows = session_rows(ddb, table, session)
        # The status session is the runtime session, and every row of both invocations is there.
        assert [r["evt_type"] for r in rows] == TOOL_RUN_ROWS, stderr
