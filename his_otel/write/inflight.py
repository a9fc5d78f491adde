"""How many DynamoDB calls one writer keeps in flight, and when they may start.

One gate per writer, shared by every thread that writes through it (the processor's batch workers,
an exporter's caller, the bridge's requests):

- **bounded**: never more than ``maximum`` calls at once;
- **sized to the latency observed**: a call that mostly waits for the network leaves this process's
  CPU free for others, so the limit follows ``wall time / CPU time`` of recent calls (Little's law
  on one core): fewer calls on loopback, more the farther DynamoDB is;
- **no head-of-line blocking**: a call running far longer than calls usually take (a stalled
  connection, a slow partition) stops counting against that limit, so the rows behind it go out on
  another call; ``maximum`` still bounds them all;
- **one backoff for all**: a throttled or failed call pushes back the moment at which *any* call of
  this writer may start (full-jitter exponential backoff); only a clean call resets it. A writer
  whose calls each backed off on their own would keep DynamoDB as busy as before.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time

# The weight of the newest call in the moving averages of a call's wall and CPU time.
_SMOOTHING = 0.2
# A call running this many times longer than usual (and at least the floor) is stalled.
_STALLED_FACTOR = 4.0
_STALLED_FLOOR_S = 0.25


class InFlight:
    def __init__(self, maximum: int, *, base_backoff_s: float = 0.05, max_backoff_s: float = 2.0) -> None:
        self.maximum = max(1, maximum)
        self._cond = threading.Condition()
        self._started: dict[int, float] = {}
        self._ids = itertools.count()
        self._limit = 1
        self._wall = 0.0
        self._cpu = 0.0
        self._not_before = 0.0
        self._attempt = 0
        self._base = base_backoff_s
        self._cap = max_backoff_s

    @property
    def limit(self) -> int:
        """Calls that may be in flight now."""
        return self._limit

    def acquire(self, deadline: float, stop: threading.Event) -> int | None:
        """Wait for a free slot past any backoff: a ticket for ``release``, or None at ``deadline``
        or once ``stop`` is set."""
        with self._cond:
            while True:
                if stop.is_set():
                    return None
                now = time.monotonic()
                if now >= deadline:
                    return None
                stalled_after = max(_STALLED_FLOOR_S, _STALLED_FACTOR * self._wall)
                active = sum(1 for t in self._started.values() if now - t < stalled_after)
                free = active < self._limit and len(self._started) < self.maximum
                if free and now >= self._not_before:
                    ticket = next(self._ids)
                    self._started[ticket] = now
                    return ticket
                wake = deadline if not free else min(deadline, self._not_before)
                # Short waits: a ``stop`` or a call that stalls is noticed within 50 ms.
                self._cond.wait(min(0.05, max(0.0, wake - now)))

    def release(self, ticket: int, wall_s: float, cpu_s: float, *, failed: bool, clean: bool) -> None:
        """Give back a slot. ``failed``: DynamoDB pushed back (throttling, unprocessed items, a busy
        server), so every call waits a backoff. ``clean``: it went through; the backoff resets and
        its timing sizes the limit. Neither (a missing table, a rejected item): only the slot."""
        with self._cond:
            del self._started[ticket]
            if failed:
                self._attempt += 1
                delay = random.uniform(0, min(self._cap, self._base * (2**self._attempt)))
                self._not_before = max(self._not_before, time.monotonic() + delay)
            elif clean:
                self._attempt = 0
                self._wall += _SMOOTHING * (wall_s - self._wall) if self._wall else wall_s
                self._cpu += _SMOOTHING * (cpu_s - self._cpu) if self._cpu else cpu_s
                ratio = self._wall / max(self._cpu, 1e-6)
                self._limit = max(1, min(self.maximum, math.ceil(ratio)))
            self._cond.notify_all()
