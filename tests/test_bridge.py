"""The bridge over OTLP/HTTP: real senders (the Python OTLP exporter, http.client sending chunked
bodies as the JavaScript exporters do, OTLP/JSON as the spec writes it) over loopback into moto."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from bridge_kit import (
    bridge_for,
    export_while_the_table_appears,
    get,
    milestone_spans,
    otlp_json,
    post,
    protobuf_body,
    proxied_client,
    run_agent,
)
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fault_proxy import FaultProxy
from helpers import new_session, wait_for
from his_otel.bridge import Bridge
from his_otel.read import session_rows
from his_otel.schema import Milestone, event_attributes
from his_otel.write.table import create_table

__all__ = ["bridge_for"]  # the fixture, imported for pytest


def test_real_otlp_exporter_with_gzip_gives_the_same_rows_as_in_process(
    table: str, new_table: Any, rows: Any, spans: InMemorySpanExporter, bridge_for: Any, ddb: Any
) -> None:
    bridge_table = new_table()
    session, agent_spans = run_agent(table, spans)
    bridge = bridge_for(bridge_table)
    exporter = OTLPSpanExporter(endpoint=f"{bridge.url}/v1/traces", compression=Compression.Gzip)
    assert exporter.export(agent_spans) == SpanExportResult.SUCCESS
    in_process = rows(table, session)
    assert len(in_process) >= 9
    assert session_rows(ddb, bridge_table, session) == in_process  # every attribute, same order


def test_chunked_bodies_as_the_javascript_exporters_send_them(table: str, bridge_for: Any, ddb: Any) -> None:
    """No Content-Length, Transfer-Encoding: chunked, several requests on one keep-alive connection."""
    bridge = bridge_for(table)
    sessions = [new_session() for _ in range(3)]
    bodies = [
        ("application/x-protobuf", protobuf_body(milestone_spans(sessions[0], 5))),
        ("application/json", otlp_json(milestone_spans(sessions[1], 5))),
        ("application/x-protobuf", gzip.compress(protobuf_body(milestone_spans(sessions[2], 5)))),
    ]
    conn = http.client.HTTPConnection(*bridge.address, timeout=30)
    for i, (content_type, body) in enumerate(bodies):
        headers = {"Content-Type": content_type}
        if i == 2:
            headers["Content-Encoding"] = "gzip"
        pieces = iter([body[:7], body[7:100], body[100:]])
        conn.request("POST", "/v1/traces", body=pieces, headers=headers, encode_chunked=True)
        response = conn.getresponse()
        assert (response.status, response.getheader("Connection")) == (200, None)
        response.read()
    conn.close()
    assert [len(session_rows(ddb, table, s)) for s in sessions] == [5, 5, 5]


def test_json_with_hex_ids_and_int64_strings(
    table: str, new_table: Any, rows: Any, spans: InMemorySpanExporter, bridge_for: Any, ddb: Any
) -> None:
    bridge_table = new_table()
    session, agent_spans = run_agent(table, spans)
    body = otlp_json(agent_spans)
    span = json.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert isinstance(span["startTimeUnixNano"], str) and len(span["traceId"]) == 32  # as the spec writes it
    bridge = bridge_for(bridge_table)
    answer = post(f"{bridge.url}/v1/traces", body, "application/json")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert session_rows(ddb, bridge_table, session) == rows(table, session)


def test_a_lone_surrogate_in_json_is_repaired_in_its_field_and_the_batch_lands(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    """``JSON.stringify`` writes half an emoji as a lone surrogate escape."""
    session = new_session()
    body = otlp_json(milestone_spans(session, 3, message="MARK"))
    body = body.replace(b"MARK", b"cut \\ud83d here", 1)
    bridge = bridge_for(table)
    assert post(f"{bridge.url}/v1/traces", body, "application/json").status == 200
    messages = sorted(str(r["evt_message"]) for r in session_rows(ddb, table, session))
    assert messages == ["MARK", "MARK", "cut \ufffd here"]


def test_a_message_the_sdk_cut_is_flagged_with_its_emitted_length(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    """``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` cuts the text on the span event; the row says so."""
    result = json.dumps({"decision": "deny", "reasons": ["r" * 60] * 80})
    assert len(result) > 4000
    session = new_session()
    provider = TracerProvider(span_limits=SpanLimits(max_attribute_length=1024))
    mem = InMemorySpanExporter()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(mem))
    m = Milestone(
        "0190f0c0-0000-7000-8000-000000000001", session, "a", "RESULT", result, 1_700_000_000_000_000_000
    )
    with provider.get_tracer("t").start_as_current_span("invoke_agent") as span:
        span.add_event("his.milestone", event_attributes(m))
    bridge = bridge_for(table)
    assert post(f"{bridge.url}/v1/traces", protobuf_body(list(mem.get_finished_spans()))).status == 200
    (row,) = session_rows(ddb, table, session)
    assert row["evt_message"] == result[:1024]
    assert row["evt_message_truncated"] is True
    assert row["evt_message_length"] == len(result)


def test_partial_success_counts_exactly_the_spans_that_can_never_become_rows(
    table: str, bridge_for: Any, ddb: Any
) -> None:
    session = new_session()
    request = ExportTraceServiceRequest.FromString(protobuf_body(milestone_spans(session, 2)))
    spans = request.resource_spans[0].scope_spans[0].spans
    bad = spans.add()
    bad.name, bad.trace_id, bad.span_id = "bad", b"\x01" * 16, b"\x02" * 8
    for _ in range(3):  # three malformed events (no session, no event id) in one span
        event = bad.events.add()
        event.name = "his.milestone"
        kv = event.attributes.add()
        kv.key, kv.value.string_value = "his.evt_type", "START"
    spans.add().name = "no milestones here"
    bridge = bridge_for(table)
    answer = post(f"{bridge.url}/v1/traces", request.SerializeToString())
    assert answer.status == 200
    partial = ExportTraceServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_spans == 1
    assert "3 his.milestone events in 1 spans can never become rows" in partial.error_message
    assert "3 malformed his.milestone event" in partial.error_message
    assert len(session_rows(ddb, table, session)) == 2


def test_rows_dynamodb_refuses_are_reported_not_acknowledged(
    table: str, bridge_for: Any, proxy: FaultProxy
) -> None:
    request = ExportTraceServiceRequest.FromString(
        protobuf_body(milestone_spans(new_session(), 3, per_span=2))
    )
    request.resource_spans[0].scope_spans[0].spans.add().name = "no milestones here"
    bridge = bridge_for(table, client=proxied_client(proxy))
    with proxy.injecting(error=1.0, error_code="ValidationException"):
        answer = post(f"{bridge.url}/v1/traces", request.SerializeToString())
    assert answer.status == 200
    partial = ExportTraceServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_spans == 3
    assert (
        "6 his.milestone events in 3 spans can never become rows (6 ValidationException)"
        in partial.error_message
    )


def test_a_forged_overwrite_leaves_the_original_row_unchanged(
    table: str, rows: Any, spans: InMemorySpanExporter, bridge_for: Any
) -> None:
    """A sender that knows a row's key cannot rewrite it: the first writer wins."""
    session, _ = run_agent(table, spans)
    before = rows(table, session)
    result = next(r for r in before if r["evt_type"] == "RESULT")
    provider = TracerProvider()
    mem = InMemorySpanExporter()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(mem))
    with provider.get_tracer("forger").start_as_current_span("invoke_agent") as span:
        span.add_event("his.milestone", {
            "his.session_id": session, "his.event_id": result["event_id"], "his.evt_type": "RESULT",
            "his.evt_message": '{"decision": "refund", "amount": 9999}', "his.agent_id": result["agent_id"],
        })  # fmt: skip
    bridge = bridge_for(table)
    answer = post(f"{bridge.url}/v1/traces", protobuf_body(list(mem.get_finished_spans())))
    assert answer.status == 200  # acknowledged: the row exists, and no retry could change that
    assert rows(table, session) == before
    assert bridge.stats.rows_existing == 1 and bridge.stats.rows_written == 0


def test_with_both_paths_on_each_milestone_has_one_row_and_keeps_the_in_process_copy(
    table: str, rows: Any, spans: InMemorySpanExporter, bridge_for: Any
) -> None:
    session, agent_spans = run_agent(table, spans)
    before = rows(table, session)
    bridge = bridge_for(table)
    exporter = OTLPSpanExporter(endpoint=f"{bridge.url}/v1/traces", compression=Compression.Gzip)
    assert exporter.export(agent_spans) == SpanExportResult.SUCCESS
    assert exporter.export(agent_spans) == SpanExportResult.SUCCESS  # and a collector retry
    assert rows(table, session) == before
    # The first time, each conditional put finds the in-process row; the retry costs no write.
    assert bridge.stats.rows_existing == len(before)
    assert bridge.stats.rows_seen == len(before)


def test_a_missing_table_is_retryable_and_the_rows_land_once_it_exists(
    new_table: Any, ddb: Any, rows: Any, table: str, spans: InMemorySpanExporter, bridge_for: Any
) -> None:
    session, agent_spans = run_agent(table, spans)
    missing = f"not-yet-{new_session()}"
    bridge = bridge_for(missing, write_timeout_millis=500)
    body = protobuf_body(agent_spans)
    answer = post(f"{bridge.url}/v1/traces", body)
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "2"
    assert "ResourceNotFoundException (create the table" in Status.FromString(answer.body).message
    ready = get(f"{bridge.url}/ready")
    assert (ready.status, json.loads(ready.body)) == (
        503,
        {"status": "unavailable", "cause": "ResourceNotFoundException"},
    )
    # The real exporter keeps retrying; the table appears meanwhile.
    exporter = OTLPSpanExporter(endpoint=f"{bridge.url}/v1/traces", timeout=60)
    outcome = export_while_the_table_appears(exporter.export, agent_spans, bridge, ddb, missing)
    assert outcome == SpanExportResult.SUCCESS
    assert len(session_rows(ddb, missing, session)) == len(rows(table, session)) > 0
    wait_for(lambda: get(f"{bridge.url}/ready").status == 200, timeout_s=30)


def test_dynamodb_down_gives_503_and_the_rows_arrive_after_it_is_back(
    table: str,
    new_table: Any,
    rows: Any,
    bridge_for: Any,
    spans: InMemorySpanExporter,
    proxy: FaultProxy,
    ddb: Any,
) -> None:
    session, agent_spans = run_agent(table, spans)
    expected = [r["event_id"] for r in rows(table, session)]
    down_table = new_table()
    bridge = bridge_for(down_table, client=proxied_client(proxy), write_timeout_millis=1000)
    body = protobuf_body(agent_spans)
    with proxy.refusing():
        answer = post(f"{bridge.url}/v1/traces", body)
        assert (answer.status, answer.headers["Retry-After"]) == (503, "2")
    assert session_rows(ddb, down_table, session) == []
    assert post(f"{bridge.url}/v1/traces", body).status == 200  # the sender's retry
    assert [r["event_id"] for r in session_rows(ddb, down_table, session)] == expected


def test_throttling_gives_429_with_retry_after(
    table: str, bridge_for: Any, spans: InMemorySpanExporter, proxy: FaultProxy
) -> None:
    _, agent_spans = run_agent(table, spans)
    bridge = bridge_for(table, client=proxied_client(proxy), write_timeout_millis=500)
    with proxy.injecting(throttle=1.0):
        answer = post(f"{bridge.url}/v1/traces", protobuf_body(agent_spans))
    assert (answer.status, answer.headers["Retry-After"]) == (429, "2")


def test_liveness_names_nothing_and_stats_need_the_token(table: str, bridge_for: Any) -> None:
    bridge = bridge_for(table, token="s3cret")
    live = get(f"{bridge.url}/health")
    assert (live.status, json.loads(live.body)) == (200, {"status": "ok"})
    assert table.encode() not in get(f"{bridge.url}/ready").body
    assert get(f"{bridge.url}/ready").status == 200
    refused = get(f"{bridge.url}/stats")
    assert refused.status == 401 and refused.headers["Content-Type"] == "application/json"
    assert "bearer token" in json.loads(refused.body)["message"]  # words, not a protobuf body
    stats = get(f"{bridge.url}/stats", Authorization="Bearer s3cret")
    assert stats.status == 200 and json.loads(stats.body)["table"] == table


def test_the_token_scheme_is_case_insensitive_and_the_token_is_not(
    table: str, bridge_for: Any, tmp_path: Any, ddb: Any
) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret-Token\n")
    bridge = bridge_for(table, token_file=str(secret))
    url = f"{bridge.url}/v1/traces"
    session = new_session()
    body = protobuf_body(milestone_spans(session, 1))
    statuses = [
        post(url, body).status,
        post(url, body, Authorization="Bearer s3cret-token").status,
        post(url, body, Authorization="Basic s3cret-Token").status,
        post(url, body, Authorization="bearer s3cret-Token").status,
        post(url, body, Authorization="BEARER  s3cret-Token").status,
    ]
    assert statuses == [401, 401, 401, 200, 200]
    assert len(session_rows(ddb, table, session)) == 1


def test_listening_beyond_loopback_needs_a_token_or_an_explicit_flag(table: str, tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 without a token"):
        Bridge(table, host="0.0.0.0")
    Bridge(table, host="0.0.0.0", token="t")
    Bridge(table, host="0.0.0.0", allow_unauthenticated=True)
    Bridge(table, host="::1")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        Bridge(table, token_file=str(empty))
    with pytest.raises(ValueError, match="cannot read the token file"):
        Bridge(table, token_file=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="needs a table"):
        Bridge("")


def test_bad_requests_get_4xx_and_the_bridge_keeps_serving(
    table: str, bridge_for: Any, spans: InMemorySpanExporter
) -> None:
    _, agent_spans = run_agent(table, spans)
    good = protobuf_body(agent_spans)
    bridge = bridge_for(table, max_body_bytes=64 * 1024, token="s3cret")
    url = f"{bridge.url}/v1/traces"
    auth = {"Authorization": "Bearer s3cret"}
    bomb = gzip.compress(b"\0" * (10 * 1024 * 1024))  # ~10 KB that inflates to 10 MB
    pb = "application/x-protobuf"
    cases = [
        (post(url, good).status, 401),  # no token
        (post(url, good, Authorization="Bearer wrong").status, 401),
        (post(url, good, "text/plain", **auth).status, 415),
        (post(url, good, pb, **{**auth, "Content-Encoding": "br"}).status, 415),
        (post(url, b"\xff\xff\xff\xff", **auth).status, 400),
        (post(url, good[: len(good) // 2], **auth).status, 400),  # truncated
        (post(url, b"{not json", "application/json", **auth).status, 400),
        (
            post(
                url,
                b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
                "application/json",
                **auth,
            ).status,
            400,
        ),
        (post(url, b"\0" * (65 * 1024), **auth).status, 413),  # over the limit
        (post(url, bomb, pb, **{**auth, "Content-Encoding": "gzip"}).status, 413),
        (post(url, gzip.compress(good)[:-20], pb, **{**auth, "Content-Encoding": "gzip"}).status, 400),
        (post(f"{bridge.url}/v1/metrics", good, **auth).status, 404),
        (get(url, **auth).status, 405),
    ]
    assert [got for got, _ in cases] == [want for _, want in cases]
    assert get(f"{bridge.url}/health").status == 200
    # ...and good requests still work, with gzip or deflate.
    assert post(url, gzip.compress(good), pb, **{**auth, "Content-Encoding": "gzip"}).status == 200
    assert post(url, zlib.compress(good), pb, **{**auth, "Content-Encoding": "deflate"}).status == 200
    assert bridge.stats.rejected_requests == len(cases)


@pytest.fixture(scope="module")
def fuzz_bridge(moto_endpoint: str, ddb: Any) -> Iterator[Bridge]:
    create_table(ddb, "fuzz-table")
    bridge = Bridge("fuzz-table", port=0, grpc=False).start()
    yield bridge
    assert get(f"{bridge.url}/health").status == 200
    bridge.shutdown(timeout_s=5)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048), as_json=st.booleans(), gzipped=st.booleans())
def test_fuzzed_bodies_never_break_the_bridge(
    body: bytes, as_json: bool, gzipped: bool, fuzz_bridge: Bridge
) -> None:
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    content_type = "application/json" if as_json else "application/x-protobuf"
    # Random bytes are sometimes a valid (empty) protobuf message: 200 is right then.
    assert post(f"{fuzz_bridge.url}/v1/traces", body, content_type, **headers).status in (200, 400)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    message=st.text(
        alphabet=st.one_of(
            st.characters(exclude_categories=()), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
        ),
        max_size=300,
    ),
    chunked=st.booleans(),
)
def test_fuzzed_json_text_always_lands_repaired(
    message: str, chunked: bool, fuzz_bridge: Bridge, ddb: Any
) -> None:
    """Any string a JSON sender can write (lone surrogates included) becomes a row, never a 400."""
    session = new_session()
    body = otlp_json(milestone_spans(session, 1, message="MARK"))
    body = body.replace(b'"MARK"', json.dumps(message).encode())
    conn = http.client.HTTPConnection(*fuzz_bridge.address, timeout=30)
    conn.request("POST", "/v1/traces", body=iter([body]) if chunked else body,
                 headers={"Content-Type": "application/json"}, encode_chunked=chunked)  # fmt: skip
    assert conn.getresponse().status == 200
    conn.close()
    (row,) = session_rows(ddb, "fuzz-table", session)
    expected = message.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert row["evt_message"] == expected


def test_concurrent_senders_beyond_the_limit_are_told_to_retry(table: str, bridge_for: Any, ddb: Any) -> None:
    sessions = [new_session() for _ in range(8)]
    bridge = bridge_for(table, max_concurrency=2)
    exporter = OTLPSpanExporter(endpoint=f"{bridge.url}/v1/traces", timeout=60)
    results: list[SpanExportResult] = []
    threads = [
        threading.Thread(target=lambda s=s: results.append(exporter.export(milestone_spans(s, 10))))
        for s in sessions
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [SpanExportResult.SUCCESS] * 8  # the 503s of busy moments were retried
    assert [len(session_rows(ddb, table, s)) for s in sessions] == [10] * 8
    assert bridge.stats.retry_requests > 0  # some were told to come back


def test_shutdown_drains_accepted_requests(
    table: str,
    new_table: Any,
    rows: Any,
    bridge_for: Any,
    spans: InMemorySpanExporter,
    proxy: FaultProxy,
    ddb: Any,
) -> None:
    session, agent_spans = run_agent(table, spans)
    drain_table = new_table()
    bridge = bridge_for(drain_table, client=proxied_client(proxy))
    statuses: list[int] = []
    with proxy.injecting(slow=1.0, slow_s=1.0):
        sender = threading.Thread(
            target=lambda: statuses.append(post(f"{bridge.url}/v1/traces", protobuf_body(agent_spans)).status)
        )
        sender.start()
        wait_for(lambda: proxy.counters.requests >= 1, timeout_s=30)  # accepted, and writing
        assert bridge.shutdown(timeout_s=20) is True
        sender.join()
    assert statuses == [200]
    assert len(session_rows(ddb, drain_table, session)) == len(rows(table, session)) > 0


def test_a_port_in_use_is_a_clear_error(table: str, bridge_for: Any) -> None:
    first = bridge_for(table)
    grpc_port = first.grpc_bound_port
    with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{grpc_port}: Address already in use"):
        Bridge(table, port=0, grpc_port=grpc_port).start(timeout_s=30)
    with pytest.raises(OSError, match=rf"cannot listen on {first.url[7:]}: Address already in use"):
        Bridge(table, port=first.address[1], grpc_port=0).start(timeout_s=30)
    assert get(f"{first.url}/health").status == 200
