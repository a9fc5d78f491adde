"""What the bridge does with one decoded OTLP request, whatever protocol carried it: the milestones
become rows (append-only), and the answer says exactly what happened to them.

The answer is an acknowledgement only when every row is in the table: anything still owed (DynamoDB
throttling or down, the table missing, credentials refused) is a retryable answer, and the sender's
retry is harmless (rows that landed are kept as they are). The rejected count is of the spans (or log
records) whose milestones can never become rows, which is what OTLP's ``partial_success`` means.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from ..schema import Milestone
from ..write.dynamodb import ADVICE, THROTTLE_CODES
from ..write.dynamodb import advice as advice_for
from ..write.exporter import DynamoDBSpanExporter, ExportOutcome
from ..write.throttled_log import ThrottledLog
from .decode import Received

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 2
# The delay asked for grows with the outage (half its length so far), up to this: senders that give up
# after a few attempts (the Python SDK's exporters) then outlast a longer outage.
MAX_RETRY_AFTER_S = 30
READY_CACHE_S = 5.0
ENV_SEEN_IDS = "HIS_OTEL_BRIDGE_SEEN_IDS"
# ~20 MB: the ids of every milestone of a few thousand concurrent runs, kept for as long as their
# spans may stay open.
DEFAULT_SEEN_IDS = 100_000


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
    retry_after_s: int = RETRY_AFTER_S
    rejected: int = 0
    """Spans (traces) or log records (logs) whose milestones can never become rows."""
    message: str = ""


@dataclass
class BridgeStats:
    requests: int = 0
    """Export requests of both signals."""
    trace_requests: int = 0
    log_requests: int = 0
    spans: int = 0
    log_records: int = 0
    """Log records received, ``his.milestone`` events or not (the others are ignored)."""
    rows_written: int = 0
    rows_existing: int = 0
    """Rows already in the table (a retry, the in-process path, or a forgery): left as they were."""
    rows_seen: int = 0
    """Milestones this bridge had written already (their other copy arrived): no write at all."""
    rows_rejected: int = 0
    rejected_spans: int = 0
    rejected_log_records: int = 0
    rejected_requests: int = 0
    """Requests refused as bad (HTTP 4xx, gRPC INVALID_ARGUMENT/UNAUTHENTICATED)."""
    retry_requests: int = 0
    """Requests answered "retry" (429/503, RESOURCE_EXHAUSTED/UNAVAILABLE): the sender keeps them."""
    cut_off_requests: int = 0
    """Requests still writing when a forced shutdown cancelled them (their senders send them again)."""


class Seen:
    """The keys of the latest rows this bridge wrote (or found written), bounded, and of those its
    requests are writing now. A milestone's second copy (its span event after its log event, the two
    arriving at once, a retry) then costs no DynamoDB write at all, where a conditional put that
    finds the row would still consume a write unit."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._keys: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._pending: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()

    def claim(
        self, milestones: list[Milestone]
    ) -> tuple[list[Milestone], list[tuple[Milestone, threading.Event]], int]:
        """Split ``milestones`` into those to write now (claimed), those another request is writing
        (with what to wait on), and a count of those written already."""
        if self._limit <= 0:
            return milestones, [], 0
        mine: list[Milestone] = []
        theirs: list[tuple[Milestone, threading.Event]] = []
        known = 0
        with self._lock:
            for m in milestones:
                key = (m.session_id, m.event_id)
                pending = self._pending.get(key)
                if key in self._keys:
                    known += 1
                elif pending is not None:
                    theirs.append((m, pending))
                else:
                    self._pending[key] = threading.Event()
                    mine.append(m)
        return mine, theirs, known

    def settle(self, claimed: list[Milestone], failed: set[int]) -> None:
        """The claimed milestones were written, except those whose ``id()`` is in ``failed``."""
        if self._limit <= 0:
            return
        with self._lock:
            for m in claimed:
                key = (m.session_id, m.event_id)
                if id(m) not in failed:
                    self._keys[key] = None
                    self._keys.move_to_end(key)
                done = self._pending.pop(key, None)
                if done is not None:
                    done.set()
            while len(self._keys) > self._limit:
                self._keys.popitem(last=False)

    def after(self, theirs: list[tuple[Milestone, threading.Event]], deadline: float) -> list[Milestone]:
        """Wait (until ``deadline``) for the other requests; the milestones they did not write."""
        left = []
        for m, done in theirs:
            done.wait(max(0.0, deadline - time.monotonic()))
            with self._lock:
                if (m.session_id, m.event_id) not in self._keys:
                    left.append(m)
        return left


class Ingest:
    """Turns requests into rows through one append-only exporter. Thread-safe; blocking (run it on
    a worker thread)."""

    def __init__(
        self, exporter: DynamoDBSpanExporter, write_timeout_s: float, seen_ids: int = DEFAULT_SEEN_IDS
    ) -> None:
        self.exporter = exporter
        self._write_timeout_s = write_timeout_s
        self._lock = threading.Lock()
        self.stats = BridgeStats()
        self._write_failure = ""
        self._failing_since: float | None = None
        self._ready: tuple[float, bool, str] | None = None
        self._log = ThrottledLog(logger)
        self._seen = Seen(seen_ids)

    def count(self, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self.stats)

    def handle(self, received: Received) -> Verdict:
        """Write the milestones of one request and say what to answer."""
        unit_of: dict[int, int] = {}
        bad_units = {i for i, bad in enumerate(received.malformed) if bad}
        bad_events = sum(received.malformed)
        for cause, n in received.causes.items():
            # Once per interval per kind of cause, whatever a sender sends: the kind is the start of
            # one of our own messages (digits dropped), so there are few; the excerpt is escaped.
            kind = "".join(c for c in " ".join(cause.split()[:3]) if not c.isdigit())[:40]
            self._log.warning(
                f"malformed:{kind}", "events=<%d>, cause=<%r> | his.milestone events rejected", n, cause
            )
        milestones: list[Milestone] = []
        for index, found in enumerate(received.units):
            for m in found:
                unit_of[id(m)] = index
                milestones.append(m)
        outcome, seen = self._write(milestones)
        refused = {unit_of[id(m)] for m in outcome.rejected_milestones}
        rejected = len(bad_units | refused)
        traces = received.signal == "traces"
        self.count(
            requests=1,
            trace_requests=int(traces),
            log_requests=int(not traces),
            spans=received.items if traces else 0,
            log_records=0 if traces else received.items,
            rows_written=outcome.written,
            rows_existing=outcome.existing,
            rows_seen=seen,
            rows_rejected=outcome.rejected + bad_events,
        )
        if outcome.unwritten:
            self._write_failure = outcome.cause
            now = time.monotonic()
            since = self._failing_since = self._failing_since or now
            throttled = outcome.cause in THROTTLE_CODES or outcome.cause == "UnprocessedItems"
            # Filled in ("create-table <its table>"): the sender's operator reads it in its log.
            advice = advice_for(outcome.cause, self.exporter.table_name) if outcome.cause in ADVICE else ""
            return Verdict(
                Answer.THROTTLED if throttled else Answer.UNAVAILABLE,
                retry_after_s=int(min(MAX_RETRY_AFTER_S, max(RETRY_AFTER_S, (now - since) / 2))),
                message=(
                    f"DynamoDB: {outcome.cause or 'no answer'}{f' ({advice})' if advice else ''};"
                    f" {len(outcome.unwritten)} of {len(milestones)} rows not yet written; retry"
                ),
            )
        self._write_failure = ""
        self._failing_since = None
        self.count(**{"rejected_spans" if traces else "rejected_log_records": rejected})
        message = ""
        if rejected:
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
            unit = "spans" if traces else "log records"
            message = (
                f"{bad_events + outcome.rejected} his.milestone events in {rejected} {unit} can"
                f" never become rows ({why}); see the bridge's log"
            )
        return Verdict(Answer.WRITTEN, rejected=rejected, message=message)

    def _write(self, milestones: list[Milestone]) -> tuple[ExportOutcome, int]:
        """Write what no request of this bridge wrote or is writing; then wait for those another
        request is writing, and write what it did not. Returns the outcome and how many needed no
        write."""
        deadline = time.monotonic() + self._write_timeout_s
        mine, theirs, seen = self._seen.claim(milestones)
        outcome = self._export(mine, deadline)
        if theirs:
            left = self._seen.after(theirs, deadline)
            seen += len(theirs) - len(left)
            outcome.add(self._export(left, deadline))
        return outcome, seen

    def _export(self, milestones: list[Milestone], deadline: float) -> ExportOutcome:
        if not milestones:
            return ExportOutcome()
        outcome = self.exporter.export_milestones(milestones, timeout_s=max(0.0, deadline - time.monotonic()))
        self._seen.settle(milestones, {id(m) for m in (*outcome.unwritten, *outcome.rejected_milestones)})
        return outcome

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
