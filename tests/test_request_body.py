"""The writer's requests are botocore's own, byte for byte, and moto and dynalite store what they carry.

his-otel builds a write's JSON body with one ``json.dumps`` in place of botocore's walk of the
operation's shapes (``his_otel/write/request_body.py``). Here the same rows go through the writer on
the client his-otel builds and through the writer on a plain botocore client; every HTTP request is
captured as botocore hands it to the network (its ``before-send`` event, after signing) and compared;
then the rows are read back from the server. dynalite (npm) is an independent DynamoDB
implementation, installed from ``tests/dynalite``'s lock file into the node cache.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.serialize import create_serializer
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import npm_folder, wait_listening
from his_otel.read import session_rows
from his_otel.schema import Milestone, clean_text, to_item
from his_otel.testing.local_dynamodb import free_port
from his_otel.write import request_body
from his_otel.write.client import ClientSource, insist_on_dynamodb
from his_otel.write.dynamodb import APPEND_ONLY_CONDITION, DynamoDBWriter
from his_otel.write.table import create_table

DYNALITE = Path(__file__).parent / "dynalite"

MESSAGES = [
    "plain",
    "ünïcödé ✓ and 中文",
    "emoji 😀 and a flag 🇫🇷",
    'quotes " and \\ backslashes and / slashes',
    "control \x00\x01\x1f\t\n\r characters",
    "</script> \u2028 \u2029 \ufeff",
    clean_text("half an emoji \ud83d"),
    "x" * 5_000,
]


@pytest.fixture(scope="module")
def dynalite_endpoint() -> Iterator[str]:
    folder = npm_folder(DYNALITE, "dynalite", "dynalite (an independent DynamoDB implementation)")
    port = free_port()
    cli = folder / "node_modules" / "dynalite" / "cli.js"
    proc = subprocess.Popen(
        ["node", str(cli), "--host", "127.0.0.1", "--port", str(port), "--createTableMs", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def milestones(session: str) -> list[Milestone]:
    out = [
        Milestone(
            str(uuid.uuid4()), session, "agent ✓", "PROGRESS", text, time.time_ns(), 1 << 100, 7, "span ü"
        )
        for text in MESSAGES
    ]
    # Enough for two BatchWriteItem calls; the last one is cut, so it carries the BOOL and N flags.
    out += [
        Milestone(str(uuid.uuid4()), session, "a", "TOOLING", f"row {i}", time.time_ns()) for i in range(20)
    ]
    out.append(Milestone(str(uuid.uuid4()), session, "a", "RESULT", "é" * 300, time.time_ns()))
    return out


def captured(client: Any) -> list[tuple[str, dict[str, str], bytes]]:
    """Every request ``client`` sends from now on: (operation, headers that are not per call, body)."""
    sent: list[tuple[str, dict[str, str], bytes]] = []
    per_call = {"x-amz-date", "authorization", "amz-sdk-invocation-id", "amz-sdk-request", "user-agent"}

    def record(request: Any, event_name: str, **_: Any) -> None:
        headers = {k.lower(): str(v) for k, v in request.headers.items() if k.lower() not in per_call}
        sent.append((event_name.rsplit(".", 1)[1], headers, bytes(request.body)))

    for operation in ("BatchWriteItem", "PutItem"):
        client.meta.events.register(f"before-send.dynamodb.{operation}", record)
    return sent


@pytest.mark.parametrize("server", ["moto", "dynalite"])
@pytest.mark.parametrize("append_only", [False, True], ids=["batch", "append_only"])
def test_the_writers_requests_are_botocores_own_and_the_server_stores_their_rows(
    server: str, append_only: bool, request: pytest.FixtureRequest
) -> None:
    endpoint = request.getfixturevalue("moto_endpoint" if server == "moto" else "dynalite_endpoint")
    source = ClientSource(endpoint_url=endpoint)
    ours = source.factory()()
    plain = insist_on_dynamodb(source._build())  # the same client, without the prebuilt bodies
    assert request_body.accepts_prebuilt(ours) and not request_body.accepts_prebuilt(plain)
    table = f"body-{uuid.uuid4().hex[:8]}"
    create_table(ours, table)
    session = f"s-{uuid.uuid4().hex[:8]}"
    rows = [(table, to_item(m, max_message_bytes=500)) for m in milestones(session)]
    assert "evt_message_truncated" in rows[-1][1]
    ours_sent, plain_sent = captured(ours), captured(plain)

    deadline = time.monotonic() + 60
    result = DynamoDBWriter(lambda: ours, append_only=append_only).write(rows, deadline)
    assert (result.written, result.unwritten, result.rejected) == (len(rows), [], 0)
    # The same rows again through botocore's own serialization: the server takes them exactly as
    # before (append-only: it finds every row there already, and says so).
    again = DynamoDBWriter(lambda: plain, append_only=append_only).write(rows, deadline)
    assert (again.unwritten, again.rejected) == ([], 0)
    assert (again.existing if append_only else again.written) == len(rows)

    assert len(ours_sent) == (len(rows) if append_only else 2)
    # Append-only puts go in a random order, so compare as sets of requests.
    assert sorted(ours_sent, key=repr) == sorted(plain_sent, key=repr)
    stored = {r["event_id"]: r for r in session_rows(ours, table, session)}
    assert len(stored) == len(rows)
    for _, item in rows:
        row = stored[item["event_id"]["S"]]
        assert {k: row[k] for k in item} == {k: next(iter(v.values())) for k, v in item.items()} | (
            {"evt_message_length": int(item["evt_message_length"]["N"])}
            if "evt_message_length" in item
            else {}
        )


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.text(max_size=60), min_size=1, max_size=25),
    table=st.from_regex(r"[A-Za-z0-9_.-]{3,40}", fullmatch=True),
)
def test_prebuilt_bodies_equal_botocores_serialization_for_any_text(texts: list[str], table: str) -> None:
    client = ClientSource(region_name="us-east-1", endpoint_url="http://127.0.0.1:1")._build()
    serializer = create_serializer("json", include_validation=False)
    model = client.meta.service_model
    items = [
        to_item(Milestone(str(i), clean_text(t) or "s", clean_text(t), "PROGRESS", clean_text(t), i, i, i, t))
        for i, t in enumerate(texts)
    ]
    batch = {table: [{"PutRequest": {"Item": item}} for item in items]}
    expected = serializer.serialize_to_request(
        {"RequestItems": batch}, model.operation_model("BatchWriteItem")
    )
    assert request_body.batch_write(batch) == expected["body"]
    put = {"TableName": table, "Item": items[0], "ConditionExpression": APPEND_ONLY_CONDITION}
    expected = serializer.serialize_to_request(put, model.operation_model("PutItem"))
    assert request_body.put_item(table, items[0], APPEND_ONLY_CONDITION) == expected["body"]
