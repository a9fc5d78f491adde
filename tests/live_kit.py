"""A long HISAgent run whose tools wait for the test: the test reads the bridge's table while the
invocation is open (its ``invoke_agent`` and cycle spans not yet ended), so a row that can only
arrive at span end is never seen in time, whatever the machine's speed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import wait_for
from his_otel.read import session_rows

# The application's own providers, exactly as the README's "Live through a collector" sets them up.
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
(OWN_PROVIDERS,) = [
    code
    for code in re.findall(r"^```python\n(.*?)^```", README, flags=re.M | re.S)
    if "add_log_record_processor" in code
]

GATED_RUN = """
import os, pathlib, time
from strands import tool
import his_otel
from his_otel import HISAgent, ScriptedModel, ToolCall

MARKS = pathlib.Path(os.environ["MARKS"])


@tool
def wait_for_viewer(step: str) -> str:
    \"\"\"Wait until the test has seen this run's rows so far in the bridge's table.\"\"\"
    (MARKS / f"started-{step}").touch()
    deadline = time.monotonic() + 120
    while not (MARKS / f"go-{step}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "seen" if (MARKS / f"go-{step}").exists() else "never seen"


steps = [ToolCall("wait_for_viewer", {"step": str(i)}) for i in range(STEPS)]
agent = HISAgent(TABLE, SESSION, model=ScriptedModel([*steps, "done"]), tools=[wait_for_viewer])
print(agent("go"))
his_otel.current_handle().shutdown()
"""

SHUTDOWN_OWN = """
tracer_provider.shutdown()
logger_provider.shutdown()
"""


def gated_run(
    ddb: Any,
    in_process: str,
    via_bridge: str,
    session: str,
    env: dict[str, str],
    workdir: Path,
    *,
    own_providers: bool = False,
    steps: int = 2,
) -> list[dict[str, Any]]:
    """Run the gated agent in a subprocess with ``env`` (its OTLP settings). At each tool call, wait
    until every row written in process so far is in ``via_bridge`` too, then let the tool return.
    Returns the in-process rows once the run is over."""
    code = f"TABLE, SESSION, STEPS = {in_process!r}, {session!r}, {steps}\n"
    code += (OWN_PROVIDERS if own_providers else "") + GATED_RUN + (SHUTDOWN_OWN if own_providers else "")
    marks = workdir / "marks"
    marks.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **env, "MARKS": str(marks)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for step in range(steps):
            wait_for(
                lambda s=step: (marks / f"started-{s}").exists() or proc.poll() is not None, timeout_s=120
            )
            assert proc.poll() is None, proc.communicate()
            tooling = step + 1

            def written_in_process(n: int = tooling) -> list[dict[str, Any]]:
                rows = session_rows(ddb, in_process, session)
                return rows if [r["evt_type"] for r in rows].count("TOOLING") == n else []

            so_far = {r["event_id"] for r in wait_for(written_in_process, timeout_s=30)}

            def arrived(expected: set[str] = so_far) -> bool:
                return expected <= {r["event_id"] for r in session_rows(ddb, via_bridge, session)}

            # The invocation is still open (its tool waits for us): only a live copy gets here.
            wait_for(arrived, timeout_s=60, interval_s=0.1)
            (marks / f"go-{step}").touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "never seen" not in out
    return session_rows(ddb, in_process, session)
