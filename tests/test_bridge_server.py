"""``his-otel bridge`` as deployed: its own process, real signals, hostile senders. What is observed is
the process from outside: its threads and memory (``/proc``), its stderr, its exit code, the rows."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from bridge_kit import get, milestone_spans, post, protobuf_body

from fault_proxy import FaultProxy
from helpers import new_session, wait_for
from his_otel.read import session_rows

LINE = re.compile(r"OTLP/HTTP on (http://[^ ]+)/v1/traces(?:, OTLP/gRPC on ([^ ]+))? -> table")


class BridgeProcess:
    def __init__(self, table: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "his_otel.cli", "bridge", "--table", table, "--port", "0",
             "--grpc-port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group, so a hung worker can be killed with it
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.line = self.proc.stdout.readline()
        match = LINE.search(self.line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"bridge did not start: {self.line!r} {self.proc.communicate()[1]}")
        self.url, self.grpc_target = match.group(1), match.group(2)
        self.port = int(self.url.rsplit(":", 1)[1])

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(field)

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # Kill the whole group: worker processes hold the pipes open.
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"no exit within 60 s after SIGTERM: {out!r} {err!r}") from None
        return self.proc.returncode, out, err


@pytest.fixture
def bridge_process(moto_endpoint: str) -> Iterator[Any]:
    started: list[BridgeProcess] = []

    def start(table: str, *args: str, **env: str) -> BridgeProcess:
        started.append(BridgeProcess(table, *args, env=env))
        return started[-1]

    yield start
    for b in started:
        if b.proc.poll() is None:
            os.killpg(b.proc.pid, signal.SIGKILL)
            b.proc.communicate(timeout=30)


def open_partial(port: int, declared: int, sent: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    # The server may answer and close before taking it all: that is what it should do.
    with contextlib.suppress(OSError):
        s.sendall(head.encode() + sent)
    return s


def test_slow_and_unfinished_bodies_keep_threads_and_memory_bounded(
    table: str, bridge_process: Any, ddb: Any
) -> None:
    bridge = bridge_process(
        table,
        HIS_OTEL_BRIDGE_MAX_CONCURRENCY="2",
        HIS_OTEL_BRIDGE_MAX_CONNECTIONS="64",
        HIS_OTEL_BRIDGE_BODY_TIMEOUT_MS="3000",
    )
    assert post(f"{bridge.url}/v1/traces", protobuf_body(milestone_spans(new_session(), 2))).status == 200
    threads_before, rss_before = bridge.status("Threads"), bridge.status("VmRSS")
    # 300 connections that never finish their 8 MB bodies, 24 of them 4 MB in.
    conns = [open_partial(bridge.port, 8_000_000, b"\0" * (4_000_000 if i < 24 else 10)) for i in range(300)]
    time.sleep(1)  # let the server take in what was sent; the assertions below do not time anything
    threads_during, rss_during = bridge.status("Threads"), bridge.status("VmRSS")
    answers = []
    for c in conns:
        c.settimeout(30)
        try:
            answers.append(c.recv(64).split(b" ", 2)[1])
        except (OSError, IndexError):
            answers.append(b"reset")
        c.close()
    assert threads_during <= threads_before + 2, (threads_before, threads_during)
    assert rss_during - rss_before < 48 * 1024, (rss_before, rss_during)  # kB; 24 bodies would be 96 MB
    # Four held the places in transit one peer may take (half of 4 x 2) until the body deadline
    # (408); the rest were told at once to come back later.
    assert answers.count(b"408") == 4 and answers.count(b"503") + answers.count(b"reset") == 296, answers
    session = new_session()
    assert post(f"{bridge.url}/v1/traces", protobuf_body(milestone_spans(session, 3))).status == 200
    assert len(session_rows(ddb, table, session)) == 3
    code, _, err = bridge.stop()
    assert code == 0 and "Traceback" not in err, err


def test_a_dribbling_sender_is_cut_off_at_the_body_deadline(table: str, bridge_process: Any) -> None:
    bridge = bridge_process(table, HIS_OTEL_BRIDGE_BODY_TIMEOUT_MS="1000")
    s = open_partial(bridge.port, 1000, b"\0")
    answer = b""
    for _ in range(200):  # one byte every 50 ms: the body would need 50 s
        try:
            s.sendall(b"\0")
        except OSError:
            break
        time.sleep(0.05)
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            answer += s.recv(4096)
        s.setblocking(True)
        if answer:
            break
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in answer.lower()


def test_senders_that_vanish_mid_body_leave_no_traceback(table: str, bridge_process: Any, ddb: Any) -> None:
    bridge = bridge_process(table)
    for _ in range(50):
        open_partial(bridge.port, 100_000, b"\0" * 5000).close()
    session = new_session()
    body = protobuf_body(milestone_spans(session, 2))
    # Until the server has seen every disconnect, their slots may still be taken: 503, retry.
    wait_for(lambda: post(f"{bridge.url}/v1/traces", body).status == 200, timeout_s=30)
    assert len(session_rows(ddb, table, session)) == 2
    code, _, err = bridge.stop()
    assert code == 0
    assert "Traceback" not in err and "Exception" not in err, err


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_requests_in_flight_on_both_protocols(
    workers: int, table: str, bridge_process: Any, proxy: FaultProxy, ddb: Any
) -> None:
    bridge = bridge_process(
        table, "--workers", str(workers), "--endpoint", proxy.endpoint, "--drain-timeout", "20"
    )
    sessions = [new_session(), new_session()]
    answers: list[Any] = []

    def over_http() -> None:
        answers.append(post(f"{bridge.url}/v1/traces", protobuf_body(milestone_spans(sessions[0], 3))).status)

    def over_grpc() -> None:
        with grpc.insecure_channel(bridge.grpc_target) as channel:
            call = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=None,
            )
            call(protobuf_body(milestone_spans(sessions[1], 3)), timeout=60)
            answers.append("grpc ok")

    wait_for(lambda: get(f"{bridge.url}/ready").status == 200, timeout_s=60)
    with proxy.injecting(slow=1.0, slow_s=1.0):
        senders = [threading.Thread(target=over_http), threading.Thread(target=over_grpc)]
        for t in senders:
            t.start()

        def both_writing() -> bool:  # a put of each session has reached DynamoDB
            with proxy.lock:
                return {key[1] for key in proxy.counters.puts} >= set(sessions)

        wait_for(both_writing, timeout_s=30)
        code, out, err = bridge.stop()
        for t in senders:
            t.join(60)
    assert sorted(map(str, answers)) == ["200", "grpc ok"]
    assert [len(session_rows(ddb, table, s)) for s in sessions] == [3, 3]
    assert code == 0, err
    assert "stopped" in out


def test_workers_share_the_ports(table: str, bridge_process: Any, ddb: Any) -> None:
    bridge = bridge_process(table, "--workers", "2", HIS_OTEL_BRIDGE_TOKEN="t0k")
    assert "(2 workers)" in bridge.line
    pids: set[int] = set()

    def seen_both() -> bool:
        import json

        answer = get(f"{bridge.url}/stats", Authorization="Bearer t0k")
        if answer.status == 200:
            pids.add(json.loads(answer.body)["pid"])
        return len(pids) == 2

    wait_for(seen_both, timeout_s=60, interval_s=0.01)
    assert bridge.proc.pid not in pids
    session = new_session()
    for i in range(6):
        spans = milestone_spans(f"{session}", 1, message=str(i))
        body = protobuf_body(spans)
        assert post(f"{bridge.url}/v1/traces", body, Authorization="Bearer t0k").status == 200
    code, _, err = bridge.stop()
    assert code == 0, err


def test_cli_refuses_to_listen_beyond_loopback_without_a_token(table: str, moto_endpoint: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "his_otel.cli", "bridge", "--table", table, "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in proc.stderr
    assert "Traceback" not in proc.stderr
