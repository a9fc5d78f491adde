"""Which his-otel hook provider a Strands hook registry already holds.

An orchestration gives its nodes their identity in the session; a node that already has his-otel
hooks (a HISAgent, a HISSwarm) must be given that identity, not a second set of hooks that would
write every milestone twice. Strands' registry does not list its providers, so each provider notes
itself here when it registers; weak keys, so a dropped agent takes its entry with it.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

_providers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def note(registry: Any, provider: Any) -> None:
    # A registry that cannot be weakly referenced is treated as holding none.
    with contextlib.suppress(TypeError):
        _providers[registry] = provider


def provider_of(registry: Any) -> Any:
    """The his-otel provider registered on ``registry``, or None."""
    try:
        return _providers.get(registry)
    except TypeError:
        return None
