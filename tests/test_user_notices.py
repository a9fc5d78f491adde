"""Losing status rows is never silent: a user's script with no logging set up hears, once, on stderr,
what went wrong and what to fix (``HISOtelWarning``), and still runs to the end."""

from __future__ import annotations

import re
from typing import Any

import pytest

from helpers import fresh_shell, run_script
from his_otel.write.table import create_table

SCRIPT = """
from his_otel import HISAgent, ScriptedModel
for i in range(3):  # three invocations: each kind of failure is still said once
    agent = HISAgent(status_dynamo_table_name=TABLE, session_id=f"s-{i}", model=ScriptedModel(["done"]))
    print(agent("hi"))
print("script finished")
"""


def quick_shell(**extra: str) -> dict[str, str]:
    """A fresh shell with short shutdown and row-age limits, so a failing run ends soon."""
    return fresh_shell(HIS_OTEL_SHUTDOWN_TIMEOUT_MS="2000", HIS_OTEL_MAX_ROW_AGE_MS="60000", **extra)


def run(table: str, env: dict[str, str]) -> Any:
    proc = run_script(f"TABLE = {table!r}\n{SCRIPT}", env, clean=True, timeout=120)
    assert proc.returncode == 0, proc.stderr  # the agent is never failed by its status rows
    assert proc.stdout.count("done") == 3 and "script finished" in proc.stdout
    return proc


def said(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "HISOtelWarning: his-otel:" in line]


@pytest.mark.parametrize(
    ("case", "env", "words"),
    [
        ("missing table", {}, ["'missing'", "ResourceNotFoundException", "his-otel create-table missing"]),
        ("wrong region", {"AWS_REGION": "eu-west-1"}, ["ResourceNotFoundException", "fix its name/region"]),
        (
            "unreachable endpoint",
            {"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9"},
            ["EndpointConnectionError", "check the endpoint"],
        ),
    ],
)
def test_failures_at_a_local_endpoint_are_said_once_with_what_to_fix(
    case: str, env: dict[str, str], words: list[str], moto_endpoint: str, ddb: Any
) -> None:
    create_table(ddb, "missing-elsewhere")  # exists in us-east-1 only
    table = "missing-elsewhere" if case == "wrong region" else "missing"
    proc = run(table, quick_shell(**{"AWS_ENDPOINT_URL_DYNAMODB": moto_endpoint, **env}))
    lines = said(proc.stderr)
    failing = [line for line in lines if "are not being written" in line]
    assert len(failing) == 1, proc.stderr  # once, not per row or per invocation
    for word in words:
        assert word in failing[0], failing[0]
    # At exit the rows still pending are named, and the wait is announced before it starts.
    waiting = r"waiting up to \d+ s more for \d+ status rows"
    assert any(re.search(waiting, line) for line in lines), proc.stderr
    assert any("were not written before shutdown" in line for line in lines), proc.stderr


def test_no_credentials_and_no_region_for_aws_itself_are_said(moto_endpoint: str) -> None:
    proc = run("AgentStatus", quick_shell(AWS_REGION="us-east-1"))
    assert any(
        "NoCredentialsError" in line and "configure AWS credentials" in line for line in said(proc.stderr)
    )
    proc = run("AgentStatus", quick_shell())
    assert any("NoRegionError" in line and "set AWS_REGION" in line for line in said(proc.stderr))


def test_a_working_table_says_nothing(moto_endpoint: str, ddb: Any) -> None:
    create_table(ddb, "works")
    proc = run("works", quick_shell(AWS_ENDPOINT_URL_DYNAMODB=moto_endpoint))
    assert proc.stderr.strip() == ""


def test_an_application_can_silence_or_raise_the_warning(moto_endpoint: str) -> None:
    env = quick_shell(AWS_ENDPOINT_URL_DYNAMODB=moto_endpoint, PYTHONWARNINGS="ignore::UserWarning")
    proc = run("missing", env)
    assert said(proc.stderr) == []


def test_the_warning_names_the_table_that_fails_when_several_are_in_use(moto_endpoint: str, ddb: Any) -> None:
    """configure() names one table (which works); an agent writes another (which does not exist):
    the warnings name the failing table, not configure()'s."""
    create_table(ddb, "works-fine")
    code = (
        "import his_otel\n"
        "his_otel.configure('works-fine')\n"
        "from his_otel import HISAgent, ScriptedModel\n"
        "model = ScriptedModel(['ok'])\n"
        "agent = HISAgent(status_dynamo_table_name='not-there', session_id='s', model=model)\n"
        "agent('hi')\n"
    )
    proc = run_script(code, quick_shell(AWS_ENDPOINT_URL_DYNAMODB=moto_endpoint), clean=True, timeout=120)
    lines = said(proc.stderr)
    failing = [line for line in lines if "are not being written" in line]
    assert len(failing) == 1 and "'not-there'" in failing[0] and "works-fine" not in failing[0], lines
    assert "his-otel create-table not-there" in failing[0]
    lost = [line for line in lines if "were not written before shutdown" in line]
    assert lost and "'not-there'" in lost[0] and "works-fine" not in lost[0], lines


@pytest.fixture
def not_dynamodb() -> Any:
    """An HTTP server on loopback that answers every request 200 with an HTML page, as Jaeger's UI
    port does."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            body = b"<html><body>jaeger</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_an_endpoint_that_answers_200_but_is_not_dynamodb_loses_nothing_in_silence(not_dynamodb: str) -> None:
    """Rows count as written only when DynamoDB said so in its own terms: an agent says the endpoint
    did not answer like DynamoDB and counts nothing written; the bridge answers "retry"; tail and
    create-table fail at once with the sentence."""
    from bridge_kit import milestone_spans, post, protobuf_body

    from helpers import his_otel
    from his_otel.bridge import Bridge

    code = (
        "import his_otel\n"
        "from his_otel import HISAgent, ScriptedModel\n"
        "HISAgent(status_dynamo_table_name='t', session_id='s', model=ScriptedModel(['done']))('hi')\n"
        "print('written', his_otel.current_handle().stats().written)\n"
    )
    proc = run_script(code, quick_shell(AWS_ENDPOINT_URL_DYNAMODB=not_dynamodb), clean=True, timeout=120)
    assert proc.returncode == 0 and "written 0" in proc.stdout, proc.stdout + proc.stderr
    failing = [line for line in said(proc.stderr) if "are not being written" in line]
    assert failing and "not like DynamoDB" in failing[0], proc.stderr

    bridge = Bridge("t", port=0, grpc_port=0, endpoint_url=not_dynamodb, write_timeout_millis=500).start()
    try:
        answer = post(f"{bridge.url}/v1/traces", protobuf_body(milestone_spans("s", 2)))
        assert answer.status == 503 and bridge.stats.rows_written == 0
    finally:
        bridge.shutdown(timeout_s=5)

    env = quick_shell()
    for args in (("tail", "s", "--table", "t"), ("create-table", "t")):
        done = his_otel(*args, "--endpoint", not_dynamodb, env=env, timeout=60)
        assert done.returncode != 0 and "did not answer like DynamoDB" in done.stderr, done.stderr


def test_a_full_queue_and_rows_dropped_at_the_age_limit_are_said_without_logging(moto_endpoint: str) -> None:
    code = (
        "import his_otel\n"
        "his_otel.configure('not-a-table', max_queue_size=3, max_row_age_millis=300)\n"
        "for i in range(10):\n"
        "    his_otel.milestone('PROGRESS', f'{i}', session_id='s')\n"
        "import time; time.sleep(3)\n"
    )
    proc = run_script(code, quick_shell(AWS_ENDPOINT_URL_DYNAMODB=moto_endpoint), clean=True, timeout=120)
    lines = said(proc.stderr)
    assert any("status queue full" in line for line in lines), proc.stderr
    assert any("were dropped: writes failed (ResourceNotFoundException)" in line for line in lines), lines
