"""The ``his-otel`` command as a new user meets it in a fresh shell: the real console script in a
subprocess, a clean environment (no AWS settings at all), real signals."""

from __future__ import annotations

import http.server
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import HIS_OTEL, fresh_shell, his_otel, new_session
from his_otel.read import session_rows
from his_otel.testing.local_dynamodb import LocalDynamoDB, free_port


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The process failed with exit code 2 and said why in one line (argparse adds its usage line)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [
        line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("usage:", " "))
    ]
    assert len(lines) == 1, proc.stderr
    assert "error:" in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bridge", "--table", "t", "--port", "99999"], "99999 is not a port number"),
        (["bridge", "--table", "t", "--grpc-port", "-1"], "-1 is not a port number"),
        (["bridge", "--table", "t", "--host", ""], "--host: must not be blank"),
        (["bridge", "--table", "t", "--drain-timeout", "-5"], "must be at least 0"),
        (["bridge", "--table", "t", "--workers", "0"], "at least 1 process"),
        (["demo", "--session-id", "   "], "--session-id: must not be blank"),
        (["demo", "--turn-delay", "-1"], "must be at least 0"),
        (["tail", "s", "--table", "t", "--interval", "0"], "must be at least 0.1"),
        (["tail", "s", "--table", "t", "--interval", "nan"], "must be at least 0.1"),
        (["create-table", " "], "must not be blank"),
        (["create-table", "t", "--wait", "-1"], "must be at least 0"),
    ],
)
def test_bad_arguments_are_one_sentence_and_exit_2(args: list[str], words: str) -> None:
    assert words in one_error(his_otel(*args, env=fresh_shell()))


def test_the_bridge_without_a_table_names_the_flag() -> None:
    line = one_error(his_otel("bridge", "--port", "0", env=fresh_shell()))
    assert "pass --table or set HIS_OTEL_TABLE" in line


@pytest.mark.parametrize("flag", ["--port", "--grpc-port"])
def test_a_port_in_use_is_named(flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--grpc-port" if flag == "--port" else "--port"
        proc = his_otel("bridge", "--table", "t", flag, str(port), other, "0", env=fresh_shell(), timeout=60)
    line = one_error(proc)
    assert f"127.0.0.1:{port}" in line and "in use" in line.lower(), line


@pytest.fixture
def not_dynamodb() -> Iterator[str]:
    """An HTTP server on loopback that is not DynamoDB (Python's file server: 501 to a POST)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("command", [["tail", "s", "--table", "t"], ["create-table", "t"]])
def test_an_endpoint_that_is_not_dynamodb_is_one_sentence(command: list[str], not_dynamodb: str) -> None:
    line = one_error(his_otel(*command, "--endpoint", not_dynamodb, env=fresh_shell()))
    assert f"{not_dynamodb} did not answer like DynamoDB (HTTP 501)" in line, line


def test_loopback_endpoints_need_no_aws_setup_and_the_demos_hint_runs_as_printed(
    moto_endpoint: str, ddb: Any
) -> None:
    """No region, no credentials: DynamoDB Local or moto on loopback takes placeholders."""
    table, session = f"first-hour-{new_session()}", "it's a session with spaces"
    created = his_otel("create-table", table, "--endpoint", moto_endpoint, env=fresh_shell())
    assert created.returncode == 0 and "created" in created.stdout, created.stderr
    demo = his_otel(
        "demo", "--endpoint", moto_endpoint, "--table", table, "--session-id", session, "--turn-delay", "0",
        env=fresh_shell(),
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    (hint,) = re.findall(r"^read them again: (.*)$", demo.stdout, flags=re.M)
    argv = shlex.split(hint)  # what the shell makes of the line as printed
    assert argv[:3] == ["his-otel", "tail", session]
    tail = subprocess.run(
        [HIS_OTEL, *argv[1:]], capture_output=True, text=True, env=fresh_shell(), timeout=60
    )
    assert tail.returncode == 0, tail.stderr
    rows = session_rows(ddb, table, session)
    assert len(rows) >= 10 and len(tail.stdout.splitlines()) == len(rows)


def test_verbose_shows_his_otels_own_activity_before_or_after_the_command(moto_endpoint: str) -> None:
    quiet = his_otel("demo", "--endpoint", moto_endpoint, "--turn-delay", "0", env=fresh_shell())
    assert "status rows batch settled" not in quiet.stderr
    for args in (["-v", "demo"], ["demo", "-v"]):
        loud = his_otel(*args, "--endpoint", moto_endpoint, "--turn-delay", "0", env=fresh_shell())
        assert loud.returncode == 0, loud.stderr
        assert "status rows batch settled" in loud.stderr


def test_the_demo_says_when_its_trace_was_not_sent() -> None:
    closed = free_port()
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    proc = his_otel("demo", "--turn-delay", "0", env=fresh_shell(**otlp))
    assert proc.returncode == 0, proc.stderr  # the rows are what the demo is about
    assert f"trace NOT sent over OTLP to http://127.0.0.1:{closed}" in proc.stdout
    assert "trace sent over OTLP" not in proc.stdout


def test_ctrl_c_during_the_demo_cancels_the_run_and_leaves_quietly() -> None:
    """A terminal's Ctrl-C signals the whole foreground process group: the demo and its DynamoDB."""
    proc = subprocess.Popen(
        [HIS_OTEL, "demo", "--turn-delay", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=fresh_shell(),
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait for the run to be under way
        lines.append(line)
        if "MODEL_INVOCATION" in line:
            break
    (endpoint,) = re.findall(r"embedded DynamoDB \(moto server\) at (\S+)", "".join(lines))
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "his-otel: interrupted"
    # The cancellation is a row, written before the embedded DynamoDB stopped.
    assert "ERROR" in out and "Invocation cancelled" in out, out
    assert "RESULT" in out and "interrupted (Ctrl-C)" in out
    port = int(endpoint.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # no orphaned server


def test_create_table_waits_for_a_dynamodb_that_is_still_starting() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [HIS_OTEL, "create-table", "later", "--endpoint", f"http://127.0.0.1:{port}", "--wait", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=fresh_shell(),
    )
    time.sleep(1)  # not a timing assertion: only lets the command find nothing there first
    assert proc.poll() is None
    with LocalDynamoDB(port=port) as endpoint:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert f"table later created at {endpoint}" in out


def test_create_table_without_wait_fails_at_once_on_nothing_there() -> None:
    line = one_error(
        his_otel("create-table", "t", "--endpoint", f"http://127.0.0.1:{free_port()}", env=fresh_shell())
    )
    assert "cannot reach DynamoDB" in line
