"""``his-otel demo``: a HISAgent with the scripted model, its rows printed as they land."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any, TextIO

from strands import tool

from . import config
from .agent.his_agent import HISAgent
from .emit import milestone
from .models.scripted import ScriptedModel, ToolCall
from .schema import EventType
from .tracing import configure, otlp_endpoint

DEFAULT_DEMO_TABLE = "his-otel-demo"

EXPECTED = (
    EventType.START,
    EventType.EVENT_LOOP,
    EventType.MODEL_INVOCATION,
    EventType.TOOLING,
    EventType.COMPLETION,
    EventType.AGENT_STATS,
    EventType.RESULT,
)


@tool
def search_knowledge_base(query: str) -> str:
    """Search the support knowledge base for articles matching a query."""
    time.sleep(0.2)
    milestone(EventType.PROGRESS, f"Knowledge base: 2 articles match {query!r}")
    return "Refunds are allowed within 30 days of delivery for damaged items."


@tool
def get_order(order_id: str) -> dict[str, Any]:
    """Fetch an order by id."""
    time.sleep(0.3)
    return {"order_id": order_id, "item": "kettle", "amount": 42.5, "delivered_days_ago": 4}


@tool
def get_shipping_status(order_id: str) -> str:
    """Fetch the shipping status of an order."""
    time.sleep(0.3)
    return f"order {order_id}: delivered, carrier reported damage on arrival"


def demo_script() -> list[Any]:
    """Four model turns: a search, two tools at once, a model-reported milestone, the answer."""
    return [
        ToolCall("search_knowledge_base", {"query": "refund damaged item"}),
        [
            ToolCall("get_order", {"order_id": "A-1001"}),
            ToolCall("get_shipping_status", {"order_id": "A-1001"}),
        ],
        # The model names someone else's table and session: his-otel writes to the agent's own.
        ToolCall(
            "write_dynamo",
            {
                "table_name": "someone-elses-table",
                "agent_id": "not-me",
                "session_id": "someone-elses-session",
                "event_type": "PROGRESS",
                "message": "Order and shipping data retrieved; drafting the decision",
            },
        ),
        (
            "```json\n"
            '{"decision": "refund", "order_id": "A-1001", "amount": 42.5, "reason": "damaged on arrival"}'
            "\n```"
        ),
    ]


@contextlib.contextmanager
def _ctrl_c_cancels(agent: HISAgent) -> Iterator[threading.Event]:
    """Ctrl-C cancels the invocation. Strands runs it on a thread of its own and waits for that
    thread even when the wait is interrupted, so a KeyboardInterrupt alone would arrive only after
    the whole run. A second Ctrl-C leaves at once."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        agent.cancel(message="interrupted (Ctrl-C)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def run_demo(
    *,
    table: str | None = None,
    session_id: str | None = None,
    endpoint: str | None = None,
    use_aws: bool = False,
    turn_delay: float = 0.3,
    out: TextIO = sys.stdout,
) -> int:
    """Run the demo agent and print its rows as they land; 0 when every expected row arrived.

    Raises:
        TableError: DynamoDB cannot be reached or the table cannot be created (what to do, in words).
    """
    from .read.follow import Follower
    from .testing.local_dynamodb import LOCAL_ENV, LocalDynamoDB
    from .write.table import TableError, create_table, explain, make_client

    table = config.resolve_str(table or None, config.ENV_TABLE, DEFAULT_DEMO_TABLE)
    session_id = session_id or f"demo-{uuid.uuid4().hex[:8]}"

    stack_has_local = False
    with contextlib.ExitStack() as stack:
        if not endpoint and not use_aws:
            stack_has_local = True
            local = LocalDynamoDB()
            try:
                endpoint = local.start()
            except Exception as e:
                raise TableError(str(e)) from e
            stack.callback(local.stop)
            # moto takes any credentials; real ones are never sent to it.
            os.environ.update(LOCAL_ENV)
            out.write(f"embedded DynamoDB (moto server) at {endpoint}\n")
        if endpoint:
            # The writer configure() builds reads it (a loopback endpoint needs no AWS set-up).
            os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        client = make_client(endpoint)
        try:
            created = create_table(client, table)
        except Exception as e:
            raise explain(e, endpoint) from e
        out.write(f"table {table} {'created' if created else 'exists'}; session {session_id}\n\n")

        handle = configure(table, service_name="his-otel-demo")
        stack.callback(handle.shutdown)
        follower = Follower(client, table, session_id, out, interval_s=0.2)
        follower.start()
        stack.callback(follower.stop)  # also on Ctrl-C: its thread must not outlive the DynamoDB
        agent = HISAgent(
            status_dynamo_table_name=table,
            session_id=session_id,
            agent_id="support-agent",
            name="support-agent",
            user="demo-user",
            model=ScriptedModel(demo_script(), model_id="scripted-demo-model", delay_s=turn_delay),
            tools=[search_knowledge_base, get_order, get_shipping_status],
            system_prompt="You are a support agent deciding refunds.",
        )
        started = time.perf_counter()
        with _ctrl_c_cancels(agent) as interrupted:
            result = agent("Customer says order A-1001 arrived damaged. Refund?")
        if interrupted.is_set():
            handle.force_flush(5_000)  # the cancellation's ERROR row, while the DynamoDB still runs
            raise KeyboardInterrupt
        elapsed = time.perf_counter() - started
        flushed = handle.force_flush(10_000)
        follower.stop()

        rows = follower.rows
        types = Counter(str(r["evt_type"]) for r in rows)
        traces = sorted({str(r.get("trace_id", "")) for r in rows if r.get("trace_id")})
        answer = " ".join(str(result).split())
        out.write(f"\nagent answered in {elapsed:.2f}s: {answer[:110]}\n")
        out.write(f"{len(rows)} rows for session {session_id}: ")
        out.write(", ".join(f"{t}={n}" for t, n in sorted(types.items())) + "\n")
        out.write(f"trace id: {', '.join(traces) or '-'}\n")
        if handle.otlp_exporter is not None:
            sent, failed = handle.otlp_delivery()
            target = otlp_endpoint()
            if failed or not sent:
                out.write(
                    f"trace NOT sent over OTLP to {target}: {failed} spans failed (is a collector"
                    " listening there? the OTLP exporter's error is above)\n"
                )
            else:
                first = traces[0] if traces else ""
                out.write(f"trace sent over OTLP to {target} ({sent} spans);")
                out.write(f" in Jaeger: http://localhost:16686/trace/{first}\n")
        if stack_has_local:
            out.write("(the embedded DynamoDB stops with the demo; pass --endpoint to keep the rows)\n")
        else:
            again = [
                "his-otel",
                "tail",
                session_id,
                "--table",
                table,
                *(["--endpoint", endpoint] if endpoint else []),
            ]
            out.write(f"read them again: {shlex.join(again)}\n")
        missing = [str(t) for t in EXPECTED if str(t) not in types]
        if missing or not flushed:
            out.write(f"missing milestone rows: {', '.join(missing) or '-'}; flushed={flushed}\n")
            return 1
        return 0
    return 1  # pragma: no cover - the with-block always returns
