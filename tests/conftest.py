"""Shared fixtures: one moto server (a real DynamoDB HTTP API in a child process), one global
TracerProvider with an in-memory exporter to inspect spans, one his-otel handle on it.

OpenTelemetry lets a process set the global provider once, and Strands only uses the global one,
so tests that need another global set-up (sampling, installing a provider) run in a subprocess.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fault_proxy import FaultProxy
from his_otel import Handle, configure
from his_otel.read import session_rows
from his_otel.testing.local_dynamodb import LOCAL_ENV, LocalDynamoDB
from his_otel.write.table import create_table

DEFAULT_TABLE = "his-default"
BEYOND_CI = ("node and npm are needed", "npm could not install")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    # Tests must never reach real AWS, whatever the developer's shell has.
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(key, None)
    os.environ.update(LOCAL_ENV)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    with LocalDynamoDB() as endpoint:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
        yield endpoint


@pytest.fixture(scope="session")
def ddb(moto_endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=moto_endpoint)


@pytest.fixture
def new_table(ddb: Any) -> Callable[[], str]:
    """new_table() -> the name of a freshly created status table."""

    def make() -> str:
        name = f"status-{uuid.uuid4().hex[:10]}"
        create_table(ddb, name)
        return name

    return make


@pytest.fixture
def table(new_table: Callable[[], str]) -> str:
    return new_table()


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the moto server (see fault_proxy.py)."""
    p = FaultProxy(moto_endpoint).start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    """Every finished span of the test session (the global provider is set once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another test set the global provider first"
    return exporter


@pytest.fixture(scope="session")
def log_records() -> Any:
    """Every log record of the test session: a global LoggerProvider, set once like the tracer
    provider, exporting to memory (the exporter's class was renamed in OpenTelemetry 1.39)."""
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs import export as log_export

    exporter = (getattr(log_export, "InMemoryLogRecordExporter", None) or log_export.InMemoryLogExporter)()
    provider = LoggerProvider()
    provider.add_log_record_processor(log_export.SimpleLogRecordProcessor(exporter))
    _logs.set_logger_provider(provider)
    assert _logs.get_logger_provider() is provider, "another test set the global logger provider first"
    return exporter


@pytest.fixture(scope="session")
def his(moto_endpoint: str, ddb: Any, spans: InMemorySpanExporter) -> Iterator[Handle]:
    create_table(ddb, DEFAULT_TABLE)
    handle = configure(DEFAULT_TABLE, schedule_delay_millis=10)
    yield handle
    handle.shutdown()


@pytest.fixture
def rows(ddb: Any, his: Handle) -> Callable[..., list[dict[str, Any]]]:
    """rows(table, session_id): flush, then read the session's rows in event_id order."""

    def read(table: str, session_id: str) -> list[dict[str, Any]]:
        assert his.force_flush(10_000), "rows were not written within 10 s"
        return session_rows(ddb, table, session_id)

    return read


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With HIS_OTEL_FORBID_SKIPS=1 (CI, which has everything the tests need), a skip is a failure."""
    if os.environ.get("HIS_OTEL_FORBID_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    # The JavaScript exporters come from npm's registry, which CI's network may not reach: that is
    # something CI cannot run, not a test it skipped. Printed, never silent.
    beyond_ci = [r for r in skipped if any(reason in str(r.longrepr) for reason in BEYOND_CI)]
    for report in beyond_ci:
        print(f"\nskipped, needs what CI lacks here: {report.nodeid}: {report.longrepr}")
    must_run = [r for r in skipped if r not in beyond_ci]
    if must_run:
        for report in must_run:
            print(f"\nskipped where CI must run it: {report.nodeid}: {report.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
