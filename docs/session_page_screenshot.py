"""Regenerate docs/session-page-swarm.png: the session page for a Swarm run, one lane per agent.

Starts the embedded DynamoDB (moto's server), runs the demo's Swarm scenario into it, serves the
session with ``StatusServer``, opens the page in headless Chromium (Debian's, driven by Playwright)
and saves it. Needs the test extra and Debian's chromium:

    python docs/session_page_screenshot.py [OUTPUT.png]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    from playwright.sync_api import sync_playwright

    import his_otel
    from his_otel.read import session_rows
    from his_otel.scenarios import BUILDERS
    from his_otel.serve import StatusServer
    from his_otel.testing.chromium import launch
    from his_otel.testing.local_dynamodb import LOCAL_ENV, LocalDynamoDB
    from his_otel.write.table import create_table, make_client

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "session-page-swarm.png"
    os.environ.update(LOCAL_ENV)
    with LocalDynamoDB() as endpoint:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        table, session = "his-otel-demo", "support-case-1042"
        client = make_client(endpoint)
        create_table(client, table)
        handle = his_otel.configure(table)
        BUILDERS["swarm"](table, session, 0.2).run()
        handle.force_flush(10_000)
        rows = len(session_rows(client, table, session))
        server = StatusServer(table, port=0, endpoint_url=endpoint).start()
        try:
            with sync_playwright() as p:
                browser = launch(p)
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.goto(f"{server.url}/sessions/{session}")
                page.wait_for_function(f"document.body.dataset.rows === '{rows}'", timeout=60_000)
                page.screenshot(path=str(out), full_page=False)
                browser.close()
        finally:
            server.shutdown()
            handle.shutdown()
    print(f"wrote {out} ({rows} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
