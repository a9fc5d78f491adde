"""5. Memory under outage: DynamoDB unreachable for a fixed time while milestones arrive at a fixed
rate faster than the queue may hold. Runs in a fresh interpreter so its memory is its own; RSS is
sampled every 20 ms. The configured caps are targets: no reference here is measured, so none is
printed, except the milestones emitted (the reference for the drops)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.common import Moto, Row

CHILD = r"""
import json, sys, threading, time
from opentelemetry.sdk.trace import TracerProvider
from his_otel import DynamoDBSpanExporter, HISSpanProcessor, milestone

RATE, SECONDS, CAP, CAP_BYTES = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
PAGE = 4096

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE

# The discard port: connections are refused, as when DynamoDB's endpoint is gone.
exporter = DynamoDBSpanExporter("t", endpoint_url="http://127.0.0.1:9", export_timeout_millis=500)
processor = HISSpanProcessor(
    exporter, max_queue_size=CAP, max_queue_bytes=CAP_BYTES, shutdown_timeout_millis=200
)
provider = TracerProvider()
provider.add_span_processor(processor)
tracer = provider.get_tracer("bench")
base = rss()
peak = [base]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
message = "tool finished; " + "x" * 200
start = time.perf_counter()
n = 0
while time.perf_counter() - start < SECONDS:
    with tracer.start_as_current_span("cycle"):
        for _ in range(RATE // 100):
            milestone("PROGRESS", message, session_id="outage")
            n += 1
    delay = start + n / RATE - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
stats = processor.stats()
stop.set()
print(json.dumps({
    "emitted": n, "held": stats.queued, "peak_queued": stats.peak_queued,
    "queued_bytes": stats.queued_bytes, "dropped": stats.dropped, "rss_growth": peak[0] - base,
}))
processor.shutdown()
"""


def run(moto: Moto, quick: bool) -> list[Row]:
    rate, seconds = 5_000, (4.0 if quick else 10.0)
    cap = 10_000 if quick else 25_000
    cap_bytes = 64 * 1024 * 1024
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(rate), str(seconds), str(cap), str(cap_bytes)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["dropped"] + out["held"] == out["emitted"], out  # every milestone is held or counted
    assert out["peak_queued"] <= cap, out
    mib = 1024 * 1024
    tag = f"{rate}/s for {seconds:.0f}s, endpoint refusing"
    nan = float("nan")
    return [
        Row(
            "5 outage",
            f"peak queue ({tag})",
            out["peak_queued"],
            nan,
            "",
            "items",
            target=f"≤ {cap:,} (max_queue_size)",
        ),
        Row("5 outage", "dropped (counted)", out["dropped"], out["emitted"], "milestones emitted", "items"),
        Row(
            "5 outage",
            "peak RSS growth",
            out["rss_growth"] / mib,
            nan,
            "",
            "MiB",
            target=f"≤ {cap_bytes // mib} MiB of text (max_queue_bytes)",
        ),
    ]
