"""``HISSpanProcessor``: milestones reach the table while the invocation still runs.

Two inputs feed one bounded queue:
- live: :func:`his_otel.milestone` hands each milestone over as it is emitted (``submit``), which
  works for spans that never end, are sampled out, or drop old events past the SDK's limit;
- end of span: ``on_end`` reads the ``his.milestone`` events of every ended span, which catches
  events added with ``span.add_event`` directly. An event already taken live is skipped, and a row
  written twice is still one row (``event_id`` is the sort key).

The agent's thread only appends to the queue. One daemon thread writes, in batches, with retries;
rows it could not write go back to the head of the queue. The queue is capped by count and bytes;
what overflows is counted and reported once per outage, never raised.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .. import config
from ..emit import add_sink, remove_sink
from ..schema import ATTR_EVENT_ID, EVENT_NAME, Milestone
from ..write.exporter import DynamoDBSpanExporter, milestones_of

logger = logging.getLogger(__name__)

# How many recent event ids are remembered to skip the end-of-span copy of a live milestone.
_SEEN_CAPACITY = 65_536
# The most milestones one export call takes (a few BatchWriteItem calls of 25).
_EXPORT_BATCH = 500
_MAX_RETRY_BACKOFF_S = 5.0


@dataclass(frozen=True)
class ProcessorStats:
    """Counters an application can read (and export as metrics)."""

    queued: int
    queued_bytes: int
    peak_queued: int
    written: int
    rejected: int
    dropped: int
    """Milestones lost: the queue was full, or they arrived after shutdown."""
    retries: int


class HISSpanProcessor(SpanProcessor):
    """Feeds a :class:`DynamoDBSpanExporter` from live milestones and from ended spans.

    Args:
        exporter: Where rows are written.
        max_queue_size: Most milestones held while DynamoDB is slow or down (``HIS_OTEL_MAX_QUEUE_SIZE``).
        max_queue_bytes: Most bytes of message text held (``HIS_OTEL_MAX_QUEUE_BYTES``).
        schedule_delay_millis: How long the writer waits to fill a batch (``HIS_OTEL_SCHEDULE_DELAY_MS``).
        shutdown_timeout_millis: How long ``shutdown()`` may spend writing what is pending
            (``HIS_OTEL_SHUTDOWN_TIMEOUT_MS``).
        live: Take milestones as they are emitted. When False, only ended spans are read.
    """

    def __init__(
        self,
        exporter: DynamoDBSpanExporter,
        *,
        max_queue_size: int | None = None,
        max_queue_bytes: int | None = None,
        schedule_delay_millis: int | None = None,
        shutdown_timeout_millis: int | None = None,
        live: bool = True,
    ) -> None:
        self.exporter = exporter
        self._max_size = config.resolve_int(
            max_queue_size, config.ENV_MAX_QUEUE_SIZE, config.DEFAULT_MAX_QUEUE_SIZE
        )
        self._max_bytes = config.resolve_int(
            max_queue_bytes, config.ENV_MAX_QUEUE_BYTES, config.DEFAULT_MAX_QUEUE_BYTES
        )
        self._delay_s = (
            config.resolve_int(
                schedule_delay_millis,
                config.ENV_SCHEDULE_DELAY_MS,
                config.DEFAULT_SCHEDULE_DELAY_MS,
                minimum=0,
            )
            / 1000
        )
        self._shutdown_timeout_s = (
            config.resolve_int(
                shutdown_timeout_millis,
                config.ENV_SHUTDOWN_TIMEOUT_MS,
                config.DEFAULT_SHUTDOWN_TIMEOUT_MS,
                minimum=0,
            )
            / 1000
        )
        self._live = live
        self._init_state()
        self._is_shutdown = False
        self._start_worker()
        if live:
            add_sink(self.submit)
        # Rows pending at interpreter exit are written within the shutdown timeout.
        ref = weakref.ref(self)

        def at_exit() -> None:
            processor = ref()
            if processor is not None:
                processor.shutdown()

        def after_fork() -> None:
            processor = ref()
            if processor is not None:
                processor._after_fork()

        atexit.register(at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=after_fork)

    def _init_state(self) -> None:
        # Re-entrant: a SIGTERM handler may flush while the main thread is inside submit().
        self._cond = threading.Condition(threading.RLock())
        self._queue: deque[Milestone] = deque()
        # Milestones whose write failed wait here, on their own backoff, so fresh ones never queue
        # behind a table that is throttled, forbidden or unreachable.
        self._parked: deque[Milestone] = deque()
        self._parked_until = 0.0
        self._backoff = 0.0
        self._queued_bytes = 0
        self._peak = 0
        self._inflight = 0
        self._flush_requests = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dropped = 0
        self._retries = 0
        self._overflowing = False
        self._stop = False

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._run, name="his-otel-writer", daemon=True)
        self._worker.start()

    def _after_fork(self) -> None:
        # The child has the parent's queue but no writer thread; rows written twice are one row.
        self._cond = threading.Condition(threading.RLock())
        if not self._is_shutdown:
            self._start_worker()

    # -- inputs (the application's threads) --------------------------------------------------

    def submit(self, m: Milestone) -> bool:
        """Queue one milestone. Never blocks on I/O, never raises. False if it was dropped."""
        try:
            size = m.approx_bytes()
            with self._cond:
                if self._is_shutdown:
                    self._dropped += 1
                    return False
                if m.event_id in self._seen:
                    return True
                # The batch being written still holds memory: it counts against the caps.
                held = len(self._queue) + len(self._parked) + self._inflight
                if held >= self._max_size or self._queued_bytes + size > self._max_bytes:
                    self._dropped += 1
                    if not self._overflowing:
                        self._overflowing = True
                        logger.error(
                            "max_queue_size=<%d>, max_queue_bytes=<%d> | status queue full (DynamoDB slow or"
                            " down?), dropping milestones until it drains; see stats().dropped",
                            self._max_size,
                            self._max_bytes,
                        )
                    return False
                self._remember(m.event_id)
                self._queue.append(m)
                self._queued_bytes += size
                if held + 1 > self._peak:
                    self._peak = held + 1
                if len(self._queue) == 1 or len(self._queue) >= _EXPORT_BATCH:
                    self._cond.notify()
            return True
        except Exception:
            logger.exception("milestone could not be queued")
            return False

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > _SEEN_CAPACITY:
            self._seen.popitem(last=False)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        try:
            # Most milestones were taken live: skip those before paying to parse them again.
            fresh = [
                e
                for e in span.events
                if e.name == EVENT_NAME and (e.attributes or {}).get(ATTR_EVENT_ID) not in self._seen
            ]
            if not fresh:
                return
            found, _ = milestones_of(span, fresh)
            for m in found:
                self.submit(m)
        except Exception:
            logger.exception("span=<%s> | milestones of ended span not captured", span.name)

    # -- the writer thread ---------------------------------------------------------------------

    def _parked_due(self) -> bool:
        return bool(self._parked) and (self._stop or time.monotonic() >= self._parked_until)

    def _take_batch(self) -> tuple[list[Milestone], int] | None:
        """Wait for work: (batch, how many of it were parked), or None once stopped and drained."""
        with self._cond:
            while not (self._queue or self._parked_due()):
                if self._stop and not self._queue and not self._parked:
                    return None
                timeout = max(0.0, self._parked_until - time.monotonic()) if self._parked else None
                self._cond.wait(timeout)
            # Give a burst a moment to fill a batch, unless someone is waiting on a flush.
            if (
                self._delay_s
                and len(self._queue) < _EXPORT_BATCH
                and not self._flush_requests
                and not self._stop
                and not self._parked_due()
            ):
                self._cond.wait(self._delay_s)
            batch: list[Milestone] = []
            if self._parked_due():
                while self._parked and len(batch) < _EXPORT_BATCH:
                    batch.append(self._parked.popleft())
            from_parked = len(batch)
            while self._queue and len(batch) < _EXPORT_BATCH:
                batch.append(self._queue.popleft())
            self._inflight = len(batch)
            return batch, from_parked

    def _run(self) -> None:
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            batch, from_parked = taken
            try:
                unwritten = self.exporter.export_milestones(batch).unwritten
            except Exception:
                logger.exception("his-otel writer failed; will retry")
                unwritten = batch
            with self._cond:
                self._inflight = 0
                self._queued_bytes -= sum(m.approx_bytes() for m in batch)
                if unwritten and self._stop:
                    self._dropped += len(unwritten)
                elif unwritten:
                    # Nothing taken off the queue is lost: it waits its turn to be tried again.
                    self._retries += 1
                    self._parked.extend(unwritten)
                    self._queued_bytes += sum(m.approx_bytes() for m in unwritten)
                    self._backoff = min(_MAX_RETRY_BACKOFF_S, max(0.1, self._backoff * 2))
                    self._parked_until = time.monotonic() + self._backoff
                elif from_parked:
                    self._backoff = 0.0
                if not self._queue and not self._parked:
                    self._overflowing = False
                self._cond.notify_all()

    # -- flush and shutdown ----------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write everything queued so far; False if that did not finish within the timeout."""
        deadline = time.monotonic() + max(0, timeout_millis) / 1000
        with self._cond:
            if not self._worker.is_alive():
                return not (self._queue or self._parked)
            self._flush_requests += 1
            self._parked_until = 0.0  # a flush tries parked milestones again now, once
            self._cond.notify_all()
            try:
                while self._queue or self._parked or self._inflight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flush_requests -= 1

    def shutdown(self) -> None:
        """Write what is pending within the shutdown timeout, then stop. Idempotent."""
        with self._cond:
            if self._is_shutdown:
                return
        if self._live:
            remove_sink(self.submit)
        flushed = self.force_flush(int(self._shutdown_timeout_s * 1000))
        with self._cond:
            self._is_shutdown = True
            self._stop = True
            self._cond.notify_all()
        # Cut short any retry wait of a write still in flight.
        self.exporter.shutdown()
        self._worker.join(timeout=max(0.1, self._shutdown_timeout_s / 5))
        with self._cond:
            lost = len(self._queue) + len(self._parked)
            self._dropped += lost
            self._queue.clear()
            self._parked.clear()
            in_flight = self._inflight
        if not flushed or lost or in_flight:
            # In-flight milestones are in a write DynamoDB has not answered: the writer counts them
            # as written or dropped when it does.
            logger.error(
                "dropped=<%d>, in_flight=<%d> | his-otel shut down before DynamoDB took every milestone",
                lost,
                in_flight,
            )

    def stats(self) -> ProcessorStats:
        with self._cond:
            return ProcessorStats(
                queued=len(self._queue) + len(self._parked) + self._inflight,
                queued_bytes=self._queued_bytes,
                peak_queued=self._peak,
                written=self.exporter.rows_written,
                rejected=self.exporter.rows_rejected,
                dropped=self._dropped,
                retries=self._retries,
            )
