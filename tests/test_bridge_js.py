"""The official OpenTelemetry JavaScript OTLP exporters (npm, protobuf and JSON) sending to the bridge:
the senders that got 411 from the first bridge (they send ``Transfer-Encoding: chunked``) and that
write a lone surrogate escape for half an emoji. Installed with npm from ``tests/js_sender``'s lock
file into a cache folder (``HIS_OTEL_NODE_CACHE``, else ``~/.cache/his-otel-node``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from bridge_kit import bridge_for

from helpers import new_session, npm_folder
from his_otel.read import session_rows

__all__ = ["bridge_for"]

SENDER = Path(__file__).parent / "js_sender"


@pytest.fixture(scope="module")
def js_sender() -> Path:
    """A folder with the sender script and its node_modules, installed once per lock file."""
    folder = npm_folder(
        SENDER, "@opentelemetry/exporter-trace-otlp-proto", "the official JavaScript exporters"
    )
    shutil.copy(SENDER / "send.js", folder / "send.js")
    return folder


def send(folder: Path, kind: str, url: str, session: str, count: int, token: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["node", str(folder / "send.js"), kind, url, session, str(count), token],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("kind", ["proto", "json"])
def test_the_official_javascript_exporters_deliver(
    kind: str, js_sender: Path, table: str, bridge_for: Any, ddb: Any
) -> None:
    bridge = bridge_for(table, token="js-token")
    session = new_session()
    results = send(js_sender, kind, f"{bridge.url}/v1/traces", session, 5, "js-token")
    assert results == [{"code": 0, "error": None}]  # ExportResultCode.SUCCESS
    messages = [r["evt_message"] for r in session_rows(ddb, table, session)]
    assert messages == ["cut \ufffd here", "step 1", "step 2", "step 3", "step 4"]
    # With the wrong token the exporter is told so, and nothing is written.
    other = new_session()
    refused = send(js_sender, kind, f"{bridge.url}/v1/traces", other, 2, "wrong")
    assert refused[0] == {"code": 1, "error": "OTLPExporterError: Unauthorized"}  # FAILED, not retried
    assert session_rows(ddb, table, other) == []
