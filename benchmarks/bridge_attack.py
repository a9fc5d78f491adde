"""8. The bridge while strangers hold connections: rows/s of the real OTLP/HTTP exporter (4 senders,
batches of 512 spans) through ``his-otel bridge`` in its own process, with and without an attacker
process that keeps 256 connections from another loopback address (127.0.0.2) open and sending
nothing, reconnecting those the bridge closes once a second (it shares this machine's two cores,
so a tighter loop would measure the attacker's CPU, not the bridge). Plain writes (BatchWriteItem),
so that moto's conditional-put rate (benchmark 6) does not hide the bridge's own share. Rounds
alternate."""

from __future__ import annotations

import subprocess
import sys
import uuid

from benchmarks.bridge import BridgeProcesses, make_spans, send_all
from benchmarks.common import Moto, Row, median
from his_otel.read import session_rows

ATTACKERS = 256
HOLD = r"""
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = [None] * n
while True:
    for i, s in enumerate(socks):
        alive = s is not None
        if alive:
            try:
                s.setblocking(False)
                alive = s.recv(1) != b""
            except BlockingIOError:
                pass
            except OSError:
                alive = False
        if not alive:
            if s is not None:
                s.close()
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            try:
                s.connect(("127.0.0.1", port))
                socks[i] = s
            except OSError:
                s.close()
                socks[i] = None
    time.sleep(1.0)
"""


def run(moto: Moto, quick: bool) -> list[Row]:
    rounds = 2 if quick else 4
    n_spans = 1_024 if quick else 4_096
    table = moto.new_table()
    bridge = BridgeProcesses(table, 1, append_only=False)
    rates: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(rounds):
            for attacked in (False, True):
                attacker = None
                if attacked:
                    attacker = subprocess.Popen(
                        [sys.executable, "-c", HOLD, str(bridge.port), str(ATTACKERS)]
                    )
                try:
                    session = f"attack-{uuid.uuid4().hex[:6]}"
                    elapsed, failed = send_all(make_spans(n_spans, session), lambda: bridge.sender("http"))
                finally:
                    if attacker is not None:
                        attacker.kill()
                        attacker.wait()
                landed = len(session_rows(moto.client, table, session))
                assert not failed and landed == n_spans // 2, (failed, landed)
                rates[attacked].append(landed / elapsed)
    finally:
        bridge.stop()
    return [
        Row("8 bridge attacked", f"rows/s, http, {ATTACKERS} idle connections held", median(rates[True]),
            median(rates[False]), "the same bridge, no attacker, same run", "rows/s", "higher", "≥ 0.9"),
    ]  # fmt: skip
