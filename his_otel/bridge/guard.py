"""uvicorn's HTTP/1.1 protocol (h11), with the two deadlines it lacks and a cap per peer.

uvicorn closes an idle keep-alive connection only after a first response, restarts that timer on
every byte, and has no deadline for a request's headers: connections that send nothing, or dribble
their headers (slowloris), stay open for ever, and a few hundred of them fill the connection cap
(uvicorn then answers 503 to everyone). Here a connection must deliver each request's headers
within ``header_timeout_s`` of being opened or of its previous response, however the bytes trickle
in, or it is closed; and one peer address holds at most ``max_per_peer`` connections, so a single
host cannot take every slot. Both settings ride on uvicorn's ``Config`` (so ``--workers`` processes
get them), and the counts are per process and per listening address.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ..write.throttled_log import ThrottledLog

logger = logging.getLogger(__name__)
_log = ThrottledLog(logger)

# (listening address, peer host) -> open connections, in this process.
_peers: Counter[tuple[Any, str]] = Counter()


class GuardedH11Protocol(H11Protocol):
    """``H11Protocol`` with a header deadline and a per-peer connection cap (see the module)."""

    _deadline: asyncio.TimerHandle | None = None
    _peer: tuple[Any, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else ""
        self._peer = (self.server, host)
        _peers[self._peer] += 1
        cap = int(getattr(self.config, "his_otel_max_per_peer", 0) or 0)
        if cap and _peers[self._peer] > cap:
            _log.warning(
                "peer-cap", "peer=<%s>, cap=<%d> | connection refused: too many from one peer", host, cap
            )
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._peer is not None:
            _peers[self._peer] -= 1
            if _peers[self._peer] <= 0:
                del _peers[self._peer]
            self._peer = None
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:
            self._disarm()  # a whole request head arrived: the app's own deadlines take over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # the next request's headers are due within the same deadline

    def _arm(self) -> None:
        self._disarm()
        timeout = float(getattr(self.config, "his_otel_header_timeout_s", 0) or 0)
        if timeout > 0:
            self._deadline = self.loop.call_later(timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()
