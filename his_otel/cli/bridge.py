"""``his-otel bridge``: flags, signals and worker processes around :class:`his_otel.bridge.Bridge`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import threading

from .. import config
from ..bridge import Bridge
from ..bridge.auth import ENV_ALLOW_UNAUTHENTICATED, ENV_TOKEN, ENV_TOKEN_FILE
from ..bridge.server import (
    DEFAULT_GRPC_PORT,
    DEFAULT_PORT,
    ENV_DRAIN_TIMEOUT,
    ENV_GRPC,
    ENV_GRPC_PORT,
    ENV_HOST,
    ENV_PORT,
    serve_workers,
)
from .arguments import add_listen_arguments, add_token_arguments, endpoint_url, port, seconds, text, workers


def add_bridge_arguments(parser: argparse.ArgumentParser, endpoint_help: str) -> None:
    parser.add_argument(
        "--table", type=text, default=None, help=f"the one table it writes (else {config.ENV_TABLE})"
    )
    add_listen_arguments(
        parser, env_host=ENV_HOST, env_port=ENV_PORT, default_port=DEFAULT_PORT, port_help="OTLP/HTTP port"
    )
    parser.add_argument(
        "--grpc-port",
        type=port,
        default=None,
        help=f"OTLP/gRPC port (else {ENV_GRPC_PORT}, else {DEFAULT_GRPC_PORT}; 0: any)",
    )
    parser.add_argument("--no-grpc", action="store_true", help=f"serve OTLP/HTTP only (or {ENV_GRPC}=0)")
    add_token_arguments(
        parser, env_token=ENV_TOKEN, env_file=ENV_TOKEN_FILE, env_allow=ENV_ALLOW_UNAUTHENTICATED
    )
    parser.add_argument(
        "--workers", type=workers, default=1, help="bridge processes sharing the ports (uvicorn's supervisor)"
    )
    parser.add_argument("--endpoint", type=endpoint_url, default=None, help=endpoint_help)
    parser.add_argument(
        "--drain-timeout",
        type=seconds(0),
        default=None,
        help=f"seconds to finish accepted requests on SIGTERM (else {ENV_DRAIN_TIMEOUT}/1000, else 30)",
    )


def _reserve_port(host: str) -> socket.socket:
    """A free port held open (bound, not listening) with SO_REUSEPORT, so worker processes can all
    listen on it and nothing else takes it meanwhile."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


def run_bridge(args: argparse.Namespace) -> int:
    # Flags become the variables every worker process reads (they start fresh and import the app).
    if args.table:
        os.environ[config.ENV_TABLE] = args.table
    if args.endpoint:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = args.endpoint
    if args.token_file:
        os.environ[ENV_TOKEN_FILE] = args.token_file
    if args.allow_unauthenticated:
        os.environ[ENV_ALLOW_UNAUTHENTICATED] = "1"
    if args.no_grpc:
        os.environ[ENV_GRPC] = "0"
    if args.drain_timeout is not None:
        os.environ[ENV_DRAIN_TIMEOUT] = str(int(args.drain_timeout * 1000))
    if args.host:
        os.environ[ENV_HOST] = args.host
    if args.port is not None:
        os.environ[ENV_PORT] = str(args.port)
    if args.grpc_port is not None:
        os.environ[ENV_GRPC_PORT] = str(args.grpc_port)
    if not os.environ.get(config.ENV_TABLE, "").strip():
        raise ValueError(f"no table given: pass --table or set {config.ENV_TABLE}")
    bridge = Bridge()
    bridge.bind()
    if args.workers > 1:
        return _run_workers(bridge, args.workers)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bridge.start()
    grpc = f", OTLP/gRPC on {bridge.grpc_target}" if bridge.grpc_bound_port else ""
    print(
        f"his-otel bridge: OTLP/HTTP on {bridge.url}/v1/traces{grpc} -> table {bridge.exporter.table_name}",
        flush=True,
    )
    stop.wait()
    drained = bridge.shutdown()
    print(f"his-otel bridge stopped ({'drained' if drained else 'some requests cut off'})", flush=True)
    return 0 if drained else 1


def _run_workers(bridge: Bridge, workers: int) -> int:
    assert bridge.socket is not None
    # Listen now: connections wait in the backlog until a worker takes them (at start, or while
    # uvicorn replaces a worker that died), instead of being refused.
    bridge.socket.listen(2048)
    host, port = bridge.address
    os.environ[ENV_PORT] = str(port)
    reserved = None
    if bridge.serves_grpc:
        grpc_port = config.resolve_int(None, ENV_GRPC_PORT, DEFAULT_GRPC_PORT, minimum=0, maximum=65535)
        if grpc_port == 0:
            reserved = _reserve_port(host)
            grpc_port = reserved.getsockname()[1]
        os.environ[ENV_GRPC_PORT] = str(grpc_port)
    grpc = f", OTLP/gRPC on {host}:{os.environ[ENV_GRPC_PORT]}" if bridge.serves_grpc else ""
    print(
        f"his-otel bridge: OTLP/HTTP on {bridge.url}/v1/traces{grpc} -> table {bridge.exporter.table_name}"
        f" ({workers} workers)",
        flush=True,
    )
    try:
        serve_workers(bridge, workers, [bridge.socket])
    finally:
        if reserved is not None:
            with contextlib.suppress(OSError):
                reserved.close()
    print("his-otel bridge stopped", flush=True)
    return 0
