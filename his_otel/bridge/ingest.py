"""What the bridge does with one decoded OTLP request, whatever protocol carried it: the milestones
become rows (append-only), and the answer says exactly what happened to them.

The answer is an acknowledgement only when every row is in the table: anything still owed (DynamoDB
throttling or down, the table missing, credentials refused) is a retryable answer, and the sender's
retry is harmless (rows that landed are kept as they are). ``rejected_spans`` counts the spans whose
milestones can never become rows, which is what OTLP's ``partial_success`` means.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..schema import Milestone
from ..write.dynamodb import ADVICE, THROTTLE_CODES
from ..write.exporter import DynamoDBSpanExporter, milestones_of
from ..write.throttled_log import ThrottledLog
from .decode import milestone_spans

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 2
READY_CACHE_S = 5.0


class Answer(Enum):
    WRITTEN = "written"
    """Every milestone is a row, or can never be one (counted in ``rejected_spans``)."""
    THROTTLED = "throttled"
    """DynamoDB is throttling: HTTP 429, gRPC RESOURCE_EXHAUSTED, with a retry delay."""
    UNAVAILABLE = "unavailable"
    """Rows still owed for another reason: HTTP 503, gRPC UNAVAILABLE, with a retry delay."""


@dataclass(frozen=True)
class Verdict:
    answer: Answer
    rejected_spans: int = 0
    message: str = ""


@dataclass
class BridgeStats:
    requests: int = 0
    spans: int = 0
    rows_written: int = 0
    rows_existing: int = 0
    """Rows already in the table (a retry, the in-process path, or a forgery): left as they were."""
    rows_rejected: int = 0
    rejected_spans: int = 0
    rejected_requests: int = 0
    """Requests refused as bad (HTTP 4xx, gRPC INVALID_ARGUMENT/UNAUTHENTICATED)."""
    retry_requests: int = 0
    """Requests answered "retry" (429/503, RESOURCE_EXHAUSTED/UNAVAILABLE): the sender keeps them."""
    cut_off_requests: int = 0
    """Requests still writing when a forced shutdown cancelled them (their senders send them again)."""


class Ingest:
    """Turns requests into rows through one append-only exporter. Thread-safe; blocking (run it on
    a worker thread)."""

    def __init__(self, exporter: DynamoDBSpanExporter, write_timeout_s: float) -> None:
        self.exporter = exporter
        self._write_timeout_s = write_timeout_s
        self._lock = threading.Lock()
        self.stats = BridgeStats()
        self._write_failure = ""
        self._ready: tuple[float, bool, str] | None = None
        self._log = ThrottledLog(logger)

    def count(self, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self.stats)

    def handle(self, request: ExportTraceServiceRequest) -> Verdict:
        spans, total = milestone_spans(request)
        milestones: list[Milestone] = []
        span_of: dict[int, int] = {}
        bad_spans: set[int] = set()
        bad_events = 0
        for index, span in enumerate(spans):
            found, bad = milestones_of(span)
            if bad:
                bad_spans.add(index)
                bad_events += bad
            for m in found:
                span_of[id(m)] = index
            milestones.extend(found)
        outcome = self.exporter.export_milestones(milestones, timeout_s=self._write_timeout_s)
        refused = {span_of[id(m)] for m in outcome.rejected_milestones}
        rejected_spans = len(bad_spans | refused)
        self.count(
            requests=1,
            spans=total,
            rows_written=outcome.written,
            rows_existing=outcome.existing,
            rows_rejected=outcome.rejected + bad_events,
        )
        if outcome.unwritten:
            self._write_failure = outcome.cause
            throttled = outcome.cause in THROTTLE_CODES or outcome.cause == "UnprocessedItems"
            advice = ADVICE.get(outcome.cause, "")
            return Verdict(
                Answer.THROTTLED if throttled else Answer.UNAVAILABLE,
                message=(
                    f"DynamoDB: {outcome.cause or 'no answer'}{f' ({advice})' if advice else ''};"
                    f" {len(outcome.unwritten)} of {len(milestones)} rows not yet written; retry"
                ),
            )
        self._write_failure = ""
        self.count(rejected_spans=rejected_spans)
        message = ""
        if rejected_spans:
            # The exporter's "invalid" (a milestone no row can hold) in words a sender can act on.
            causes: Counter[str] = Counter(
                {
                    "not a valid row" if cause == "invalid" else cause: n
                    for cause, n in outcome.rejected_causes.items()
                }
            )
            if bad_events:
                causes["malformed his.milestone event"] += bad_events
            why = ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items()))
            message = (
                f"{bad_events + outcome.rejected} his.milestone events in {rejected_spans} spans can"
                f" never become rows ({why}); see the bridge's log"
            )
        return Verdict(Answer.WRITTEN, rejected_spans, message)

    def readiness(self) -> tuple[bool, str]:
        """Whether a write would land now, and if not, why (never the table's name).

        Asks DynamoDB for the table's status (cached a few seconds); where the credentials may not
        describe the table, the last write's outcome decides.
        """
        now = time.monotonic()
        cached = self._ready
        if cached is not None and now - cached[0] < READY_CACHE_S:
            return cached[1], cached[2]
        from botocore.exceptions import ClientError

        try:
            status = self.exporter.client.describe_table(TableName=self.exporter.table_name)["Table"][
                "TableStatus"
            ]
            ready, cause = status in ("ACTIVE", "UPDATING"), f"table {status}"
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", "")) or "ClientError"
            if code == "AccessDeniedException":
                ready, cause = not self._write_failure, self._write_failure
            else:
                ready, cause = False, code
        except Exception as e:
            ready, cause = False, type(e).__name__
        if not ready:
            self._log.warning("ready", "cause=<%s> | bridge not ready: it cannot write rows now", cause)
        self._ready = (now, ready, "" if ready else cause)
        return ready, "" if ready else cause
