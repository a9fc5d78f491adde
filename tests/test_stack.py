"""The whole stack with the real programs: ``his-otel demo`` (a HISAgent) exports OTLP to the real
collector running each config the project ships (only its hostnames mapped to loopback), which
fans the trace out to the real Jaeger and to his-otel bridges writing moto's DynamoDB.

The collector and Jaeger come from ``HIS_OTEL_OTELCOL``/``HIS_OTEL_JAEGER`` or ``../shared/bin``
(see ``binaries.py``); without them these tests skip with the reason, and CI fails on that skip.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bridge_kit import milestone_logs_body, post, proxied_client
from live_kit import gated_run

from binaries import Jaeger, collector, jaeger
from fault_proxy import FaultProxy
from helpers import his_otel, new_session, wait_for
from his_otel.bridge import Bridge
from his_otel.read import session_rows
from his_otel.schema import EVENT_NAME, SPAN_ATTR_HAS_MILESTONE
from his_otel.testing.local_dynamodb import free_port

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.name for p in (ROOT / "collector").glob("*.yaml"))
TOKEN = "stack-token"
SERVICE = "his-otel-demo"
LIFECYCLE = {
    "START",
    "EVENT_LOOP",
    "MODEL_INVOCATION",
    "TOOLING",
    "PROGRESS",
    "COMPLETION",
    "AGENT_STATS",
    "RESULT",
}


@dataclass
class Collector:
    """A shipped config, its compose hostnames mapped to loopback ports."""

    name: str
    http: int = field(default_factory=free_port)  # OTLP/HTTP receiver
    health: int = field(default_factory=free_port)

    def text(self, hosts: dict[str, str]) -> str:
        text = (ROOT / "collector" / self.name).read_text()
        ports = {
            "0.0.0.0:4317": f"127.0.0.1:{free_port()}",
            "0.0.0.0:4318": f"127.0.0.1:{self.http}",
            "0.0.0.0:13133": f"127.0.0.1:{self.health}",
            **hosts,
        }
        for compose_name, loopback in ports.items():
            if compose_name in text:
                text = text.replace(compose_name, loopback)
        # Nothing else may still name a compose service or listen beyond loopback.
        leftover = re.findall(r"(?:0\.0\.0\.0|jaeger|his-bridge[-\w]*):\d+", _without_comments(text))
        assert not leftover, f"{self.name}: unmapped {leftover}"
        return text

    def run(self, hosts: dict[str, str], workdir: Path, token: str = TOKEN) -> Any:
        return collector(self.text(hosts), workdir, self.http, env={"HIS_OTEL_BRIDGE_TOKEN": token})


def _without_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def bridge_hosts(config: str, fleet: list[Bridge]) -> dict[str, str]:
    """Where the config's bridge hostnames go: ``his-bridge:4319`` (HTTP) or ``his-bridge-N:4320``."""
    if "scale-out" in config:
        return {f"his-bridge-{i}:4320": b.grpc_target for i, b in enumerate(fleet, start=1)}
    return {"http://his-bridge:4319": fleet[0].url}


def demo(moto_endpoint: str, table: str, session: str, otlp: str, timeout: float = 120) -> tuple[str, int]:
    """Run ``his-otel demo`` against moto, its trace to the collector at ``otlp``; its trace id and
    how many spans it sent."""
    proc = his_otel(
        "demo",
        "--endpoint",
        moto_endpoint,
        "--table",
        table,
        "--session-id",
        session,
        "--turn-delay",
        "0",
        extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_BSP_SCHEDULE_DELAY": "100"},
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (trace_id,) = re.findall(r"trace id: ([0-9a-f]{32})", proc.stdout)
    (sent,) = re.findall(rf"trace sent over OTLP to {re.escape(otlp)} \((\d+) spans\)", proc.stdout)
    return str(trace_id), int(sent)


def query(j: Jaeger, path: str, **params: str) -> Any:
    url = f"{j.query}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def jaeger_trace(j: Jaeger, trace_id: str) -> dict[str, Any] | None:
    try:
        data = query(j, f"/api/traces/{trace_id}")["data"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
    return data[0] if data else None


def milestones_in(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Every his.milestone span event (a Jaeger "log") of a trace, as a dict of its fields."""
    found = []
    for span in trace["spans"]:
        for log in span.get("logs", []):
            fields = {f["key"]: f["value"] for f in log["fields"]}
            if fields.get("event") == EVENT_NAME:
                found.append({**fields, "span": span["operationName"]})
    return found


def assert_trace_tells_the_rows(j: Jaeger, trace_id: str, session: str, rows: list[dict[str, Any]]) -> None:
    def whole() -> dict[str, Any] | None:
        # A trace's spans reach Jaeger in several batches: wait for the last milestone's span.
        trace = jaeger_trace(j, trace_id)
        return trace if trace is not None and len(milestones_in(trace)) >= len(rows) else None

    trace = wait_for(whole, timeout_s=60, interval_s=0.5)
    events = milestones_in(trace)
    # Every row is a span event in the trace, with the same id, type, message and session.
    by_id = {e["his.event_id"]: e for e in events}
    assert len(by_id) == len(rows) == len(events)
    for row in rows:
        event = by_id[row["event_id"]]
        assert event["his.evt_type"] == row["evt_type"]
        assert event["his.evt_message"] == row["evt_message"]
        assert event["his.session_id"] == session
        assert event["his.agent_id"] == row["agent_id"]
        assert int(event["his.evt_message_length"]) == len(row["evt_message"].encode())
        assert row["trace_id"] == trace_id
    # The spans that carry milestones say so (what config.milestones-only.yaml filters on).
    for span in trace["spans"]:
        tags = {t["key"]: t["value"] for t in span["tags"]}
        has = any(
            log
            for log in span.get("logs", [])
            if {"key": "event", "type": "string", "value": EVENT_NAME} in log["fields"]
        )
        assert tags.get(SPAN_ATTR_HAS_MILESTONE, False) is has, span["operationName"]
    # Searching by session id finds the trace.
    found = query(j, "/api/traces", service=SERVICE, tags=json.dumps({"session.id": session}), lookback="1h")
    assert [t["traceID"] for t in found["data"]] == [trace_id]


@pytest.fixture
def real_jaeger(tmp_path: Path) -> Iterator[Jaeger]:
    with jaeger(tmp_path) as j:
        yield j


@pytest.fixture
def bridges(moto_endpoint: str) -> Iterator[Any]:
    """bridges(table, n=1, port=0) -> n started bridges with the token (stopped after the test)."""
    started: list[Bridge] = []

    def start(table: str, n: int = 1, port: int = 0) -> list[Bridge]:
        made = [Bridge(table, port=port, grpc_port=0, token=TOKEN).start() for _ in range(n)]
        started.extend(made)
        return made

    yield start
    for b in started:
        b.shutdown(timeout_s=5)


@pytest.mark.parametrize("config", SHIPPED)
def test_each_shipped_collector_config_carries_a_hisagent_trace_to_jaeger_and_the_rows_to_dynamodb(
    config: str,
    moto_endpoint: str,
    ddb: Any,
    new_table: Any,
    real_jaeger: Jaeger,
    bridges: Any,
    tmp_path: Path,
) -> None:
    """The demo writes its rows in process to one table; the bridges behind the collector write
    the same trace's milestones to another: both tables end up with the same rows."""
    in_process, via_bridge = new_table(), new_table()
    fleet = bridges(via_bridge, n=2 if "scale-out" in config else 1)
    sessions = [new_session() for _ in range(3 if "scale-out" in config else 1)]
    col = Collector(config)
    hosts = {"jaeger:4317": real_jaeger.otlp_grpc, **bridge_hosts(config, fleet)}
    with col.run(hosts, tmp_path):
        runs = {s: demo(moto_endpoint, in_process, s, f"http://127.0.0.1:{col.http}") for s in sessions}
        traces = {s: trace_id for s, (trace_id, _) in runs.items()}
        sent = sum(n for _, n in runs.values())
        for session in sessions:
            expected = session_rows(ddb, in_process, session)
            assert {r["evt_type"] for r in expected} == LIFECYCLE
            count = len(expected)
            wait_for(lambda s=session, n=count: len(session_rows(ddb, via_bridge, s)) == n, timeout_s=60)
            assert session_rows(ddb, via_bridge, session) == expected  # every attribute of every row
            assert_trace_tells_the_rows(real_jaeger, traces[session], session, expected)
        # Every span the demos sent reaches Jaeger; the bridges get all of them, only those that carry
        # milestones (milestones-only), or none (scale-out: the live copies alone).
        wait_for(lambda: sum(len(jaeger_trace(real_jaeger, t)["spans"]) for t in traces.values()) == sent)  # type: ignore[index]
        milestones = sum(len(session_rows(ddb, in_process, s)) for s in sessions)
        if "milestones-only" in config:
            assert 0 < sum(b.stats.spans for b in fleet) < sent
        elif "scale-out" in config:
            assert sum(b.stats.spans for b in fleet) == 0
        else:
            wait_for(lambda: sum(b.stats.spans for b in fleet) == sent, timeout_s=30)
        if "scale-out" not in config:
            # Both copies of every milestone reached the bridge: the second cost no write.
            wait_for(lambda: sum(b.stats.rows_seen for b in fleet) == milestones, timeout_s=30)
        # Each milestone was one DynamoDB write.
        assert sum(b.stats.rows_written for b in fleet) == milestones
        assert sum(b.stats.rows_existing for b in fleet) == 0
        if "scale-out" in config:
            # Three agents' logs all go to one of two bridges one time in four: 24 more senders
            # (resources) make "both bridges write" certain in practice (all on one: 2 in 2**27).
            extra = [new_session() for _ in range(24)]
            for session in extra:
                body = milestone_logs_body(
                    session, 2, **{"service.name": SERVICE, "service.instance.id": session}
                )
                assert post(f"http://127.0.0.1:{col.http}/v1/logs", body).status == 200
            for session in extra:
                wait_for(lambda s=session: len(session_rows(ddb, via_bridge, s)) == 2, timeout_s=60)
            assert all(b.stats.rows_written > 0 for b in fleet), [b.stats for b in fleet]


def test_through_the_shipped_config_rows_reach_the_table_while_the_invocation_runs_one_write_each(
    moto_endpoint: str, ddb: Any, new_table: Any, real_jaeger: Jaeger, proxy: FaultProxy, tmp_path: Path
) -> None:
    """An agent exporting only OTLP to the collector running ``collector/config.yaml``: every row is
    in the bridge's table while the invocation is still open, and DynamoDB receives one put per
    milestone (counted at a proxy in front of it), though both copies of each reach the bridge."""
    in_process, via_bridge = new_table(), new_table()
    bridge = Bridge(via_bridge, port=0, grpc_port=0, token=TOKEN, client=proxied_client(proxy)).start()
    col = Collector("config.yaml")
    session = new_session()
    hosts = {"jaeger:4317": real_jaeger.otlp_grpc, "http://his-bridge:4319": bridge.url}
    try:
        with col.run(hosts, tmp_path):
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{col.http}"}
            env["OTEL_SERVICE_NAME"] = SERVICE
            expected = gated_run(ddb, in_process, via_bridge, session, env, tmp_path, steps=3)
            wait_for(lambda: bridge.stats.rows_seen == len(expected), timeout_s=60)
    finally:
        bridge.shutdown(timeout_s=5)
    assert session_rows(ddb, via_bridge, session) == expected
    puts = {key: n for key, n in proxy.counters.puts.items() if key[0] == via_bridge}
    assert len(puts) == len(expected) and set(puts.values()) == {1}  # 1.0 writes per milestone
    trace_ids = {r["trace_id"] for r in expected}
    assert len(trace_ids) == 1
    assert_trace_tells_the_rows(real_jaeger, trace_ids.pop(), session, expected)


def test_the_bridge_down_for_a_while_loses_no_row(
    moto_endpoint: str, ddb: Any, new_table: Any, real_jaeger: Jaeger, bridges: Any, tmp_path: Path
) -> None:
    in_process, via_bridge = new_table(), new_table()
    port = free_port()
    col = Collector("config.yaml")
    session = new_session()
    hosts = {"jaeger:4317": real_jaeger.otlp_grpc, "http://his-bridge:4319": f"http://127.0.0.1:{port}"}
    with col.run(hosts, tmp_path):
        trace_id, _ = demo(moto_endpoint, in_process, session, f"http://127.0.0.1:{col.http}")
        # Nothing listens where the bridge should be: the collector queues and retries.
        wait_for(lambda: "connection refused" in (tmp_path / "otelcol-his.log").read_text(), timeout_s=30)
        assert session_rows(ddb, via_bridge, session) == []
        bridges(via_bridge, port=port)
        expected = session_rows(ddb, in_process, session)
        wait_for(lambda: len(session_rows(ddb, via_bridge, session)) == len(expected), timeout_s=90)
    assert session_rows(ddb, via_bridge, session) == expected
    assert_trace_tells_the_rows(real_jaeger, trace_id, session, expected)


def test_a_token_mismatch_drops_the_batch_with_a_401_in_the_collectors_log_and_jaeger_still_gets_it(
    moto_endpoint: str, ddb: Any, new_table: Any, real_jaeger: Jaeger, bridges: Any, tmp_path: Path
) -> None:
    """What the README says under "A token mismatch": the bridge answers 401, which the collector's
    otlp_http exporter treats as permanent: it logs the error and drops that batch (no retry), and
    the other exporters are not affected."""
    in_process, via_bridge = new_table(), new_table()
    (bridge,) = bridges(via_bridge)
    col = Collector("config.yaml")
    session = new_session()
    hosts = {"jaeger:4317": real_jaeger.otlp_grpc, "http://his-bridge:4319": bridge.url}
    with col.run(hosts, tmp_path, token="not-the-bridges-token"):
        trace_id, _ = demo(moto_endpoint, in_process, session, f"http://127.0.0.1:{col.http}")
        wait_for(lambda: bridge.stats.rejected_requests >= 1, timeout_s=30)
        log = wait_for(lambda: _log_line(tmp_path, "Dropping data", "401"), timeout_s=30)
        for words in ("Dropping data", "Permanent error", "missing or wrong bearer token"):
            assert words in log, log
        requests = bridge.stats.requests
        assert_trace_tells_the_rows(real_jaeger, trace_id, session, session_rows(ddb, in_process, session))
    assert bridge.stats.requests == requests  # never retried
    assert bridge.stats.rows_written == 0
    assert session_rows(ddb, via_bridge, session) == []


def _log_line(workdir: Path, *needles: str) -> str | None:
    """The first line of the collector's log holding every needle (one alone can match a port)."""
    for line in (workdir / "otelcol-his.log").read_text().splitlines():
        if all(needle in line for needle in needles):
            return line
    return None
