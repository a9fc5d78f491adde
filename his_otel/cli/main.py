"""``his-otel``: the command line. A thin layer over the library; the only place that configures
logging or exits the process."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence

from .. import __version__, config
from ..demo import DEFAULT_DEMO_TABLE
from ..scenarios import SCENARIOS
from ..write.table import TableError, explain, make_client
from .arguments import endpoint_url, seconds, text
from .bridge import add_bridge_arguments
from .serve import add_serve_arguments

logger = logging.getLogger(__name__)


class CLIError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _endpoint(args: argparse.Namespace) -> str | None:
    return (
        getattr(args, "endpoint", None)
        or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def _guarded(fn: Callable[[], int], endpoint: str | None) -> int:
    try:
        return fn()
    except (CLIError, TableError, BrokenPipeError):
        raise
    except Exception as e:  # whatever boto3 raises for an endpoint, in one sentence
        raise explain(e, endpoint) from e


def _table(args: argparse.Namespace) -> str:
    table = args.table or os.environ.get(config.ENV_TABLE, "").strip()
    if not table:
        raise CLIError(f"no table given: pass --table or set {config.ENV_TABLE}")
    return str(table)


def cmd_create_table(args: argparse.Namespace) -> int:
    from ..write.table import create_table

    endpoint = _endpoint(args)
    client = make_client(endpoint)

    def run() -> int:
        from botocore.exceptions import ConnectionError as Unreachable

        deadline = time.monotonic() + args.wait
        while True:
            try:
                created = create_table(client, args.name)
                break
            except Unreachable:
                # DynamoDB still starting (compose starts this beside it): try again until --wait ends.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        print(f"table {args.name} {'created' if created else 'already exists'} at {endpoint or 'AWS'}")
        return 0

    return _guarded(run, endpoint)


def cmd_tail(args: argparse.Namespace) -> int:
    from ..read.follow import Follower

    table = _table(args)
    endpoint = _endpoint(args)
    client = make_client(endpoint)

    def run() -> int:
        client.describe_table(TableName=table)  # a clear error for a missing table, before polling
        follower = Follower(
            client, table, args.session_id, sys.stdout, interval_s=args.interval, as_json=args.json
        )
        follower.poll()
        if not args.follow:
            if not follower.count:
                print(f"no rows for session {args.session_id} in {table}", file=sys.stderr)
            return 0
        with contextlib.suppress(KeyboardInterrupt):
            follower.run()
        return 0

    return _guarded(run, endpoint)


MIN_INTERVAL_S = 0.1  # a poll of DynamoDB per tenth of a second is plenty for a terminal
_LEAVE_AT_ONCE = False
EXIT_WATCHDOG_S = 10


def _run_server(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """A long-running server command: its start-up errors in one sentence, its exit bounded."""
    global _LEAVE_AT_ONCE
    _LEAVE_AT_ONCE = True
    try:
        return run(args)
    except ValueError as e:
        raise CLIError(str(e)) from e
    except OSError as e:
        raise CLIError(e.strerror if e.strerror and "listen" in e.strerror else f"cannot listen: {e}") from e


def cmd_bridge(args: argparse.Namespace) -> int:
    from .bridge import run_bridge

    return _run_server(run_bridge, args)


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run_serve

    return _run_server(run_serve, args)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(
        table=args.table,
        session_id=args.session_id,
        endpoint=_endpoint(args),
        use_aws=args.use_aws,
        turn_delay=args.turn_delay,
        scenario=args.scenario,
        out=sys.stdout,
    )


def build_parser() -> argparse.ArgumentParser:
    # -v goes before or after the command; SUPPRESS keeps a subcommand from resetting the other.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log his-otel's own activity"
    )
    parser = argparse.ArgumentParser(
        prog="his-otel",
        description="Agent status rows for Strands Agents, carried by OpenTelemetry.",
        parents=[verbose],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    endpoint_help = "DynamoDB endpoint URL (else AWS_ENDPOINT_URL_DYNAMODB, else AWS)"

    demo = sub.add_parser(
        "demo", parents=[verbose], help="run agents offline and print their status rows as they land"
    )
    demo.add_argument(
        "--table",
        type=text,
        default=None,
        help=f"table name (else {config.ENV_TABLE}, else {DEFAULT_DEMO_TABLE})",
    )
    demo.add_argument("--session-id", type=text, default=None, help="session id (default: a new one)")
    demo.add_argument(
        "--endpoint",
        type=endpoint_url,
        default=None,
        help="use this DynamoDB instead of starting the embedded one",
    )
    demo.add_argument(
        "--use-aws", action="store_true", help="write to real DynamoDB through boto3's environment"
    )
    demo.add_argument(
        "--turn-delay", type=seconds(0), default=0.3, help="seconds each scripted model turn takes"
    )
    demo.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="agent",
        help="what runs: one HISAgent (default), a Swarm hand-off chain, a Graph, or a BidiAgent voice call",
    )
    demo.set_defaults(func=cmd_demo)

    create = sub.add_parser("create-table", parents=[verbose], help="create the status table (on-demand)")
    create.add_argument("name", type=text, help="table name")
    create.add_argument("--endpoint", type=endpoint_url, default=None, help=endpoint_help)
    create.add_argument(
        "--wait",
        type=seconds(0),
        default=0.0,
        metavar="SEC",
        help="keep trying this long while DynamoDB cannot be reached (e.g. still starting)",
    )
    create.set_defaults(func=cmd_create_table)

    bridge = sub.add_parser(
        "bridge",
        parents=[verbose],
        help="receive OTLP traces (HTTP and gRPC) and write their milestones as rows",
    )
    add_bridge_arguments(bridge, endpoint_help)
    bridge.set_defaults(func=cmd_bridge)

    serve = sub.add_parser(
        "serve",
        parents=[verbose],
        help="serve sessions live: a page, an AG-UI event stream and a cursor endpoint",
    )
    add_serve_arguments(serve, endpoint_help)
    serve.set_defaults(func=cmd_serve)

    tail = sub.add_parser("tail", parents=[verbose], help="print a session's rows in order")
    tail.add_argument("session_id", type=text, help="the session to show")
    tail.add_argument("--table", type=text, default=None, help=f"table name (else {config.ENV_TABLE})")
    tail.add_argument("--endpoint", type=endpoint_url, default=None, help=endpoint_help)
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new rows until Ctrl-C")
    tail.add_argument(
        "--interval",
        type=seconds(MIN_INTERVAL_S),
        default=1.0,
        help=f"seconds between polls with --follow (at least {MIN_INTERVAL_S:g})",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per row")
    tail.set_defaults(func=cmd_tail)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "verbose", False):
        # his-otel's own activity (rows written, requests served); other libraries stay at WARNING.
        logging.getLogger("his_otel").setLevel(logging.DEBUG)
    try:
        return int(args.func(args))
    except (CLIError, TableError) as e:
        print(f"his-otel: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("his-otel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`his-otel tail ... | head`): that is how a pipeline ends, not an
        # error. stdout is pointed at nothing so the interpreter's last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entry() -> None:
    """The console script. After ``his-otel bridge`` or ``serve`` has drained and closed everything
    it owns, a watchdog bounds the interpreter's exit: a thread of a library (grpcio's, a thread pool's) was
    once seen, under load in CI, to hold it past the orchestrator's grace period. A normal exit
    takes well under the watchdog's delay and is left alone (grpcio still sends the last answers)."""
    code = main()
    if _LEAVE_AT_ONCE:

        def watchdog() -> None:
            time.sleep(EXIT_WATCHDOG_S)
            print(
                f"his-otel: exit held for {EXIT_WATCHDOG_S} s after the drain; leaving. Threads:",
                file=sys.stderr,
            )
            faulthandler.dump_traceback(all_threads=True)
            sys.stderr.flush()
            os._exit(code)

        threading.Thread(target=watchdog, name="his-otel-exit-watchdog", daemon=True).start()
    sys.exit(code)


if __name__ == "__main__":
    entry()
