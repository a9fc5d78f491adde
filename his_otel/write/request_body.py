"""A write's JSON body in one ``json.dumps``, in place of botocore's walk of the operation's shapes.

botocore serializes a call by walking its input shape for every attribute of every item, and then
``json.dumps`` the copy it built. For the items his-otel writes (``schema.to_item``: only S, N and
BOOL values, which that walk copies unchanged) the copy equals the input, so ``json.dumps`` of the
input is the same body, byte for byte (``tests/test_request_body.py`` compares them). The walk was
about a third of a BatchWriteItem's CPU.

The body reaches botocore through its ``before-call`` event, after botocore has serialized the call
with the same table name and no items (its endpoint ruleset reads the table name) and before it
signs, sends and retries the request: credentials, signing, retries and endpoint resolution stay
botocore's. Only clients his-otel builds carry the handler (they skip client-side validation, so a
call with no items is let through to the handler); a caller's client is serialized by botocore.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..schema import Item

_HANDLER_ID = "his-otel-prebuilt-body"
_pending = threading.local()


def _use_prebuilt(params: dict[str, Any], **_: Any) -> None:
    body = getattr(_pending, "body", None)
    if body is not None:
        params["body"] = body
        _pending.body = None


def install(client: Any) -> Any:
    """Let ``client`` send bodies built by :func:`prebuilt` (its events take the handler once)."""
    for operation in ("BatchWriteItem", "PutItem"):
        client.meta.events.register(
            f"before-call.dynamodb.{operation}", _use_prebuilt, unique_id=f"{_HANDLER_ID}-{operation}"
        )
    client.meta.his_otel_prebuilt = True
    return client


def accepts_prebuilt(client: Any) -> bool:
    """Whether :func:`install` ran on ``client``."""
    return bool(getattr(getattr(client, "meta", None), "his_otel_prebuilt", False))


@contextmanager
def prebuilt(body: bytes) -> Iterator[None]:
    """The next call this thread makes sends ``body``; an error if no handler took it."""
    _pending.body = body
    try:
        yield
        if getattr(_pending, "body", None) is not None:
            raise RuntimeError("the prebuilt request body was not sent (the client lacks the handler)")
    finally:
        _pending.body = None


def send_batch_write(client: Any, request: dict[str, list[dict[str, Any]]]) -> Any:
    """``client.batch_write_item(RequestItems=request)``, with a prebuilt body where it takes one."""
    if not accepts_prebuilt(client):
        return client.batch_write_item(RequestItems=request)
    with prebuilt(batch_write(request)):
        # The table names stay in the call: botocore's endpoint rules read them.
        return client.batch_write_item(RequestItems={table: [] for table in request})


def send_put_item(client: Any, table: str, item: Item, condition: str) -> Any:
    """``client.put_item(TableName=, Item=, ConditionExpression=)``, with a prebuilt body where it
    takes one."""
    if not accepts_prebuilt(client):
        return client.put_item(TableName=table, Item=item, ConditionExpression=condition)
    with prebuilt(put_item(table, item, condition)):
        return client.put_item(TableName=table, Item={}, ConditionExpression=condition)


def batch_write(request: dict[str, list[dict[str, Any]]]) -> bytes:
    """BatchWriteItem's body for ``request`` (``RequestItems``), as botocore writes it."""
    return json.dumps({"RequestItems": request}).encode("utf-8")


def put_item(table: str, item: Item, condition: str) -> bytes:
    """PutItem's body, as botocore writes ``put_item(TableName=, Item=, ConditionExpression=)``."""
    return json.dumps({"TableName": table, "Item": item, "ConditionExpression": condition}).encode("utf-8")
