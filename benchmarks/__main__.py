"""python -m benchmarks [--quick] [--only NAME[,NAME]] [--latency-ms MS[,MS]]: run the benchmarks,
print one table.

Each benchmark runs in its own interpreter against one moto server (a separate process), so a
global TracerProvider or a processor of one never touches another. The benchmarks in ``AT_A_DISTANCE``
run once per latency, through a link (``benchmarks.distance``) that adds that round-trip time."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version

from benchmarks.common import ENV_LATENCY_MS, ENV_STANDINS, STANDIN_LATENCIES_MS, Moto, Row, render
from benchmarks.distance import Link
from benchmarks.standin import StandIn

BENCHMARKS = [
    "standin_ceiling",
    "agent_thread",
    "throughput",
    "freshness",
    "overhead",
    "outage",
    "bridge",
    "collector_path",
    "bridge_attack",
    "screen",
]
AT_A_DISTANCE = {"throughput", "freshness"}


def one(name: str, quick: bool) -> list[Row]:
    """Run one benchmark in this process (the moto endpoint comes from the environment)."""
    import importlib

    moto = Moto(endpoint=os.environ["AWS_ENDPOINT_URL_DYNAMODB"])
    module = importlib.import_module(f"benchmarks.{name}")
    return list(module.run(moto, quick))


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu or platform.processor()}), Python {platform.python_version()}, "
        f"strands-agents {version('strands-agents')}, opentelemetry-sdk {version('opentelemetry-sdk')}, "
        f"boto3 {version('boto3')}, moto {version('moto')}, uvicorn {version('uvicorn')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer samples: a smoke run")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument(
        "--latency-ms",
        default="0,10",
        help=f"round-trip times to add in front of DynamoDB for {', '.join(sorted(AT_A_DISTANCE))}",
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps([r.__dict__ for r in one(args.child, args.quick)]))
        return 0
    names = [n for n in args.only.split(",") if n] or BENCHMARKS
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    latencies = [float(ms) for ms in args.latency_ms.split(",") if ms.strip()] or [0.0]
    moto = Moto()
    links = {ms: Link(moto.endpoint, ms) for ms in latencies if ms}
    standins = {ms: StandIn(ms) for ms in STANDIN_LATENCIES_MS}
    os.environ[ENV_STANDINS] = ",".join(f"{ms:g}={s.endpoint}" for ms, s in standins.items())
    # moto stays boto3's default endpoint for the benchmarks that still write to it.
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = moto.endpoint
    rows: list[Row] = []
    try:
        for name in names:
            for ms in latencies if name in AT_A_DISTANCE else [0.0]:
                started = time.perf_counter()
                cmd = [sys.executable, "-m", "benchmarks", "--child", name] + (
                    ["--quick"] if args.quick else []
                )
                env = {**os.environ, ENV_LATENCY_MS: f"{ms:g}"}
                if ms:
                    env["AWS_ENDPOINT_URL_DYNAMODB"] = links[ms].endpoint
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)
                    raise SystemExit(f"benchmark {name} failed")
                rows.extend(Row(**r) for r in json.loads(proc.stdout.strip().splitlines()[-1]))
                sys.stderr.write(f"{name} @ {ms:g} ms: {time.perf_counter() - started:.0f}s\n")
    finally:
        for link in links.values():
            link.stop()
        for server in standins.values():
            server.stop()
        moto.stop()
    print(f"his-otel benchmarks, {time.strftime('%Y-%m-%d')}, {'quick' if args.quick else 'full'} run")
    print(f"machine: {machine()}")
    flags = (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    flags += f" --latency-ms {args.latency_ms}" if args.latency_ms != "0,10" else ""
    print(f"command: python -m benchmarks{flags}")
    print()
    print(render(rows))
    print()
    print("ratio = his_otel / reference, of the two figures beside it; both are measured in this run,")
    print("interleaved so both sides share the same minutes of a noisy machine. A target is a goal.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
