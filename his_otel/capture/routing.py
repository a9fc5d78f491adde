"""Which pipelines take a milestone: those of the TracerProvider its span belongs to.

A ``HISSpanProcessor`` claims every span its provider starts (``on_start``), weakly, so a span that
never ends costs nothing once it is gone. A milestone goes to the pipelines that claimed its span.
A span nobody claimed goes to the pipelines of the provider that made it (it started before the
pipeline was added), and a span that does not record (sampled out, or no span at all) to the
pipeline bound to the global provider, which is where Strands' spans come from. Nothing is broadcast: a
second pipeline in the process (a per-tenant provider, a library beside the app) never sees another
provider's milestones.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from opentelemetry import trace as trace_api

if TYPE_CHECKING:
    from .live import HISSpanProcessor

_lock = threading.Lock()
# Copy-on-write, so the emitting thread reads it without a lock.
_pipelines: tuple[weakref.ref[HISSpanProcessor], ...] = ()


def register(processor: HISSpanProcessor) -> None:
    global _pipelines
    with _lock:
        alive = tuple(r for r in _pipelines if r() is not None and r() is not processor)
        _pipelines = (*alive, weakref.ref(processor))


def _made_by(span: trace_api.Span, provider: object) -> bool:
    """Whether the SDK ``provider`` created ``span``. The SDK exposes this only privately (a span
    holds its provider's span processor); without those attributes the answer is no."""
    processor = getattr(provider, "_active_span_processor", None)
    return processor is not None and getattr(span, "_span_processor", None) is processor


def pipelines_for(span: trace_api.Span) -> list[HISSpanProcessor]:
    """The pipelines a milestone on ``span`` belongs to (empty when none is configured)."""
    live: list[HISSpanProcessor] = []
    owners: list[HISSpanProcessor] = []
    for ref in _pipelines:
        pipeline = ref()
        if pipeline is not None:
            live.append(pipeline)
            if pipeline.owns(span):
                owners.append(pipeline)
    if owners:
        return owners
    if span.is_recording():
        # A span started before its provider's pipeline was added; never another provider's.
        return [p for p in live if p.provider is not None and _made_by(span, p.provider)]
    provider = trace_api.get_tracer_provider()
    return [p for p in live if p.provider is provider]
