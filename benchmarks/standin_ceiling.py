"""0. The DynamoDB stand-in alone (``benchmarks.standin``): what it answers per second, so that no
figure measured against it measures it. Load comes from 2 processes of 4 boto3 threads each (a
bridge's puts in flight), conditional PutItems of one row and BatchWriteItems of 25, for a few
seconds each; the reference is moto's server under the same load, in the same run. The stand-in's
own CPU per call says what one core of it can answer."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.common import Moto, Row, standin

PROCESSES, THREADS = 2, 4

LOAD = r"""
import json, sys, threading, time, uuid
import boto3
from botocore.config import Config
endpoint, table, op, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
cfg = Config(parameter_validation=False, max_pool_connections=8, retries={"max_attempts": 1})
client = boto3.client("dynamodb", endpoint_url=endpoint, config=cfg)
def item():
    return {"session_id": {"S": "load"}, "event_id": {"S": str(uuid.uuid4())}, "agent_id": {"S": "a"},
            "evt_type": {"S": "PROGRESS"}, "evt_message": {"S": "step done"},
            "evt_datetime": {"S": "2026-12-03T00:00:00.000000+00:00"}}
rows, stop = [0], time.monotonic() + seconds
lock = threading.Lock()
def work():
    while time.monotonic() < stop:
        if op == "put":
            cond = "attribute_not_exists(event_id)"
            client.put_item(TableName=table, Item=item(), ConditionExpression=cond)
            n = 1
        else:
            puts = [{"PutRequest": {"Item": item()}} for _ in range(25)]
            client.batch_write_item(RequestItems={table: puts})
            n = 25
        with lock:
            rows[0] += n
threads = [threading.Thread(target=work) for _ in range(int(sys.argv[5]))]
t0 = time.perf_counter()
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"rows": rows[0], "seconds": time.perf_counter() - t0}))
"""


def load(server: Moto, table: str, op: str, seconds: float) -> float:
    """Rows/s the server took from PROCESSES x THREADS clients making ``op`` calls."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD, server.endpoint, table, op, str(seconds), str(THREADS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return sum(r["rows"] for r in results) / max(r["seconds"] for r in results)


def serving() -> str:
    """What the stand-in's uvicorn serves with here ("auto": the C parser and loop when installed)."""
    from importlib.util import find_spec

    http = "httptools" if find_spec("httptools") else "h11"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    return f"{http}, {loop}"


def run(moto: Moto, quick: bool) -> list[Row]:
    seconds = 2.0 if quick else 5.0
    fast = standin(0)
    rows: list[Row] = []
    for op, what in (
        ("put", "conditional PutItem, 1 row a call"),
        ("batch", "BatchWriteItem, 25 rows a call"),
    ):
        table, moto_table = fast.new_table(), moto.new_table()
        before_calls, before_cpu = sum(fast.calls().values()), fast.cpu_s()
        ours = load(fast, table, op, seconds)
        cpu_per_call = (fast.cpu_s() - before_cpu) / max(1, sum(fast.calls().values()) - before_calls - 1)
        reference = load(moto, moto_table, op, seconds)
        label = f"moto's server, same load ({PROCESSES} processes x {THREADS} boto3 threads)"
        rows.append(Row("0 stand-in", f"rows/s, {what}, 0 ms", ours, reference, label, "rows/s", "higher"))
        per_row = cpu_per_call * 1e6 / (1 if op == "put" else 25)
        rows.append(
            Row(
                "0 stand-in",
                f"its CPU per row, {what} ({serving()}; one core: {1e6 / per_row:,.0f} rows/s)",
                per_row,
                float("nan"),
                "",
                "us",
            )
        )
    return rows
