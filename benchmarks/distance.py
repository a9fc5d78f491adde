"""A network link with a fixed added round-trip time, in its own process: DynamoDB 10 ms away.

``python -m benchmarks.distance PORT UPSTREAM_PORT DELAY_MS`` forwards 127.0.0.1:PORT to
127.0.0.1:UPSTREAM_PORT, holding every chunk a client sends for DELAY_MS before passing it on
(answers pass at once). A chunk's delay runs from its own arrival, so calls in flight on several
connections each wait DELAY_MS once, as on a real link; nothing queues behind a slow call. Its own
process: the forwarding must not take the GIL from what is measured."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time

from his_otel.testing.local_dynamodb import free_port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            at, data = await due.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, at - loop.time()))
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    delivering = asyncio.create_task(deliver())
    with contextlib.suppress(OSError):
        while data := await reader.read(1 << 16):
            due.put_nowait((loop.time() + delay_s, data))
    due.put_nowait((0.0, b""))
    with contextlib.suppress(OSError):
        await delivering


async def _serve(port: int, upstream: int, delay_s: float) -> None:
    async def connect(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(_pipe(client_r, server_w, delay_s), _pipe(server_r, client_w, 0.0))

    server = await asyncio.start_server(connect, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


class Link:
    """Starts the forwarder in front of ``upstream`` (an endpoint URL); ``endpoint`` is its URL."""

    def __init__(self, upstream: str, delay_ms: float) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        upstream_port = upstream.rsplit(":", 1)[1].rstrip("/")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.distance", str(self.port), upstream_port, str(delay_ms)],
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the latency forwarder did not start")

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


if __name__ == "__main__":
    port, upstream, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    asyncio.run(_serve(port, upstream, delay_ms / 1000))
