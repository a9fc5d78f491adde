"""The real OpenTelemetry Collector and Jaeger builds the tests and benchmarks run: from an
environment variable, else the shared folder beside the checkout (``../shared/bin``), unpacked into a
cache folder by the script that ships beside them. Never part of the package's runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("HIS_OTEL_BIN_CACHE") or Path.home() / ".cache" / "his-otel-bin")
# Your own builds: e.g. HIS_OTEL_OTELCOL=/usr/local/bin/otelcol-contrib.
ENV = {"otelcol-his": "HIS_OTEL_OTELCOL", "jaeger": "HIS_OTEL_JAEGER"}


def shared_beside(checkout: Path) -> Path:
    """The shared folder: ``HIS_OTEL_SHARED``, else ``shared`` beside the ``checkout`` folder."""
    return Path(os.environ.get("HIS_OTEL_SHARED") or checkout.resolve().parent / "shared")


def find(name: str, shared: Path) -> Path | None:
    """The program ``name`` (``otelcol-his`` or ``jaeger``), or None when it is not to be had."""
    override = os.environ.get(ENV[name])
    if override:
        return Path(override) if Path(override).exists() else None
    unpack = shared / "bin" / "unpack"
    if not (shared / "bin" / f"{name}.xz").exists():
        return None
    target = CACHE / name
    if not target.exists():
        subprocess.run([sys.executable, str(unpack), str(CACHE)], check=True, capture_output=True)  # noqa: S603
    return target if target.exists() else None
