"""Every Python snippet in README.md runs as written, in a fresh interpreter with a fresh shell's
environment (no AWS settings) plus the one line the README asks for: a local DynamoDB endpoint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import fresh_shell
from his_otel.read import session_rows
from his_otel.write.table import create_table

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SNIPPETS = re.findall(r"^```python\n(.*?)^```", README, flags=re.M | re.S)
# Needs bedrock-agentcore, which CI installs in its ADOT row only.
AGENTCORE = "bedrock_agentcore"
# The rows the multi-agent and voice snippets promise, beside the nodes' own START rows.
WRITES = {
    "session-swarm": {"MULTIAGENT_START", "HANDOFF", "MULTIAGENT_COMPLETION", "MULTIAGENT_STATS", "START"},
    "session-graph": {"MULTIAGENT_START", "NODE_COMPLETION", "MULTIAGENT_COMPLETION", "START"},
    "session-voice": {"SESSION_START", "TOOLING", "RESPONSE_COMPLETION", "SESSION_END", "AGENT_STATS"},
}


def local_shell(endpoint: str) -> dict[str, str]:
    """A fresh shell plus the README's one line: ``export AWS_ENDPOINT_URL_DYNAMODB=...``."""
    return fresh_shell(AWS_ENDPOINT_URL_DYNAMODB=endpoint)


def run_snippet(code: str, env: dict[str, str], workdir: Path) -> subprocess.CompletedProcess[str]:
    # run_name: a snippet's `if __name__ == "__main__":` block starts a server; defining it is the test.
    path = workdir / "snippet.py"
    path.write_text(code)
    runner = (
        "import runpy, sys; runpy.run_path(sys.argv[1], run_name='readme_snippet'); print('ran to the end')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", runner, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.endswith("ran to the end\n"), proc.stdout + proc.stderr
    return proc


def test_the_readme_has_its_snippets() -> None:
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(code, id=f"snippet-{i}", marks=[pytest.mark.adot] if AGENTCORE in code else [])
        for i, code in enumerate(SNIPPETS, start=1)
    ],
)
def test_each_python_snippet_runs_as_written(code: str, moto_endpoint: str, ddb: Any, tmp_path: Path) -> None:
    if AGENTCORE in code:
        pytest.importorskip(AGENTCORE, reason="bedrock-agentcore is installed in CI's adot row")
    create_table(ddb, "AgentStatus")
    proc = run_snippet(code, local_shell(moto_endpoint), tmp_path)
    assert "HISOtelWarning" not in proc.stderr, proc.stderr  # nothing was lost
    if "session-123" in code and "HISAgent(" in code:
        types = {r["evt_type"] for r in session_rows(ddb, "AgentStatus", "session-123")}
        assert {"START", "TOOLING", "COMPLETION", "RESULT"} <= types
    for session, expected in WRITES.items():
        if session in code:
            types = {r["evt_type"] for r in session_rows(ddb, "AgentStatus", session)}
            assert expected <= types, (session, types)


def test_the_warning_shown_for_a_missing_table_is_the_one_a_user_gets(
    moto_endpoint: str, tmp_path: Path
) -> None:
    (shown,) = re.findall(r"HISOtelWarning: (his-otel: status rows for table .*)$", README, flags=re.M)
    code = (
        "from his_otel import HISAgent, ScriptedModel\n"
        "model = ScriptedModel(['ok'])\n"
        "agent = HISAgent(status_dynamo_table_name='NoSuchTable', session_id='s', model=model)\n"
        "agent('hi')\n"
    )
    env = {**local_shell(moto_endpoint), "HIS_OTEL_SHUTDOWN_TIMEOUT_MS": "1000"}
    proc = run_snippet(code, env, tmp_path)
    assert shown.replace("AgentStatus", "NoSuchTable") in proc.stderr, proc.stderr
