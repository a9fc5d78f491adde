"""A DynamoDB stand-in for the benchmarks: its own process, answering from memory, never the bottleneck.

moto's server answers about 150 conditional PutItems a second and closes the connection after every
answer, so figures measured against it measure moto. This answers the five calls his-otel makes
(BatchWriteItem, PutItem with ``attribute_not_exists``, Query, DescribeTable, CreateTable; and Scan
for counting) after a set latency, over keep-alive HTTP/1.1 as DynamoDB does, with DynamoDB's
documented limits: at most 25 puts a BatchWriteItem, no two with the same key, items of at most
400 KB. Errors carry DynamoDB's JSON error shape, and answers its ``x-amz-crc32`` header (botocore
checks it). It is a benchmark fixture, never a test double: tests run against moto and dynalite.

``python -m benchmarks.standin [--latency-ms MS] [--port PORT]`` prints its endpoint on one line.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import bisect
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from typing import Any

from benchmarks.common import Moto

MAX_BATCH_ITEMS = 25
MAX_ITEM_BYTES = 400 * 1024
MAX_PAGE_BYTES = 1024 * 1024
JSON_TYPE = b"application/x-amz-json-1.0"
_PREFIX = "com.amazonaws.dynamodb.v20120810#"
_CONDITION = re.compile(r"^\s*(\w+)\s*=\s*(:\w+)(?:\s+AND\s+(\w+)\s*(>=|>|<=|<|=)\s*(:\w+))?\s*$", re.I)


class DynamoDBError(Exception):
    def __init__(self, kind: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.kind, self.status = kind, status


def _size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: names and values in UTF-8 bytes (numbers and flags counted short).
    Counted here, not with his-otel's ``schema.item_bytes``: the fixture judges what his-otel sends."""
    total = 0
    for name, value in item.items():
        total += len(name.encode())
        ((kind, v),) = value.items()
        total += len(v.encode()) if kind == "S" else len(str(v)) if kind == "N" else 1
    return total


def _check_size(item: dict[str, Any]) -> None:
    if _size(item) > MAX_ITEM_BYTES:
        raise DynamoDBError("ValidationException", "Item size has exceeded the maximum allowed size")


class Table:
    def __init__(self, name: str, definition: dict[str, Any]) -> None:
        self.name = name
        self.definition = definition
        keys = {k["KeyType"]: k["AttributeName"] for k in definition["KeySchema"]}
        self.hash_key, self.range_key = keys["HASH"], keys["RANGE"]
        self.items: dict[str, dict[str, dict[str, Any]]] = {}
        self.order: dict[str, list[str]] = {}  # each partition's sort keys, sorted

    def key(self, item: dict[str, Any]) -> tuple[str, str]:
        try:
            return item[self.hash_key]["S"], item[self.range_key]["S"]
        except (KeyError, TypeError):
            raise DynamoDBError(
                "ValidationException", "One of the required keys was not given a value"
            ) from None

    def put(self, item: dict[str, Any], *, must_be_new: bool) -> None:
        """Store ``item``, whose size the caller checked (:func:`_check_size`)."""
        pk, sk = self.key(item)
        partition = self.items.setdefault(pk, {})
        if sk in partition:
            if must_be_new:
                raise DynamoDBError("ConditionalCheckFailedException", "The conditional request failed")
        else:
            order = self.order.setdefault(pk, [])
            if not order or sk > order[-1]:
                order.append(sk)  # UUIDv7 sort keys mostly arrive in order
            else:
                bisect.insort(order, sk)
        partition[sk] = item

    def describe(self) -> dict[str, Any]:
        count = sum(len(p) for p in self.items.values())
        return {
            **self.definition,
            "TableName": self.name,
            "TableStatus": "ACTIVE",
            "ItemCount": count,
            "TableArn": f"arn:aws:dynamodb:us-east-1:000000000000:table/{self.name}",
        }


class Store:
    """The tables, and the calls counted by operation."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self.calls: Counter[str] = Counter()

    def table(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise DynamoDBError("ResourceNotFoundException", "Requested resource not found") from None

    def CreateTable(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 - DynamoDB's names
        name = body["TableName"]
        if name in self.tables:
            raise DynamoDBError("ResourceInUseException", f"Table already exists: {name}")
        self.tables[name] = Table(name, {k: body[k] for k in ("AttributeDefinitions", "KeySchema")})
        return {"TableDescription": self.tables[name].describe()}

    def DescribeTable(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"Table": self.table(body["TableName"]).describe()}

    def BatchWriteItem(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        requests = body.get("RequestItems") or {}
        if sum(len(v) for v in requests.values()) > MAX_BATCH_ITEMS:
            raise DynamoDBError(
                "ValidationException",
                "Too many items requested for the BatchWriteItem call",
            )
        puts: list[tuple[Table, dict[str, Any]]] = []
        for name, writes in requests.items():
            table = self.table(name)
            keys = set()
            for write in writes:
                item = write["PutRequest"]["Item"]
                key = table.key(item)
                if key in keys:
                    raise DynamoDBError(
                        "ValidationException", "Provided list of item keys contains duplicates"
                    )
                keys.add(key)
                _check_size(item)
                puts.append((table, item))
        for table, item in puts:  # all or nothing: a refused call writes nothing
            table.put(item, must_be_new=False)
        return {"UnprocessedItems": {}}

    def PutItem(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        table = self.table(body["TableName"])
        condition = body.get("ConditionExpression", "")
        if condition and condition.replace(" ", "") != f"attribute_not_exists({table.range_key})":
            raise DynamoDBError("ValidationException", f"the stand-in does not evaluate {condition!r}")
        _check_size(body["Item"])
        table.put(body["Item"], must_be_new=bool(condition))
        return {}

    def Query(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        table = self.table(body["TableName"])
        match = _CONDITION.match(body.get("KeyConditionExpression", ""))
        if not match or match.group(1) != table.hash_key:
            raise DynamoDBError("ValidationException", "the stand-in answers `pk = :v [AND sk OP :w]` only")
        values = body.get("ExpressionAttributeValues", {})
        pk = values[match.group(2)]["S"]
        order = table.order.get(pk, [])
        lo, hi = 0, len(order)
        if match.group(3):
            op, bound = match.group(4), values[match.group(5)]["S"]
            if op in (">", ">="):
                lo = (bisect.bisect_right if op == ">" else bisect.bisect_left)(order, bound)
            elif op in ("<", "<="):
                hi = (bisect.bisect_left if op == "<" else bisect.bisect_right)(order, bound)
            else:
                lo, hi = bisect.bisect_left(order, bound), bisect.bisect_right(order, bound)
        start = body.get("ExclusiveStartKey")
        if start:
            lo = max(lo, bisect.bisect_right(order, start[table.range_key]["S"]))
        limit = int(body.get("Limit") or 1 << 30)
        partition = table.items.get(pk, {})
        items: list[dict[str, Any]] = []
        size = 0
        i = lo
        while i < hi and len(items) < limit and size < MAX_PAGE_BYTES:
            item = partition[order[i]]
            items.append(item)
            size += _size(item)
            i += 1
        out: dict[str, Any] = {"Count": len(items), "ScannedCount": len(items)}
        if body.get("Select") != "COUNT":
            out["Items"] = items
        if i < hi:
            last = items[-1]
            out["LastEvaluatedKey"] = {k: last[k] for k in (table.hash_key, table.range_key)}
        return out

    def Scan(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        table = self.table(body["TableName"])
        count = sum(len(p) for p in table.items.values())
        return {"Count": count, "ScannedCount": count}


class App:
    """The ASGI application: one POST per call, as DynamoDB's JSON 1.0 protocol has it."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.store = Store()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":  # the calls answered, by operation, and the CPU they took
            stats = {"calls": self.store.calls, "cpu_s": time.process_time()}
            await self._answer(send, 200, json.dumps(stats).encode(), b"application/json")
            return
        target = dict(scope["headers"]).get(b"x-amz-target", b"").decode()
        operation = target.rpartition(".")[2]
        self.store.calls[operation] += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        handler = getattr(self.store, operation, None) if operation[:1].isupper() else None
        try:
            if handler is None:
                raise DynamoDBError(
                    "UnknownOperationException", f"the stand-in does not answer {operation!r}"
                )
            status, answer = 200, handler(json.loads(b"".join(chunks)))
        except DynamoDBError as e:
            status, answer = e.status, {"__type": _PREFIX + e.kind, "message": str(e)}
        except (KeyError, TypeError, ValueError) as e:
            status, answer = 400, {"__type": _PREFIX + "SerializationException", "message": repr(e)}
        await self._answer(send, status, json.dumps(answer).encode(), JSON_TYPE)

    @staticmethod
    async def _answer(send: Any, status: int, body: bytes, kind: bytes) -> None:
        headers = [
            (b"content-type", kind),
            (b"content-length", str(len(body)).encode()),
            (b"x-amzn-requestid", uuid.uuid4().hex.encode()),
            (b"x-amz-crc32", str(zlib.crc32(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def serve(latency_ms: float, port: int) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        App(latency_ms / 1000),
        log_level="warning",
        access_log=False,
        # uvicorn's C parser and loop where installed (the test extra has them): the fixture's job is
        # to never be what a figure measures.
        http="auto",
        loop="auto",
        lifespan="off",
        timeout_keep_alive=60,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    print(f"DynamoDB stand-in on http://127.0.0.1:{sock.getsockname()[1]} ({latency_ms:g} ms)", flush=True)
    server.run(sockets=[sock])


class StandIn(Moto):
    """The stand-in in its own process (or the one running at ``endpoint``), used as ``Moto`` is."""

    def __init__(self, latency_ms: float = 0, endpoint: str | None = None) -> None:
        self._proc: subprocess.Popen[str] | None = None
        if endpoint is None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.standin", "--latency-ms", f"{latency_ms:g}"],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self._proc.stdout is not None
            line = self._proc.stdout.readline()
            match = re.search(r"(http://\S+)", line)
            assert match, f"the stand-in did not start: {line!r}"
            endpoint = match.group(1)
            atexit.register(self.stop)  # never outlive a benchmark that ends without stop()
        self.service_ms = latency_ms
        super().__init__(endpoint=endpoint)

    def calls(self) -> Counter[str]:
        """The calls the stand-in has answered so far, by operation."""
        return Counter(self._stats()["calls"])

    def cpu_s(self) -> float:
        """The CPU time the stand-in's process has used so far."""
        return float(self._stats()["cpu_s"])

    def _stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(self.endpoint) as answer:
            return dict(json.loads(answer.read()))

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.standin")
    parser.add_argument("--latency-ms", type=float, default=float(os.environ.get("LATENCY_MS", 0)))
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(args.latency_ms, args.port)


if __name__ == "__main__":
    main()
