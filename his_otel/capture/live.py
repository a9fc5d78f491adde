"""``HISSpanProcessor``: milestones reach the table while the invocation still runs.

Two inputs feed one bounded queue:
- live: :func:`his_otel.milestone` hands each milestone to the pipelines of its span's provider as
  it is emitted (see ``routing``), which works for spans that never end, are sampled out, or drop
  old events past the SDK's event limit;
- end of span: ``on_end`` reads the ``his.milestone`` events of every ended span, which catches
  events added with ``span.add_event`` directly. The ids taken live are remembered per span, for as
  long as the span lives, so no milestone is queued twice.

The agent's thread only appends to the queue. Daemon threads write it in batches: one while a batch
is written faster than the next one fills, more (up to the exporter's ``writes_in_flight``) while
DynamoDB is far away or slow, so one slow call never holds up the rows queued behind it. Rows whose
write failed are parked on a backoff that only success resets, and retried until they are older than
``max_row_age_millis``; then they are rejected with their cause. Every milestone a pipeline takes is
counted exactly once as written, rejected (with cause) or dropped (with cause), or is still queued.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .. import config, notice
from ..schema import ATTR_EVENT_ID, EVENT_NAME, Milestone
from ..write.dynamodb import MAX_BATCH_ITEMS, advice, is_transient
from ..write.exporter import (
    DynamoDBSpanExporter,
    ExportOutcome,
    MessageFilter,
    apply_message_policy,
    milestones_of,
)
from ..write.throttled_log import ThrottledLog
from . import lifecycle, routing

logger = logging.getLogger(__name__)

# The most milestones one export call takes (a few BatchWriteItem calls of 25).
_EXPORT_BATCH = 500
_MIN_RETRY_BACKOFF_S = 0.1
_MAX_RETRY_BACKOFF_S = 5.0

# Causes of drops, as counted in ``ProcessorStats.dropped_causes``.
DROP_QUEUE_FULL = "queue_full"
DROP_AFTER_SHUTDOWN = "after_shutdown"
DROP_SHUTDOWN_TIMEOUT = "shutdown_timeout"


@dataclass(frozen=True)
class ProcessorStats:
    """Counters an application can read (and export as metrics).

    ``submitted == written + rejected + dropped + queued`` at every moment.
    """

    queued: int
    queued_bytes: int
    peak_queued: int
    written: int
    rejected: int
    """Milestones that can never become rows (invalid), or whose writes failed for longer than the
    row age limit (missing table, access denied, ...); see ``rejected_causes``."""
    dropped: int
    """Milestones lost here: queue full, emitted after shutdown, still pending at the shutdown timeout."""
    retries: int
    submitted: int = 0
    """Distinct milestones this pipeline took."""
    rejected_causes: Mapping[str, int] = field(default_factory=dict)
    dropped_causes: Mapping[str, int] = field(default_factory=dict)
    refused: int = 0
    """``milestone()`` calls refused before they became milestones (an invalid type, an id over its
    limit, a message that is not text): never submitted, so outside the sum above."""
    refused_causes: Mapping[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Parked:
    milestone: Milestone
    first_failure: float


class _Taken(set[str]):
    """The event ids taken live for one span. A set subclass, so a weak map can hold it."""


def _span_key(span: ReadableSpan) -> tuple[int, int] | None:
    ctx = span.context
    return (ctx.trace_id, ctx.span_id) if ctx is not None else None


class HISSpanProcessor(SpanProcessor):
    """Feeds a :class:`DynamoDBSpanExporter` from live milestones and from ended spans.

    Args:
        exporter: Where rows are written.
        max_queue_size: Most milestones held while DynamoDB is slow or down (``HIS_OTEL_MAX_QUEUE_SIZE``).
        max_queue_bytes: Most bytes of message text held (``HIS_OTEL_MAX_QUEUE_BYTES``).
        schedule_delay_millis: How long a milestone may wait, from its emission, for others to fill a
            BatchWriteItem call of 25 (``HIS_OTEL_SCHEDULE_DELAY_MS``).
        shutdown_timeout_millis: How long ``shutdown()`` may spend writing what is pending
            (``HIS_OTEL_SHUTDOWN_TIMEOUT_MS``).
        max_row_age_millis: How long a row whose write fails is retried, counted from its first
            failure, before it is rejected (``HIS_OTEL_MAX_ROW_AGE_MS``).
        message_mode: ``"full"`` or ``"drop"`` (``HIS_OTEL_MESSAGE_MODE``); applied when a milestone is
            emitted, so the span event and the row carry the same text.
        message_filter: Rewrites each message (redaction) when it is emitted; a filter that raises
            drops the text.
        live: Take milestones as they are emitted. When False, only ended spans are read.
        copies: Which copies of each milestone are emitted (``HIS_OTEL_COPIES``): ``"both"`` (the
            span event and the log event), ``"span"`` or ``"log"``. Rows are written once either way.
        tracer_provider: The provider whose unclaimed spans (sampled out, started before this
            processor) send their milestones here. ``configure()`` sets it.
    """

    def __init__(
        self,
        exporter: DynamoDBSpanExporter,
        *,
        max_queue_size: int | None = None,
        max_queue_bytes: int | None = None,
        schedule_delay_millis: int | None = None,
        shutdown_timeout_millis: int | None = None,
        max_row_age_millis: int | None = None,
        message_mode: str | None = None,
        message_filter: MessageFilter | None = None,
        live: bool = True,
        tracer_provider: trace_api.TracerProvider | None = None,
        copies: str | None = None,
    ) -> None:
        self.exporter = exporter
        self.provider: trace_api.TracerProvider | None = tracer_provider
        self._max_size = config.resolve_int(
            max_queue_size, config.ENV_MAX_QUEUE_SIZE, config.DEFAULT_MAX_QUEUE_SIZE
        )
        self._max_bytes = config.resolve_int(
            max_queue_bytes, config.ENV_MAX_QUEUE_BYTES, config.DEFAULT_MAX_QUEUE_BYTES
        )
        self._delay_s = self._seconds(
            schedule_delay_millis, config.ENV_SCHEDULE_DELAY_MS, config.DEFAULT_SCHEDULE_DELAY_MS
        )
        self._shutdown_timeout_s = self._seconds(
            shutdown_timeout_millis, config.ENV_SHUTDOWN_TIMEOUT_MS, config.DEFAULT_SHUTDOWN_TIMEOUT_MS
        )
        self._max_age_s = self._seconds(
            max_row_age_millis, config.ENV_MAX_ROW_AGE_MS, config.DEFAULT_MAX_ROW_AGE_MS
        )
        self._message_mode = config.resolve_choice(
            message_mode, config.ENV_MESSAGE_MODE, "full", config.MESSAGE_MODES
        )
        self._message_filter = message_filter
        self.copies = config.resolve_choice(copies, config.ENV_COPIES, config.DEFAULT_COPIES, config.COPIES)
        self._is_shutdown = False
        self._init_state()
        self._start_worker()
        if live:
            routing.register(self)
        lifecycle.watch(self)

    @staticmethod
    def _seconds(arg: int | None, env: str, default: int) -> float:
        return config.resolve_int(arg, env, default, minimum=0) / 1000

    def _init_state(self) -> None:
        # Re-entrant: a SIGTERM handler may flush while the main thread is inside submit().
        lock = threading.RLock()
        self._cond = threading.Condition(lock)  # flushes and shutdown wait on it
        self._work = threading.Condition(lock)  # idle writer threads wait on it
        self._queue: deque[Milestone] = deque()
        # Milestones whose write failed wait here, on their own backoff, so fresh ones never queue
        # behind a table that is throttled, forbidden or unreachable.
        self._parked: deque[_Parked] = deque()
        self._parked_until = 0.0
        self._backoff = 0.0
        self._queued_bytes = 0
        self._peak = 0
        self._inflight = 0
        # Fresh milestones queued, and taken off the queue (in order), since start; per batch being
        # written, the number of its first fresh milestone (-1: it retries parked ones). A flush
        # waits until everything queued before it was taken and no batch holding it is in flight.
        self._enqueued = 0
        self._taken = 0
        self._batches: dict[int, int] = {}
        self._next_batch = 0
        self._waiters = 0
        # The event ids taken live, per span still alive; on_end skips them. on_end gets a copy of
        # the span, so the same set is also found by the span's ids; both maps let go of it when
        # the span object is gone (a span that never ends costs nothing afterwards).
        self._spans_lock = threading.Lock()
        self._spans: weakref.WeakKeyDictionary[trace_api.Span, _Taken] = weakref.WeakKeyDictionary()
        self._by_ids: weakref.WeakValueDictionary[tuple[int, int], _Taken] = weakref.WeakValueDictionary()
        self._submitted = 0
        self._written = 0
        self._rejected: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._retries = 0
        self._overflowing = False
        # (cause, the tables failing with it), as said in warnings.
        self._failing: set[tuple[str, str]] = set()
        self._stop = False
        self._log = ThrottledLog(logger)
        self._workers: list[threading.Thread] = []
        self._idle = 0

    def _start_worker(self) -> None:
        worker = threading.Thread(target=self._run, name=f"his-otel-writer-{len(self._workers)}", daemon=True)
        self._workers.append(worker)
        worker.start()

    def _wake_worker(self) -> None:
        """Work is ready (holding ``_cond``): an idle writer takes it, else one more starts, if allowed."""
        if self._idle:
            self._work.notify()
        elif len(self._workers) < self.exporter.writes_in_flight:
            self._start_worker()  # also the first milestone of a forked child

    def after_fork_in_child(self) -> None:
        """A forked child starts clean: nothing of the parent's queue, counters, locks or client.

        The parent's pending rows are the parent's to write; writing them here too would send every
        one twice. The writer thread starts on the child's first milestone.
        """
        self._init_state()
        self.exporter.after_fork()

    # -- emission (the application's threads) ---------------------------------------------------

    def owns(self, span: trace_api.Span) -> bool:
        """Whether ``span`` was started by this processor's provider (and is still alive)."""
        try:
            return span in self._spans
        except TypeError:
            return False

    def prepare(self, m: Milestone) -> Milestone:
        """``m`` with the text this pipeline lets leave the process (mode and filter applied)."""
        return apply_message_policy(m, self._message_mode, self._message_filter, self._log)

    def _claim(self, span: trace_api.Span | None, event_id: str) -> bool:
        """Note ``event_id`` as taken for ``span``; False if it already was."""
        if span is None or not isinstance(span, ReadableSpan) or not span.is_recording():
            return True
        ids = self._spans.get(span)
        if ids is None:
            with self._spans_lock:
                # Not `or`: an empty set is falsy, and replacing it would lose another thread's claim.
                ids = self._spans.get(span)
                if ids is None:
                    ids = self._track(span)
        if event_id in ids:
            return False
        ids.add(event_id)  # one thread emits a given event id: no lock needed to add it
        return True

    def submit(self, m: Milestone, span: trace_api.Span | None = None) -> bool:
        """Queue one milestone (already prepared). Never blocks on I/O, never raises.

        Returns:
            False if it was dropped (and counted as dropped).
        """
        try:
            if not self._claim(span, m.event_id):
                return True
            size = m.approx_bytes()
            with self._cond:
                self._submitted += 1
                if self._is_shutdown:
                    self._dropped[DROP_AFTER_SHUTDOWN] += 1
                    self._log.warning(
                        DROP_AFTER_SHUTDOWN,
                        "evt_type=<%s> | milestone emitted after his-otel shut down, dropped",
                        m.evt_type,
                    )
                    return False
                held = len(self._queue) + len(self._parked) + self._inflight
                if held >= self._max_size or self._queued_bytes + size > self._max_bytes:
                    self._dropped[DROP_QUEUE_FULL] += 1
                    if not self._overflowing:
                        self._overflowing = True
                        notice.tell(
                            "queue-full",
                            "status queue full (DynamoDB slow or down?): milestones are dropped until it"
                            " drains; raise max_queue_size or see stats().dropped",
                        )
                        logger.error(
                            "max_queue_size=<%d>, max_queue_bytes=<%d> | status queue full (DynamoDB slow or"
                            " down?), dropping milestones until it drains; see stats().dropped",
                            self._max_size,
                            self._max_bytes,
                        )
                    return False
                self._queue.append(m)
                self._enqueued += 1
                self._queued_bytes += size
                self._peak = max(self._peak, held + 1)
                if len(self._queue) == 1:
                    self._wake_worker()
                elif len(self._queue) % MAX_BATCH_ITEMS == 0:
                    self._work.notify()  # a writer waiting for a call's worth takes it now
            return True
        except Exception:
            logger.exception("milestone could not be queued")
            return False

    def _track(self, span: trace_api.Span) -> _Taken:
        ids = _Taken()
        self._spans[span] = ids
        key = _span_key(span) if isinstance(span, ReadableSpan) else None
        if key is not None:
            self._by_ids[key] = ids
        return ids

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            with self._spans_lock:
                self._track(span)
        except Exception:
            logger.exception("span=<%s> | could not track span", span.name)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            key = _span_key(span)
            with self._spans_lock:
                taken = self._by_ids.pop(key, None) if key is not None else None
            fresh = [
                e
                for e in span.events
                if e.name == EVENT_NAME and (e.attributes or {}).get(ATTR_EVENT_ID) not in (taken or ())
            ]
            if not fresh:
                return
            found, _ = milestones_of(span, fresh)
            for m in found:
                # Events added with span.add_event directly: the row gets this pipeline's policy.
                self.submit(self.prepare(m))
        except Exception:
            logger.exception("span=<%s> | milestones of ended span not captured", span.name)

    # -- the writer thread ---------------------------------------------------------------------

    def _parked_due(self, now: float) -> bool:
        return bool(self._parked) and now >= self._parked_until

    def _wait_for_work(self) -> int | None:
        """Wait (holding ``_cond``) until work is ready: how many fresh milestones to take now, or
        None once stopped."""
        while not self._stop and not (self._queue or self._parked_due(time.monotonic())):
            timeout = max(0.0, self._parked_until - time.monotonic()) if self._parked else None
            self._idle += 1
            try:
                self._work.wait(timeout)
            finally:
                self._idle -= 1
        # Give a burst a moment to fill a call (DynamoDB takes 25 rows a call), at most the schedule
        # delay from the oldest row's emission, unless someone is waiting on a flush. In a loop: a
        # wake-up meant for an idle writer must not cut the wait short (calls cost CPU).
        while self._queue and len(self._queue) < MAX_BATCH_ITEMS and not self._waiters and not self._stop:
            remaining = self._delay_left()
            if remaining <= 0:
                break
            self._work.wait(remaining)
        if self._stop:
            return None
        queued = len(self._queue)
        if queued < MAX_BATCH_ITEMS or self._waiters or self._delay_left() <= 0:
            return min(queued, _EXPORT_BATCH)
        # Whole calls only: the rest fills the next call, within its own delay.
        return min(queued - queued % MAX_BATCH_ITEMS, _EXPORT_BATCH)

    def _delay_left(self) -> float:
        """Seconds the oldest queued milestone may still wait for company (holding ``_cond``)."""
        age = (time.time_ns() - self._queue[0].timestamp_ns) / 1e9
        return min(self._delay_s, self._delay_s - age)  # a clock stepped back never waits longer

    def _take_batch(self) -> tuple[int, list[Milestone], dict[str, _Parked]] | None:
        """Wait for work: (batch id, batch, the parked entries in it), or None once stopped."""
        with self._cond:
            while (take := self._wait_for_work()) is not None:
                batch: list[Milestone] = []
                parked: dict[str, _Parked] = {}
                if self._parked_due(time.monotonic()):
                    while self._parked and len(batch) < _EXPORT_BATCH:
                        entry = self._parked.popleft()
                        parked[entry.milestone.event_id] = entry
                        batch.append(entry.milestone)
                fresh = 0
                while self._queue and fresh < take and len(batch) < _EXPORT_BATCH:
                    batch.append(self._queue.popleft())
                    fresh += 1
                if not batch:  # another writer took it while this one waited for the batch to fill
                    continue
                batch_id, self._next_batch = self._next_batch, self._next_batch + 1
                self._batches[batch_id] = -1 if parked else self._taken
                self._taken += fresh
                self._inflight += len(batch)
                if self._queue:  # more than one batch is waiting: another writer may take it now
                    self._wake_worker()
                return batch_id, batch, parked
            return None

    def _run(self) -> None:
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            batch_id, batch, parked = taken
            try:
                outcome = self.exporter.export_milestones(batch)
            except Exception as e:
                logger.exception("his-otel writer failed; will retry")
                outcome = ExportOutcome(unwritten=list(batch), cause=type(e).__name__)
            self._settle(batch_id, batch, parked, outcome)

    def _tables(self, milestones: list[Milestone]) -> str:
        """The tables ``milestones`` go to, for a warning: each row's own (a HISAgent's), else the
        exporter's default; quoted, comma-separated."""
        honor = self.exporter.honor_event_table
        names = sorted({(m.table if honor else "") or self.exporter.table_name for m in milestones})
        return ", ".join(repr(n) for n in names) or repr(self.exporter.table_name)

    def _through(self, target: int) -> bool:
        """Whether the first ``target`` fresh milestones were all tried once (holding ``_cond``)."""
        return self._taken >= target and all(first >= target for first in self._batches.values())

    def _settle(
        self, batch_id: int, batch: list[Milestone], parked: dict[str, _Parked], outcome: ExportOutcome
    ) -> None:
        now = time.monotonic()
        said: list[tuple[str, str]] = []
        with self._cond:
            self._inflight -= len(batch)
            del self._batches[batch_id]
            self._queued_bytes -= sum(m.approx_bytes() for m in batch)
            self._written += outcome.written
            self._rejected.update(outcome.rejected_causes)
            refused_in = self._tables(outcome.rejected_milestones)
            for cause, count in outcome.rejected_causes.items():
                said.append(
                    (
                        f"rejected:{cause}:{refused_in}",
                        f"{count} status rows for table {refused_in} can never be written:"
                        f" DynamoDB refused them ({cause}); see stats().rejected_causes and the his_otel"
                        " logger",
                    )
                )
            expired: Counter[str] = Counter()
            failing_in = self._tables(outcome.unwritten)
            for m in outcome.unwritten:
                before = parked.get(m.event_id)
                first = before.first_failure if before is not None else now
                if self._stop:
                    self._dropped[DROP_SHUTDOWN_TIMEOUT] += 1
                elif now - first >= self._max_age_s:
                    self._rejected[outcome.cause] += 1
                    expired[outcome.cause] += 1
                else:
                    self._parked.append(_Parked(m, first))
                    self._queued_bytes += m.approx_bytes()
            if outcome.unwritten and not self._stop:
                self._retries += 1
                # Only success resets the backoff: flushes and fresh rows never shorten it.
                self._backoff = min(_MAX_RETRY_BACKOFF_S, max(_MIN_RETRY_BACKOFF_S, self._backoff * 2))
                if self._parked_until <= now:
                    # Fresh rows failing meanwhile must not keep postponing the parked ones' retry.
                    self._parked_until = now + self._backoff
                if (outcome.cause, failing_in) not in self._failing:
                    self._failing.add((outcome.cause, failing_in))
                    logger.error(
                        "cause=<%s>, pending=<%d>, max_row_age_s=<%g> | status rows not written; retrying"
                        " with backoff until they are older than the row age limit",
                        outcome.cause,
                        len(self._parked),
                        self._max_age_s,
                    )
                    if not is_transient(outcome.cause):
                        said.append(
                            (
                                f"failing:{outcome.cause}:{failing_in}",
                                f"status rows for table {failing_in} are not being written:"
                                f" {outcome.cause}; {advice(outcome.cause, failing_in.strip(chr(39)))}. They"
                                f" are retried for up to {self._max_age_s:g} s, then dropped (and any still"
                                " pending at exit).",
                            )
                        )
            elif not outcome.unwritten and (parked or not self._parked):
                if self._failing:
                    causes = sorted({cause for cause, _ in self._failing})
                    logger.warning("causes=<%s> | status rows are being written again", causes)
                self._failing.clear()
                self._backoff = 0.0
            for cause, count in expired.items():
                said.append(
                    (
                        f"expired:{cause}:{failing_in}",
                        f"{count} status rows for table {failing_in} were dropped: writes"
                        f" failed ({cause}) for longer than the row age limit ({self._max_age_s:g} s);"
                        f" {advice(cause, failing_in.strip(chr(39)))}.",
                    )
                )
                self._log.error(
                    f"expired:{cause}",
                    "cause=<%s>, rejected=<%d>, max_row_age_s=<%g> | status rows rejected: writes failed"
                    " for longer than the row age limit; see stats().rejected_causes",
                    cause,
                    count,
                    self._max_age_s,
                )
            if not self._queue and not self._parked:
                self._overflowing = False
            self._cond.notify_all()
            if self._parked_due(now):
                self._work.notify()
        logger.debug(
            "table=<%s>, written=<%d>, unwritten=<%d>, rejected=<%d> | status rows batch settled",
            self.exporter.table_name,
            outcome.written,
            len(outcome.unwritten),
            outcome.rejected,
        )
        for key, text in said:
            notice.tell(key, text)

    # -- flush and shutdown ----------------------------------------------------------------------

    def _wait(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait (holding ``_cond``) until ``done()`` is true; False at the deadline."""
        self._waiters += 1
        self._cond.notify_all()
        self._work.notify_all()  # a writer waiting for its batch to fill writes it now
        try:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True
        finally:
            self._waiters -= 1

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write everything queued so far; False if something is still unwritten at the timeout.

        Parked rows are retried at their scheduled time, never earlier: a flush after every request
        does not defeat the backoff. If that time falls after the timeout, this returns False as
        soon as the fresh rows are written.
        """
        deadline = time.monotonic() + max(0, timeout_millis) / 1000
        with self._cond:
            if not self._workers:
                return not (self._queue or self._parked)
            target = self._enqueued

            def done() -> bool:
                if not self._through(target):
                    return False
                return not self._parked or self._parked_until > deadline

            return self._wait(done, deadline) and not self._parked

    def wait_settled(self, timeout_s: float) -> bool:
        """Wait until every milestone queued so far was tried once, unless DynamoDB is known to be
        failing (rows are parked): an invocation's end never waits out an outage."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if self._parked or self._is_shutdown or not self._workers:
                return not (self._queue or self._parked)
            target = self._enqueued
            return self._wait(lambda: self._through(target), deadline)

    def shutdown(self) -> None:
        """Write what is pending within the shutdown timeout, then stop. Idempotent.

        Milestones emitted afterwards are counted as dropped.
        """
        with self._cond:
            if self._is_shutdown:
                return
            self._is_shutdown = True
            # The last chance for parked rows: try them now rather than at their next backoff.
            self._parked_until = 0.0
            deadline = time.monotonic() + self._shutdown_timeout_s

            def done() -> bool:
                return not (self._queue or self._parked or self._inflight)

            # A second passes in silence; a longer wait (DynamoDB failing or slow) is announced.
            quiet = min(deadline, time.monotonic() + 1.0)
            flushed = not self._workers or self._wait(done, quiet)
            pending, failing = len(self._queue) + len(self._parked) + self._inflight, sorted(self._failing)
        if not flushed:
            causes = sorted({cause for cause, _ in failing})
            tables = failing[0][1].strip("'") if failing else self.exporter.table_name
            why = f"{', '.join(causes)}; {advice(causes[0], tables)}" if failing else "slow"
            notice.tell(
                "shutdown-wait",
                f"waiting up to {max(0.0, deadline - time.monotonic()):.0f} s more for {pending} status rows"
                f" DynamoDB has not taken yet ({why})",
            )
        with self._cond:
            flushed = flushed or self._wait(done, deadline)
            self._stop = True
            self._cond.notify_all()
            self._work.notify_all()
            lost = len(self._queue) + len(self._parked)
            if lost:
                self._dropped[DROP_SHUTDOWN_TIMEOUT] += lost
            self._queue.clear()
            self._parked.clear()
            in_flight = self._inflight
        # Cut short any retry wait of a write still in flight; it counts its rows when it returns.
        self.exporter.shutdown()
        join_by = time.monotonic() + max(0.1, self._shutdown_timeout_s / 5)
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(timeout=max(0.0, join_by - time.monotonic()))
        if not flushed or lost or in_flight:
            logger.error(
                "dropped=<%d>, in_flight=<%d> | his-otel shut down before DynamoDB took every milestone",
                lost,
                in_flight,
            )
            where = ", ".join(sorted({t for _, t in self._failing})) or repr(self.exporter.table_name)
            why_lost = ", ".join(sorted({cause for cause, _ in self._failing})) or "timeout"
            notice.tell(
                "shutdown-lost",
                f"{lost + in_flight} status rows for table {where} were not written"
                f" before shutdown ({why_lost}); see stats().dropped",
            )

    def stats(self) -> ProcessorStats:
        with self._cond:
            return ProcessorStats(
                queued=len(self._queue) + len(self._parked) + self._inflight,
                queued_bytes=self._queued_bytes,
                peak_queued=self._peak,
                written=self._written,
                rejected=self._rejected.total(),
                dropped=self._dropped.total(),
                retries=self._retries,
                submitted=self._submitted,
                rejected_causes=dict(self._rejected),
                dropped_causes=dict(self._dropped),
                refused=self._refused.total(),
                refused_causes=dict(self._refused),
            )

    def refused(self, cause: str) -> None:
        """Count a ``milestone()`` call refused at emission (see ``ProcessorStats.refused``)."""
        with self._cond:
            self._refused[cause] += 1
