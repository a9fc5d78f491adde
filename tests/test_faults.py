"""The fault suite: under each fault, and all of them mixed, every milestone of several agents
(threads and asyncio tasks) has exactly one row once the fault clears, in emission order.

Run it alone with `python -m pytest -m faults`; `-s` also prints the per-fault report. Set
HIS_OTEL_SOAK=N to run each scenario N rounds per agent (a soak run; off in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from his_otel.read import session_rows

HERE = Path(__file__).resolve().parent
SCENARIOS = ["healthy", "throttle", "unprocessed", "server_error", "refuse", "slow", "reset", "mixed"]
REPORT: list[dict[str, Any]] = []


def run_scenario(fault: str, endpoint: str, table: str, rounds: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(HERE / "fault_scenario.py"), "--endpoint", endpoint, "--table", table,
         "--fault", fault, "--rounds", str(rounds)],
        capture_output=True, text=True, timeout=600, check=False, env=os.environ.copy(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.faults
@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", SCENARIOS)
def test_every_milestone_has_exactly_one_row_in_order(
    fault: str, moto_endpoint: str, ddb: Any, table: str
) -> None:
    rounds = int(os.environ.get("HIS_OTEL_SOAK", "1"))
    out = run_scenario(fault, moto_endpoint, table, rounds)
    assert out["flushed"], "pending rows were not all written after the fault cleared"
    rows_found = 0
    for session, emitted in out["sessions"].items():
        assert len(emitted) == len(set(emitted))
        rows = session_rows(ddb, table, session)
        rows_found += len(rows)
        # Exactly one row per milestone (the key is the milestone's id), read back in emission order.
        assert [r["event_id"] for r in rows] == emitted, session
    assert rows_found == out["emitted"] >= 2000
    assert out["dropped"] == 0 and out["rejected"] == 0
    if fault != "healthy":
        assert out["injected"] or fault == "refuse", "the fault was never injected"
    REPORT.append({**out, "rows_found": rows_found, "duplicates": rows_found - out["emitted"]})


@pytest.fixture(scope="module", autouse=True)
def print_report() -> Any:
    yield
    if not REPORT:
        return
    lines = [
        "",
        "| fault | milestones emitted | rows found | duplicates | agent-thread p50 / p99 | peak queue "
        "| faults injected |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in REPORT:
        injected = ", ".join(f"{k} {v}" for k, v in sorted(r["injected"].items())) or "-"
        if r["fault"] in ("refuse", "mixed"):
            injected += ", connections refused for a while"
        lines.append(
            f"| {r['fault']} | {r['emitted']:,} | {r['rows_found']:,} | {r['duplicates']} | "
            f"{r['p50_us']:.1f} / {r['p99_us']:.1f} us | {r['peak_queue']:,} | {injected} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")
