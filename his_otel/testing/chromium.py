"""Where Debian's chromium is and how the tests, benchmarks and screenshot scripts start it."""

from __future__ import annotations

import os
import shutil
from typing import Any

CHROMIUM = os.environ.get("HIS_OTEL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Headless as root (no sandbox), and no calls home: a closed network refuses them, many at a time.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright: Any) -> Any:
    """A headless chromium browser from a started ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
