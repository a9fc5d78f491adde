"""A fixed-size summary of a set of event ids from which the ids added since can be recovered.

A cursor token must say which rows of its re-read window were delivered, and stay small however
many the window holds. An invertible Bloom lookup table (Goodrich and Mitzenmacher, 2011) does that:
each id is added to three of ``CELLS`` cells (a count and two XOR sums of its hash). Subtracting the
sketch of the ids delivered from the sketch of the ids in the window now leaves only the ids that
landed since, and "peeling" cells that hold exactly one id recovers them (up to 8 of them nearly
always, more with falling odds); more fails detectably, never silently (see :meth:`Sketch.difference`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

CELLS = 24  # three sub-tables of 8: up to 8 ids recovered nearly always, 312 bytes
_PART = CELLS // 3
_ALL = struct.Struct(">" + "bQI" * CELLS)
_CELL = struct.Struct(">bQI")  # count (mod 256: a cell's purity is proven by its check), key, check


def _check(key: int) -> int:
    # Derived from the key, so a cell holding one id proves it whichever its sign.
    return int.from_bytes(hashlib.blake2b(key.to_bytes(8, "big"), digest_size=4).digest(), "big")


def _key(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


def _cells(key: int) -> tuple[int, int, int]:
    # One cell in each sub-table, so an id's three cells are always distinct.
    return tuple(part * _PART + (key >> (21 * part)) % _PART for part in range(3))  # type: ignore[return-value]


class Sketch:
    """Counts and XOR sums of id hashes. ``add``/``remove`` keep it in step with a set of ids."""

    __slots__ = ("checks", "count", "keys")

    def __init__(self) -> None:
        self.count = [0] * CELLS
        self.keys = [0] * CELLS
        self.checks = [0] * CELLS

    def add(self, event_id: str) -> None:
        _apply(self, _key(event_id), 1)

    def remove(self, event_id: str) -> None:
        _apply(self, _key(event_id), -1)

    @classmethod
    def of(cls, event_ids: Iterable[str]) -> Sketch:
        sketch = cls()
        for event_id in event_ids:
            sketch.add(event_id)
        return sketch

    def to_bytes(self) -> bytes:
        values: list[int] = []
        for c, k, h in zip(self.count, self.keys, self.checks, strict=True):
            values += (((c + 0x80) & 0xFF) - 0x80, k, h)
        return _ALL.pack(*values)

    @classmethod
    def from_bytes(cls, data: bytes) -> Sketch:
        if len(data) != CELLS * _CELL.size:
            raise ValueError(f"a sketch is {CELLS * _CELL.size} bytes, got {len(data)}")
        sketch = cls()
        for i, (c, k, h) in enumerate(_CELL.iter_unpack(data)):
            sketch.count[i], sketch.keys[i], sketch.checks[i] = c, k, h
        return sketch

    def difference(self, now: Iterable[str]) -> set[str] | None:
        """The ids of ``now`` that this sketch does not hold, or None when more changed than the
        sketch can tell apart (the caller then cannot know, and must say so)."""
        by_key: dict[int, str] = {}
        diff = Sketch()
        for event_id in now:
            key = _key(event_id)
            by_key[key] = event_id
            _apply(diff, key, 1)
        for i in range(CELLS):
            diff.count[i] = ((diff.count[i] - self.count[i] + 0x80) & 0xFF) - 0x80
            diff.keys[i] ^= self.keys[i]
            diff.checks[i] ^= self.checks[i]
        added: set[str] = set()
        progress = True
        while progress:
            progress = False
            for i in range(CELLS):
                sign, key = diff.count[i], diff.keys[i]
                if sign not in (1, -1) or diff.checks[i] != _check(key):
                    continue
                if sign == 1:
                    found = by_key.get(key)
                    if found is None:  # a hash collision or a forged token: cannot be told apart
                        return None
                    added.add(found)
                # A -1 is an id held before that the window re-read no longer holds (an id without a
                # time, below the re-read's first key): gone from both sides now.
                _apply(diff, key, -sign)
                progress = True
        if any(diff.count) or any(diff.keys) or any(diff.checks):
            return None
        return added


def _apply(sketch: Sketch, key: int, sign: int) -> None:
    check = _check(key)
    for i in _cells(key):
        sketch.count[i] += sign
        sketch.keys[i] ^= key
        sketch.checks[i] ^= check
