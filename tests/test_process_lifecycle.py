"""Rows survive the ways real processes end and split: SIGTERM under a server, ignored or handled by
the app or by nobody, ``configure()`` off the main thread, ``fork``, multiprocessing workers.

Each case runs a real program in a subprocess (its own global TracerProvider), sends real signals,
forks for real, and reads the rows moto's server received.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from fault_proxy import FaultProxy
from helpers import SERVER_APP_PRELUDE, TOOL_RUN_ROWS, new_session, run_script, wait_for, wait_listening
from his_otel.read import session_rows
from his_otel.testing.local_dynamodb import free_port

PRELUDE = """
import json, logging, os, signal, sys, threading, time
from opentelemetry import trace
import his_otel
T, S = os.environ["T"], os.environ["S"]
tracer = trace.get_tracer("test")

def burst(tag, n):
    with tracer.start_as_current_span(tag):
        for i in range(n):
            his_otel.milestone("PROGRESS", f"{tag} {i}", session_id=f"{S}-{tag}")
"""


def script(body: str) -> str:
    return PRELUDE + textwrap.dedent(body)


def messages(ddb: Any, table: str, session: str) -> list[str]:
    return [r["evt_message"] for r in session_rows(ddb, table, session)]


def test_sigterm_ignored_by_the_app_never_stops_his_otel(ddb: Any, table: str) -> None:
    session = new_session()
    proc = run_script(
        script("""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        handle = his_otel.configure(T, schedule_delay_millis=0)
        burst("x", 3)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        with tracer.start_as_current_span("after"):
            for i in range(3):
                his_otel.milestone("PROGRESS", f"after {i}", session_id=f"{S}-x")
        assert handle.force_flush(10_000)
        """),
        env={"T": table, "S": session},
    )
    assert proc.returncode == 0, proc.stderr
    assert messages(ddb, table, f"{session}-x") == [f"x {i}" for i in range(3)] + [
        f"after {i}" for i in range(3)
    ]


def test_an_apps_own_sigterm_handler_drains_while_rows_keep_being_written(ddb: Any, table: str) -> None:
    session = new_session()
    proc = run_script(
        script("""
        draining = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: draining.set())  # the app's graceful drain
        his_otel.configure(T, schedule_delay_millis=0)
        burst("x", 3)
        os.kill(os.getpid(), signal.SIGTERM)
        assert draining.wait(10)
        # In-flight work finishes after the signal; its milestones must still become rows.
        with tracer.start_as_current_span("drain"):
            for i in range(3):
                his_otel.milestone("PROGRESS", f"drain {i}", session_id=f"{S}-x")
        sys.exit(0)  # the app exits when its drain is done; atexit writes what is pending
        """),
        env={"T": table, "S": session},
    )
    assert proc.returncode == 0, proc.stderr
    assert messages(ddb, table, f"{session}-x") == [f"x {i}" for i in range(3)] + [
        f"drain {i}" for i in range(3)
    ]


def test_sigterm_nobody_handles_writes_pending_rows_then_kills_the_process(ddb: Any, table: str) -> None:
    session = new_session()
    proc = run_script(
        script("""
        # A minute of batching delay: only a flush on SIGTERM can write these before the process dies.
        handle = his_otel.configure(T, schedule_delay_millis=60_000)
        burst("x", 5)
        print("queued", handle.stats().queued, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        print("survived", flush=True)
        """),
        env={"T": table, "S": session},
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr  # it died of SIGTERM, as it would have
    assert "queued 5" in proc.stdout and "survived" not in proc.stdout
    assert messages(ddb, table, f"{session}-x") == [f"x {i}" for i in range(5)]


def test_sigterm_while_the_main_thread_holds_the_pipelines_lock_still_writes_and_dies(
    ddb: Any, table: str
) -> None:
    """A signal handler runs on the main thread between two bytecodes, maybe inside his-otel's own
    critical section (a Pool's SIGTERM reached a worker in the middle of its exit flush: CI hung).
    The lock is taken here by hand because a signal cannot be aimed at that instant reliably."""
    session = new_session()
    proc = run_script(
        script("""
        handle = his_otel.configure(T, schedule_delay_millis=60_000)
        burst("x", 5)
        with handle.processor._cond:  # what the main thread holds inside submit() or shutdown()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs in here
            print("released", flush=True)
        time.sleep(30)
        print("survived", flush=True)
        """),
        env={"T": table, "S": session},
        timeout=60,
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "released" in proc.stdout and "survived" not in proc.stdout
    assert messages(ddb, table, f"{session}-x") == [f"x {i}" for i in range(5)]


def test_sigterm_nobody_handles_writes_every_pipelines_pending_rows(ddb: Any, table: str) -> None:
    """Two pipelines in one process (the app's on the global provider, a tenant's on its own), each
    holding rows for a minute: one SIGTERM writes both pipelines' rows, whichever configured first."""
    session = new_session()
    proc = run_script(
        script("""
        from opentelemetry.sdk.trace import TracerProvider
        handle = his_otel.configure(T, schedule_delay_millis=60_000)
        tenant = TracerProvider()
        his_otel.configure(T, tracer_provider=tenant, schedule_delay_millis=60_000)
        burst("app", 5)
        with tenant.get_tracer("tenant").start_as_current_span("tenant work"):
            for i in range(5):
                his_otel.milestone("PROGRESS", f"tenant {i}", session_id=f"{S}-tenant")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        print("survived", flush=True)
        """),
        env={"T": table, "S": session},
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert messages(ddb, table, f"{session}-app") == [f"app {i}" for i in range(5)]
    assert messages(ddb, table, f"{session}-tenant") == [f"tenant {i}" for i in range(5)]


def test_configure_off_the_main_thread_is_said_on_stderr_without_any_logging_set_up(
    ddb: Any, table: str
) -> None:
    session = new_session()
    proc = run_script(
        script("""
        worker = threading.Thread(target=lambda: his_otel.configure(T, schedule_delay_millis=60_000))
        worker.start(); worker.join()
        burst("x", 3)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        """),
        env={"T": table, "S": session},
    )
    assert proc.returncode == -signal.SIGTERM
    # The rows are lost (no handler could be installed), but not in silence.
    assert "HISOtelWarning" in proc.stderr and "configured off the main thread" in proc.stderr


def test_configure_off_the_main_thread_says_so_and_the_next_main_thread_call_installs_the_flush(
    ddb: Any, table: str
) -> None:
    session = new_session()
    proc = run_script(
        script("""
        logging.basicConfig(level=logging.WARNING)
        worker = threading.Thread(target=lambda: his_otel.configure(T, schedule_delay_millis=60_000))
        worker.start(); worker.join()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a worker thread cannot set it
        burst("x", 5)
        his_otel.HISAgent(T, S, model=his_otel.ScriptedModel(["ok"]))  # his-otel runs on the main thread
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        print("survived", flush=True)
        """),
        env={"T": table, "S": session},
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "configured off the main thread and SIGTERM has no handler" in proc.stderr
    assert messages(ddb, table, f"{session}-x") == [f"x {i}" for i in range(5)]


UVICORN_APP = (
    SERVER_APP_PRELUDE
    + """

async def app(scope, receive, send):
    # A bare ASGI app: the request runs a HISAgent on uvicorn's event loop.
    assert scope["type"] == "http"
    session = scope["path"].strip("/")
    model = ScriptedModel([ToolCall("slow_step", {"session": session}), "all done"])
    agent = HISAgent(os.environ["T"], session, model=model, tools=[slow_step])
    await agent.invoke_async("go")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""
)


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_uvicorn_sigterm_with_a_request_in_flight_loses_no_row(ddb: Any, table: str, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(UVICORN_APP)
    marks = tmp_path / "marks"
    marks.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
        env={**os.environ, "T": table, "MARKS": str(marks)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port, server)
        session = new_session()
        answers: list[tuple[int, bytes]] = []
        request = threading.Thread(target=lambda: answers.append(_get(port, f"/{session}")))
        request.start()
        wait_for(lambda: any(marks.iterdir()), timeout_s=60)
        server.send_signal(signal.SIGTERM)  # uvicorn starts its graceful drain
        request.join(60)
        _, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert answers == [(200, b"ok")], stderr
    # uvicorn re-raises SIGTERM with the default action once drained: the process dies right after
    # the response. Every row of the request, the ones emitted after the signal too, is there.
    assert [r["evt_type"] for r in session_rows(ddb, table, session)] == TOOL_RUN_ROWS, stderr


def test_the_exporter_on_its_own_is_fork_safe_too(ddb: Any, table: str) -> None:
    """``DynamoDBSpanExporter`` under the SDK's BatchSpanProcessor (no HISSpanProcessor), as the README
    allows: a forked child gets its own connections and counts, and parent and child each write
    exactly their own rows at once."""
    session = new_session()
    proc = run_script(
        script("""
        import uuid
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        exporter = his_otel.DynamoDBSpanExporter(T)
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=20))
        spans = provider.get_tracer("t")
        def emit(tag, n):
            for i in range(n):
                with spans.start_as_current_span(f"{tag} {i}") as span:
                    attrs = {"his.session_id": f"{S}-{tag}", "his.event_id": str(uuid.uuid4())}
                    attrs.update({"his.evt_type": "PROGRESS", "his.evt_message": f"{tag} {i}"})
                    span.add_event("his.milestone", attrs)
        emit("before", 3)
        provider.force_flush()
        pid = os.fork()
        emit("child" if pid == 0 else "parent", 40)
        provider.force_flush()
        if pid == 0:
            print(json.dumps({"child": exporter.rows_written}), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({"parent": exporter.rows_written}), flush=True)
        """),
        env={"T": table, "S": session},
    )
    assert proc.returncode == 0, proc.stderr
    counts = {k: v for line in proc.stdout.splitlines() for k, v in json.loads(line).items()}
    assert counts == {"child": 40, "parent": 43}
    for tag, n in (("before", 3), ("child", 40), ("parent", 40)):
        assert len(messages(ddb, table, f"{session}-{tag}")) == n


def test_a_forked_child_starts_clean_and_parent_and_child_each_write_their_own_rows(
    ddb: Any, table: str, proxy: FaultProxy
) -> None:
    session = new_session()
    proc = run_script(
        script("""
        handle = his_otel.configure(T, endpoint_url=os.environ["PROXY"], schedule_delay_millis=0)
        burst("before", 5)
        assert handle.force_flush(10_000)  # a keep-alive connection now sits in the client's pool
        pid = os.fork()
        me = "child" if pid == 0 else "parent"
        for round in range(4):  # both write at once, many small batches
            burst(f"{me}{round}", 50)
            ok = handle.force_flush(30_000)
        stats = handle.stats()
        report = {"me": me, "ok": ok, "written": stats.written, "submitted": stats.submitted}
        if pid == 0:
            print(json.dumps(report), flush=True)
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({**report, "child_status": status}), flush=True)
        """),
        env={"T": table, "S": session, "PROXY": proxy.endpoint},
    )
    assert proc.returncode == 0, proc.stderr
    reports = {r["me"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert reports["parent"]["child_status"] == 0
    # The child counts only its own rows: none of the parent's queue or counters came along.
    assert reports["child"] == {"me": "child", "ok": True, "written": 200, "submitted": 200}
    assert reports["parent"] == {**reports["parent"], "ok": True, "written": 205, "submitted": 205}
    for tag, n in [("before", 5)] + [(f"{who}{r}", 50) for who in ("parent", "child") for r in range(4)]:
        assert messages(ddb, table, f"{session}-{tag}") == [f"{tag} {i}" for i in range(n)]
    # What each process counted as written, DynamoDB received, each row exactly once.
    puts = [count for (t, s, _), count in proxy.counters.puts.items() if s.startswith(session)]
    assert len(puts) == 405 and set(puts) == {1}


def test_multiprocessing_workers_write_their_rows_before_they_exit(ddb: Any, table: str) -> None:
    session = new_session()
    proc = run_script(
        script("""
        import multiprocessing as mp
        # A minute of batching delay: rows are written only if the worker's exit writes them.
        his_otel.configure(T, schedule_delay_millis=60_000)

        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            # A Process leaves through os._exit: no atexit.
            p = ctx.Process(target=burst, args=("proc", 5)); p.start(); p.join()
            assert p.exitcode == 0, p.exitcode
            # A Pool closed and joined: workers end normally (os._exit too).
            pool = ctx.Pool(2)
            pool.starmap(burst, [("closed0", 5), ("closed1", 5)])
            pool.close(); pool.join()
            # A Pool used as a context manager: its exit terminates the workers with SIGTERM.
            with ctx.Pool(2) as pool:
                pool.starmap(burst, [("with0", 5), ("with1", 5), ("with2", 5)])
            print("done", flush=True)
        """),
        env={"T": table, "S": session},
    )
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr
    for tag in ("proc", "closed0", "closed1", "with0", "with1", "with2"):
        assert messages(ddb, table, f"{session}-{tag}") == [f"{tag} {i}" for i in range(5)], tag


GUNICORN_APP = (
    SERVER_APP_PRELUDE
    + """
# Configured at import in the master (--preload): the workers inherit it across the fork.
his_otel.configure(os.environ["T"])


def app(environ, start_response):
    session = environ["PATH_INFO"].strip("/")
    model = ScriptedModel([ToolCall("slow_step", {"session": session}), "all done"])
    HISAgent(os.environ["T"], session, model=model, tools=[slow_step])("go")
    # Outside any invocation, after the answer is ready: only the worker's exit can write it.
    milestone("PROGRESS", "request served", session_id=session)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""
)


def test_gunicorn_preforked_workers_write_every_row_through_a_graceful_sigterm(
    ddb: Any, table: str, tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text(GUNICORN_APP)
    marks = tmp_path / "marks"
    marks.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "--graceful-timeout", "60", "app:app"],
        cwd=tmp_path,
        # A minute of batching delay: rows are written by the invocation's end and the worker's exit.
        env={**os.environ, "T": table, "MARKS": str(marks), "HIS_OTEL_SCHEDULE_DELAY_MS": "60000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    sessions = [new_session(), new_session()]
    answers: dict[str, tuple[int, bytes]] = {}
    try:
        wait_listening(port, server)
        calls = [
            threading.Thread(target=lambda s=s: answers.update({s: _get(port, f"/{s}")})) for s in sessions
        ]
        for call in calls:
            call.start()
        wait_for(lambda: len(list(marks.iterdir())) == 2, timeout_s=60)  # one request in each worker
        server.send_signal(signal.SIGTERM)  # gunicorn's graceful stop: workers finish, then exit
        for call in calls:
            call.join(120)
        _, stderr = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    for session in sessions:
        assert answers[session] == (200, b"ok"), stderr
        rows = session_rows(ddb, table, session)
        assert [r["evt_type"] for r in rows] == [*TOOL_RUN_ROWS, "PROGRESS"], stderr
        assert rows[-1]["evt_message"] == "request served"


def test_an_invocations_rows_are_written_when_it_returns(ddb: Any, table: str) -> None:
    """The end of each invocation waits for its rows: with a minute of batching delay and no flush,
    every row of the run is in DynamoDB the moment ``agent(...)`` returns (what a server's response,
    or a SIGTERM right after it, relies on), and what is emitted outside an invocation is not."""
    session = new_session()
    proc = run_script(
        script("""
        from his_otel import HISAgent, ScriptedModel
        from his_otel.read import session_rows
        import boto3
        his_otel.configure(T, schedule_delay_millis=60_000)
        HISAgent(T, S, model=ScriptedModel(["done"]))("hi")
        client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL_DYNAMODB"])
        print(json.dumps([r["evt_type"] for r in session_rows(client, T, S)]), flush=True)
        os._exit(0)  # no exit flush: only what the invocation's end wrote is there
        """),
        env={"T": table, "S": session},
    )
    assert proc.returncode == 0, proc.stderr
    written = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"START", "COMPLETION", "AGENT_STATS", "RESULT"} <= set(written), written
