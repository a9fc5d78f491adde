"""One fault scenario, in its own interpreter: real HISAgents (threads and asyncio tasks) emit
milestones while a fault proxy in front of moto's server misbehaves; then the fault clears and
the script reports what was emitted, so the caller can check the table.

    python tests/fault_scenario.py --endpoint http://127.0.0.1:PORT --table T --fault throttle

Prints one JSON object: the milestones emitted per session (in emission order), the agent-thread
cost of milestone() (p50/p99, microseconds), the processor's stats and the faults injected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from typing import Any

import boto3
from botocore.config import Config
from strands import tool

from fault_proxy import FaultProxy
from his_otel import HISAgent, ScriptedModel, ToolCall, configure, milestone
from his_otel.schema import Milestone

SCENARIOS: dict[str, dict[str, Any]] = {
    "healthy": {},
    "throttle": {"throttle": 0.3},
    "unprocessed": {"unprocessed": 0.5},
    "server_error": {"server_error": 0.3},
    "refuse": {"refuse_s": 2.0},
    "slow": {"slow": 0.1, "slow_s": 0.6},
    "reset": {"reset": 0.2},
    "mixed": {
        "throttle": 0.1,
        "unprocessed": 0.2,
        "server_error": 0.1,
        "slow": 0.05,
        "slow_s": 0.6,
        "reset": 0.05,
        "refuse_s": 1.0,
    },
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))] if ordered else 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--fault", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--agents", type=int, default=6, help="half run in threads, half as asyncio tasks")
    parser.add_argument("--tool-calls", type=int, default=20)
    parser.add_argument("--per-tool", type=int, default=15, help="milestones each tool call emits")
    parser.add_argument("--rounds", type=int, default=1, help="agent runs per agent (for soak runs)")
    args = parser.parse_args()

    proxy = FaultProxy(args.endpoint).start()
    client = boto3.client(
        "dynamodb",
        endpoint_url=proxy.endpoint,
        config=Config(
            connect_timeout=0.3,
            read_timeout=0.4,  # the slow fault answers after 0.6 s: past this timeout
            retries={"mode": "standard", "max_attempts": 2},
            parameter_validation=False,
        ),
    )
    handle = configure(args.table, client=client, export_timeout_millis=2000, flush_on_sigterm=False)
    emitted: list[Milestone] = []
    lock = threading.Lock()

    # Every milestone the pipeline takes, to compare with the table at the end.
    submit = handle.processor.submit

    def record(m: Milestone, span: Any = None) -> bool:
        with lock:
            emitted.append(m)
        return submit(m, span)

    handle.processor.submit = record  # type: ignore[method-assign]
    costs: list[float] = []

    @tool
    def work(step: int) -> str:
        """Do one step of work, reporting progress."""
        for i in range(args.per_tool):
            t0 = time.perf_counter_ns()
            milestone("PROGRESS", f"step {step}, part {i}")
            cost = (time.perf_counter_ns() - t0) / 1000
            with lock:
                costs.append(cost)
        return f"step {step} done"

    def script() -> list[Any]:
        return [ToolCall("work", {"step": i}) for i in range(args.tool_calls)] + ['{"done": true}']

    sessions = [f"{args.fault}-{i}-{time.time_ns()}" for i in range(args.agents)]

    def make(session: str) -> HISAgent:
        # A little model latency, so writing overlaps the run as it does for real agents.
        model = ScriptedModel(script(), delay_s=0.05)
        return HISAgent(args.table, session, model=model, tools=[work], agent_id="fault-agent")

    def run_thread(session: str) -> None:
        for _ in range(args.rounds):
            make(session)("go")

    async def run_tasks(group: list[str]) -> None:
        async def one(session: str) -> None:
            for _ in range(args.rounds):
                await make(session).invoke_async("go")

        await asyncio.gather(*(one(s) for s in group))

    spec = dict(SCENARIOS[args.fault])
    refuse_s = spec.pop("refuse_s", 0.0)
    started = time.monotonic()
    with proxy.injecting(**spec):
        if refuse_s:
            proxy.stop()
            threading.Timer(refuse_s, proxy.start).start()
        half = len(sessions) // 2
        threads = [threading.Thread(target=run_thread, args=(s,)) for s in sessions[:half]]
        for t in threads:
            t.start()
        asyncio.run(run_tasks(sessions[half:]))
        for t in threads:
            t.join()
        agents_done = time.monotonic() - started
        # The writer drains the queue with the fault still on (a share of calls fail; a refused
        # endpoint comes back when its timer fires).
        drained_under_fault = handle.force_flush(120_000)
        drain_s = time.monotonic() - started - agents_done
    # The fault has cleared: anything still pending must now be written.
    flushed = handle.force_flush(60_000)
    stats = handle.stats()
    handle.shutdown()
    proxy.stop()
    by_session: dict[str, list[str]] = {s: [] for s in sessions}
    for m in emitted:
        by_session.setdefault(m.session_id, []).append(m.event_id)
    print(
        json.dumps(
            {
                "fault": args.fault,
                "flushed": flushed,
                "sessions": by_session,
                "emitted": len(emitted),
                "p50_us": percentile(costs, 50),
                "p99_us": percentile(costs, 99),
                "samples": len(costs),
                "peak_queue": stats.peak_queued,
                "written": stats.written,
                "rejected": stats.rejected,
                "dropped": stats.dropped,
                "retries": stats.retries,
                "injected": proxy.counters.injected,
                "proxied_requests": proxy.counters.requests,
                "agents_s": agents_done,
                "drain_s": drain_s,
                "drained_under_fault": drained_under_fault,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
