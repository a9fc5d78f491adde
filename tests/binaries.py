"""The real OpenTelemetry Collector (and Jaeger) for tests: from an environment variable, else the
builds in ``../shared/bin`` unpacked into a cache folder by the script that ships beside them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import wait_listening

SHARED = Path(os.environ.get("HIS_OTEL_SHARED") or Path(__file__).resolve().parents[2] / "shared")
CACHE = Path(os.environ.get("HIS_OTEL_BIN_CACHE") or Path.home() / ".cache" / "his-otel-bin")
# Your own builds: e.g. HIS_OTEL_OTELCOL=/usr/local/bin/otelcol-contrib.
ENV = {"otelcol-his": "HIS_OTEL_OTELCOL", "jaeger": "HIS_OTEL_JAEGER"}


def find(name: str) -> Path | None:
    override = os.environ.get(ENV[name])
    if override:
        return Path(override) if Path(override).exists() else None
    unpack = SHARED / "bin" / "unpack"
    if not (SHARED / "bin" / f"{name}.xz").exists():
        return None
    target = CACHE / name
    if not target.exists():
        subprocess.run([sys.executable, str(unpack), str(CACHE)], check=True, capture_output=True)
    return target if target.exists() else None


def require(name: str) -> Path:
    path = find(name)
    if path is None:
        pytest.skip(f"{name} not found: set {ENV[name]} or put ../shared/bin beside the clone")
    return path


@contextmanager
def collector(config: dict[str, Any], workdir: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    """Run the real collector with ``config`` until the block ends; ``port`` is one it listens on."""
    path = workdir / "collector.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (workdir / "collector.log").open("w")
    proc = subprocess.Popen(
        [str(require("otelcol-his")), "--config", str(path)], stdout=log, stderr=log, text=True
    )
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
