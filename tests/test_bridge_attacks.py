"""Strangers without the token cannot take the bridge's capacity from senders that have it. Each
attack runs from its own process over real sockets, from another loopback address (127.0.0.2, as
another host would), while a real OTLP exporter on 127.0.0.1 sends: every row it sends lands."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import grpc
import pytest
from bridge_kit import bridge_for, milestone_spans, post, protobuf_body
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult

from helpers import new_session, wait_for
from his_otel.read import session_rows

__all__ = ["bridge_for"]

TOKEN = "attack-token"
ATTACKER = "127.0.0.2"

# argv: port, connections, mode (idle | slowloris | keepalive), seconds. Prints what it opened, then
# how many of its connections the server closed before the time was up.
SOCKETS = r"""
import json, socket, sys, time
port, n, mode, seconds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
socks = []
for _ in range(n):
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        continue
    if mode == "slowloris":
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
    if mode == "keepalive":
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
print(json.dumps({"opened": len(socks)}), flush=True)
closed = set()
deadline = time.monotonic() + seconds
while time.monotonic() < deadline and len(closed) < len(socks):
    for i, s in enumerate(socks):
        if i in closed:
            continue
        try:
            if mode == "slowloris":
                s.send(b"X-Dribble: 1\r\n")  # a header line every round: never the end of the headers
            s.setblocking(False)
            data = s.recv(65536)
            if mode == "keepalive" and data:
                continue  # the /health answer; the connection stays open after it
            if not data:
                closed.add(i)
        except BlockingIOError:
            pass
        except OSError:
            closed.add(i)
    time.sleep(0.2)
print(json.dumps({"closed": len(closed)}), flush=True)
"""


class Attack:
    def __init__(self, port: int, n: int, mode: str, seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SOCKETS, str(port), str(n), mode, str(seconds)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.opened = json.loads(self.proc.stdout.readline())["opened"]

    def closed(self) -> int:
        out, _ = self.proc.communicate(timeout=120)
        return int(json.loads(out.strip().splitlines()[-1])["closed"])


def send_rows(bridge: Any, sessions: list[str]) -> list[SpanExportResult]:
    exporter = OTLPSpanExporter(
        endpoint=f"{bridge.url}/v1/traces", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    return [exporter.export(milestone_spans(s, 2)) for s in sessions]


@pytest.mark.parametrize("mode", ["idle", "slowloris", "keepalive"])
def test_connections_that_never_finish_a_request_neither_lock_out_senders_nor_stay(
    table: str, bridge_for: Any, ddb: Any, mode: str
) -> None:
    """256 connections from one stranger (the connection cap): idle from the start, dribbling their
    headers, or idle after one request. The cap per peer turns most away at once, the header
    deadline closes the rest however they trickle, and the sender on another address lands every
    row meanwhile. Without both, uvicorn answered every sender 503 for as long as they stayed."""
    bridge = bridge_for(table, token=TOKEN, header_timeout_millis=2000)
    attack = Attack(bridge.address[1], 256, mode, seconds=60)
    assert attack.opened > 0
    sessions = [new_session() for _ in range(10)]
    assert send_rows(bridge, sessions) == [SpanExportResult.SUCCESS] * 10
    assert post(f"{bridge.url}/v1/traces", b"", Authorization=f"Bearer {TOKEN}").status == 200  # and /health
    assert all(len(session_rows(ddb, table, s)) == 2 for s in sessions)
    # Every attacking connection is closed by the bridge long before the attacker gives up.
    assert attack.closed() == attack.opened


def test_the_header_deadline_closes_only_what_misses_it(table: str, bridge_for: Any, ddb: Any) -> None:
    """A sender that keeps its connection busy with requests is never cut off by the deadline."""
    bridge = bridge_for(table, header_timeout_millis=1000)
    import http.client

    conn = http.client.HTTPConnection(*bridge.address, timeout=30)
    sessions = [new_session() for _ in range(20)]
    for session in sessions:  # one keep-alive connection, well within the deadline each time
        conn.request("POST", "/v1/traces", protobuf_body(milestone_spans(session, 1)),
                     {"Content-Type": "application/x-protobuf"})  # fmt: skip
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Connection") is None
        response.read()
    conn.close()
    assert all(len(session_rows(ddb, table, s)) == 1 for s in sessions)


# argv: target, calls, with-token (0/1). Starts calls that send their metadata but never their
# message; prints how each ended.
UNFINISHED_GRPC = r"""
import json, sys, threading, grpc
target, n, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
stop = threading.Event()
def never():
    stop.wait(120)
    return
    yield b""
channel = grpc.insecure_channel(target)
call = channel.stream_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                            request_serializer=None, response_deserializer=None)
futures = [call.future(never(), metadata=[("authorization", token)] if token != "-" else None, timeout=120)
           for _ in range(n)]
codes = []
for f in futures:
    try:
        f.result()
        codes.append("OK")
    except grpc.RpcError as e:
        codes.append(e.code().name)
stop.set()
print(json.dumps(codes), flush=True)
"""


def unfinished_calls(target: str, n: int, token: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", UNFINISHED_GRPC, target, str(n), token], stdout=subprocess.PIPE, text=True
    )


def test_unfinished_grpc_calls_without_the_token_end_before_their_message_and_take_nothing(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    bridge = bridge_for(table, token=TOKEN)
    attack = unfinished_calls(bridge.grpc_target, 300, "-")
    out, _ = attack.communicate(timeout=120)
    # Refused from their metadata alone: none waited for a message, none held a place.
    assert json.loads(out) == ["UNAUTHENTICATED"] * 300
    sender = GrpcSpanExporter(
        endpoint=bridge.grpc_target, insecure=True, headers={"authorization": f"Bearer {TOKEN}"}
    )
    sessions = [new_session() for _ in range(10)]
    assert [sender.export(milestone_spans(s, 2)) for s in sessions] == [SpanExportResult.SUCCESS] * 10
    assert all(len(session_rows(ddb, table, s)) == 2 for s in sessions)


def test_unfinished_grpc_calls_with_the_token_meet_the_deadline_and_busy_is_retryable(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    """A token holder's unfinished calls take at most the places in transit one peer may have; beyond
    them the answer is UNAVAILABLE with a retry delay (a collector retries it; grpcio's own cap
    answered RESOURCE_EXHAUSTED, which the collector drops as permanent), and each call held ends at
    the body deadline."""
    bridge = bridge_for(table, token=TOKEN, max_concurrency=2, body_timeout_millis=2000)
    codes = json.loads(
        unfinished_calls(bridge.grpc_target, 12, f"Bearer {TOKEN}").communicate(timeout=120)[0]
    )
    # 8 places in transit, 4 for one peer: 4 calls held until the deadline, 8 told to come back.
    assert sorted(codes) == ["DEADLINE_EXCEEDED"] * 4 + ["UNAVAILABLE"] * 8


def test_malformed_events_are_logged_once_per_interval_bounded_and_escaped(
    table: str, bridge_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests of 70 malformed events with 50 KB names and types and a newline in each (7 MB, under
    the body limit): a few short log lines, none of them starting a forged line."""
    session = new_session()
    request = ExportTraceServiceRequest.FromString(protobuf_body(milestone_spans(session, 1)))
    spans = request.resource_spans[0].scope_spans[0].spans
    for i in range(70):
        bad = spans.add()
        bad.name = f"x\nERROR forged line {i} " + "n" * 50_000
        event = bad.events.add()
        event.name = "his.milestone"
        kv = event.attributes.add()
        kv.key, kv.value.string_value = "his.evt_type", "\nERROR forged " + "t" * 50_000
    bridge = bridge_for(table)
    body = request.SerializeToString()
    with caplog.at_level(logging.DEBUG, logger="his_otel"):
        for _ in range(3):
            assert post(f"{bridge.url}/v1/traces", body).status == 200
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("his_otel"))
    assert len(logged) < 5_000, len(logged)
    assert "\nERROR forged" not in logged


def test_invalid_utf8_in_a_protobuf_string_costs_only_its_own_text_on_both_protocols(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    """One span's message with bytes that are not UTF-8, beside good spans: the protobuf parser
    refuses the whole body, so the bridge repairs the bad field (U+FFFD) as it does JSON, and every
    milestone of the batch lands."""
    bridge = bridge_for(table)
    for send in ("http", "grpc"):
        session = new_session()
        body = protobuf_body(milestone_spans(session, 4, message="marker-ok"))
        first = body.index(b"marker-ok")
        bad = body[:first] + b"mark\xff\xfe-ok" + body[first + len(b"marker-ok") :]
        if send == "http":
            assert post(f"{bridge.url}/v1/traces", bad).status == 200
        else:
            with grpc.insecure_channel(bridge.grpc_target) as channel:
                export = channel.unary_unary(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    request_serializer=None, response_deserializer=None,
                )  # fmt: skip
                export(bad, timeout=30)
        messages = sorted(r["evt_message"] for r in session_rows(ddb, table, session))
        assert messages == sorted(["mark\ufffd\ufffd-ok"] + ["marker-ok"] * 3)


def test_a_gzip_body_of_several_members_is_read_whole(table: str, bridge_for: Any, ddb: Any) -> None:
    import gzip

    bridge = bridge_for(table)
    session = new_session()
    body = protobuf_body(milestone_spans(session, 6))
    members = gzip.compress(body[:100]) + gzip.compress(body[100:200]) + gzip.compress(body[200:])
    assert post(f"{bridge.url}/v1/traces", members, **{"Content-Encoding": "gzip"}).status == 200
    assert len(session_rows(ddb, table, session)) == 6


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    import socket

    bridge = bridge_for(table)
    session = new_session()
    body = protobuf_body(milestone_spans(session, 1))
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    head = (
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {len(chunked)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection(bridge.address, timeout=30) as s:
        s.sendall(head.encode() + chunked)
        answer = b""
        while chunk := s.recv(65536):  # the bridge closes the connection after its answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"connection: close" in answer.lower()
    assert session_rows(ddb, table, session) == []


def _uuid7_at(ms: int, tail: int) -> str:
    digits = f"{ms:012x}7{tail:03x}8{tail:015x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:32]}"


def test_a_far_future_event_id_from_a_token_holder_does_not_blind_readers(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    """A sender with the token may choose any event id; one from the year 2100 is a row like any
    other (delivered once), but the cursors and ``tail --follow`` of that session still see every
    row written after it."""
    from his_otel.read import SessionCursor

    bridge = bridge_for(table, token=TOKEN)
    session = new_session()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    request = ExportTraceServiceRequest.FromString(protobuf_body(milestone_spans(session, 1)))
    attrs = request.resource_spans[0].scope_spans[0].spans[0].events[0].attributes
    next(kv for kv in attrs if kv.key == "his.event_id").value.string_value = _uuid7_at(4_102_444_800_000, 1)
    assert post(f"{bridge.url}/v1/traces", request.SerializeToString(), **auth).status == 200
    cursor = SessionCursor(table, session, client=ddb)
    assert len(cursor.poll()) == 1  # the forged row, once
    import time

    later = [_uuid7_at(int(time.time() * 1000) + i, i) for i in range(5)]
    for event_id in later:
        request = ExportTraceServiceRequest.FromString(protobuf_body(milestone_spans(session, 1)))
        attrs = request.resource_spans[0].scope_spans[0].spans[0].events[0].attributes
        next(kv for kv in attrs if kv.key == "his.event_id").value.string_value = event_id
        assert post(f"{bridge.url}/v1/traces", request.SerializeToString(), **auth).status == 200
    assert sorted(r["event_id"] for r in cursor.poll()) == sorted(later)
    assert cursor.poll() == []


def test_tail_shows_control_characters_as_escapes_and_never_forges_a_line(
    table: str, ddb: Any, moto_endpoint: str
) -> None:
    from helpers import his_otel

    session = new_session()
    ddb.put_item(
        TableName=table,
        Item={
            "session_id": {"S": session}, "event_id": {"S": _uuid7_at(1_790_000_000_000, 1)},
            "agent_id": {"S": "a\n12:00:00.000  RESULT  forged"}, "evt_type": {"S": "PROGRESS\r\x1b[2K"},
            "evt_message": {"S": "red \x1b[31mtext\x1b[0m\rover\u2028written"},
            "evt_datetime": {"S": "2026-12-03T10:00:00.000000+00:00"},
            "span_name": {"S": "s\x07"}, "trace_id": {"S": "t\x1b]0;title\x07"},
        },
    )  # fmt: skip
    proc = his_otel("tail", session, "--table", table, "--endpoint", moto_endpoint)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, lines
    assert not any(c in proc.stdout for c in "\x1b\r\x07\u2028")
    assert "\\x1b[31m" in lines[0] and "\\n12:00:00.000  RESULT  forged" in lines[0]


def test_a_refusal_before_the_body_is_read_reaches_the_sender_as_its_status(
    table: str, bridge_for: Any
) -> None:
    """A 600 KB body refused for its token (or because the bridge is busy) is read and dropped
    before the answer: the sender, still sending, gets the 401 rather than a connection reset."""
    bridge = bridge_for(table, token=TOKEN)
    body = protobuf_body(milestone_spans(new_session(), 1, message="x" * 600_000))
    answers = [post(f"{bridge.url}/v1/traces", body, Authorization="Bearer wrong").status for _ in range(10)]
    assert answers == [401] * 10


def test_the_retry_delay_grows_while_dynamodb_stays_unreachable(bridge_for: Any) -> None:
    """Senders that give up after a few attempts (the Python SDK's) outlast a longer outage: the
    delay asked for starts at 2 s and grows with the outage, up to 30 s."""
    bridge = bridge_for(f"missing-{new_session()}", write_timeout_millis=300)
    body = protobuf_body(milestone_spans(new_session(), 1))
    first = post(f"{bridge.url}/v1/traces", body)
    assert (first.status, first.headers["Retry-After"]) == (503, "2")

    def grown() -> bool:
        answer = post(f"{bridge.url}/v1/traces", body)
        return answer.status == 503 and int(answer.headers["Retry-After"]) > 2

    wait_for(grown, timeout_s=60, interval_s=1)


def test_under_every_attack_at_once_the_real_collector_delivers_over_grpc_within_bounds(
    table: str, moto_endpoint: str, ddb: Any, tmp_path: Any
) -> None:
    """``his-otel bridge`` in its own process, with the token; from another address, 256 idle HTTP
    connections, 256 slowloris ones and 300 token-less gRPC calls that never send their message. The
    real collector's ``otlp_grpc`` exporter delivers every row meanwhile, and the bridge's threads
    and memory stay bounded."""
    from test_bridge_server import BridgeProcess

    from binaries import collector
    from his_otel.testing.local_dynamodb import free_port

    bridge = BridgeProcess(
        table, env={"HIS_OTEL_BRIDGE_TOKEN": TOKEN, "HIS_OTEL_BRIDGE_HEADER_TIMEOUT_MS": "2000"}
    )
    try:
        assert post(f"{bridge.url}/v1/traces", b"", Authorization=f"Bearer {TOKEN}").status == 200
        threads_before, rss_before = bridge.status("Threads"), bridge.status("VmRSS")
        attacks = [Attack(bridge.port, 256, "idle", 60), Attack(bridge.port, 256, "slowloris", 60)]
        unfinished = unfinished_calls(bridge.grpc_target, 300, "-")
        port = free_port()
        config = {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
            "exporters": {"otlp_grpc/bridge": {
                "endpoint": bridge.grpc_target, "tls": {"insecure": True},
                "headers": {"authorization": f"Bearer {TOKEN}"},
                "retry_on_failure": {"enabled": True, "initial_interval": "200ms",
                                     "max_elapsed_time": "120s"},
            }},
            "service": {"telemetry": {"metrics": {"level": "none"}}, "pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc/bridge"]}}},
        }  # fmt: skip
        sessions = [new_session() for _ in range(10)]
        with collector(config, tmp_path, port):
            sender = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
            for session in sessions:
                assert sender.export(milestone_spans(session, 2)) == SpanExportResult.SUCCESS
            for session in sessions:
                wait_for(lambda s=session: len(session_rows(ddb, table, s)) == 2, timeout_s=60)
            threads_during, rss_during = bridge.status("Threads"), bridge.status("VmRSS")
        assert json.loads(unfinished.communicate(timeout=120)[0]) == ["UNAUTHENTICATED"] * 300
        for attack in attacks:
            assert attack.closed() == attack.opened
        # At most the pools' own threads (8 request slots, 16 conditional puts in flight), whatever
        # the attackers hold: a connection or a call costs no thread.
        assert threads_during <= threads_before + 8 + 16, (threads_before, threads_during)
        assert rss_during - rss_before < 64 * 1024, (rss_before, rss_during)  # kB
        code, _, err = bridge.stop()
        assert code == 0 and "Traceback" not in err, err
    finally:
        if bridge.proc.poll() is None:
            bridge.proc.kill()


TAIL_RSS = r"""
import resource, sys
from his_otel.cli.main import entry
sys.argv = ["his-otel", *sys.argv[1:]]
try:
    entry()
except SystemExit:
    pass
sys.stdout.flush()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def test_tail_reads_a_long_session_page_by_page_in_bounded_memory(
    table: str, ddb: Any, moto_endpoint: str
) -> None:
    """A 42 MB session (120 rows of 350 KB) costs ``tail`` about what a one-row session does: it
    prints rows as DynamoDB's 1 MB pages arrive and keeps only the cursor's window of ids."""

    def peak_kb(session: str) -> int:
        proc = subprocess.run(
            [sys.executable, "-c", TAIL_RSS, "tail", session, "--table", table, "--endpoint", moto_endpoint],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        return int(proc.stderr.strip().splitlines()[-1])

    small, big = new_session(), new_session()
    ddb.put_item(TableName=table, Item={"session_id": {"S": small}, "event_id": {"S": _uuid7_at(1, 0)}})
    for i in range(120):
        ddb.put_item(
            TableName=table,
            Item={"session_id": {"S": big}, "event_id": {"S": _uuid7_at(1_790_000_000_000 + i, i)},
                  "evt_type": {"S": "PROGRESS"}, "evt_message": {"S": f"{i} " + "x" * 350_000}},
        )  # fmt: skip
    assert peak_kb(big) - peak_kb(small) < 8 * 1024  # kB; holding the session took 16 MB more
