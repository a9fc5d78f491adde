"""7. The collector path, live: emit-to-row latency of rows that reach DynamoDB only through OTLP
(app -> the real collector running ``collector/config.yaml`` -> ``his-otel bridge`` -> DynamoDB)
beside the in-process path of the same run.

A HISAgent in its own process runs one long invocation (tools that take seconds each, a PROGRESS
milestone inside each), exporting OTLP to the collector; his-otel installs the providers from
``OTEL_EXPORTER_OTLP_ENDPOINT`` alone. It writes its rows in process to one table; the bridge writes
another. A poller reads both tables every 100 ms: a row's latency is the poll that first saw it minus
the milestone's own timestamp (so up to 100 ms of it is the poll interval, on both sides alike).
"START" is that latency for the invocation's START row: how long a UI fed by the table shows nothing.
The collector and Jaeger-less copy of the shipped config come from ``../shared/bin`` (or
``HIS_OTEL_OTELCOL``); without the collector the rows are not printed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bridge import BridgeProcesses
from benchmarks.common import Moto, Row, median, percentile
from his_otel.read import session_rows
from his_otel.testing import otel_binaries
from his_otel.testing.local_dynamodb import free_port

ROOT = Path(__file__).resolve().parents[1]

APP = """
import time
from strands import tool
from his_otel import HISAgent, ScriptedModel, ToolCall, milestone


@tool
def slow_step(n: int) -> str:
    \"\"\"A step that takes a while.\"\"\"
    time.sleep(STEP_S / 2)
    milestone("PROGRESS", f"step {n} half done")
    time.sleep(STEP_S / 2)
    return "done"


script = [ToolCall("slow_step", {"n": i}) for i in range(STEPS)] + ["all done"]
HISAgent(TABLE, SESSION, model=ScriptedModel(script), tools=[slow_step])("go")
"""


def collector_config(otlp_port: int, bridge_url: str) -> dict[str, Any]:
    """``collector/config.yaml`` as shipped, on loopback, without Jaeger (not measured here)."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "collector" / "config.yaml").read_text())
    config["receivers"]["otlp"]["protocols"] = {"http": {"endpoint": f"127.0.0.1:{otlp_port}"}}
    config["extensions"]["health_check"]["endpoint"] = f"127.0.0.1:{free_port()}"
    config["exporters"]["otlp_http/his-bridge"]["endpoint"] = bridge_url
    config["exporters"].pop("otlp_grpc/jaeger")
    for pipeline in config["service"]["pipelines"].values():
        pipeline["exporters"] = [e for e in pipeline["exporters"] if e not in ("otlp_grpc/jaeger", "debug")]
    config["service"]["telemetry"] = {"metrics": {"level": "none"}}
    return config


def wait_listening(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def emitted_ns(row: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(row["evt_datetime"]).timestamp() * 1e9)


def run(moto: Moto, quick: bool) -> list[Row]:
    binary = otel_binaries.find("otelcol-his", otel_binaries.shared_beside(ROOT))
    if binary is None:
        sys.stderr.write("collector_path: no collector (../shared/bin or HIS_OTEL_OTELCOL); rows skipped\n")
        return []
    steps, step_s = (4, 1.5) if quick else (12, 3.0)  # a 36 s invocation in a full run
    in_process, via_bridge = moto.new_table(), moto.new_table()
    session = f"bench-{os.getpid()}-{time.time_ns()}"
    bridge = BridgeProcesses(via_bridge, workers=1, append_only=True)
    otlp_port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="his-otel-collector-"))
    (workdir / "config.yaml").write_text(yaml.safe_dump(collector_config(otlp_port, bridge.url)))
    log = (workdir / "collector.log").open("w")
    collector = subprocess.Popen(
        [str(binary), "--config", str(workdir / "config.yaml")], stdout=log, stderr=log
    )
    seen: dict[str, dict[str, int]] = {in_process: {}, via_bridge: {}}
    rows: dict[str, dict[str, Any]] = {}
    try:
        wait_listening(otlp_port)
        code = f"TABLE, SESSION, STEPS, STEP_S = {in_process!r}, {session!r}, {steps}, {step_s}\n" + APP
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}"}
        app = subprocess.Popen([sys.executable, "-c", code], env=env)
        finished_polls = 0
        while finished_polls < 30:  # after the app exits, until both tables hold every row
            now = time.time_ns()
            for table, first_seen in seen.items():
                for row in session_rows(moto.client, table, session):
                    first_seen.setdefault(row["event_id"], now)
                    rows.setdefault(row["event_id"], row)
            if app.poll() is not None:
                if app.returncode != 0:
                    raise RuntimeError(f"the agent failed ({app.returncode})")
                finished_polls += 1
                if finished_polls > 3 and len(seen[via_bridge]) >= len(seen[in_process]) > 0:
                    break
            time.sleep(0.1)
    finally:
        collector.terminate()
        collector.wait(30)
        log.close()
        bridge.stop()
    assert set(seen[via_bridge]) == set(seen[in_process]), "the collector path lost rows"

    def latencies(table: str) -> list[float]:
        return [(t - emitted_ns(rows[e])) / 1e6 for e, t in seen[table].items()]

    def start_ms(table: str) -> float:
        (start,) = [e for e, r in rows.items() if r["evt_type"] == "START"]
        return (seen[table][start] - emitted_ns(rows[start])) / 1e6

    ours, ref = latencies(via_bridge), latencies(in_process)
    run_s = f"{steps} tools x {step_s:g} s"
    label = "in-process path, same run"
    return [
        Row("7 collector path", f"emit-to-row p50, {run_s}", median(ours), median(ref), label, "ms"),
        Row("7 collector path", f"emit-to-row p99, {run_s}", percentile(ours, 99), percentile(ref, 99), label,
            "ms", target="≤ 2,000 ms"),
        Row("7 collector path", "START visible after", start_ms(via_bridge), start_ms(in_process), label,
            "ms", target="≤ 2,000 ms"),
    ]  # fmt: skip
