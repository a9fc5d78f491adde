"""``DynamoDBSpanExporter``: the ``his.milestone`` events of spans become rows of the status table."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .. import config
from ..schema import (
    DEFAULT_MAX_MESSAGE_BYTES,
    EVENT_NAME,
    MAX_MESSAGE_BYTES_LIMIT,
    InvalidMilestoneError,
    Milestone,
    clean_text,
    milestone_from_event,
    to_item,
)
from .client import ClientSource
from .dynamodb import DEFAULT_PUTS_IN_FLIGHT, DEFAULT_WRITES_IN_FLIGHT, DynamoDBWriter, Row, WriteResult
from .throttled_log import ThrottledLog

logger = logging.getLogger(__name__)
_malformed_log = ThrottledLog(logger)

MessageFilter = Callable[[Milestone], str]
"""Returns the text to keep as ``evt_message`` (for redaction). In process it runs when the milestone
is emitted, so the span event carries the filtered text too; a filter that raises drops the text."""


def apply_message_policy(
    m: Milestone, mode: str, message_filter: MessageFilter | None, log: ThrottledLog
) -> Milestone:
    """``m`` with the text the mode and filter allow (and lone surrogates replaced)."""
    message = m.evt_message
    if mode == "drop":
        message = ""
    elif message_filter is not None:
        try:
            message = clean_text(str(message_filter(m)))
        except Exception:
            # Keeping unfiltered text could leak what the filter exists to hide.
            log.error("filter", "evt_type=<%s> | message_filter raised, message dropped", m.evt_type)
            message = ""
    return m if message is m.evt_message else replace(m, evt_message=message)


@dataclass
class ExportOutcome:
    """What became of a group of milestones."""

    written: int = 0
    rejected_causes: Counter[str] = field(default_factory=Counter)
    rejected_milestones: list[Milestone] = field(default_factory=list)
    """The milestones behind ``rejected_causes``: they can never become rows."""
    unwritten: list[Milestone] = field(default_factory=list)
    cause: str = ""
    """Why ``unwritten`` were not written (an error code or exception name)."""
    throttled: int = 0
    existing: int = 0
    """Append-only: rows that were in the table already, left as they were."""

    @property
    def rejected(self) -> int:
        return self.rejected_causes.total()

    def add(self, other: ExportOutcome) -> None:
        """Fold in the outcome of another group (a later write of the same request)."""
        self.written += other.written
        self.rejected_causes.update(other.rejected_causes)
        self.rejected_milestones.extend(other.rejected_milestones)
        self.unwritten.extend(other.unwritten)
        self.cause = self.cause or other.cause
        self.throttled += other.throttled
        self.existing += other.existing


def milestones_of(span: ReadableSpan, events: Sequence[Event] | None = None) -> tuple[list[Milestone], int]:
    """The milestones recorded as events of ``span`` (or those of ``events``), and how many of its his
    events were malformed."""
    ctx = span.context
    found: list[Milestone] = []
    bad = 0
    for event in span.events if events is None else events:
        if event.name != EVENT_NAME:
            continue
        try:
            found.append(
                milestone_from_event(
                    event.attributes,
                    event.timestamp,
                    trace_id=ctx.trace_id if ctx else 0,
                    span_id=ctx.span_id if ctx else 0,
                    span_name=span.name,
                )
            )
        except InvalidMilestoneError as e:
            bad += 1
            # Throttled, and the name bounded and escaped: a sender chooses both.
            _malformed_log.warning(
                "malformed", "span=<%r>, error=<%r> | his.milestone event rejected", span.name[:100], str(e)
            )
    return found, bad


def _rebuild_in_forked_children(exporter: DynamoDBSpanExporter) -> None:
    if not hasattr(os, "register_at_fork"):  # pragma: no cover - not POSIX
        return
    ref = weakref.ref(exporter)

    def in_child() -> None:
        target = ref()
        if target is not None:
            target.after_fork()

    os.register_at_fork(after_in_child=in_child)


class DynamoDBSpanExporter(SpanExporter):
    """Writes the ``his.milestone`` events of exported spans to DynamoDB; ignores everything else.

    Args:
        table_name: Table for milestones that do not name one (argument, then ``HIS_OTEL_TABLE``).
        client: A boto3 DynamoDB client to use as is.
        session: A boto3 session to build the client from (ignored when ``client`` is given).
        region_name: Region for the client built here (else boto3's environment).
        endpoint_url: Endpoint for the client built here (else ``AWS_ENDPOINT_URL_DYNAMODB``).
        honor_event_table: Route a milestone to the table its ``his.table`` attribute names. True
            in-process (each HISAgent writes its own table); the bridge sets it False so a sender
            can never choose the table.
        export_timeout_millis: Deadline for one ``export`` call, retries included.
        max_message_bytes: Longer messages are stored truncated and flagged.
        message_mode: ``"full"`` keeps message text; ``"drop"`` stores rows without it. For rows this
            exporter maps from spans (the bridge); in process, ``configure()`` applies it at emission.
        message_filter: Called per milestone to rewrite its text (redaction) before it is written;
            the same split as ``message_mode``.
        append_only: Never replace a row that exists (conditional PutItem, several in flight) instead
            of BatchWriteItem: what the bridge does, since any sender that reaches it can write.
        puts_in_flight: Conditional puts at once, in append-only mode.
        writes_in_flight: The most BatchWriteItem calls at once (``HIS_OTEL_WRITES_IN_FLIGHT``, 8); how
            many are used follows the latency observed (fewer on loopback). The live
            processor also runs up to this many writer threads.
    """

    def __init__(
        self,
        table_name: str | None = None,
        *,
        client: Any = None,
        session: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        honor_event_table: bool = True,
        export_timeout_millis: int | None = None,
        max_message_bytes: int | None = None,
        message_mode: str | None = None,
        message_filter: MessageFilter | None = None,
        append_only: bool = False,
        puts_in_flight: int | None = None,
        writes_in_flight: int | None = None,
    ) -> None:
        self.table_name = config.resolve_str(table_name, config.ENV_TABLE)
        self.honor_event_table = honor_event_table
        self._timeout_s = (
            config.resolve_int(
                export_timeout_millis, config.ENV_EXPORT_TIMEOUT_MS, config.DEFAULT_EXPORT_TIMEOUT_MS
            )
            / 1000
        )
        self._max_message_bytes = config.resolve_int(
            max_message_bytes,
            config.ENV_MAX_MESSAGE_BYTES,
            DEFAULT_MAX_MESSAGE_BYTES,
            minimum=64,
            maximum=MAX_MESSAGE_BYTES_LIMIT,
        )
        self._message_mode = config.resolve_choice(
            message_mode, config.ENV_MESSAGE_MODE, "full", config.MESSAGE_MODES
        )
        self._message_filter = message_filter
        self._source = ClientSource(
            client=client, session=session, region_name=region_name, endpoint_url=endpoint_url
        )
        self._writer = DynamoDBWriter(
            self._source.factory(),
            append_only=append_only,
            puts_in_flight=puts_in_flight or DEFAULT_PUTS_IN_FLIGHT,
            writes_in_flight=config.resolve_int(
                writes_in_flight, config.ENV_WRITES_IN_FLIGHT, DEFAULT_WRITES_IN_FLIGHT, maximum=64
            ),
        )
        self._shutdown = threading.Event()
        self._log = ThrottledLog(logger)
        self._counts_lock = threading.Lock()
        self.rows_written = 0
        self.rows_rejected = 0
        # Used on its own (under the SDK's BatchSpanProcessor), nothing else would rebuild it in a
        # forked child, which would then share the parent's DynamoDB connections.
        _rebuild_in_forked_children(self)

    @property
    def append_only(self) -> bool:
        return self._writer.append_only

    @property
    def writes_in_flight(self) -> int:
        """The most calls this exporter's writer has in flight at once."""
        return self._writer.calls_in_flight

    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client (built on first use)."""
        return self._writer.client()

    def after_fork(self) -> None:
        """In a forked child: a client of its own, zeroed counters (see ``HISSpanProcessor``)."""
        self._writer.after_fork(owned_client=self._source.owned)
        self._counts_lock = threading.Lock()
        self._log = ThrottledLog(logger)
        self.rows_written = 0
        self.rows_rejected = 0

    def _row(self, m: Milestone) -> Row | None:
        table = (m.table if self.honor_event_table else "") or self.table_name
        if not table:
            self._log.error(
                "no-table",
                "session_id=<%s>, evt_type=<%s> | no table for milestone (set HIS_OTEL_TABLE), rejected",
                m.session_id,
                m.evt_type,
            )
            return None
        m = apply_message_policy(m, self._message_mode, self._message_filter, self._log)
        return table, to_item(m, max_message_bytes=self._max_message_bytes)

    def export_milestones(
        self, milestones: Sequence[Milestone], timeout_s: float | None = None
    ) -> ExportOutcome:
        """Write ``milestones`` within ``timeout_s`` (default: the export timeout). Never raises."""
        outcome = ExportOutcome()
        if self._shutdown.is_set():
            outcome.unwritten = list(milestones)
            return outcome
        by_key: dict[tuple[str, str, str], Milestone] = {}
        rows: list[Row] = []
        for m in milestones:
            try:
                row = self._row(m)
            except Exception as e:
                row = None
                # The error names the field and its size, never the message text.
                self._log.error(
                    "mapping", "event_id=<%s>, error=<%s> | milestone cannot become a row", m.event_id, e
                )
            if row is None:
                outcome.rejected_causes["invalid"] += 1
                outcome.rejected_milestones.append(m)
                continue
            rows.append(row)
            by_key[(row[0], m.session_id, m.event_id)] = m
        deadline = time.monotonic() + (self._timeout_s if timeout_s is None else max(0.0, timeout_s))
        result: WriteResult = self._writer.write(rows, deadline)
        outcome.written = result.written
        outcome.rejected_causes.update(result.rejected_causes)
        outcome.cause = result.cause
        outcome.throttled = result.throttled
        outcome.existing = result.existing

        def of_rows(rows: list[Row]) -> list[Milestone]:
            return [by_key[(t, item["session_id"]["S"], item["event_id"]["S"])] for t, item in rows]

        outcome.unwritten = of_rows(result.unwritten)
        outcome.rejected_milestones.extend(of_rows(result.rejected_rows))
        with self._counts_lock:
            self.rows_written += outcome.written
            self.rows_rejected += outcome.rejected
        return outcome

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the milestones of ``spans``. FAILURE means some were not written before the deadline."""
        if self._shutdown.is_set():
            return SpanExportResult.FAILURE
        try:
            milestones: list[Milestone] = []
            for span in spans:
                found, bad = milestones_of(span)
                milestones.extend(found)
                if bad:
                    with self._counts_lock:
                        self.rows_rejected += bad
            if not milestones:
                return SpanExportResult.SUCCESS
            outcome = self.export_milestones(milestones)
            return SpanExportResult.FAILURE if outcome.unwritten else SpanExportResult.SUCCESS
        except Exception:
            logger.exception("his-otel export failed")
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Stop accepting work and cut short any retry wait. Idempotent."""
        self._shutdown.set()
        self._writer.stop_event.set()
        self._writer.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        # Every export is synchronous: nothing is buffered here.
        return True
