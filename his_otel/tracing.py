"""``configure()``: attach the status-row processor to the app's TracerProvider, or install one.

No global side effects happen at import; this is the only place that may install a provider, and
it never replaces one the application (or ADOT, or Strands' ``StrandsTelemetry``) has set.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from . import config
from .capture.live import HISSpanProcessor, ProcessorStats
from .write.exporter import DynamoDBSpanExporter, MessageFilter

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_handles: dict[int, Handle] = {}


@dataclass
class Handle:
    """What ``configure()`` set up. Keep it to flush or shut down explicitly."""

    provider: trace_api.TracerProvider
    processor: HISSpanProcessor
    exporter: DynamoDBSpanExporter
    installed_provider: bool
    """True when his-otel installed the global provider (none existed)."""
    otlp_exporter: SpanExporter | None = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write pending rows (and pending OTLP spans when his-otel installed the provider)."""
        if isinstance(self.provider, TracerProvider):
            return bool(self.provider.force_flush(timeout_millis))
        return self.processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush and stop. Idempotent."""
        with _lock:
            _handles.pop(id(self.provider), None)
        if self.installed_provider and isinstance(self.provider, TracerProvider):
            self.provider.shutdown()
        else:
            # The app owns its provider; stop only what we added.
            self.processor.shutdown()

    def stats(self) -> ProcessorStats:
        return self.processor.stats()


def _flush_on_sigterm(handle: Handle) -> None:
    """Write pending rows when the process is asked to stop, then let SIGTERM do what it did before.

    Python skips ``atexit`` on SIGTERM. Only the main thread may set handlers; an app that sets
    its own keeps it: ours runs first, then theirs.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        try:
            handle.shutdown()
        except Exception:
            logger.exception("his-otel shutdown on SIGTERM failed")
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError):  # not supported here (an embedded interpreter, say)
        logger.debug("sigterm handler not installed")


def _otlp_requested(otlp: bool | None) -> bool:
    if otlp is not None:
        return otlp
    exporters = os.environ.get(config.ENV_TRACES_EXPORTER, "").lower()
    if "none" in exporters.split(","):
        return False
    if "otlp" in exporters.split(","):
        return True
    return bool(os.environ.get(config.ENV_OTLP_ENDPOINT) or os.environ.get(config.ENV_OTLP_TRACES_ENDPOINT))


def _otlp_exporter() -> SpanExporter:
    protocol = (
        os.environ.get(config.ENV_OTLP_TRACES_PROTOCOL)
        or os.environ.get(config.ENV_OTLP_PROTOCOL)
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol not in ("http/protobuf", "http/json"):
        logger.warning("protocol=<%s> | unsupported OTLP protocol, using http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def current_handle() -> Handle | None:
    """The handle for the global provider, if ``configure()`` has run for it."""
    with _lock:
        return _handles.get(id(trace_api.get_tracer_provider()))


def configure(
    table_name: str | None = None,
    *,
    tracer_provider: trace_api.TracerProvider | None = None,
    client: Any = None,
    session: Any = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    otlp: bool | None = None,
    service_name: str | None = None,
    max_queue_size: int | None = None,
    max_queue_bytes: int | None = None,
    schedule_delay_millis: int | None = None,
    export_timeout_millis: int | None = None,
    shutdown_timeout_millis: int | None = None,
    max_message_bytes: int | None = None,
    message_mode: str | None = None,
    message_filter: MessageFilter | None = None,
    flush_on_sigterm: bool = True,
) -> Handle:
    """Set up status rows for this process. Idempotent: a second call returns the first handle.

    Attaches a :class:`HISSpanProcessor` to ``tracer_provider`` (default: the global provider). When
    no SDK provider is set globally, installs one, with an OTLP exporter when ``otlp`` is True or the
    standard ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_TRACES_EXPORTER`` variables ask for one.

    Args:
        table_name: Default table for milestones that name none (else ``HIS_OTEL_TABLE``).
        tracer_provider: The provider to attach to (default: the global one).
        client, session, region_name, endpoint_url: How to reach DynamoDB (see
            :class:`DynamoDBSpanExporter`); by default boto3's environment.
        otlp: Force the OTLP exporter on or off for a provider installed here.
        service_name: ``service.name`` of a provider installed here (else ``OTEL_SERVICE_NAME``).
        flush_on_sigterm: Write pending rows on SIGTERM (from the main thread only; an existing
            handler still runs after ours).
        Other arguments: see :class:`HISSpanProcessor` and :class:`DynamoDBSpanExporter`.

    Returns:
        A :class:`Handle` with ``force_flush``, ``shutdown`` and ``stats``.
    """
    with _lock:
        provider = tracer_provider or trace_api.get_tracer_provider()
        existing = _handles.get(id(provider))
        if existing is not None:
            return existing
        installed = False
        otlp_exporter: SpanExporter | None = None
        if tracer_provider is None and not isinstance(provider, TracerProvider):
            if type(provider).__name__ != "ProxyTracerProvider":
                logger.warning(
                    "provider=<%s> | global tracer provider is not the OpenTelemetry SDK's; status rows are"
                    " written from live milestones only",
                    type(provider).__name__,
                )
            else:
                attrs = {SERVICE_NAME: service_name} if service_name else {}
                provider = TracerProvider(resource=Resource.create(attrs))
                if _otlp_requested(otlp):
                    otlp_exporter = _otlp_exporter()
                    provider.add_span_processor(BatchSpanProcessor(otlp_exporter))
                trace_api.set_tracer_provider(provider)
                if trace_api.get_tracer_provider() is not provider:
                    # Lost a race with another installer; attach to the winner instead.
                    provider = trace_api.get_tracer_provider()
                else:
                    installed = True
                existing = _handles.get(id(provider))
                if existing is not None:
                    return existing
        exporter = DynamoDBSpanExporter(
            table_name,
            client=client,
            session=session,
            region_name=region_name,
            endpoint_url=endpoint_url,
            export_timeout_millis=export_timeout_millis,
            max_message_bytes=max_message_bytes,
            message_mode=message_mode,
            message_filter=message_filter,
        )
        processor = HISSpanProcessor(
            exporter,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            schedule_delay_millis=schedule_delay_millis,
            shutdown_timeout_millis=shutdown_timeout_millis,
        )
        if isinstance(provider, TracerProvider):
            provider.add_span_processor(processor)
        handle = Handle(
            provider=provider,
            processor=processor,
            exporter=exporter,
            installed_provider=installed,
            otlp_exporter=otlp_exporter,
        )
        _handles[id(provider)] = handle
        if flush_on_sigterm:
            _flush_on_sigterm(handle)
        return handle
