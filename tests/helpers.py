"""Small helpers shared by the tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The rows of one HISAgent invocation with one tool call (whose body reports PROGRESS).
TOOL_RUN_ROWS = [
    "EVENT_LOOP",  # init_event_loop, before START as here-i-strand wrote it
    "START",
    "MODEL_INVOCATION",
    "TOOLING",
    "PROGRESS",
    "MODEL_INVOCATION",
    "COMPLETION",
    "EVENT_LOOP",  # result, before AGENT_STATS and RESULT as here-i-strand wrote it
    "AGENT_STATS",
    "RESULT",
]


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy; return its value, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)


def run_script(
    code: str, env: dict[str, str] | None = None, timeout: float = 120, *, clean: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (its own global TracerProvider). ``env`` is added to this
    process's environment, or replaces it when ``clean``."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env or {}) if clean else {**os.environ, **(env or {})},
        check=False,
    )


def fresh_shell(**extra: str) -> dict[str, str]:
    """What a new user's shell has: no AWS, his-otel or OTel variables, no AWS files, no instance
    role; plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HIS_OTEL_", "OTEL_"))}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return {**env, **extra}


# The console script pip installed beside this interpreter: what a user types.
HIS_OTEL = str(Path(sys.executable).with_name("his-otel"))


def his_otel(
    *args: str,
    env: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``his-otel`` command; ``env`` replaces this process's environment, ``extra_env``
    is added to it."""
    return subprocess.run(
        [HIS_OTEL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**(env if env is not None else os.environ), **(extra_env or {})},
        check=False,
    )


def new_session() -> str:
    return f"sess-{uuid.uuid4().hex[:12]}"


def wait_listening(port: int, proc: subprocess.Popen[Any], timeout_s: float = 60) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``; fail with the process's
    stderr if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, stderr = proc.communicate(timeout=10)
            raise AssertionError(f"exited with {proc.returncode} before listening on {port}: {stderr}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port} after {timeout_s}s")


# The start of the server apps the signal tests run: a tool that marks its session as in flight in
# the MARKS folder (the test may send SIGTERM then), takes a while, then reports PROGRESS.
SERVER_APP_PRELUDE = """
import os, time
from strands import tool
import his_otel
from his_otel import HISAgent, ScriptedModel, ToolCall, milestone


@tool
def slow_step(session: str) -> str:
    \"\"\"A step that takes a while.\"\"\"
    open(os.path.join(os.environ["MARKS"], session), "w").close()
    time.sleep(1.5)
    milestone("PROGRESS", "slow step done")
    return "done"
"""


def log_events(exported: Any) -> list[dict[str, Any]]:
    """The ``his.milestone`` log events among what an in-memory log exporter received, as plain
    dicts (the SDK's record classes changed across the versions CI runs)."""
    events = []
    for data in exported:
        record = getattr(data, "log_record", data)
        attrs = dict(record.attributes or {})
        name = getattr(record, "event_name", None) or attrs.pop("event.name", None)
        if name != "his.milestone":
            continue
        attrs.pop("event.name", None)
        events.append(
            {
                "attributes": attrs,
                "trace_id": record.trace_id,
                "span_id": record.span_id,
                "timestamp": record.timestamp,
                "severity": record.severity_number.name if record.severity_number else None,
                "severity_text": record.severity_text,
            }
        )
    return events


def uuid7_at(ms: int) -> str:
    """A UUIDv7 emitted at ``ms`` (milliseconds since the epoch), as his-otel makes them."""
    return str(uuid.UUID(f"{ms:012x}7{uuid.uuid4().hex[13:]}"))


def put_row(ddb: Any, table: str, session: str, event_id: str, text: str) -> str:
    """Write one PROGRESS row straight to the table, as another writer would; its event_id."""
    item = {"session_id": session, "event_id": event_id, "agent_id": "a", "evt_type": "PROGRESS"}
    item |= {"evt_message": text, "evt_datetime": "2026-12-03T00:00:00+00:00"}
    ddb.put_item(TableName=table, Item={k: {"S": v} for k, v in item.items()})
    return event_id


def npm_folder(source: Path, probe: str, what: str) -> Path:
    """A folder holding ``source``'s npm packages, installed with ``npm ci`` from its lock file into
    a cache (``HIS_OTEL_NODE_CACHE``, else ``~/.cache/his-otel-node``), once per lock file. Skips
    (with the reason) where node or npm is missing or npm cannot install."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"node and npm are needed to run {what}")
    lock = (source / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("HIS_OTEL_NODE_CACHE", Path.home() / ".cache" / "his-otel-node"))
    folder = cache / hashlib.sha256(lock).hexdigest()[:16]
    if not (folder / "node_modules" / probe).is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(source / name, folder / name)
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"npm could not install {what}: {done.stderr.strip()[-300:]}")
    return folder
