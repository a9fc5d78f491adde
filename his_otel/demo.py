"""``his-otel demo``: a scenario with scripted models, its rows printed as they land."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from . import config
from .scenarios import BUILDERS
from .tracing import configure, otlp_endpoint
from .write.client import LOOPBACK_HOSTS

DEFAULT_DEMO_TABLE = "his-otel-demo"


@contextlib.contextmanager
def _ctrl_c_cancels(cancel: Callable[[], None] | None) -> Iterator[threading.Event]:
    """Ctrl-C cancels the invocation. Strands runs it on a thread of its own and waits for that
    thread even when the wait is interrupted, so a KeyboardInterrupt alone would arrive only after
    the whole run. A second Ctrl-C leaves at once."""
    interrupted = threading.Event()
    if cancel is None or threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def start_embedded_dynamodb(stack: contextlib.ExitStack) -> str:
    """Start moto's server until ``stack`` closes, and point this process's AWS credentials at
    placeholders it takes (real ones are never sent to it). Its endpoint.

    Raises:
        TableError: it cannot start (the ``local`` extra missing), in one sentence.
    """
    from .testing.local_dynamodb import LOCAL_ENV, LocalDynamoDB
    from .write.table import TableError

    local = LocalDynamoDB()
    try:
        endpoint = local.start()
    except Exception as e:
        raise TableError(str(e)) from e
    stack.callback(local.stop)
    os.environ.update(LOCAL_ENV)
    return endpoint


def serve_page(table: str, session_id: str) -> str | None:
    """The session's page on a ``his-otel serve`` reading ``table``: the one ``HIS_OTEL_SERVE_URL``
    names, else one on this machine's default port, if it answers."""
    from .serve.server import DEFAULT_PORT

    base = os.environ.get("HIS_OTEL_SERVE_URL", "").strip().rstrip("/") or f"http://127.0.0.1:{DEFAULT_PORT}"
    if not base.lower().startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=0.5) as answer:  # noqa: S310 - http(s) only
            health = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    if not isinstance(health, dict) or health.get("table") != table:
        return None
    return f"{base}/sessions/{urllib.parse.quote(session_id, safe='')}"


def run_demo(
    *,
    table: str | None = None,
    session_id: str | None = None,
    endpoint: str | None = None,
    use_aws: bool = False,
    turn_delay: float = 0.3,
    scenario: str = "agent",
    out: TextIO = sys.stdout,
) -> int:
    """Run a demo scenario (:data:`~his_otel.scenarios.SCENARIOS`) and print its rows as they
    land; 0 when every expected kind of row arrived.

    Raises:
        TableError: DynamoDB cannot be reached or the table cannot be created (what to do, in words).
    """
    from .read.follow import Follower
    from .write.table import create_table, explain, make_client

    table = config.resolve_str(table or None, config.ENV_TABLE, DEFAULT_DEMO_TABLE)
    session_id = session_id or f"demo-{uuid.uuid4().hex[:8]}"

    stack_has_local = False
    with contextlib.ExitStack() as stack:
        if not endpoint and not use_aws:
            stack_has_local = True
            endpoint = start_embedded_dynamodb(stack)
            out.write(f"embedded DynamoDB (moto server) at {endpoint}\n")
        if endpoint:
            # The writer configure() builds reads it (a loopback endpoint needs no AWS set-up).
            os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        client = make_client(endpoint)
        try:
            created = create_table(client, table)
        except Exception as e:
            raise explain(e, endpoint) from e
        out.write(f"table {table} {'created' if created else 'exists'}; session {session_id}\n")
        page = serve_page(table, session_id)
        if page:
            out.write(f"watch it live: {page}\n")
        out.write("\n")

        handle = configure(table, service_name="his-otel-demo")
        stack.callback(handle.shutdown)
        rows: list[dict[str, Any]] = []  # one demo run: a few dozen rows
        follower = Follower(client, table, session_id, out, interval_s=0.2, on_row=rows.append)
        follower.start()
        stack.callback(follower.stop)  # also on Ctrl-C: its thread must not outlive the DynamoDB
        play = BUILDERS[scenario](table, session_id, turn_delay)
        started = time.perf_counter()
        with _ctrl_c_cancels(play.cancel) as interrupted:
            answer = " ".join(play.run().split())
        if interrupted.is_set():
            handle.force_flush(5_000)  # the cancellation's ERROR row, while the DynamoDB still runs
            raise KeyboardInterrupt
        elapsed = time.perf_counter() - started
        flushed = handle.force_flush(10_000)
        follower.stop()

        types = Counter(str(r["evt_type"]) for r in rows)
        traces = sorted({str(r.get("trace_id", "")) for r in rows if r.get("trace_id")})
        out.write(f"\n{scenario} answered in {elapsed:.2f}s: {answer[:110]}\n")
        out.write(f"{len(rows)} rows for session {session_id}: ")
        out.write(", ".join(f"{t}={n}" for t, n in sorted(types.items())) + "\n")
        out.write(f"trace id: {', '.join(traces) or '-'}\n")
        if handle.otlp_exporter is not None:
            sent, failed = handle.otlp_delivery()
            target = otlp_endpoint()
            if failed or not sent:
                out.write(
                    f"trace NOT sent over OTLP to {target}: {failed} spans failed (the OTLP exporter's"
                    " error is above: nothing listening there, a refusal such as a wrong token, or a"
                    " timeout)\n"
                )
            else:
                first = traces[0] if traces else ""
                out.write(f"trace sent over OTLP to {target} ({sent} spans)")
                host = urllib.parse.urlsplit(target).hostname or ""
                if host in LOOPBACK_HOSTS:
                    # The compose stack's Jaeger, beside the collector this trace went to.
                    out.write(f"; in Jaeger: http://localhost:16686/trace/{first}\n")
                else:
                    out.write(f"; open trace {first} in the backend behind {host}\n")
        if handle.logs is not None:
            sent, failed = handle.otlp_log_delivery()
            if failed or not sent:
                out.write(f"milestone log events NOT sent over OTLP: {failed} records failed\n")
            else:
                out.write(f"milestone log events sent over OTLP as they happened ({sent} records)\n")
        if page:
            out.write(f"the session page: {page}\n")
        if stack_has_local:
            out.write(
                "(the embedded DynamoDB stops with the demo; pass --endpoint to keep the rows, or start"
                " `his-otel serve --local` first and run the demo with the endpoint it prints, to watch"
                " the session live in a browser)\n"
            )
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
        missing = [t for t in play.expected if t not in types]
        if missing or not flushed:
            out.write(f"missing milestone rows: {', '.join(missing) or '-'}; flushed={flushed}\n")
            return 1
        return 0
    return 1  # pragma: no cover - the with-block always returns
