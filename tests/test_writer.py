"""The BatchWriteItem writer. Real moto for what moto does; botocore's Stubber for the faults moto
never produces (UnprocessedItems, throttling), as DESIGN section 5 notes."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from opentelemetry import context as otel_context

from his_otel.read import session_rows
from his_otel.schema import Milestone, to_item
from his_otel.write.dynamodb import DynamoDBWriter, Row, dedupe


def row(table: str, session: str, i: int, message: str = "m") -> Row:
    m = Milestone(f"e-{i:05d}", session, "a", "PROGRESS", message, 1_700_000_000_000_000_000 + i)
    return table, to_item(m)


def test_writes_many_rows_in_calls_of_at_most_25(ddb: Any, table: str) -> None:
    calls: list[int] = []
    client = boto3.client("dynamodb")
    client.meta.events.register(
        "before-parameter-build.dynamodb.BatchWriteItem",
        lambda params, **_: calls.append(sum(len(v) for v in params["RequestItems"].values())),
    )
    writer = DynamoDBWriter(lambda: client)
    result = writer.write([row(table, "s", i) for i in range(130)], time.monotonic() + 30)
    assert (result.written, result.rejected, result.unwritten) == (130, 0, [])
    assert calls == [25, 25, 25, 25, 25, 5]
    assert len(session_rows(ddb, table, "s")) == 130


def test_duplicate_keys_never_share_a_call(ddb: Any, table: str) -> None:
    rows = [row(table, "s", i % 10) for i in range(60)]
    assert len(dedupe(rows)) == 10
    writer = DynamoDBWriter(lambda: boto3.client("dynamodb"))
    # moto, like DynamoDB, refuses a batch with duplicate keys; deduping is what makes this pass.
    result = writer.write(rows, time.monotonic() + 30)
    assert (result.written, result.rejected) == (10, 0)


def test_one_invalid_item_is_isolated_and_the_rest_are_written(ddb: Any, table: str) -> None:
    rows = [row(table, "s", i) for i in range(10)]
    bad = (table, {**rows[3][1], "event_id": {"S": ""}})  # empty key: DynamoDB's ValidationException
    rows[3] = bad
    writer = DynamoDBWriter(lambda: boto3.client("dynamodb"))
    result = writer.write(rows, time.monotonic() + 30)
    assert (result.written, result.rejected, result.unwritten) == (9, 1, [])
    assert len(session_rows(ddb, table, "s")) == 9


def _stubbed(moto_endpoint: str) -> tuple[Any, Stubber]:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint)
    return client, Stubber(client)


def test_unprocessed_items_are_retried_until_written(moto_endpoint: str) -> None:
    client, stub = _stubbed(moto_endpoint)
    rows = [row("t", "s", i) for i in range(5)]
    leftover = {"t": [{"PutRequest": {"Item": rows[i][1]}} for i in (1, 3)]}
    stub.add_response("batch_write_item", {"UnprocessedItems": leftover}, {"RequestItems": ANY})
    # The retry carries exactly the two unprocessed items.
    stub.add_response("batch_write_item", {"UnprocessedItems": {}}, {"RequestItems": leftover})
    with stub:
        result = DynamoDBWriter(lambda: client, base_backoff=0.001).write(rows, time.monotonic() + 10)
        stub.assert_no_pending_responses()
    assert (result.written, result.throttled, result.unwritten) == (5, 1, [])


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"]
)
def test_throttling_and_server_errors_are_retried(moto_endpoint: str, code: str) -> None:
    client, stub = _stubbed(moto_endpoint)
    stub.add_client_error("batch_write_item", service_error_code=code, http_status_code=400)
    stub.add_client_error("batch_write_item", service_error_code=code, http_status_code=400)
    stub.add_response("batch_write_item", {"UnprocessedItems": {}})
    with stub:
        result = DynamoDBWriter(lambda: client, base_backoff=0.001).write(
            [row("t", "s", 1)], time.monotonic() + 10
        )
        stub.assert_no_pending_responses()
    assert result.written == 1
    assert result.calls == 3


def test_persistent_throttling_returns_the_rows_at_the_deadline(moto_endpoint: str) -> None:
    client, stub = _stubbed(moto_endpoint)
    for _ in range(200):
        stub.add_client_error(
            "batch_write_item", service_error_code="ThrottlingException", http_status_code=400
        )
    rows = [row("t", "s", i) for i in range(30)]
    calls: list[int] = []
    # The stubber answers at before-call, which stops that event: count one step earlier.
    client.meta.events.register("before-parameter-build.dynamodb.BatchWriteItem", lambda **_: calls.append(1))
    with stub:
        result = DynamoDBWriter(lambda: client, base_backoff=0.01, max_backoff=0.05).write(
            rows, time.monotonic() + 0.5
        )
    assert 2 <= len(calls) < 200  # retried, and stopped at the deadline with throttles left unused
    assert result.written == 0
    assert sorted(r[1]["event_id"]["S"] for r in result.unwritten) == sorted(
        r[1]["event_id"]["S"] for r in rows
    )


def test_unreachable_endpoint_gives_rows_back_without_raising() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    from botocore.config import Config

    client = boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(connect_timeout=0.2, read_timeout=0.2, retries={"max_attempts": 1}),
    )
    result = DynamoDBWriter(lambda: client, base_backoff=0.01).write(
        [row("t", "s", 1)], time.monotonic() + 0.5
    )
    assert result.written == 0 and len(result.unwritten) == 1


def test_stop_event_cuts_a_backoff_wait_short(moto_endpoint: str) -> None:
    client, stub = _stubbed(moto_endpoint)
    for _ in range(5):
        stub.add_client_error(
            "batch_write_item", service_error_code="ThrottlingException", http_status_code=400
        )
    writer = DynamoDBWriter(lambda: client, base_backoff=30, max_backoff=30)
    calls: list[int] = []
    # The stubber answers at before-call, which stops that event: count one step earlier.
    client.meta.events.register("before-parameter-build.dynamodb.BatchWriteItem", lambda **_: calls.append(1))
    threading.Timer(0.2, writer.stop_event.set).start()
    with stub:
        result = writer.write([row("t", "s", 1)], time.monotonic() + 600)
    assert len(result.unwritten) == 1
    assert len(calls) < 5  # stopped in a backoff wait, long before the deadline used up the throttles


def test_own_dynamodb_calls_run_with_instrumentation_suppressed(ddb: Any, table: str) -> None:
    # What botocore instrumentations check before making a span for a call.
    seen: list[object] = []
    client = boto3.client("dynamodb")
    client.meta.events.register(
        "before-call.dynamodb.BatchWriteItem",
        lambda **_: seen.append(otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY)),
    )
    DynamoDBWriter(lambda: client).write([row(table, "s", 1)], time.monotonic() + 10)
    assert seen == [True]


def test_missing_table_hands_its_rows_back_with_the_cause_and_spares_the_others(
    ddb: Any, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [row("no-such-table", "s", i) for i in range(3)] + [row(table, "s", i) for i in range(3)]
    calls: list[str] = []
    client = boto3.client("dynamodb")
    client.meta.events.register("before-call.dynamodb.BatchWriteItem", lambda **_: calls.append("call"))
    result = DynamoDBWriter(lambda: client).write(rows, time.monotonic() + 30)
    # One call per table: the missing one is not retried within the call (nothing would change).
    assert len(calls) == 2
    assert (result.written, result.rejected, result.cause) == (3, 0, "ResourceNotFoundException")
    assert sorted(r[1]["event_id"]["S"] for r in result.unwritten) == ["e-00000", "e-00001", "e-00002"]
    assert len(session_rows(ddb, table, "s")) == 3
    assert "table=<no-such-table>" in caplog.text and "his-otel create-table NAME" in caplog.text


def test_access_denied_hands_rows_back_at_once(moto_endpoint: str) -> None:
    client, stub = _stubbed(moto_endpoint)
    stub.add_client_error(
        "batch_write_item", service_error_code="AccessDeniedException", http_status_code=400
    )
    with stub:
        rows = [row("t", "s", i) for i in range(30)]
        result = DynamoDBWriter(lambda: client).write(rows, time.monotonic() + 30)
        stub.assert_no_pending_responses()  # one call, no spinning
    assert len(result.unwritten) == 30 and result.rejected == 0


def test_append_only_never_replaces_a_row_and_a_retry_puts_only_what_did_not_land(
    ddb: Any, table: str, proxy: Any
) -> None:
    from bridge_kit import proxied_client

    rows = [row(table, "s", i) for i in range(40)]
    ddb.put_item(TableName=table, Item=row(table, "s", 7, message="first writer")[1])
    writer = DynamoDBWriter(lambda: proxied_client(proxy), append_only=True, puts_in_flight=4)
    with proxy.injecting(slow=1.0, slow_s=0.2):
        first = writer.write(rows, time.monotonic() + 0.5)  # the deadline cuts it short
    assert first.unwritten, "the first call was meant to run out of time"
    second = writer.write(rows, time.monotonic() + 60)  # the sender's retry of the whole request
    assert second.unwritten == []
    assert first.written + second.written == 39
    assert second.existing >= first.written  # what landed in the first call counts, not re-put
    assert session_rows(ddb, table, "s")[7]["evt_message"] == "first writer"
    # Every row reached DynamoDB once: the retry did not put again what had landed.
    assert sorted(proxy.counters.puts.values()) == [1] * 40


@pytest.mark.parametrize("code", ["ThrottlingException", "ResourceNotFoundException"])
def test_append_only_reports_dynamodbs_error_not_the_deadline_the_other_rows_found(code: str) -> None:
    """With one put in flight, the first row's answer (slow, then an error) arrives after the
    deadline, so every other row of the round finds the deadline passed. The cause reported is
    DynamoDB's error (what the bridge turns into 429 or 503 with advice), never "deadline".
    A stub client: the order of a slow answer and a passed deadline cannot be caused otherwise."""

    class SlowFailingClient:
        def put_item(self, **_: Any) -> None:
            time.sleep(0.3)
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": code, "Message": "injected"}}, "PutItem")

    writer = DynamoDBWriter(SlowFailingClient, append_only=True, puts_in_flight=1)
    result = writer.write([row("t", "s", i) for i in range(5)], time.monotonic() + 0.1)
    assert len(result.unwritten) == 5
    assert result.cause == code
