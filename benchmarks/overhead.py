"""4. Whole-agent overhead: a HISAgent run with the scripted model (20 tool calls, milestones in
every cycle and in every tool) vs a plain strands.Agent doing the same work with no tracing at all;
and a HISSwarm of three agents (5 tool calls each, two hand-offs) vs the same plain Swarm; and a
HISAgent whose model takes 300 ms a call (5 tool calls), as a real model does, vs the same plain
Agent with Strands tracing on.
Each variant runs in its own fresh interpreter (a global TracerProvider cannot be unset), rounds
alternate, and each child reports the median of its runs, excluding start-up and one warm-up run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.common import Moto, Row, median, standin

CHILD = r"""
import json, os, statistics, sys, time
from strands import Agent, tool
from strands.multiagent import Swarm
from his_otel import HISAgent, HISSwarm, ScriptedModel, ToolCall, milestone

VARIANT, TABLE, RUNS = sys.argv[1], sys.argv[2], int(sys.argv[3])
if VARIANT == "his_nowait":
    # The same HISAgent, not waiting at the end of an invocation for its rows to be written.
    os.environ["HIS_OTEL_INVOCATION_FLUSH_MS"] = "0"
    VARIANT = "his"

@tool
def step(n: int) -> str:
    '''One unit of work.'''
    if VARIANT.endswith("his"):
        milestone("PROGRESS", f"step {n} half way")
    return f"step {n} done"

def script(n=20):
    return [ToolCall("step", {"n": i}) for i in range(n)] + [f"all {n} steps done"]

def model():
    if VARIANT.startswith("slow"):
        return ScriptedModel(script(5), delay_s=0.3)  # a real model's latency, per call
    return ScriptedModel(script())

if VARIANT.endswith("traced"):
    # Strands' own tracing on (an SDK provider is set), no his-otel: isolates what his-otel adds.
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())

def member(name, then):
    turns = [ToolCall("step", {"n": i}) for i in range(5)] + then
    return Agent(name=name, model=ScriptedModel(turns), tools=[step], callback_handler=None)

def swarm(i):
    hand = lambda to: [ToolCall("handoff_to_agent", {"agent_name": to, "message": "yours"}), "handed off"]
    nodes = [member("a", hand("b")), member("b", hand("c")), member("c", ["all 15 steps done"])]
    if VARIANT == "swarm_his":
        return HISSwarm(nodes, TABLE, f"overhead-{os.getpid()}-{i}")
    return Swarm(nodes)

def make(i):
    if VARIANT.startswith("swarm"):
        return swarm(i)
    if VARIANT in ("his", "slow_his"):
        return HISAgent(TABLE, f"overhead-{os.getpid()}-{i}", model=model(), tools=[step])
    return Agent(model=model(), tools=[step], callback_handler=None)

make(-1)("warm up")
if VARIANT.endswith("his"):
    import his_otel
    # Steady state: the writer builds its boto3 client on its first write; let that happen now,
    # not inside the first measured runs.
    assert his_otel.current_handle().force_flush(60000)
walls, cpus = [], []
for i in range(RUNS):
    agent = make(i)
    w0, c0 = time.perf_counter(), time.process_time()
    agent("do the steps")
    walls.append(time.perf_counter() - w0)
    cpus.append(time.process_time() - c0)
extra = {}
if VARIANT.endswith("his"):
    import his_otel
    h = his_otel.current_handle()
    assert h.force_flush(60000)
    s = h.stats()
    extra = {"written": s.written, "dropped": s.dropped}
print(json.dumps({"wall": statistics.median(walls), "cpu": statistics.median(cpus), **extra}))
"""


def child(variant: str, table: str, runs: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, variant, table, str(runs)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run(moto: Moto, quick: bool) -> list[Row]:
    rounds, runs = (3, 5) if quick else (6, 10)
    # Keep-alive connections and no delay, as DynamoDB's own (moto's server closes each connection).
    table = standin(0).new_table()
    ours: list[dict[str, float]] = []
    nowait: list[dict[str, float]] = []
    plain: list[dict[str, float]] = []
    traced: list[dict[str, float]] = []
    swarm_ours: list[dict[str, float]] = []
    swarm_plain: list[dict[str, float]] = []
    swarm_traced: list[dict[str, float]] = []
    slow_ours: list[dict[str, float]] = []
    slow_traced: list[dict[str, float]] = []
    for r in range(rounds):
        order = [("plain", plain), ("traced", traced), ("his", ours), ("his_nowait", nowait)]
        order += [("swarm_plain", swarm_plain), ("swarm_traced", swarm_traced), ("swarm_his", swarm_ours)]
        for variant, into in order[r % len(order) :] + order[: r % len(order)]:
            into.append(child(variant, table, runs))
        # Two seconds a run: fewer runs, still every round, in alternating order.
        slow = [("slow_traced", slow_traced), ("slow_his", slow_ours)]
        for variant, into in slow[r % 2 :] + slow[: r % 2] if r < (1 if quick else rounds) else []:
            into.append(child(variant, table, 2 if quick else 3))
    # Each HISAgent run records: START, 2 EVENT_LOOP, 21 MODEL_INVOCATION, 20 TOOLING,
    # 20 PROGRESS, COMPLETION, AGENT_STATS, RESULT = 67 milestones.
    assert all(o["dropped"] == 0 and o["written"] >= 67 * runs for o in ours), ours
    # Per swarm run: 9 orchestration rows (start, 3 node starts and ends, 2 hand-offs, end, stats...)
    # and each member's own agent rows.
    assert all(o["dropped"] == 0 and o["written"] >= 60 * runs for o in swarm_ours), swarm_ours
    assert all(o["dropped"] == 0 and o["written"] >= 20 for o in slow_ours), slow_ours
    assert all(o["dropped"] == 0 and o["written"] >= 67 * runs for o in nowait), nowait
    rows = [
        Row(
            "4 whole agent",
            "wall per run (20 tools), waiting for the rows at the end",
            median([o["wall"] for o in ours]) * 1000,
            median([o["wall"] for o in nowait]) * 1000,
            "the same HISAgent, HIS_OTEL_INVOCATION_FLUSH_MS=0 (no wait)",
            "ms",
        )
    ]
    for mine, label, ref, unit in (
        (ours, "plain strands.Agent, no tracing", plain, "20 tools"),
        (ours, "plain strands.Agent, Strands tracing on", traced, "20 tools"),
        (swarm_ours, "plain strands Swarm, no tracing", swarm_plain, "swarm of 3, 15 tools"),
        (swarm_ours, "plain strands Swarm, Strands tracing on", swarm_traced, "swarm of 3, 15 tools"),
        (slow_ours, "plain strands.Agent, Strands tracing on", slow_traced, "5 tools, model 300 ms a call"),
    ):
        for what, metric in (("wall", f"wall per run ({unit})"), ("cpu", f"CPU per run ({unit})")):
            ours_ms = median([o[what] for o in mine]) * 1000
            ref_ms = median([p[what] for p in ref]) * 1000
            slow = "300 ms" in unit
            goal = {("wall", False): "≤ 1.3x", ("cpu", False): "≤ 1.15x", ("cpu", True): "≤ 1.3x"}.get(
                (what, slow), ""
            )
            goal = "" if "no tracing" in label else goal
            rows.append(Row("4 whole agent", metric, ours_ms, ref_ms, label, "ms", target=goal))
    return rows
