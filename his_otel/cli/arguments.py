"""Argument types: what a flag must hold, said by argparse as one line and exit code 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def text(value: str) -> str:
    """An argument that must hold something (a table, a session id, a host)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be blank")
    return value.strip()


def endpoint_url(value: str) -> str:
    """A DynamoDB endpoint URL: ``http(s)://host[:port]``; a bare ``host:port`` is refused with the
    fix (botocore would otherwise fail later, asking for a region first)."""
    value = text(value)
    if not value.lower().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{value!r} has no scheme: write http://{value}")
    return value


def port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port number (0-65535; 0 picks a free one)")
    return number


def seconds(minimum: float) -> Callable[[str], float]:
    """A duration in seconds, at least ``minimum``."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
        if not math.isfinite(number) or number < minimum:
            raise argparse.ArgumentTypeError(f"{value} seconds: must be at least {minimum:g}")
        return number

    return parse


def workers(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of processes") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number}: at least 1 process")
    return number


def add_listen_arguments(
    parser: argparse.ArgumentParser,
    *,
    env_host: str,
    env_port: str,
    default_port: int,
    port_help: str = "port",
) -> None:
    """--host and --port of a server (the bridge's HTTP port, serve's port)."""
    parser.add_argument(
        "--host", type=text, default=None, help=f"listen address (else {env_host}, else 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=port, default=None, help=f"{port_help} (else {env_port}, else {default_port}; 0: any)"
    )


def add_token_arguments(
    parser: argparse.ArgumentParser, *, env_token: str, env_file: str, env_allow: str
) -> None:
    """--token-file and --allow-unauthenticated, the conventions of every his-otel server."""
    parser.add_argument(
        "--token-file",
        type=text,
        default=None,
        help=f"file holding the bearer token (else {env_token}, {env_file})",
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help=f"listen beyond loopback without a token (or {env_allow}=1)",
    )
