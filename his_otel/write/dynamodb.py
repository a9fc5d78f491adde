"""BatchWriteItem with the care boto3's ``BatchWriter`` lacks.

- at most 25 puts per call, never two with the same key in one call;
- ``UnprocessedItems``, throttling and transient errors retried with full-jitter exponential backoff
  under one deadline, waiting on an event so shutdown cuts the wait short;
- nothing taken off the input is lost: what is still unwritten at the deadline is returned;
- one invalid item is isolated (its batch is split) instead of failing its neighbours;
- thread-safe (boto3 clients are), and its own calls are never traced.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from opentelemetry.instrumentation.utils import suppress_instrumentation

from ..schema import KEY_EVENT_ID, KEY_SESSION_ID, Item
from .throttled_log import ThrottledLog

logger = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 25  # DynamoDB's BatchWriteItem limit.

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
# A table that does not exist will not appear by retrying; its rows are rejected, loudly.
MISSING_TABLE_CODE = "ResourceNotFoundException"
# Anything else (credentials, permissions) is handed back at once: fixable without a restart, but
# not by spinning until the deadline.

Row = tuple[str, Item]
"""A table name and the item to put there."""


@dataclass
class WriteResult:
    written: int = 0
    rejected: int = 0
    """Items DynamoDB refused as invalid; retrying them could never succeed."""
    unwritten: list[Row] = field(default_factory=list)
    """Items still owed at the deadline (DynamoDB down, throttling); the caller keeps them."""
    throttled: int = 0
    calls: int = 0


def _key(row: Row) -> tuple[str, str, str]:
    table, item = row
    return table, item[KEY_SESSION_ID]["S"], item[KEY_EVENT_ID]["S"]


def dedupe(rows: Sequence[Row]) -> list[Row]:
    """Drop repeated keys, keeping the first occurrence's position and the last occurrence's item."""
    latest: dict[tuple[str, str, str], Row] = {}
    for row in rows:
        latest[_key(row)] = row
    return list(latest.values())


class DynamoDBWriter:
    """Writes rows with BatchWriteItem. Stateless between calls except for counters."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        *,
        base_backoff: float = 0.05,
        max_backoff: float = 2.0,
        stop_event: threading.Event | None = None,
    ) -> None:
        self._client_factory = client_factory
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

    def write(self, rows: Sequence[Row], deadline: float) -> WriteResult:
        """Write ``rows`` before ``deadline`` (a ``time.monotonic()`` value). Never raises."""
        result = WriteResult()
        by_table: dict[str, list[Row]] = {}
        for r in dedupe(rows):
            by_table.setdefault(r[0], []).append(r)
        # One table per call: a missing or forbidden table fails a whole call, never its neighbours.
        for table_rows in by_table.values():
            result.unwritten.extend(self._write_table(table_rows, deadline, result))
        return result

    def _write_table(self, pending: list[Row], deadline: float, result: WriteResult) -> list[Row]:
        attempt = 0
        while pending:
            chunk, pending = pending[:MAX_BATCH_ITEMS], pending[MAX_BATCH_ITEMS:]
            outcome = self._call(chunk, result)
            if outcome.missing_table:
                self._reject_missing(chunk + pending, outcome.error, result)
                return []
            if outcome.give_back:
                return chunk + pending
            if outcome.retry:
                pending = outcome.retry + pending
            if outcome.split:
                # One invalid item fails the whole call: write the rest one by one to find it.
                singles = [outcome] if len(chunk) == 1 else [(self._call([row], result)) for row in chunk]
                for row, single in zip(chunk, singles, strict=True):
                    pending = single.retry + ([row] if single.give_back else []) + pending
                    if single.split:
                        self._reject(row, single.error, result)
            if outcome.retry:
                attempt += 1
                delay = random.uniform(0, min(self._max_backoff, self._base_backoff * (2**attempt)))
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.stop_event.wait(min(delay, remaining)):
                    break
            elif outcome.written:
                attempt = 0
            if time.monotonic() >= deadline:
                break
        return pending

    def _reject_missing(self, rows: list[Row], error: str, result: WriteResult) -> None:
        result.rejected += len(rows)
        self._log.error(
            f"missing:{rows[0][0]}",
            "table=<%s>, rows=<%d>, error=<%s> | table not found, rows rejected; create it with"
            " `his-otel create-table %s` or fix the table name",
            rows[0][0],
            len(rows),
            error,
            rows[0][0],
        )

    def _reject(self, row: Row, error: str, result: WriteResult) -> None:
        result.rejected += 1
        _, session_id, event_id = _key(row)
        self._log.warning(
            "validation",
            "table=<%s>, session_id=<%s>, event_id=<%s>, error=<%s> | item rejected by DynamoDB",
            row[0],
            session_id,
            event_id,
            error,
        )

    @dataclass
    class _Outcome:
        written: int = 0
        retry: list[Row] = field(default_factory=list)
        split: list[Row] = field(default_factory=list)
        missing_table: bool = False
        give_back: bool = False
        error: str = ""

    def _call(self, chunk: list[Row], result: WriteResult) -> _Outcome:
        request: dict[str, list[dict[str, Any]]] = {}
        for table, item in chunk:
            request.setdefault(table, []).append({"PutRequest": {"Item": item}})
        result.calls += 1
        try:
            with suppress_instrumentation():
                response = self.client().batch_write_item(RequestItems=request)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code == "ValidationException":
                return self._Outcome(split=chunk, error=str(e))
            if code == MISSING_TABLE_CODE:
                return self._Outcome(missing_table=True, error=str(e))
            if code in TRANSIENT_CODES:
                if code in THROTTLE_CODES:
                    result.throttled += 1
                self._log.warning(code, "code=<%s>, error=<%s> | DynamoDB write failed, will retry", code, e)
                return self._Outcome(retry=chunk, error=str(e))
            self._log.error(
                code or "client-error", "code=<%s>, error=<%s> | DynamoDB refused the write", code, e
            )
            return self._Outcome(give_back=True, error=str(e))
        except BotoCoreError as e:
            if type(e).__name__ in ("NoCredentialsError", "NoRegionError", "PartialCredentialsError"):
                self._log.error(type(e).__name__, "error=<%s> | cannot sign DynamoDB requests", e)
                return self._Outcome(give_back=True, error=str(e))
            self._log.warning(type(e).__name__, "error=<%s> | DynamoDB unreachable, will retry", e)
            return self._Outcome(retry=chunk, error=str(e))
        except Exception as e:  # a broken client factory or an unexpected botocore failure
            self._log.error(type(e).__name__, "error=<%r> | DynamoDB write failed", e)
            return self._Outcome(give_back=True, error=repr(e))
        unprocessed = response.get("UnprocessedItems") or {}
        retry: list[Row] = [
            (table, req["PutRequest"]["Item"]) for table, reqs in unprocessed.items() for req in reqs
        ]
        if retry:
            result.throttled += 1
        written = len(chunk) - len(retry)
        result.written += written
        return self._Outcome(written=written, retry=retry)
