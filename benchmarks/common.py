"""What every benchmark shares: a moto server in its own process (optionally behind a link that adds
latency), percentiles, the result table."""

from __future__ import annotations

import os
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from his_otel.testing.local_dynamodb import LOCAL_ENV, LocalDynamoDB
from his_otel.write.table import create_table

# The round-trip time the runner put in front of DynamoDB for this benchmark (``benchmarks.distance``).
ENV_LATENCY_MS = "HIS_OTEL_BENCH_LATENCY_MS"
# The DynamoDB stand-ins the runner started (``benchmarks.standin``): "0=http://...,10=http://...".
ENV_STANDINS = "HIS_OTEL_BENCH_STANDINS"
STANDIN_LATENCIES_MS = (0, 10)


@dataclass
class Row:
    """One line of the table: a figure for his_otel and its reference, both measured in this run.

    The ratio printed is always ``ours / reference`` of the two figures printed beside it. A goal
    (a configured cap, a latency budget) is a ``target``, never a reference."""

    benchmark: str
    metric: str
    ours: float
    reference: float
    reference_label: str
    unit: str
    better: str = "lower"  # or "higher"
    target: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank: no interpolation past the largest sample."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Moto:
    """A moto server in its own process (it must not share the GIL with what is measured)."""

    def __init__(self, endpoint: str | None = None) -> None:
        """Start a server, or use the one already running at ``endpoint`` (maybe behind a ``Link``)."""
        os.environ.update(LOCAL_ENV)
        self._server: LocalDynamoDB | None = None
        if endpoint is None:
            self._server = LocalDynamoDB()
            endpoint = self._server.start()
        self.endpoint = endpoint
        self.latency_ms = float(os.environ.get(ENV_LATENCY_MS) or 0)
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = self.endpoint
        import boto3

        self.client: Any = boto3.client("dynamodb", endpoint_url=self.endpoint)

    @property
    def distance(self) -> str:
        """How far DynamoDB is, for metric names: "+10 ms RTT", or "loopback"."""
        return f"+{self.latency_ms:g} ms RTT" if self.latency_ms else "loopback"

    def new_table(self, prefix: str = "bench") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        create_table(self.client, name)
        return name

    def count(self, table: str) -> int:
        total, kwargs = 0, {"TableName": table, "Select": "COUNT"}
        while True:
            page = self.client.scan(**kwargs)
            total += page["Count"]
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


def standin(latency_ms: float) -> Moto:
    """The runner's DynamoDB stand-in answering after ``latency_ms`` (one of ``STANDIN_LATENCIES_MS``),
    or a new one when this benchmark runs alone. It also becomes boto3's default endpoint."""
    from benchmarks.standin import StandIn

    running = dict(pair.split("=", 1) for pair in os.environ.get(ENV_STANDINS, "").split(",") if "=" in pair)
    return StandIn(latency_ms, endpoint=running.get(f"{latency_ms:g}"))


def fmt(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "-"
    if unit == "us":
        return f"{value:,.1f} us"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    return f"{value:,.0f} {unit}"


def render(rows: Sequence[Row]) -> str:
    header = ("benchmark", "metric", "his_otel", "reference", "ratio", "reference is", "target")
    lines = [
        [
            r.benchmark,
            r.metric,
            fmt(r.ours, r.unit),
            fmt(r.reference, r.unit),
            "-" if r.ratio != r.ratio else f"{r.ratio:.3f}",
            r.reference_label,
            r.target,
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out.extend(
        "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines
    )
    return "\n".join(out)
