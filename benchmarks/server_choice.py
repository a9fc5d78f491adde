"""Why uvicorn: the same minimal ASGI app (read the whole body, answer its size) on each candidate
server, 4 keep-alive clients posting 64 KB OTLP-sized bodies, with Content-Length and chunked,
rounds alternating the order. Not part of `python -m benchmarks` (the candidates are not his-otel's
dependencies): `pip install hypercorn httptools`, then `python -m benchmarks.server_choice`.
A server that is not installed is left out."""

from __future__ import annotations

import http.client
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                if m["type"] == "lifespan.startup": await send({"type": "lifespan.startup.complete"})
                else: await send({"type": "lifespan.shutdown.complete"}); return
        return
    size = 0
    while True:
        m = await receive()
        size += len(m.get("body", b""))
        if not m.get("more_body"): break
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""

BODY = b"x" * 65536
ROUNDS = 3
REQUESTS = 300
CLIENTS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def servers() -> dict[str, list[str]]:
    found = {}
    py = sys.executable
    if importlib.util.find_spec("uvicorn"):
        found["uvicorn h11"] = [py, "-m", "uvicorn", "app:app", "--http", "h11", "--no-access-log", "--port"]
        if importlib.util.find_spec("httptools"):
            found["uvicorn httptools"] = [
                py,
                "-m",
                "uvicorn",
                "app:app",
                "--http",
                "httptools",
                "--no-access-log",
                "--port",
            ]
    if importlib.util.find_spec("hypercorn"):
        found["hypercorn"] = [py, "-m", "hypercorn", "app:app", "--bind", "127.0.0.1:{port}"]
    return found


def client(port: int, chunked: bool, done: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(REQUESTS):
        body = iter([BODY[:30000], BODY[30000:]]) if chunked else BODY
        conn.request(
            "POST", "/", body=body, headers={"Content-Type": "application/x-protobuf"}, encode_chunked=chunked
        )
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b"65536"
        done.append(1)


def main() -> None:
    import tempfile

    workdir = tempfile.mkdtemp()
    with open(os.path.join(workdir, "app.py"), "w") as f:
        f.write(APP)
    results: dict[tuple[str, bool], list[float]] = {}
    candidates = list(servers().items())
    for round_ in range(ROUNDS):
        for name, cmd in candidates if round_ % 2 == 0 else candidates[::-1]:
            port = free_port()
            argv = [a.replace("{port}", str(port)) for a in cmd] + (
                [] if "{port}" in " ".join(cmd) else [str(port)]
            )
            proc = subprocess.Popen(argv, cwd=workdir, stderr=subprocess.DEVNULL)
            for _ in range(400):
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            for chunked in (False, True):
                done: list[int] = []
                started = time.perf_counter()
                threads = [
                    threading.Thread(target=client, args=(port, chunked, done)) for _ in range(CLIENTS)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                results.setdefault((name, chunked), []).append(len(done) / (time.perf_counter() - started))
            proc.terminate()
            proc.wait()
    base = {c: statistics.median(results[("uvicorn h11", c)]) for c in (False, True)}
    print("| server | body | requests/s | vs uvicorn h11 |")
    print("|---|---|---|---|")
    for (name, chunked), rates in results.items():
        rate = statistics.median(rates)
        kind = "chunked" if chunked else "Content-Length"
        print(f"| {name} | {kind} | {rate:,.0f} | {rate / base[chunked]:.2f} |")


if __name__ == "__main__":
    main()
