"""``configure()``: attach the status-row processor to the app's TracerProvider, or install one.

No global side effects happen at import; this is the only place that may install a provider, and
it never replaces one the application (or ADOT, or Strands' ``StrandsTelemetry``) has set.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from . import config, log_copy, notice
from .capture import lifecycle
from .capture.live import HISSpanProcessor, ProcessorStats
from .write.exporter import DynamoDBSpanExporter, MessageFilter

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_handles: dict[int, Handle] = {}


def _bounded(fn: Callable[[], object], timeout_s: float) -> bool:
    """Run ``fn`` on a helper thread and wait at most ``timeout_s``: an OTLP exporter stuck on a hung
    collector must not hold the caller past its own timeout. False if it failed or is still running."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except Exception:
            logger.exception("his-otel flush/shutdown step failed")
            outcome.append(False)

    worker = threading.Thread(target=run, name="his-otel-bounded", daemon=True)
    worker.start()
    worker.join(max(0.0, timeout_s))
    return bool(outcome and outcome[0] is not False)


def _flush_within(part: Any, remaining_s: float) -> bool:
    return _bounded(lambda: part.force_flush(max(0, int(remaining_s * 1000))), remaining_s)


class _Counted(SpanExporter):
    """An OTLP exporter (spans or log records), counting what it delivered: the SDK's batch
    processors only log a failure. Both signals' results name success ``SUCCESS``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent = 0
        self.failed = 0

    def export(self, batch: Sequence[Any]) -> Any:
        result = self.inner.export(batch)
        if getattr(result, "name", "") == "SUCCESS":
            self.sent += len(batch)
        else:
            self.failed += len(batch)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


@dataclass
class Handle:
    """What ``configure()`` set up. Keep it to flush or shut down explicitly."""

    provider: trace_api.TracerProvider
    processor: HISSpanProcessor
    exporter: DynamoDBSpanExporter
    installed_provider: bool
    """True when his-otel installed the global provider (none existed)."""
    otlp_exporter: SpanExporter | None = None
    otlp_processor: SpanProcessor | None = None
    otlp_tally: _Counted | None = None
    logs: InstalledLogs | None = None
    """The LoggerProvider his-otel installed for the log copies (none existed), if it did."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write pending rows (and send pending OTLP spans and log copies when his-otel installed the
        providers), within ``timeout_millis`` in all."""
        deadline = time.monotonic() + max(0, timeout_millis) / 1000
        ok = self.processor.force_flush(timeout_millis)
        otlp_parts: list[Any] = [self.otlp_processor, self.logs.processor if self.logs else None]
        for otlp in otlp_parts:
            if otlp is not None:
                ok = _flush_within(otlp, deadline - time.monotonic()) and ok
        return ok

    def shutdown(self) -> None:
        """Write what is pending and stop, each part within its shutdown timeout. Idempotent."""
        with _lock:
            _handles.pop(id(self.provider), None)
        self.processor.shutdown()
        for otlp in (self.otlp_processor, self.logs.provider if self.logs else None):
            if otlp is not None:
                _bounded(otlp.shutdown, self.processor._shutdown_timeout_s)

    def stats(self) -> ProcessorStats:
        return self.processor.stats()

    def otlp_delivery(self) -> tuple[int, int]:
        """(spans the OTLP exporter delivered, spans it failed to), when his-otel installed it."""
        if self.otlp_tally is None:
            return 0, 0
        return self.otlp_tally.sent, self.otlp_tally.failed

    def otlp_log_delivery(self) -> tuple[int, int]:
        """(log records the OTLP log exporter delivered, records it failed to), when his-otel
        installed it."""
        if self.logs is None or self.logs.tally is None:
            return 0, 0
        return self.logs.tally.sent, self.logs.tally.failed


def _otlp_requested(otlp: bool | None, exporter_env: str, endpoint_env: str) -> bool:
    """Whether a signal gets an OTLP exporter: the argument, else its ``OTEL_*_EXPORTER`` variable,
    else whether an endpoint (the signal's own or the base one) is set."""
    if otlp is not None:
        return otlp
    exporters = os.environ.get(exporter_env, "").lower()
    if "none" in exporters.split(","):
        return False
    if "otlp" in exporters.split(","):
        return True
    return bool(os.environ.get(config.ENV_OTLP_ENDPOINT) or os.environ.get(endpoint_env))


def _otlp_protocol(signal_env: str = config.ENV_OTLP_TRACES_PROTOCOL) -> str:
    return (os.environ.get(signal_env) or os.environ.get(config.ENV_OTLP_PROTOCOL) or "http/protobuf").strip()


def otlp_endpoint() -> str:
    """Where the OTLP exporter ``configure()`` installs sends traces (from the standard variables)."""
    traces = os.environ.get(config.ENV_OTLP_TRACES_ENDPOINT, "").strip()
    base = os.environ.get(config.ENV_OTLP_ENDPOINT, "").strip()
    default = "http://localhost:4317" if _otlp_protocol() == "grpc" else "http://localhost:4318"
    return traces or base or default


def _otlp_exporter() -> SpanExporter:
    protocol = _otlp_protocol()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol not in ("http/protobuf", "http/json"):
        logger.warning("protocol=<%s> | unsupported OTLP protocol, using http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


@dataclass
class InstalledLogs:
    """The LoggerProvider ``configure()`` installed for the log copies, and its OTLP export."""

    provider: Any
    processor: Any = None
    tally: _Counted | None = None


def _install_logs(resource: Resource, otlp: bool | None) -> InstalledLogs | None:
    """Where no LoggerProvider is set, one with an OTLP log exporter when the standard variables (or
    ``otlp``) ask for it, so the log copies leave the process. None when there is nothing to do."""
    if log_copy.has_provider() or not _otlp_requested(
        otlp, config.ENV_LOGS_EXPORTER, config.ENV_OTLP_LOGS_ENDPOINT
    ):
        return None
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    if _otlp_protocol(config.ENV_OTLP_LOGS_PROTOCOL) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # type: ignore[assignment]
    tally = _Counted(OTLPLogExporter())
    delay = None if os.environ.get(config.ENV_BLRP_SCHEDULE_DELAY) else config.DEFAULT_LOG_SCHEDULE_DELAY_MS
    queue = None if os.environ.get(config.ENV_BLRP_MAX_QUEUE_SIZE) else config.DEFAULT_LOG_QUEUE_SIZE
    processor = BatchLogRecordProcessor(tally, schedule_delay_millis=delay, max_queue_size=queue)  # type: ignore[arg-type]
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(processor)
    _logs.set_logger_provider(provider)
    if _logs.get_logger_provider() is not provider:
        return None  # another installer won the race; the copies go through theirs
    return InstalledLogs(provider, processor, tally)


def current_handle() -> Handle | None:
    """The handle for the global provider, if ``configure()`` has run for it."""
    with _lock:
        handle = _handles.get(id(trace_api.get_tracer_provider()))
    if handle is not None:
        # A configure() made on a worker thread gets its SIGTERM handler at the next chance.
        lifecycle.ensure_sigterm_flush()
    return handle


def ensure_configured(table_name: str | None) -> None:
    """:func:`configure` for ``table_name`` unless it has run for the global provider or his-otel is
    disabled (``HIS_OTEL_DISABLED``). Raises only :class:`~his_otel.config.InvalidSettingError` (a
    setting no one can use: refusing to start is the loud way); any other failure is said, and the
    agent runs on without rows."""
    if current_handle() is not None or config.env_flag(config.ENV_DISABLED):
        return
    try:
        configure(table_name)
    except config.InvalidSettingError:
        raise
    except Exception as e:
        logger.exception("his-otel could not configure tracing; no status rows will be written")
        notice.tell(
            "configure", f"could not set up status rows ({type(e).__name__}: {e}); none will be written"
        )


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
    max_row_age_millis: int | None = None,
    writes_in_flight: int | None = None,
    message_mode: str | None = None,
    message_filter: MessageFilter | None = None,
    copies: str | None = None,
    flush_on_sigterm: bool = True,
) -> Handle:
    """Set up status rows for this process. Idempotent: a second call returns the first handle.

    Attaches a :class:`HISSpanProcessor` to ``tracer_provider`` (default: the global provider). When
    no SDK provider is set globally, installs one, with an OTLP exporter when ``otlp`` is True or the
    standard ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_TRACES_EXPORTER`` variables ask for one; and where no
    LoggerProvider is set either, one for the milestones' log copies, with an OTLP log exporter on the
    same terms (``OTEL_EXPORTER_OTLP_LOGS_*`` / ``OTEL_LOGS_EXPORTER``).

    Args:
        table_name: Default table for milestones that name none (else ``HIS_OTEL_TABLE``).
        tracer_provider: The provider to attach to (default: the global one).
        client, session, region_name, endpoint_url: How to reach DynamoDB (see
            :class:`DynamoDBSpanExporter`); by default boto3's environment.
        otlp: Force the OTLP exporters (traces and logs) on or off for providers installed here.
        copies: Which copies of each milestone are emitted (``HIS_OTEL_COPIES``): ``"both"`` (the
            default: the span event for the trace view, the log event for a live collector path),
            ``"span"`` or ``"log"``.
        service_name: ``service.name`` of a provider installed here (else ``OTEL_SERVICE_NAME``).
        message_mode, message_filter: What text may leave the process; applied when a milestone is
            emitted, so the span event and the row carry the same text.
        flush_on_sigterm: Where nobody handles SIGTERM (``SIG_DFL``), write pending rows before the
            signal ends the process. An application's own handler, or ``SIG_IGN``, is left alone.
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
        otlp_processor: SpanProcessor | None = None
        otlp_tally: _Counted | None = None
        logs: InstalledLogs | None = None
        copies = config.resolve_choice(copies, config.ENV_COPIES, config.DEFAULT_COPIES, config.COPIES)
        if tracer_provider is None and not isinstance(provider, TracerProvider):
            if type(provider).__name__ != "ProxyTracerProvider":
                logger.warning(
                    "provider=<%s> | global tracer provider is not the OpenTelemetry SDK's; status rows are"
                    " written from live milestones only",
                    type(provider).__name__,
                )
            else:
                attrs = {SERVICE_NAME: service_name} if service_name else {}
                # Our own exit hook shuts it down within bounded time; the SDK's would wait on a
                # hung collector for as long as the OTLP exporter's own timeout.
                resource = Resource.create(attrs)
                provider = TracerProvider(resource=resource, shutdown_on_exit=False)
                if _otlp_requested(otlp, config.ENV_TRACES_EXPORTER, config.ENV_OTLP_TRACES_ENDPOINT):
                    otlp_exporter = _otlp_exporter()
                    otlp_tally = _Counted(otlp_exporter)
                    otlp_processor = BatchSpanProcessor(otlp_tally)
                    provider.add_span_processor(otlp_processor)
                trace_api.set_tracer_provider(provider)
                if trace_api.get_tracer_provider() is not provider:
                    # Lost a race with another installer; attach to the winner instead.
                    provider = trace_api.get_tracer_provider()
                else:
                    installed = True
                    if copies != "span":
                        logs = _install_logs(resource, otlp)
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
            writes_in_flight=writes_in_flight,
        )
        processor = HISSpanProcessor(
            exporter,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            schedule_delay_millis=schedule_delay_millis,
            shutdown_timeout_millis=shutdown_timeout_millis,
            max_row_age_millis=max_row_age_millis,
            message_mode=message_mode,
            message_filter=message_filter,
            tracer_provider=provider,
            copies=copies,
        )
        if isinstance(provider, TracerProvider):
            provider.add_span_processor(processor)
        handle = Handle(
            provider=provider,
            processor=processor,
            exporter=exporter,
            installed_provider=installed,
            otlp_exporter=otlp_exporter,
            otlp_processor=otlp_processor,
            otlp_tally=otlp_tally,
            logs=logs,
        )
        _handles[id(provider)] = handle
        if copies != "span" and not installed and not log_copy.has_provider():
            logger.info(
                "no LoggerProvider is set: milestones' log copies go nowhere until the application sets"
                " one (span events and rows are unaffected)"
            )
        if otlp_processor is not None or logs is not None:
            atexit.register(handle.shutdown)
        if flush_on_sigterm:
            timeout_ms = int(processor._shutdown_timeout_s * 1000)
            lifecycle.want_sigterm_flush(lambda: handle.force_flush(timeout_ms))
        return handle
