"""``his-otel serve``: flags and signals around :class:`his_otel.serve.StatusServer`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading

from .. import config
from ..serve.server import (
    DEFAULT_PORT,
    ENV_ALLOW_UNAUTHENTICATED,
    ENV_HOST,
    ENV_POLL_MS,
    ENV_PORT,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    ENV_TRACE_URL,
    StatusServer,
)
from .arguments import add_listen_arguments, add_token_arguments, endpoint_url, seconds, text


def add_serve_arguments(parser: argparse.ArgumentParser, endpoint_help: str) -> None:
    parser.add_argument(
        "--table", type=text, default=None, help=f"the table to read (else {config.ENV_TABLE})"
    )
    add_listen_arguments(parser, env_host=ENV_HOST, env_port=ENV_PORT, default_port=DEFAULT_PORT)
    add_token_arguments(
        parser, env_token=ENV_TOKEN, env_file=ENV_TOKEN_FILE, env_allow=ENV_ALLOW_UNAUTHENTICATED
    )
    parser.add_argument(
        "--poll-interval",
        type=seconds(0.01),
        default=None,
        help=f"seconds between reads of each watched session (else {ENV_POLL_MS}/1000, else 0.25)",
    )
    parser.add_argument(
        "--trace-url",
        type=text,
        default=None,
        help=f"a row's trace link, with {{trace_id}} (else {ENV_TRACE_URL}, else Jaeger on localhost)",
    )
    parser.add_argument("--endpoint", type=endpoint_url, default=None, help=endpoint_help)
    parser.add_argument(
        "--local",
        action="store_true",
        help="start an embedded DynamoDB (moto) for `his-otel demo --endpoint` to write to",
    )


def run_serve(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint
        if args.local:
            endpoint = _start_local(stack, args.table or config.resolve_str(None, config.ENV_TABLE))
        server = StatusServer(
            args.table,
            host=args.host,
            port=args.port,
            token_file=args.token_file,
            allow_unauthenticated=True if args.allow_unauthenticated else None,
            poll_ms=None if args.poll_interval is None else int(args.poll_interval * 1000),
            trace_url=args.trace_url,
            endpoint_url=endpoint,
        )
        server.bind()
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        server.start()
        stack.callback(server.shutdown)
        print(
            f"his-otel serve: open {server.url}/sessions/<session id> (the page; .../events is the AG-UI"
            f" stream, .../rows the cursor endpoint) -> table {server.hub.table}",
            flush=True,
        )
        if args.local:
            # The demo finds a serve on the default port by itself; elsewhere it is told.
            url = "" if server.address[1] == DEFAULT_PORT else f"HIS_OTEL_SERVE_URL={server.url} "
            print(f"then, in another terminal: {url}his-otel demo --endpoint {endpoint}", flush=True)
        stop.wait()
    print("his-otel serve stopped", flush=True)
    return 0


def _start_local(stack: contextlib.ExitStack, table: str | None) -> str:
    from ..demo import DEFAULT_DEMO_TABLE, start_embedded_dynamodb
    from ..write.table import create_table, make_client

    endpoint = start_embedded_dynamodb(stack)
    name = table or DEFAULT_DEMO_TABLE
    os.environ.setdefault(config.ENV_TABLE, name)
    create_table(make_client(endpoint), name)
    print(f"embedded DynamoDB (moto server) at {endpoint}, table {name}", flush=True)
    return endpoint
