"""python -m benchmarks [--quick] [--only NAME[,NAME]]: run the benchmarks, print one table.

Each benchmark runs in its own interpreter against one moto server (a separate process), so a
global TracerProvider or a processor of one never touches another."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version

from benchmarks.common import Moto, Row, render

BENCHMARKS = ["agent_thread", "throughput", "freshness", "overhead", "outage", "bridge"]


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
        f"boto3 {version('boto3')}, moto {version('moto')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer samples: a smoke run")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps([r.__dict__ for r in one(args.child, args.quick)]))
        return 0
    names = [n for n in args.only.split(",") if n] or BENCHMARKS
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    moto = Moto()
    rows: list[Row] = []
    try:
        for name in names:
            started = time.perf_counter()
            cmd = [sys.executable, "-m", "benchmarks", "--child", name] + (["--quick"] if args.quick else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"benchmark {name} failed")
            rows.extend(Row(**r) for r in json.loads(proc.stdout.strip().splitlines()[-1]))
            sys.stderr.write(f"{name}: {time.perf_counter() - started:.0f}s\n")
    finally:
        moto.stop()
    print(f"his-otel benchmarks, {time.strftime('%Y-%m-%d')}, {'quick' if args.quick else 'full'} run")
    print(f"machine: {machine()}")
    flags = (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    print(f"command: python -m benchmarks{flags}")
    print()
    print(render(rows))
    print()
    print("ratio = his_otel / reference; for throughput it is the median of per-cycle ratios (each cycle")
    print("runs every way in all six orders, so both sides share the same minute of a noisy machine).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
