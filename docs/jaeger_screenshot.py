"""Regenerate docs/jaeger-trace.png: a HISAgent trace in the real Jaeger UI, with its milestones.

Runs ``his-otel demo`` (embedded DynamoDB) exporting its trace to the Jaeger v2 build from
../shared/bin (or HIS_OTEL_JAEGER), opens the trace in headless Chromium, expands the
``invoke_agent`` span's Logs, and saves the page. Needs the test extra, Debian's chromium and
``pip install playwright`` (it drives /usr/bin/chromium; no browser download):

    python docs/jaeger_screenshot.py [OUTPUT.png]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from binaries import jaeger  # noqa: E402
from his_otel.testing.chromium import launch  # noqa: E402


def main() -> int:
    from playwright.sync_api import sync_playwright

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "jaeger-trace.png"
    with tempfile.TemporaryDirectory() as work, jaeger(Path(work)) as j:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": j.otlp_http, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        demo = subprocess.run(  # noqa: S603 - our own console script
            [str(Path(sys.executable).with_name("his-otel")), "demo", "--session-id", "session-123"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        (trace_id,) = re.findall(r"trace id: ([0-9a-f]{32})", demo.stdout)
        print(demo.stdout)
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.goto(f"{j.query}/trace/{trace_id}", wait_until="networkidle")
            page.locator(".span-name").first.click()
            # The span's details open with its Logs (span events) listed; show all of them.
            more = page.get_by_text("show more...")
            if more.count():
                more.first.click()
            # Open the START milestone: its attributes as a table (type, message, ids, length).
            page.get_by_text("Processing user request").first.click()
            page.wait_for_timeout(500)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    print(f"wrote {out} (trace {trace_id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
