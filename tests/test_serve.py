"""``his-otel serve``: the cursor endpoint, the AG-UI session stream (replay, live, resume through a
restart) and one reader per session, against moto's server through a request-counting proxy; and
the command's conventions (token, loopback, one sentence per start-up error, SIGTERM)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from ag_ui.core import Event, EventType
from pydantic import TypeAdapter

from fault_proxy import FaultProxy
from helpers import HIS_OTEL, fresh_shell, new_session, put_row, uuid7_at, wait_for, wait_listening
from his_otel import Handle
from his_otel.read import session_rows
from his_otel.scenarios import BUILDERS
from his_otel.serve import StatusServer
from his_otel.testing.local_dynamodb import free_port
from his_otel.write.table import make_client

EVENTS = TypeAdapter(Event)


@pytest.fixture
def serve(proxy: FaultProxy, table: str) -> Iterator[Any]:
    """serve(**kwargs) -> a started StatusServer on a free loopback port, reading ``table`` through
    the proxy (which counts each Query DynamoDB receives)."""
    made: list[StatusServer] = []

    def start(**kwargs: Any) -> StatusServer:
        kwargs.setdefault("poll_ms", 50)
        server = StatusServer(table, host="127.0.0.1", port=0, endpoint_url=proxy.endpoint, **kwargs).start()
        made.append(server)
        return server

    yield start
    for server in made:
        server.shutdown()


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class SSEClient:
    """An AG-UI client over a real socket: reads ``id:``/``data:`` frames and parses each event with
    ag-ui-protocol's own models."""

    def __init__(self, server: StatusServer, session: str, last_event_id: str | None = None) -> None:
        host, port = server.address
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", f"/sessions/{session}/events", headers=headers)
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()
        assert self.response.getheader("Content-Type", "").startswith("text/event-stream")
        self.last_id: str | None = None
        self.events: list[Any] = []
        self.rows: list[str] = []
        """The row of each event that carried an id: each row once, when it arrived whole."""

    def read_until(self, done: Any) -> list[Any]:
        """Read events until ``done(events)`` after a row's last event (the one with an id, as a
        browser keeps it for Last-Event-ID); every event is validated by the AG-UI models."""
        ident = None
        if self.last_id and done(self.events):
            return self.events
        while True:
            line = self.response.readline().decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                self.events.append(EVENTS.validate_json(line[6:]))
            elif line == "" and ident is not None:
                self.last_id, ident = ident, None
                self.rows.append(self.events[-1].raw_event["event_id"])
                if done(self.events):
                    break
        return self.events

    def close(self) -> None:
        self.conn.close()


def row_ids(events: list[Any]) -> list[str]:
    """The rows the events came from, each once, in the order they arrived."""
    seen: dict[str, None] = {}
    for event in events:
        seen.setdefault(event.raw_event["event_id"], None)
    return list(seen)


def finished(events: list[Any]) -> bool:
    return any(e.type in (EventType.RUN_FINISHED, EventType.RUN_ERROR) for e in events)


def run_scenario(name: str, table: str, session: str, his: Handle, delay: float = 0.0) -> None:
    BUILDERS[name](table, session, delay).run()
    assert his.force_flush(10_000)


def test_rows_endpoint_returns_unseen_rows_and_a_small_cursor(
    serve: Any, table: str, his: Handle, ddb: Any
) -> None:
    server = serve()
    session = new_session()
    run_scenario("agent", table, session, his)
    expected = [r["event_id"] for r in session_rows(ddb, table, session)]
    status, first = get_json(f"{server.url}/sessions/{session}/rows")
    assert status == 200
    ids = [r["event_id"] for r in first["rows"]]
    assert ids == expected  # a new session's first read: everything so far, in order
    assert len(first["cursor"]) < 500
    status, again = get_json(f"{server.url}/sessions/{session}/rows?cursor={first['cursor']}")
    assert (status, again["rows"]) == (200, [])
    run_scenario("agent", table, session, his)  # a second invocation in the same session
    # The answers are as of the service's last read of the session (at most one poll old).
    more: list[str] = []
    cursor = again["cursor"]
    while len(more) < len(ids):
        status, page = get_json(f"{server.url}/sessions/{session}/rows?cursor={cursor}")
        assert status == 200
        more += [r["event_id"] for r in page["rows"]]
        cursor = page["cursor"]
    assert len(more) == len(set(more)) == len(ids) and not set(more) & set(ids)
    assert len(cursor) == len(first["cursor"])  # the window holds twice the rows now
    status, bad = get_json(f"{server.url}/sessions/{session}/rows?cursor=not-a-cursor")
    assert status == 400 and "not a session cursor token" in bad["error"]
    status, bad = get_json(f"{server.url}/sessions/{new_session()}/rows?cursor={cursor}")
    assert status == 400 and "made for another session" in bad["error"]


def test_the_stream_replays_the_session_then_streams_rows_as_they_land(
    serve: Any, table: str, his: Handle
) -> None:
    server = serve()
    session = new_session()
    run_scenario("agent", table, session, his)  # a finished invocation: replayed
    client = SSEClient(server, session)
    replay = list(client.read_until(finished))
    types = [e.type for e in replay]
    assert types[0] == EventType.RUN_STARTED and types[-1] == EventType.RUN_FINISHED
    starts = [e for e in replay if e.type == EventType.TOOL_CALL_START]
    ends = {e.tool_call_id: e for e in replay if e.type == EventType.TOOL_CALL_END}
    assert [e.tool_call_name for e in starts] == ["search_knowledge_base", "get_order", "get_shipping_status"]
    assert set(ends) == {e.tool_call_id for e in starts}
    assert all(ends[s.tool_call_id].metadata["duration_ms"] >= 0 for s in starts)
    for event in replay:  # every event names its row
        assert {"event_id", "trace_id", "agent_id"} <= set(event.metadata)
        assert event.metadata["event_id"] == event.raw_event["event_id"]
    assert replay[0].thread_id == session and replay[-1].run_id == replay[0].run_id
    # A second invocation while the client listens: its rows arrive live, each once.
    threading.Thread(target=run_scenario, args=("agent", table, session, his, 0.05)).start()
    live = client.read_until(lambda events: sum(e.type == EventType.RUN_FINISHED for e in events) == 2)
    client.close()
    ids = row_ids(live)
    assert len(ids) == len(set(ids)) == 2 * len(row_ids(replay))


def test_last_event_id_resumes_without_a_gap_or_a_repeat_even_after_a_restart(
    serve: Any, table: str, his: Handle
) -> None:
    session = new_session()
    run_scenario("swarm", table, session, his)
    server = serve()
    whole = SSEClient(server, session).read_until(finished)
    expected = row_ids(whole)
    # A client that read a third of the rows, then lost its connection.
    partial = SSEClient(server, session)
    partial.read_until(lambda events: len(row_ids(events)) >= len(expected) // 3)
    delivered = row_ids(partial.events)
    token = partial.last_id
    partial.close()
    # The service restarts (a new process would hold nothing more than this one): same table.
    server.shutdown()
    restarted = serve()
    resumed = SSEClient(restarted, session, last_event_id=token)
    rest = row_ids(resumed.read_until(finished))
    resumed.close()
    assert delivered + rest == expected  # no gap, no repeat, same order


def test_many_viewers_of_a_session_cost_one_query_per_interval(
    serve: Any, table: str, his: Handle, proxy: FaultProxy
) -> None:
    server = serve(poll_ms=100)
    session = new_session()
    run_scenario("agent", table, session, his)
    clients = [SSEClient(server, session) for _ in range(10)]
    for client in clients:
        client.read_until(finished)
    queries_before = proxy.counters.operations.get("Query", 0)
    polls_before = server.hub.stats().polls
    wait_for(lambda: server.hub.stats().polls >= polls_before + 20, timeout_s=60)
    queries = proxy.counters.operations.get("Query", 0) - queries_before
    polls = server.hub.stats().polls - polls_before
    for client in clients:
        client.close()
    # Ten viewers, one reader: one Query per poll (a poll in flight at either end: +-1).
    assert polls - 1 <= queries <= polls + 1
    stats = server.hub.stats()
    assert stats.sessions == 1


def test_a_token_guards_every_route_but_health(serve: Any, table: str, his: Handle) -> None:
    server = serve(token="s3cret")
    session = new_session()
    run_scenario("agent", table, session, his)
    assert get_json(f"{server.url}/health")[0] == 200
    for path in ("rows", "events", ""):
        url = f"{server.url}/sessions/{session}/{path}".rstrip("/")
        assert get_json(url)[0] == 401
        status, _ = get_json(url, {"Authorization": "Bearer wrong"})
        assert status == 401
    status, body = get_json(f"{server.url}/sessions/{session}/rows", {"Authorization": "Bearer s3cret"})
    assert status == 200 and body["rows"]
    # A browser cannot send headers: the page and its stream take ?access_token=.
    status, body = get_json(f"{server.url}/sessions/{session}/rows?access_token=s3cret")
    assert status == 200 and body["rows"]
    with urllib.request.urlopen(f"{server.url}/sessions/{session}?access_token=s3cret", timeout=30) as page:
        assert b"EventSource" in page.read()


def test_the_serve_command_refuses_strangers_without_a_token_in_one_sentence() -> None:
    proc = subprocess.run(
        [HIS_OTEL, "serve", "--table", "t", "--host", "0.0.0.0", "--endpoint", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("his-otel: error: refusing to listen on 0.0.0.0 without a token")
    assert "Traceback" not in proc.stderr and "HIS_OTEL_SERVE_TOKEN" in proc.stderr


def test_the_serve_command_without_a_table_says_so_in_one_sentence() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HIS_OTEL_TABLE"}
    proc = subprocess.run([HIS_OTEL, "serve"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "his-otel: error: his-otel serve needs a table: pass --table or set HIS_OTEL_TABLE"
    )


def test_the_serve_command_names_a_port_in_use() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        proc = subprocess.run(
            [HIS_OTEL, "serve", "--table", "t", "--port", str(busy), "--endpoint", "http://127.0.0.1:9"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{busy}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_serve_command_ends_open_streams_and_exits_cleanly_on_sigterm(
    moto_endpoint: str, table: str, his: Handle
) -> None:
    session = new_session()
    run_scenario("agent", table, session, his)
    port = free_port()
    proc = subprocess.Popen(
        [HIS_OTEL, "serve", "--table", table, "--port", str(port), "--endpoint", moto_endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/sessions/{session}/events")
        response = conn.getresponse()
        assert response.status == 200
        while b"RUN_FINISHED" not in response.readline():  # the replay, then an idle open stream
            pass
        proc.send_signal(signal.SIGTERM)
        assert response.read().strip() in (b"", b": keep-alive")  # the server ended the stream
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "his-otel serve stopped" in out


def test_the_rows_of_every_scenario_map_to_a_well_formed_agui_run(table: str, his: Handle, ddb: Any) -> None:
    """Runs open and close once each, nothing follows their end, steps and tool calls are balanced:
    the rules AG-UI clients check (a run's events between RUN_STARTED and its end)."""
    from his_otel.agui import agui_events
    from his_otel.read import session_rows

    scenarios = (
        ("agent", set()),
        ("swarm", {"triage", "refunds", "notifier"}),
        ("graph", {"order-lookup", "shipping-lookup", "policy", "decide"}),
        ("bidi", None),
    )
    for name, step_names in scenarios:
        session = new_session()
        run_scenario(name, table, session, his)
        events = list(agui_events(session_rows(ddb, table, session), session))
        types = [e.type for e in events]
        assert types[0] == EventType.RUN_STARTED, name
        assert types[-1] == EventType.RUN_FINISHED, (name, types[-5:])
        assert types.count(EventType.RUN_STARTED) == 1 == types.count(EventType.RUN_FINISHED), name
        opened = Counter(e.step_name for e in events if e.type == EventType.STEP_STARTED)
        closed = Counter(e.step_name for e in events if e.type == EventType.STEP_FINISHED)
        assert opened == closed, name
        if step_names is not None:
            assert set(opened) == step_names, name
        else:  # a voice session: its turns are steps
            assert opened, name
        calls = [e.tool_call_id for e in events if e.type == EventType.TOOL_CALL_START]
        assert sorted(calls) == sorted(e.tool_call_id for e in events if e.type == EventType.TOOL_CALL_END)
        for event in events:  # each is valid by the AG-UI models, as a client parses it
            assert EVENTS.validate_json(event.model_dump_json(by_alias=True)).type == event.type


def test_an_unreachable_table_is_a_503_with_the_reason_and_the_service_stays_up(table: str) -> None:
    server = StatusServer(table, host="127.0.0.1", port=0, client=make_client("http://127.0.0.1:9")).start()
    try:
        status, body = get_json(f"{server.url}/sessions/x/rows")
        assert status == 503 and "cannot read session 'x' yet" in body["error"]
        assert get_json(f"{server.url}/health") == (200, {"status": "ok", "table": table})
    finally:
        server.shutdown()


def test_serve_local_and_the_demo_in_another_terminal_show_the_session(tmp_path: Any) -> None:
    """The README's two terminals: ``his-otel serve --local`` keeps a DynamoDB and serves the page;
    ``his-otel demo --endpoint`` writes there and prints the session's page."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HIS_OTEL_"))}
    serve_proc = subprocess.Popen(
        [HIS_OTEL, "serve", "--local", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = [serve_proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        told, command = lines[2].split("in another terminal: ", 1)[1].split(" ", 1)
        assert told == f"HIS_OTEL_SERVE_URL=http://127.0.0.1:{port}", lines
        assert command.split()[:3] == ["his-otel", "demo", "--endpoint"], lines
        demo = subprocess.run(
            [HIS_OTEL, *command.split()[1:], "--turn-delay", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "HIS_OTEL_SERVE_URL": told.split("=", 1)[1]},
        )
        assert demo.returncode == 0, demo.stderr
        page = next(line for line in demo.stdout.splitlines() if line.startswith("watch it live: "))
        url = page.removeprefix("watch it live: ")
        assert url.startswith(f"http://127.0.0.1:{port}/sessions/demo-")
        reported = int(next(w for w in demo.stdout.split("\n") if " rows for session " in w).split()[0])
        status, body = get_json(f"{url}/rows")
        assert status == 200 and len(body["rows"]) == reported
    finally:
        serve_proc.send_signal(signal.SIGTERM)
        serve_proc.communicate(timeout=60)
    assert serve_proc.returncode == 0


def test_a_row_that_lands_late_reaches_an_open_stream_once(serve: Any, table: str, ddb: Any) -> None:
    """A retried batch, another writer: a row whose id is older than rows already streamed."""

    session = new_session()
    now = int(time.time() * 1000)

    def put(ms: int, text: str) -> str:
        return put_row(ddb, table, session, uuid7_at(ms), text)

    first = [put(now - 5000 + i, f"row {i}") for i in range(0, 50, 10)]
    server = serve()
    client = SSEClient(server, session)
    client.read_until(lambda events: len(row_ids(events)) == len(first))
    late = put(now - 4995, "late")  # older than four rows already on the screen
    newer = put(now, "newer")
    got = row_ids(client.read_until(lambda events: len(row_ids(events)) == len(first) + 2))
    assert got[:5] == first and sorted(got[5:]) == sorted([late, newer])
    polls = server.hub.stats().polls
    wait_for(lambda: server.hub.stats().polls >= polls + 5, timeout_s=30)  # re-reads of the window
    marker = put(now + 10, "marker")
    client.read_until(lambda events: marker in row_ids(events))
    client.close()
    assert client.rows == [*first, *got[5:], marker]  # each once: nothing again on later polls


@pytest.mark.parametrize("command", [["demo"], ["serve", "--local", "--port", "0"]])
def test_without_the_local_extra_the_embedded_dynamodb_is_one_sentence(
    command: list[str], tmp_path: Any
) -> None:
    """Installed without ``[local]``, moto is absent: shadowed here by a package that fails to import."""
    (tmp_path / "moto").mkdir()
    (tmp_path / "moto" / "__init__.py").write_text("raise ImportError('no moto here')\n")
    env = fresh_shell(PYTHONPATH=str(tmp_path))  # no endpoint configured: the embedded one is asked for
    proc = subprocess.run([HIS_OTEL, *command], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("his-otel: error: the embedded DynamoDB needs moto's server")
