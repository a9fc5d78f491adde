"""The log copy of a milestone: an OpenTelemetry log event that leaves the process at once.

A span event reaches OTLP only when its span ends (an ``invoke_agent`` span lasts the whole run), so
the collector path would show a run's rows when it is over. The same milestone as a LogRecord named
``his.milestone`` (OTEP 4430's events-as-logs), with the span event's ``his.*`` attributes and the
span's trace and span id, is exported by a BatchLogRecordProcessor within its schedule delay,
whatever the span does. Both copies carry one ``his.event_id``, so every copy is the same row.

It goes through the global LoggerProvider: the application's (or ADOT's), or the one ``configure()``
installs beside its TracerProvider. With no provider set, nothing is built at all.

The logs API changed shape across the OpenTelemetry releases his-otel supports: ``Logger.emit``
takes keywords (``event_name``, ``context``) since 1.38; before that it takes a record, and the event
name rides as the ``event.name`` attribute, as ``opentelemetry._events`` wrote it then.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

from opentelemetry import _logs
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import NonRecordingSpan, SpanContext, set_span_in_context

from .schema import ATTR_SPAN_NAME, EVENT_NAME, Milestone, event_attributes
from .write.throttled_log import ThrottledLog

logger = logging.getLogger(__name__)
_log = ThrottledLog(logger)

SCOPE = "his_otel"
# The attribute older senders and SDKs (before LogRecord had an event name) name an event with.
ATTR_EVENT_NAME = "event.name"

# The API's placeholders: no provider has been set, so an emitted record would go nowhere.
_NO_PROVIDER = frozenset({"ProxyLoggerProvider", "NoOpLoggerProvider"})
_KEYWORD_EMIT = {"event_name", "context"} <= set(inspect.signature(_logs.Logger.emit).parameters)

_cached: tuple[object, Any] | None = None


def has_provider() -> bool:
    """Whether a LoggerProvider is set globally (so log copies go somewhere)."""
    return type(_logs.get_logger_provider()).__name__ not in _NO_PROVIDER


def _logger() -> Any:
    global _cached
    provider = _logs.get_logger_provider()
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    if type(provider).__name__ in _NO_PROVIDER:
        return None
    made = provider.get_logger(SCOPE)
    _cached = (provider, made)
    return made


def attributes(m: Milestone) -> dict[str, str | int]:
    """The log event's attributes: the span event's, and the span's name (a log record has none of
    its own), so a row made from either copy is the same row. Not the table: a row made from a log
    copy goes to the bridge's table (a sender never picks it), and each attribute costs the SDK's
    checks and the exporter's encoding."""
    attrs = event_attributes(m, include_table=False)
    if m.span_name:
        attrs[ATTR_SPAN_NAME] = m.span_name
    return attrs


def emit(m: Milestone, span_context: SpanContext) -> bool:
    """Emit ``m`` (already redacted) as a log event. Never raises; False if it went nowhere."""
    try:
        target = _logger()
        if target is None:
            return False
        attrs = attributes(m)
        if _KEYWORD_EMIT:
            context = set_span_in_context(NonRecordingSpan(span_context)) if span_context.is_valid else None
            target.emit(
                timestamp=m.timestamp_ns,
                observed_timestamp=m.timestamp_ns,
                context=context,
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=m.evt_type,
                attributes=attrs,
                event_name=EVENT_NAME,
            )
        else:
            target.emit(_legacy_record(target, m, span_context, attrs))
        return True
    except Exception as e:
        _log.error("emit", "error=<%s> | log copy of a milestone not emitted", type(e).__name__)
        return False


def _legacy_record(target: Any, m: Milestone, span_context: SpanContext, attrs: dict[str, Any]) -> Any:
    """A LogRecord for SDKs before 1.38. The SDK's own class where the SDK is in use: its exporters
    read the record's resource, which the API's class lacks there."""
    try:
        sdk: Any = importlib.import_module("opentelemetry.sdk._logs")
        Record: Any = getattr(sdk, "LogRecord", _logs.LogRecord)  # noqa: N806
    except ImportError:  # pragma: no cover - another SDK
        Record = _logs.LogRecord  # noqa: N806
    params = inspect.signature(Record.__init__).parameters
    kwargs: dict[str, Any] = {
        "timestamp": m.timestamp_ns,
        "observed_timestamp": m.timestamp_ns,
        "trace_id": span_context.trace_id,
        "span_id": span_context.span_id,
        "trace_flags": span_context.trace_flags,
        "severity_text": "INFO",
        "severity_number": SeverityNumber.INFO,
        "body": m.evt_type,
        "attributes": {**attrs, ATTR_EVENT_NAME: EVENT_NAME},
    }
    if "resource" in params:
        kwargs["resource"] = getattr(target, "resource", None)
    if "event_name" in params:
        kwargs["event_name"] = EVENT_NAME
    return Record(**kwargs)
