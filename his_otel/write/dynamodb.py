"""Writing rows: BatchWriteItem with the care boto3's ``BatchWriter`` lacks, or append-only puts.

Two modes. ``batch`` (the in-process path, where the app is the only writer and a rewrite carries the
same content) uses BatchWriteItem. ``append_only`` (the bridge, where any sender that reaches it can
write) uses PutItem with ``attribute_not_exists``: a row that exists is never replaced, so the first
writer wins; BatchWriteItem cannot carry conditions.

- several calls in flight (``inflight.InFlight``: bounded, sized to the latency observed), so a
  DynamoDB 10 ms away is not written one round trip at a time; a slow call holds up only its rows;
- at most 25 puts per call, never two with the same key in one call;
- ``UnprocessedItems``, throttling and transient errors retried under one deadline, after a
  full-jitter exponential backoff that every call of the writer waits out (shutdown cuts it short);
- faults a person must fix (missing table, access denied, credentials) are handed back at once, with
  their cause, for the caller to retry later: retrying them within one call cannot help;
- nothing taken off the input is lost: what is still unwritten at the deadline is returned;
- one invalid item is isolated (its batch is split) instead of failing its neighbours;
- thread-safe (boto3 clients are), and its own calls are never traced.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from opentelemetry.instrumentation.utils import suppress_instrumentation

from ..schema import KEY_EVENT_ID, KEY_SESSION_ID, Item
from . import request_body
from .client import NotDynamoDBError, drop_inherited_connections
from .inflight import InFlight
from .throttled_log import ThrottledLog

logger = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 25  # DynamoDB's BatchWriteItem limit.
DEFAULT_PUTS_IN_FLIGHT = 16
DEFAULT_WRITES_IN_FLIGHT = 8
# The sort key must not exist yet: a put never replaces a row (the partition key is implied).
APPEND_ONLY_CONDITION = f"attribute_not_exists({KEY_EVENT_ID})"

# Transient: the same request may succeed in a moment, so it is retried within the deadline.
TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
        "LimitExceededException",
    }
)
THROTTLE_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
# What a person has to fix (and what to tell them), by cause. Rows that fail this way are handed back
# at once; the caller retries them later, with backoff, until they are too old.
ADVICE = {
    "ResourceNotFoundException": "create the table (`his-otel create-table NAME`) or fix its name/region",
    "AccessDeniedException": "grant dynamodb:BatchWriteItem on the table to these credentials",
    "UnrecognizedClientException": "the credentials are not valid for this endpoint/region",
    "ExpiredTokenException": "refresh the expired credentials",
    "InvalidSignatureException": "check the secret key and the region",
    "NoCredentialsError": "configure AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, a role)",
    "PartialCredentialsError": "complete the AWS credentials",
    "NoRegionError": "set AWS_REGION or AWS_DEFAULT_REGION",
    "NotDynamoDBError": (
        "the endpoint answered, but not like DynamoDB: check AWS_ENDPOINT_URL_DYNAMODB / endpoint_url"
        " (a web UI or another service answers there)"
    ),
}
# Retried like throttling, but a person may have to act (and hear about it) all the same.
UNREACHABLE_ADVICE = (
    "check the endpoint (AWS_ENDPOINT_URL_DYNAMODB, endpoint_url=), the region and the network"
)


def is_transient(cause: str) -> bool:
    """Whether rows failing with ``cause`` only wait for DynamoDB (throttling, a busy server)."""
    return cause in TRANSIENT_CODES or cause == "UnprocessedItems"


def advice(cause: str, table: str) -> str:
    """What to do about rows failing with ``cause`` (an error code or botocore exception name)."""
    if cause in ADVICE:
        return ADVICE[cause].replace("NAME", table)
    if is_transient(cause):
        return "DynamoDB is throttling or busy; rows are retried with backoff"
    if cause.endswith(("ConnectionError", "TimeoutError", "ClosedError")):
        return UNREACHABLE_ADVICE
    return "see the his_otel logger's records for the error"


Row = tuple[str, Item]
"""A table name and the item to put there."""


@dataclass
class WriteResult:
    written: int = 0
    rejected_causes: Counter[str] = field(default_factory=Counter)
    """Items DynamoDB refused as invalid, by cause; retrying them could never succeed."""
    rejected_rows: list[Row] = field(default_factory=list)
    """The rows behind ``rejected_causes``."""
    unwritten: list[Row] = field(default_factory=list)
    """Items still owed (DynamoDB down, throttling, a fault a person must fix); the caller keeps them."""
    existing: int = 0
    """Append-only mode: rows already in the table (a retry, the other path, or a forgery); kept as
    they were, and not counted in ``written``."""
    cause: str = ""
    """Why the last unwritten items were not written (an error code or exception name)."""
    throttled: int = 0
    calls: int = 0

    @property
    def rejected(self) -> int:
        return self.rejected_causes.total()


def _key(row: Row) -> tuple[str, str, str]:
    table, item = row
    return table, item[KEY_SESSION_ID]["S"], item[KEY_EVENT_ID]["S"]


def dedupe(rows: Sequence[Row]) -> list[Row]:
    """Drop repeated keys, keeping the first occurrence's position and the last occurrence's item."""
    latest: dict[tuple[str, str, str], Row] = {}
    for row in rows:
        latest[_key(row)] = row
    return list(latest.values())


@dataclass
class _Outcome:
    called: int = 0
    written: int = 0
    retry: list[Row] = field(default_factory=list)
    """Transient: try these again within the deadline, after a backoff."""
    split: bool = False
    """One invalid item failed the whole call."""
    give_back: bool = False
    """Nothing will change within this call (missing table, credentials, permissions)."""
    existing: bool = False
    """Append-only mode: the row was there already."""
    throttled: bool = False
    error: str = ""


class _RecentKeys:
    """The keys of the last ``size`` rows known to be in the table (bounded, thread-safe)."""

    def __init__(self, size: int = 65_536) -> None:
        self._keys: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def seen(self, key: tuple[str, str, str]) -> bool:
        with self._lock:
            return key in self._keys

    def add(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._keys[key] = None
            if len(self._keys) > self._size:
                self._keys.popitem(last=False)


class DynamoDBWriter:
    """Writes rows with BatchWriteItem. Stateless between calls except for the client."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        *,
        base_backoff: float = 0.05,
        max_backoff: float = 2.0,
        stop_event: threading.Event | None = None,
        append_only: bool = False,
        puts_in_flight: int = DEFAULT_PUTS_IN_FLIGHT,
        writes_in_flight: int = DEFAULT_WRITES_IN_FLIGHT,
    ) -> None:
        self._client_factory = client_factory
        self.append_only = append_only
        self.calls_in_flight = max(1, puts_in_flight if append_only else writes_in_flight)
        self.gate = InFlight(self.calls_in_flight, base_backoff_s=base_backoff, max_backoff_s=max_backoff)
        self._pool: ThreadPoolExecutor | None = None
        self._landed = _RecentKeys()
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self.stop_event = stop_event or threading.Event()
        self._log = ThrottledLog(logger)

    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._client_factory()
        return self._client

    def after_fork(self, *, owned_client: bool) -> None:
        """In a forked child: never reuse the parent's sockets, locks or log state."""
        client, self._client = self._client, None
        self._client_lock = threading.Lock()
        self._pool = None  # the parent's threads do not exist here
        self.gate = InFlight(
            self.calls_in_flight, base_backoff_s=self._base_backoff, max_backoff_s=self._max_backoff
        )
        self._landed = _RecentKeys()
        self._log = ThrottledLog(logger)
        if client is not None and not owned_client:
            drop_inherited_connections(client)

    def write(self, rows: Sequence[Row], deadline: float) -> WriteResult:
        """Write ``rows`` before ``deadline`` (a ``time.monotonic()`` value). Never raises."""
        result = WriteResult()
        by_table: dict[str, list[Row]] = {}
        for r in dedupe(rows):
            by_table.setdefault(r[0], []).append(r)
        # One table per call: a missing or forbidden table fails a whole call, never its neighbours.
        write_table = self._put_table if self.append_only else self._write_table
        for table_rows in by_table.values():
            unwritten, cause = write_table(table_rows, deadline, result)
            if unwritten:
                result.unwritten.extend(unwritten)
                result.cause = cause
        return result

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._client_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.calls_in_flight, thread_name_prefix="his-otel-write")
        return self._pool

    def _write_table(self, rows: list[Row], deadline: float, result: WriteResult) -> tuple[list[Row], str]:
        pool = self._executor()
        pending: deque[Row] = deque(rows)
        # Rows of a call that one invalid item failed go one per call, to find it. They share the
        # main loop, so throttling and a missing table are handled for them exactly as for batches.
        singles: deque[Row] = deque()
        running: dict[Future[_Outcome], tuple[list[Row], deque[Row]]] = {}
        give_back: list[Row] = []
        cause = ""
        while pending or singles or running:
            # Chunks beyond what the gate lets start now would only wait on a pool thread.
            while (
                (pending or singles)
                and len(running) < self.gate.limit
                and not give_back
                and time.monotonic() < deadline
                and not self.stop_event.is_set()
            ):
                source = singles if singles else pending
                size = 1 if source is singles else MAX_BATCH_ITEMS
                chunk = [source.popleft() for _ in range(min(size, len(source)))]
                # The only call to make: made here, sparing a hand-off to a pool thread.
                inline = not (running or pending or singles)
                running[self._start(pool, self._call, chunk, deadline, inline)] = (chunk, source)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                chunk, source = running.pop(future)
                outcome = future.result()
                result.calls += outcome.called
                result.written += outcome.written
                result.throttled += outcome.throttled
                if outcome.split:
                    if len(chunk) == 1:
                        self._reject(chunk[0], outcome.error, result)
                    else:
                        singles.extend(chunk)
                elif outcome.give_back:
                    give_back.extend(chunk)
                    cause = outcome.error
                elif outcome.retry:
                    # A call that found the deadline passed says nothing about DynamoDB.
                    if not give_back and (outcome.error != "deadline" or not cause):
                        cause = outcome.error
                    source.extendleft(reversed(outcome.retry))
        return [*give_back, *singles, *pending], cause

    def _start(
        self,
        pool: ThreadPoolExecutor,
        call: Callable[[list[Row]], _Outcome],
        chunk: list[Row],
        deadline: float,
        inline: bool,
    ) -> Future[_Outcome]:
        if not inline:
            try:
                return pool.submit(self._gated, call, chunk, deadline)
            except RuntimeError:
                pass  # the interpreter is exiting (atexit's flush): pools take no new work
        done: Future[_Outcome] = Future()
        done.set_result(self._gated(call, chunk, deadline))
        return done

    def _gated(self, call: Callable[[list[Row]], _Outcome], chunk: list[Row], deadline: float) -> _Outcome:
        """Run one call when the gate lets it start; its timing and outcome size the gate."""
        ticket = self.gate.acquire(deadline, self.stop_event)
        if ticket is None:
            return _Outcome(retry=chunk, error="deadline")
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            outcome = call(chunk)
        except Exception as e:  # a broken client factory: never let it take down the pool
            outcome = self._failure(e, chunk)
        outcome.called = 1
        self.gate.release(
            ticket,
            time.perf_counter() - wall,
            time.thread_time() - cpu,
            failed=bool(outcome.retry),
            clean=not outcome.error or outcome.existing,
        )
        return outcome

    def close(self) -> None:
        """Let the pool's threads go. The writer still works afterwards (a new pool on its next write)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _put_table(self, rows: list[Row], deadline: float, result: WriteResult) -> tuple[list[Row], str]:
        """Append-only: one conditional PutItem per row, several in flight, retried in rounds."""
        pool = self._executor()
        # A sender retries a whole request when part of it was not written in time; rows this
        # process already saw land cost no second call, so every retry makes progress.
        pending = [row for row in rows if not self._landed.seen(_key(row))]
        result.existing += len(rows) - len(pending)
        # In a random order: a retry that reaches another bridge process (which has not seen those
        # rows land) then makes progress too, instead of spending its deadline on the same first rows.
        random.shuffle(pending)
        cause = ""
        while pending and time.monotonic() < deadline and not self.stop_event.is_set():
            retry: list[Row] = []
            give_back: list[Row] = []
            give_back_cause = ""
            # Each put waits at the gate: a throttled one delays every put of the next round.
            futures = [self._start(pool, self._put, [r], deadline, len(pending) == 1) for r in pending]
            for row, outcome in zip(pending, (f.result() for f in futures), strict=True):
                result.calls += outcome.called
                result.written += outcome.written
                result.existing += outcome.existing
                result.throttled += outcome.throttled
                if outcome.written or outcome.existing:
                    self._landed.add(_key(row))
                    continue
                if outcome.split:
                    self._reject(row, outcome.error, result)
                elif outcome.give_back:
                    give_back.append(row)
                    give_back_cause = outcome.error
                else:
                    retry.append(row)
                    # A row that found the deadline passed says nothing about DynamoDB: a real
                    # error of this round (throttling, a missing table) is the cause to report.
                    if outcome.error != "deadline" or not cause:
                        cause = outcome.error or cause
            if give_back:
                return [*give_back, *retry], give_back_cause
            pending = retry
        return pending, cause

    def _put(self, chunk: list[Row]) -> _Outcome:
        """One conditional put (of ``chunk``'s one row), on a pool thread; the caller counts it."""
        (table, item) = row = chunk[0]
        try:
            with suppress_instrumentation():
                request_body.send_put_item(self.client(), table, item, APPEND_ONLY_CONDITION)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return _Outcome(existing=True)
            return self._failure(e, [row])
        except Exception as e:
            return self._failure(e, [row])
        return _Outcome(written=1)

    def _reject(self, row: Row, error: str, result: WriteResult) -> None:
        result.rejected_causes["ValidationException"] += 1
        result.rejected_rows.append(row)
        _, session_id, event_id = _key(row)
        self._log.warning(
            "validation",
            "table=<%s>, session_id=<%s>, event_id=<%s>, error=<%s> | item rejected by DynamoDB",
            row[0],
            session_id,
            event_id,
            error,
        )

    def _call(self, chunk: list[Row]) -> _Outcome:
        """One BatchWriteItem, on a pool thread; the caller counts its outcome."""
        request: dict[str, list[dict[str, Any]]] = {}
        for table, item in chunk:
            request.setdefault(table, []).append({"PutRequest": {"Item": item}})
        try:
            with suppress_instrumentation():
                response = request_body.send_batch_write(self.client(), request)
        except Exception as e:
            return self._failure(e, chunk)
        unprocessed = response.get("UnprocessedItems") or {}
        retry: list[Row] = [
            (table, req["PutRequest"]["Item"]) for table, reqs in unprocessed.items() for req in reqs
        ]
        return _Outcome(
            written=len(chunk) - len(retry),
            retry=retry,
            throttled=bool(retry),
            error="UnprocessedItems" if retry else "",
        )

    def _failure(self, e: Exception, chunk: list[Row]) -> _Outcome:
        """What a failed call means for its rows: split, retry now, or hand back."""
        if isinstance(e, ClientError):
            code = str(e.response.get("Error", {}).get("Code", "")) or "ClientError"
            if code == "ValidationException":
                return _Outcome(split=True, error=code)
            if code in TRANSIENT_CODES:
                self._log.warning(code, "code=<%s>, error=<%s> | DynamoDB write failed, will retry", code, e)
                return _Outcome(retry=chunk, error=code, throttled=code in THROTTLE_CODES)
            self._log.error(
                code,
                "table=<%s>, code=<%s>, error=<%s> | DynamoDB refused the write: %s; rows are kept and"
                " retried with backoff",
                chunk[0][0],
                code,
                e,
                ADVICE.get(code, "check the table, region and credentials"),
            )
            return _Outcome(give_back=True, error=code)
        name = type(e).__name__
        if isinstance(e, NotDynamoDBError):
            self._log.error(name, "error=<%s> | rows are kept and retried with backoff", e)
            return _Outcome(give_back=True, error=name)
        if isinstance(e, BotoCoreError):
            if name in ADVICE:
                self._log.error(name, "error=<%s> | cannot sign DynamoDB requests: %s", e, ADVICE[name])
                return _Outcome(give_back=True, error=name)
            # botocore has already retried it; the caller retries later with backoff, and knows why.
            self._log.warning(
                name, "error=<%s> | DynamoDB unreachable, will retry: %s", e, UNREACHABLE_ADVICE
            )
            return _Outcome(give_back=True, error=name)
        # A broken client factory or an unexpected botocore failure.
        self._log.error(name, "error=<%r> | DynamoDB write failed", e)
        return _Outcome(give_back=True, error=name)
