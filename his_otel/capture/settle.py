"""Holding the end of a run until its rows are written (bounded; skipped while DynamoDB fails).

A server's graceful drain ends with the process exiting right after the last response (uvicorn
re-raises SIGTERM with the default action), and AgentCore or Lambda may freeze the process once the
response is out: rows still queued then would be lost. Waiting at the end of a run costs one write
round trip per run, not per milestone, and never blocks an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry import trace as trace_api

from . import routing

logger = logging.getLogger(__name__)


async def settle(span: trace_api.Span | None, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for the pipelines of ``span`` to try every row queued so far."""
    if timeout_s <= 0:
        return
    try:
        pipelines = routing.pipelines_for(span or trace_api.get_current_span())
        if not pipelines:
            return

        def wait() -> None:
            deadline = time.monotonic() + timeout_s
            for pipeline in pipelines:
                pipeline.wait_settled(max(0.0, deadline - time.monotonic()))

        await asyncio.get_running_loop().run_in_executor(None, wait)
    except Exception:
        logger.exception("his-otel could not wait for the run's rows; the agent goes on")
