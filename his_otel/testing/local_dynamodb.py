"""An embedded local DynamoDB: moto's server in a child process on loopback.

A child process rather than moto's in-process ``ThreadedMotoServer``: in-process it shares the GIL
with the agent and the writer, which distorts exactly what his-otel cares about (the agent's
thread). Needs the ``local`` extra (moto's server): ``pip install '/path/to/his-otel[local]'``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import TracebackType

# moto accepts any credentials; these keep boto3 from looking for real ones.
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class LocalDynamoDBError(RuntimeError):
    """The local DynamoDB could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalDynamoDB:
    """Starts moto's server on ``host:port`` (a free port by default); stops it on exit.

    Example:
        ```python
        with LocalDynamoDB() as endpoint:
            boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        ```
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, startup_timeout_s: float = 30.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.endpoint = f"http://{host}:{self.port}"
        self._timeout = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        try:
            import moto.server  # noqa: F401
        except ImportError as e:
            raise LocalDynamoDBError(
                "the embedded DynamoDB needs moto's server: install his-otel with its local extra"
                " (pip install '/path/to/his-otel[local]'; it is not on the package index)"
            ) from e
        env = {**os.environ, **LOCAL_ENV}
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            # Its own session: a terminal's Ctrl-C goes to the demo, which then still writes its
            # last rows here and stops this server itself, instead of both dying mid-write.
            start_new_session=True,
        )
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalDynamoDBError(f"moto server exited with code {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):  # noqa: S310
                    return self.endpoint
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise LocalDynamoDBError(f"moto server did not answer on {self.endpoint} within {self._timeout}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
