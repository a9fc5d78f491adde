"""The session page as a person sees it: Debian's chromium, driven by Playwright, against a real
``StatusServer`` reading moto's server while real Strands runs (scripted models) write the rows.

Needs /usr/bin/chromium (or HIS_OTEL_CHROMIUM) and the ``playwright`` package; without them the
tests skip with the reason (and CI, which installs both, fails on a skip).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import new_session, wait_for
from his_otel import Handle
from his_otel.read import session_rows
from his_otel.scenarios import BUILDERS
from his_otel.serve import StatusServer
from his_otel.testing.chromium import CHROMIUM, launch
from his_otel.testing.local_dynamodb import free_port

TRACE_URL = "http://jaeger.test:16686/trace/{trace_id}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = launch(p)
        yield browser
        browser.close()


@pytest.fixture
def server(moto_endpoint: str, table: str) -> Iterator[StatusServer]:
    s = StatusServer(
        table, host="127.0.0.1", port=0, endpoint_url=moto_endpoint, poll_ms=50, trace_url=TRACE_URL
    ).start()
    yield s
    s.shutdown()


def dom_rows(page: Any) -> list[dict[str, Any]]:
    return list(
        page.eval_on_selector_all(
            ".row",
            """els => els.map(e => ({id: e.dataset.eventId, type: e.dataset.type,
                lane: e.closest('.lane').dataset.agent,
                trace: (e.querySelector('a.trace') || {}).href || null,
                duration: e.dataset.durationMs || null, error: e.classList.contains('error')}))""",
        )
    )


def deliveries(page: Any) -> dict[str, int]:
    return dict(page.evaluate("() => Object.fromEntries(window.hisOtel.deliveries)"))


def start_run(name: str, table: str, session: str, delay: float) -> threading.Thread:
    worker = threading.Thread(target=lambda: BUILDERS[name](table, session, delay).run(), daemon=True)
    worker.start()
    return worker


def test_the_page_shows_a_running_sessions_rows_as_they_land(
    browser: Any, server: StatusServer, table: str, his: Handle, ddb: Any
) -> None:
    session = new_session()
    page = browser.new_page()
    page.goto(f"{server.url}/sessions/{session}")
    assert page.text_content("#empty")  # nothing yet
    run = start_run("agent", table, session, 0.4)  # about 3 s of model turns and tools
    # Mid-run: rows are on the screen while the run is still going (its RESULT not yet written).
    page.wait_for_selector(".row[data-type=TOOLING]", timeout=30_000)
    shown_mid_run = {r["type"] for r in dom_rows(page)}
    assert run.is_alive() and "RESULT" not in shown_mid_run
    # A second viewer joins mid-run: it gets the session from its start.
    late = browser.new_page()
    late.goto(f"{server.url}/sessions/{session}")
    run.join(60)
    assert his.force_flush(10_000)
    expected = [r["event_id"] for r in session_rows(ddb, table, session)]
    for viewer in (page, late):
        viewer.wait_for_function(f"document.body.dataset.rows === '{len(expected)}'", timeout=30_000)
        rows = dom_rows(viewer)
        assert sorted(r["id"] for r in rows) == sorted(expected)
        assert set(deliveries(viewer).values()) == {1}  # each row arrived once
        assert viewer.text_content("#run") == "finished"
        tools = [r for r in rows if r["type"] == "TOOLING"]
        assert len(tools) == 3 and all(r["duration"] is not None for r in tools)
        trace_id = session_rows(ddb, table, session)[0]["trace_id"]
        assert all(r["trace"] == f"http://jaeger.test:16686/trace/{trace_id}" for r in rows)
        assert "total tokens" in viewer.text_content("#stats")
    page.close()
    late.close()


def test_the_page_reconnects_after_the_service_restarts_without_losing_or_repeating_a_row(
    browser: Any, moto_endpoint: str, table: str, his: Handle, ddb: Any
) -> None:
    port = free_port()

    def serve() -> StatusServer:
        return StatusServer(
            table, host="127.0.0.1", port=port, endpoint_url=moto_endpoint, poll_ms=50
        ).start()

    session = new_session()
    first = serve()
    page = browser.new_page()
    page.goto(f"{first.url}/sessions/{session}")
    BUILDERS["agent"](table, session, 0).run()
    assert his.force_flush(10_000)
    before = len(session_rows(ddb, table, session))
    page.wait_for_function(f"document.body.dataset.rows === '{before}'", timeout=30_000)
    first.shutdown()
    page.wait_for_function("document.getElementById('conn').textContent === 'reconnecting'", timeout=30_000)
    # Rows land while the service is down: a second invocation.
    BUILDERS["agent"](table, session, 0).run()
    assert his.force_flush(10_000)
    expected = [r["event_id"] for r in session_rows(ddb, table, session)]
    second = serve()  # the browser reconnects by itself, sending its Last-Event-ID
    try:
        page.wait_for_function(f"document.body.dataset.rows === '{len(expected)}'", timeout=30_000)
        wait_for(lambda: page.text_content("#conn") == "live", timeout_s=30)
        assert sorted(r["id"] for r in dom_rows(page)) == sorted(expected)
        counts = deliveries(page)
        assert sorted(counts) == sorted(expected) and set(counts.values()) == {1}
    finally:
        page.close()
        second.shutdown()


def test_a_swarm_shows_one_lane_per_agent(
    browser: Any, server: StatusServer, table: str, his: Handle, ddb: Any
) -> None:
    session = new_session()
    BUILDERS["swarm"](table, session, 0).run()
    assert his.force_flush(10_000)
    rows = session_rows(ddb, table, session)
    page = browser.new_page()
    page.goto(f"{server.url}/sessions/{session}")
    page.wait_for_function(f"document.body.dataset.rows === '{len(rows)}'", timeout=30_000)
    lanes = page.eval_on_selector_all(".lane", "els => els.map(e => e.dataset.agent)")
    assert lanes == ["support-swarm", "triage", "refunds", "notifier"]
    shown = {r["id"]: r["lane"] for r in dom_rows(page)}
    assert shown == {r["event_id"]: r["agent_id"] for r in rows}  # each row in its agent's lane
    assert page.text_content("#run") == "finished"
    assert "triage → refunds → notifier" in page.text_content("#stats")
    page.close()


def test_a_token_in_the_pages_address_never_leaves_as_a_referer(
    browser: Any, moto_endpoint: str, table: str, his: Handle, ddb: Any
) -> None:
    """The page and its stream take ?access_token= (a browser cannot add headers); following a row's
    trace link must not hand that address to Jaeger."""
    import http.server

    seen: list[tuple[str, str | None]] = []

    class Jaeger(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Referer")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"trace")

        def log_message(self, *args: Any) -> None:
            pass

    jaeger = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jaeger)
    threading.Thread(target=jaeger.serve_forever, daemon=True).start()
    trace_url = f"http://127.0.0.1:{jaeger.server_address[1]}/trace/{{trace_id}}"
    server = StatusServer(
        table, host="127.0.0.1", port=0, endpoint_url=moto_endpoint, token="s3cret", trace_url=trace_url
    ).start()
    try:
        session = new_session()
        BUILDERS["agent"](table, session, 0).run()
        assert his.force_flush(10_000)
        page = browser.new_page()
        page.goto(f"{server.url}/sessions/{session}?access_token=s3cret")
        page.wait_for_selector("a.trace", timeout=30_000)
        with page.context.expect_page() as opened:
            page.click("a.trace >> nth=0")
        opened.value.wait_for_load_state()
        trace_id = session_rows(ddb, table, session)[0]["trace_id"]
        # Jaeger was asked for the trace with no Referer at all (Chrome's default would send the
        # page's origin; the page says no-referrer, so not even that).
        assert seen[0] == (f"/trace/{trace_id}", None)
        page.close()
    finally:
        server.shutdown()
        jaeger.shutdown()


def test_errors_stand_out(browser: Any, server: StatusServer, table: str, his: Handle) -> None:
    from opentelemetry import trace

    from his_otel import milestone

    session = new_session()
    with trace.get_tracer("t").start_as_current_span("work"):
        for evt_type, text in (
            ("START", "started"),
            ("ERROR", "Tool refund failed: no such order"),
            ("PROGRESS", "on"),
        ):
            milestone(evt_type, text, session_id=session, table=table)
    assert his.force_flush(10_000)
    page = browser.new_page()
    page.goto(f"{server.url}/sessions/{session}")
    page.wait_for_function("document.body.dataset.rows === '3'", timeout=30_000)
    assert [r["error"] for r in dom_rows(page)] == [False, True, False]
    color = page.eval_on_selector(".row.error .msg", "e => getComputedStyle(e).color")
    assert color == "rgb(179, 38, 30)"  # the error red, not the text colour
    page.close()


def test_the_readmes_page_screenshot_script_makes_the_picture(browser: Any, tmp_path: Any) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "docs" / "session_page_screenshot.py"
    out = tmp_path / "page.png"
    proc = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "42 rows" in proc.stdout
