"""The OTLP path is live: an application whose milestones reach DynamoDB only through OTLP (a bridge
behind it) has each row in the table while the invocation still runs, whether his-otel installed the
providers (only ``OTEL_EXPORTER_OTLP_ENDPOINT`` set) or the application set its own TracerProvider
and LoggerProvider as the README says. Each row exists once, written once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bridge_kit import bridge_for
from live_kit import gated_run

from helpers import new_session, wait_for
from his_otel.read import session_rows

__all__ = ["bridge_for"]

TOKEN = "live-token"


@pytest.mark.parametrize("own_providers", [False, True], ids=["his-otel-installs", "own-providers"])
def test_rows_reach_the_bridge_while_the_invocation_runs(
    ddb: Any, new_table: Any, bridge_for: Any, tmp_path: Path, own_providers: bool
) -> None:
    in_process, via_bridge = new_table(), new_table()
    bridge = bridge_for(via_bridge, token=TOKEN)
    session = new_session()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": bridge.url,
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{TOKEN}",
    }
    expected = gated_run(ddb, in_process, via_bridge, session, env, tmp_path, own_providers=own_providers)
    assert [r["evt_type"] for r in expected].count("TOOLING") == 2 and len(expected) == 11
    # The span copies arrive at span end; the rows stay as the log copies wrote them.
    wait_for(lambda: bridge.stats.rows_seen >= len(expected), timeout_s=30)
    assert session_rows(ddb, via_bridge, session) == expected  # every attribute of every row
    stats = bridge.stats
    # One DynamoDB write per milestone: a put each, none that found its row already there.
    assert (stats.rows_written, stats.rows_existing, stats.rows_rejected) == (len(expected), 0, 0)
    assert stats.log_records >= len(expected) and stats.spans > 0
