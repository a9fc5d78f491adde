"""The real OpenTelemetry Collector (and Jaeger) for tests: from an environment variable, else the
builds in ``../shared/bin`` unpacked into a cache folder by the script that ships beside them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import wait_listening
from his_otel.testing import otel_binaries
from his_otel.testing.local_dynamodb import free_port
from his_otel.testing.otel_binaries import ENV

SHARED = otel_binaries.shared_beside(Path(__file__).resolve().parents[1])


def find(name: str) -> Path | None:
    return otel_binaries.find(name, SHARED)


def require(name: str) -> Path:
    path = find(name)
    if path is None:
        pytest.skip(f"{name} not found: set {ENV[name]} or put ../shared/bin beside the clone")
    return path


@contextmanager
def _running(
    name: str, config: dict[str, Any] | str, workdir: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Run the real ``name`` with ``config`` (a dict, or YAML text) until the block ends; ``port`` is
    one it listens on. Its output goes to ``workdir/<name>.log``."""
    path = workdir / f"{name}.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    log = (workdir / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [str(require(name)), "--config", str(path)],
        stdout=log,
        stderr=log,
        text=True,
        env={**os.environ, **(env or {})},
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


def collector(
    config: dict[str, Any] | str, workdir: Path, port: int, env: dict[str, str] | None = None
) -> AbstractContextManager[subprocess.Popen[str]]:
    """The real collector (``otelcol-his``) with ``config``; ``port`` is one it listens on."""
    return _running("otelcol-his", config, workdir, port, env)


@dataclass(frozen=True)
class Jaeger:
    query: str  # the UI and query API, http://127.0.0.1:PORT
    otlp_grpc: str  # 127.0.0.1:PORT
    otlp_http: str  # http://127.0.0.1:PORT


def _jaeger_config(http: int, grpc: int, otlp_grpc: int, otlp_http: int) -> dict[str, Any]:
    """Jaeger v2 all-in-one with memory storage (as ../shared/bin/jaeger-config.example.yaml), every
    endpoint on loopback."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}},
        },
        "extensions": {
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": f"127.0.0.1:{http}"},
                "grpc": {"endpoint": f"127.0.0.1:{grpc}"},
            },
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 100000}}}},
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{otlp_grpc}"},
                    "http": {"endpoint": f"127.0.0.1:{otlp_http}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


@contextmanager
def jaeger(workdir: Path) -> Iterator[Jaeger]:
    """The real Jaeger v2 on free loopback ports until the block ends."""
    http, grpc, otlp_grpc, otlp_http = (free_port() for _ in range(4))
    with _running("jaeger", _jaeger_config(http, grpc, otlp_grpc, otlp_http), workdir, http) as proc:
        wait_listening(otlp_grpc, proc)
        yield Jaeger(
            query=f"http://127.0.0.1:{http}",
            otlp_grpc=f"127.0.0.1:{otlp_grpc}",
            otlp_http=f"http://127.0.0.1:{otlp_http}",
        )
