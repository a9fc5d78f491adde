"""9. The session page: emit-to-screen latency beside emit-to-row, the Query rate of many viewers,
and the page's render time for a 10,000-row session.

- Emit-to-screen: milestones emitted at 20/s while the page is open in headless chromium (Debian's,
  driven by Playwright); a row counts as on the screen when the page put it in the DOM (its own
  ``Date.now()``), against the milestone's timestamp. Emit-to-row (the write acknowledged, as in
  benchmark 3) is measured for the same milestones: the reference.
- Query rate: viewers hold the AG-UI stream of one session (1, 10, 100), or 100 sessions hold one
  each; the DynamoDB client counts the Query calls. The reference is one Query per viewer per poll
  interval: what viewers polling DynamoDB themselves would cost.
- Render: a session of 10,000 rows opened in the page, until all are in the DOM; the reference is
  the same browser fetching and parsing the same rows as JSON from ``/rows`` (the data alone).
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from typing import Any

from benchmarks.common import Moto, Row, percentile
from benchmarks.freshness import LandingClock
from his_otel import configure, milestone
from his_otel.read.cursor import event_ms
from his_otel.serve import StatusServer
from his_otel.serve.server import DEFAULT_POLL_MS
from his_otel.testing.chromium import CHROMIUM, launch


class QueryCounter:
    """Wraps the serving side's DynamoDB client: counts Query calls."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.queries = 0

    def query(self, **kwargs: Any) -> Any:
        self.queries += 1
        return self._client.query(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _hold_stream(server: StatusServer, session: str, stop: threading.Event) -> None:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request("GET", f"/sessions/{session}/events")
    response = conn.getresponse()
    while not stop.is_set() and response.readline():
        pass
    conn.close()


def query_rate(moto: Moto, table: str, viewers: int, sessions: int, seconds: float) -> float:
    counter = QueryCounter(moto.client)
    server = StatusServer(table, host="127.0.0.1", port=0, client=counter).start()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_hold_stream, args=(server, f"q-{s}", stop), daemon=True)
        for s in range(sessions)
        for _ in range(viewers)
    ]
    for t in threads:
        t.start()
    time.sleep(1.0)  # every stream open, every session read once
    before, started = counter.queries, time.monotonic()
    time.sleep(seconds)
    rate = (counter.queries - before) / (time.monotonic() - started)
    stop.set()
    server.shutdown()
    return rate


def run(moto: Moto, quick: bool) -> list[Row]:
    if not os.path.exists(CHROMIUM):
        print(f"benchmark 9 needs chromium at {CHROMIUM}: skipped")
        return []
    from playwright.sync_api import sync_playwright

    rows: list[Row] = []
    table = moto.new_table()
    interval = 1000 / DEFAULT_POLL_MS
    for viewers, sessions in ((1, 1), (10, 1), (100, 1), (1, 100)):
        rate = query_rate(moto, table, viewers, sessions, 2.0 if quick else 5.0)
        label = f"{viewers} viewers of 1 session" if sessions == 1 else f"{sessions} sessions, 1 viewer each"
        rows.append(
            Row(
                "9 session page",
                f"Query calls/s, {label}",
                rate,
                viewers * sessions * interval,
                f"each viewer polling DynamoDB every {DEFAULT_POLL_MS} ms",
                "/s",
            )
        )

    clock = LandingClock(moto.client)
    handle = configure(table, client=clock)
    server = StatusServer(table, host="127.0.0.1", port=0, client=moto.client).start()
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        # Emit-to-screen, 20 milestones a second.
        session = "screen-latency"
        page.goto(f"{server.url}/sessions/{session}")
        count = 40 if quick else 200
        from opentelemetry import trace

        ids: list[str] = []
        with trace.get_tracer("bench").start_as_current_span("work"):
            for i in range(count):
                event_id = milestone("PROGRESS", f"step {i}", session_id=session, table=table)
                if event_id:
                    ids.append(event_id)
                time.sleep(0.05)
        handle.force_flush(30_000)
        page.wait_for_function(f"document.body.dataset.rows === '{count}'", timeout=60_000)
        shown = page.evaluate("() => Object.fromEntries(window.hisOtel.shownAt)")
        emitted = {i: event_ms(i) or 0 for i in ids}
        screen = [shown[i] - emitted[i] for i in ids if i in shown]
        landed = [clock.landed[i] / 1e6 - emitted[i] for i in ids if i in clock.landed]
        for q in (50, 95):
            rows.append(
                Row(
                    "9 session page",
                    f"emit-to-screen p{q}, 20/s, poll {DEFAULT_POLL_MS} ms",
                    percentile(screen, q),
                    percentile(landed, q),
                    "emit-to-row of the same milestones",
                    "ms",
                )
            )
        # Render time of a 10,000-row session.
        big = "screen-10k"
        n = 2_000 if quick else 10_000
        with trace.get_tracer("bench").start_as_current_span("bulk"):
            for i in range(n):
                milestone("PROGRESS", f"row {i}: " + "x" * 60, session_id=big, table=table)
        handle.force_flush(120_000)
        renders, fetches = [], []
        # The first load also reads the session from DynamoDB (moto's time): left out.
        page.goto(f"{server.url}/sessions/{big}")
        page.wait_for_function(f"document.body.dataset.rows === '{n}'", timeout=300_000)
        for _ in range(2 if quick else 3):
            page.goto(f"{server.url}/sessions/{big}")
            page.wait_for_function(f"document.body.dataset.rows === '{n}'", timeout=300_000)
            renders.append(page.evaluate("() => performance.now()"))
            fetches.append(
                page.evaluate(
                    """async () => { const t = performance.now();
                       const r = await fetch(location.pathname + '/rows');
                       const body = await r.json(); if (body.rows.length < 1) throw new Error('empty');
                       return performance.now() - t; }"""
                )
            )
        rows.append(
            Row(
                "9 session page",
                f"page load to {n:,} rows in the DOM",
                min(renders),
                min(fetches),
                "the same rows fetched and parsed as JSON",
                "ms",
            )
        )
        browser.close()
    server.shutdown()
    handle.shutdown()
    return rows
