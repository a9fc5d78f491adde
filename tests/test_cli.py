"""The his-otel command: the demo end to end, create-table, tail, and its error messages."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.trace import INVALID_SPAN

from helpers import fresh_shell, his_otel, new_session, run_script
from his_otel import milestone
from his_otel.cli import main
from his_otel.read import session_rows
from his_otel.write.table import create_table

EXPECTED = ["START", "MODEL_INVOCATION", "TOOLING", "COMPLETION", "EVENT_LOOP", "AGENT_STATS", "RESULT"]


def test_demo_on_the_embedded_dynamodb_shows_every_lifecycle_row() -> None:
    proc = his_otel("demo", "--turn-delay", "0", env=fresh_shell())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "embedded DynamoDB (moto server)" in out
    timeline = [line for line in out.splitlines() if re.match(r"^\d\d:\d\d:\d\d\.\d{3}  ", line)]
    for evt_type in EXPECTED:
        assert any(f"  {evt_type} " in line for line in timeline), evt_type
    # Each row shows its trace id, and it is the one trace of the run.
    trace_ids = {m.group(1) for line in timeline if (m := re.search(r"trace=([0-9a-f]{12})", line))}
    assert len(trace_ids) == 1
    (full,) = re.findall(r"trace id: ([0-9a-f]{32})", out)
    assert full.startswith(trace_ids.pop())


def test_demo_uses_a_configured_endpoint(ddb: Any, moto_endpoint: str) -> None:
    session = new_session()
    proc = his_otel("demo", "--turn-delay", "0", "--table", "demo-table", "--session-id", session)
    assert proc.returncode == 0, proc.stderr
    assert "embedded" not in proc.stdout
    from his_otel.read import session_rows

    assert len(session_rows(ddb, "demo-table", session)) >= len(EXPECTED)


SCENARIO_ROWS = {
    # The orchestration's own rows, in order (its nodes' rows interleave under their own agent ids).
    "swarm": (
        "support-swarm",
        "MULTIAGENT_START NODE_START NODE_COMPLETION HANDOFF NODE_START NODE_COMPLETION HANDOFF"
        " NODE_START NODE_COMPLETION MULTIAGENT_COMPLETION MULTIAGENT_STATS",
    ),
    "graph": (
        "refund-graph",
        "MULTIAGENT_START NODE_START NODE_START NODE_COMPLETION NODE_COMPLETION NODE_START"
        " NODE_COMPLETION NODE_START NODE_COMPLETION MULTIAGENT_COMPLETION MULTIAGENT_STATS",
    ),
    "bidi": (
        "voice-agent",
        "SESSION_START RESPONSE_COMPLETION TOOLING RESPONSE_COMPLETION BARGE_IN CONNECTION_RESTART"
        " CONNECTION_RESTARTED RESPONSE_COMPLETION SESSION_END AGENT_STATS",
    ),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIO_ROWS))
def test_each_demo_scenario_writes_its_rows_in_one_trace(scenario: str, ddb: Any, moto_endpoint: str) -> None:
    session = new_session()
    args = ("--turn-delay", "0", "--table", "demo-table", "--session-id", session)
    proc = his_otel("demo", "--scenario", scenario, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = session_rows(ddb, "demo-table", session)
    agent_id, expected = SCENARIO_ROWS[scenario]
    assert [r["evt_type"] for r in rows if r["agent_id"] == agent_id] == expected.split()
    (trace,) = {r["trace_id"] for r in rows}
    assert f"trace id: {trace}" in proc.stdout
    if scenario != "bidi":  # every node wrote its own agent rows too
        nodes = {r["agent_id"] for r in rows if r["evt_type"] == "START"}
        assert len(nodes) == (3 if scenario == "swarm" else 4)


def test_create_table_then_tail(
    ddb: Any, moto_endpoint: str, his: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"cli-{new_session()}"
    assert main(["create-table", name]) == 0
    assert f"table {name} created" in capsys.readouterr().out
    assert main(["create-table", name]) == 0
    assert "already exists" in capsys.readouterr().out
    session = new_session()
    for i in range(3):
        milestone("PROGRESS", f"step {i}", span=INVALID_SPAN, session_id=session, agent_id="cli", table=name)
    assert his.force_flush(10_000)
    assert main(["tail", session, "--table", name]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("cli: ")[1] for line in lines] == ["step 0", "step 1", "step 2"]
    assert main(["tail", session, "--table", name, "--json"]) == 0
    assert '"evt_message": "step 2"' in capsys.readouterr().out


def test_tail_follow_prints_new_rows_as_they_land(ddb: Any, moto_endpoint: str, his: Any) -> None:
    name = f"follow-{new_session()}"
    create_table(ddb, name)
    session = new_session()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "his_otel.cli",
            "tail",
            session,
            "--table",
            name,
            "-f",
            "--interval",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for i in range(3):
            milestone("PROGRESS", f"live {i}", span=INVALID_SPAN, session_id=session, table=name)
            assert his.force_flush(10_000)
            assert proc.stdout is not None
            assert proc.stdout.readline().rstrip().endswith(f"live {i}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tail_on_a_missing_table_says_so(moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "s", "--table", "no-such-table"]) == 2
    err = capsys.readouterr().err
    assert "table not found" in err and "his-otel create-table" in err


def test_tail_without_a_table_says_how_to_name_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HIS_OTEL_TABLE", raising=False)
    assert main(["tail", "s"]) == 2
    assert "pass --table or set HIS_OTEL_TABLE" in capsys.readouterr().err


def test_no_credentials_is_a_clear_error() -> None:
    env = fresh_shell()
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    # Not loopback (a loopback endpoint gets placeholder credentials); the request is signed, and
    # so refused, before any connection is tried.
    proc = his_otel("tail", "s", "--table", "t", "--endpoint", "http://dynamodb.example.invalid", env=env)
    assert proc.returncode == 2
    assert "no AWS credentials found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_region_is_a_clear_error() -> None:
    proc = his_otel("create-table", "t", env=fresh_shell())
    assert proc.returncode == 2
    assert "no AWS region configured" in proc.stderr


def test_unreachable_endpoint_is_a_clear_error() -> None:
    env = fresh_shell()
    env.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    proc = his_otel("create-table", "t", "--endpoint", "http://127.0.0.1:9", env=env)
    assert proc.returncode == 2
    assert "cannot reach DynamoDB at http://127.0.0.1:9" in proc.stderr


def test_bad_arguments_exit_2_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["tail"])
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--turn-delay", "soon"])


def region_only_env(moto_endpoint: str) -> dict[str, str]:
    """What Lambda and AgentCore give a process: AWS_REGION, and no AWS_DEFAULT_REGION."""
    env = fresh_shell()
    env.update({"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    env["AWS_ENDPOINT_URL_DYNAMODB"] = moto_endpoint
    return env


def test_aws_region_alone_is_enough_for_the_cli(moto_endpoint: str, ddb: Any) -> None:
    table = f"region-{new_session()}"
    proc = his_otel("create-table", table, env=region_only_env(moto_endpoint))
    assert proc.returncode == 0, proc.stderr
    assert ddb.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE"


def test_aws_region_alone_is_enough_for_the_library(moto_endpoint: str, table: str, ddb: Any) -> None:
    session = new_session()
    proc = run_script(
        f"""
from opentelemetry import trace
import his_otel
handle = his_otel.configure({table!r})
with trace.get_tracer("t").start_as_current_span("work"):
    his_otel.milestone("PROGRESS", "from a Lambda", session_id={session!r})
assert handle.force_flush(10_000), handle.stats()
""",
        env=region_only_env(moto_endpoint),
        clean=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["evt_message"] for r in session_rows(ddb, table, session)] == ["from a Lambda"]


def test_small_mistakes_get_one_clear_sentence(table: str, moto_endpoint: str, ddb: Any) -> None:
    """An endpoint without its scheme, one port for both protocols, a pipe closed early: each a
    sentence (or a quiet end), never a traceback."""
    from helpers import his_otel, new_session, run_script

    bare = his_otel("tail", "s", "--table", table, "--endpoint", "localhost:8000", timeout=60)
    assert bare.returncode == 2 and "has no scheme: write http://localhost:8000" in bare.stderr, bare.stderr
    same = his_otel("bridge", "--table", table, "--port", "45999", "--grpc-port", "45999", timeout=60)
    assert (
        same.returncode != 0 and "cannot share port 45999" in same.stderr and "Traceback" not in same.stderr
    )
    session = new_session()
    for i in range(300):
        ddb.put_item(TableName=table, Item={"session_id": {"S": session}, "event_id": {"S": f"{i:05d}"},
                                            "evt_type": {"S": "PROGRESS"}})  # fmt: skip
    import subprocess
    import sys
    from pathlib import Path

    tail = str(Path(sys.executable).with_name("his-otel"))
    piped = subprocess.run(
        f"{tail} tail {session} --table {table} --endpoint {moto_endpoint} | head -n 1",
        shell=True, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert piped.stdout.count("\n") == 1 and "BrokenPipeError" not in piped.stderr, piped.stderr
    disabled = run_script(
        "from his_otel import HISAgent, ScriptedModel\n"
        f"HISAgent({table!r}, 's', model=ScriptedModel(['ok']))('hi')\n",
        {"HIS_OTEL_DISABLED": "yes"},
    )
    assert "HIS_OTEL_DISABLED is set" in disabled.stderr, disabled.stderr
