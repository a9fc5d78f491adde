"""OTLP trace and log requests -> milestones. Decoding is the OTLP protobuf package's
(``opentelemetry-proto``); this module only undoes HTTP transport encodings, repairs what OTLP/JSON
senders get wrong, and reads each ``his.milestone`` event (span event or log event) through the one
mapping the in-process path uses too (``milestone_from_event`` -> ``to_item``)."""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from ..log_copy import ATTR_EVENT_NAME
from ..schema import (
    ATTR_SPAN_NAME,
    EVENT_NAME,
    InvalidMilestoneError,
    Milestone,
    clean_text,
    milestone_from_event,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class BadRequestError(ValueError):
    """The body cannot be decoded (HTTP 400, gRPC INVALID_ARGUMENT)."""


class TooLargeError(ValueError):
    """The body, once decompressed, is over the limit (HTTP 413)."""


class UnsupportedError(ValueError):
    """Unknown content type or encoding (HTTP 415)."""


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding``, refusing to inflate past ``limit`` bytes (a zip bomb stays small).
    A gzip body of several members (RFC 1952 allows it) is inflated whole."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS  # zlib-wrapped, as HTTP's "deflate" means
    else:
        raise UnsupportedError(f"unsupported Content-Encoding {encoding[:40]!r}")
    parts: list[bytes] = []
    size = 0
    rest = body
    try:
        while True:
            inflater = zlib.decompressobj(wbits)
            out = inflater.decompress(rest, limit - size + 1)
            size += len(out)
            if size > limit or inflater.unconsumed_tail:
                raise TooLargeError(f"decompressed body over {limit} bytes")
            if not inflater.eof:
                raise BadRequestError(f"truncated {encoding} body")
            parts.append(out)
            rest = inflater.unused_data
            if not rest or encoding != "gzip":
                return b"".join(parts)
    except zlib.error as e:
        raise BadRequestError(f"invalid {encoding} body: {e}") from e


_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _prepare_json(node: Any) -> Any:
    """OTLP/JSON as protobuf's JSON mapping reads it: ids from hex to base64 (OTLP/JSON writes hex,
    protobuf expects base64 for bytes), and every lone surrogate (``JSON.stringify`` emits them for
    half an emoji) replaced by U+FFFD in its own field, so one bad string costs no batch."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError as e:
                    raise BadRequestError(f"{key} is not hex: {value[:40]!r}") from e
            else:
                value = _prepare_json(value)
            out[clean_text(key)] = value
        return out
    if isinstance(node, list):
        return [_prepare_json(item) for item in node]
    if isinstance(node, str):
        return clean_text(node)
    return node


M = TypeVar("M", bound=Message)
_MAX_DEPTH = 100  # protobuf's own recursion limit


def parse_protobuf(body: bytes, request: M) -> M:
    """Fill ``request`` from protobuf ``body``. Invalid UTF-8 in a string field (which fails the
    whole parse) is replaced by U+FFFD in that field alone, as OTLP/JSON bodies are repaired: one
    bad string costs no batch."""
    try:
        request.ParseFromString(body)
        return request
    except (DecodeError, ValueError, RecursionError) as e:
        error = e
    try:
        repaired = _repair_strings(body, request.DESCRIPTOR, 0)
    except (IndexError, ValueError) as e:
        raise BadRequestError(f"invalid protobuf body: {error}") from e
    try:
        request.Clear()
        request.ParseFromString(repaired)
        return request
    except (DecodeError, ValueError, RecursionError) as e:
        raise BadRequestError(f"invalid protobuf body: {e}") from e


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _repair_strings(data: bytes, descriptor: Any, depth: int) -> bytes:
    """``data``, a serialized message of ``descriptor``, with every string field valid UTF-8: the
    wire format walked with the schema, invalid bytes replaced, everything else copied as it is."""
    if depth > _MAX_DEPTH:
        raise ValueError("message nested too deeply")
    out = bytearray()
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            value = data[pos : pos + length]
            if len(value) != length:
                raise ValueError("truncated field")
            pos += length
            field = descriptor.fields_by_number.get(number)
            if field is not None and field.type == field.TYPE_STRING:
                value = value.decode("utf-8", "replace").encode("utf-8")
            elif field is not None and field.type == field.TYPE_MESSAGE:
                value = _repair_strings(value, field.message_type, depth + 1)
            else:
                out += data[start:pos]
                continue
            out += data[start : start + len(_encode_varint(key))] + _encode_varint(len(value)) + value
            continue
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        out += data[start:pos]
    return bytes(out)


def parse_request(body: bytes, content_type: str, request: M) -> M:
    """Fill ``request`` (an empty OTLP export request of the signal) from ``body``."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == PROTOBUF:
        return parse_protobuf(body, request)
    if kind == JSON:
        try:
            # Invalid UTF-8 bytes become U+FFFD too, rather than failing the whole body.
            document = _prepare_json(json.loads(body.decode("utf-8", errors="replace")))
            json_format.ParseDict(document, request, ignore_unknown_fields=True)
        except BadRequestError:
            raise
        except (ValueError, TypeError, RecursionError, json_format.ParseError, binascii.Error) as e:
            raise BadRequestError(f"invalid JSON body: {e}") from e
        return request
    raise UnsupportedError(f"unsupported Content-Type {content_type!r}; use {PROTOBUF} or {JSON}")


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return json.dumps({kv.key: _value(kv.value) for kv in v.kvlist_value.values}, default=str)
    return getattr(v, kind)


@dataclass
class Received:
    """The milestones of one OTLP request, by the unit OTLP's ``partial_success`` counts: a span
    (traces) or a log record (logs). Units without a ``his.milestone`` event are not listed."""

    signal: str
    items: int
    """Spans or log records in the request."""
    units: list[list[Milestone]] = field(default_factory=list)
    malformed: list[int] = field(default_factory=list)
    """Per unit: its ``his.milestone`` events that can never become rows."""
    causes: Counter[str] = field(default_factory=Counter)
    """Why events were malformed (bounded text, never the sender's strings whole)."""


def _id(raw: bytes, size: int) -> int:
    return int.from_bytes(raw, "big") if len(raw) == size else 0


def _read(
    received: Received, attributes: Any, timestamp_ns: int, trace_id: bytes, span_id: bytes, span_name: str
) -> Milestone | None:
    attrs = {kv.key: _value(kv.value) for kv in attributes}
    try:
        return milestone_from_event(
            attrs,
            timestamp_ns,
            trace_id=_id(trace_id, 16),
            span_id=_id(span_id, 8),
            # A log record has no span name of its own: its log copy carries it.
            span_name=span_name or str(attrs.get(ATTR_SPAN_NAME, "")),
        )
    except InvalidMilestoneError as e:
        received.causes[str(e)[:200]] += 1
        return None


def trace_milestones(request: ExportTraceServiceRequest) -> Received:
    """The ``his.milestone`` span events of a trace request, span by span."""
    received = Received("traces", 0)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                received.items += 1
                found: list[Milestone] = []
                bad = 0
                for e in span.events:
                    if e.name != EVENT_NAME:
                        continue
                    m = _read(
                        received, e.attributes, e.time_unix_nano, span.trace_id, span.span_id, span.name
                    )
                    if m is None:
                        bad += 1
                    else:
                        found.append(m)
                if found or bad:
                    received.units.append(found)
                    received.malformed.append(bad)
    return received


# LogRecord.event_name is field 12 of OTLP's logs proto (1.5); opentelemetry-proto before 1.35 does
# not know it, so there it is read from the record's unknown fields.
_EVENT_NAME_FIELD = 12
_KNOWS_EVENT_NAME = "event_name" in LogRecord.DESCRIPTOR.fields_by_name


def _event_name(record: LogRecord) -> str:
    if _KNOWS_EVENT_NAME:
        return str(record.event_name)
    from google.protobuf.unknown_fields import UnknownFieldSet

    fields = UnknownFieldSet(record)
    for index in range(len(fields)):
        unknown = fields[index]
        if unknown.field_number == _EVENT_NAME_FIELD and isinstance(unknown.data, bytes):
            return unknown.data.decode("utf-8", "replace")
    return ""


def _is_milestone(record: LogRecord) -> bool:
    """A ``his.milestone`` log event: by its event name, or (SDKs before LogRecord had one) by the
    ``event.name`` attribute."""
    if _event_name(record) == EVENT_NAME:
        return True
    return any(kv.key == ATTR_EVENT_NAME and kv.value.string_value == EVENT_NAME for kv in record.attributes)


def log_milestones(request: ExportLogsServiceRequest) -> Received:
    """The ``his.milestone`` log events of a logs request; other log records are ignored."""
    received = Received("logs", 0)
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                received.items += 1
                if not _is_milestone(record):
                    continue
                name = next(
                    (kv.value.string_value for kv in record.attributes if kv.key == ATTR_SPAN_NAME), ""
                )
                timestamp = record.time_unix_nano or record.observed_time_unix_nano
                m = _read(received, record.attributes, timestamp, record.trace_id, record.span_id, name)
                received.units.append([] if m is None else [m])
                received.malformed.append(1 if m is None else 0)
    return received


@dataclass(frozen=True)
class Signal:
    """One OTLP signal the bridge takes: where it arrives, its messages, and how it is read."""

    name: str
    path: str
    """The OTLP/HTTP path."""
    service: str
    """The OTLP/gRPC service."""
    request: type[Message]
    response: type[Message]
    read: Callable[[Any], Received]
    rejected_field: str
    """The field of the response's ``partial_success`` that counts refused units."""

    def parse(self, body: bytes, content_type: str) -> Received:
        return self.read(parse_request(body, content_type, self.request()))

    def from_grpc(self, body: bytes) -> Received:
        return self.read(parse_protobuf(body, self.request()))

    def answer(self, rejected: int, message: str) -> Message:
        response = self.response()
        if rejected:
            partial = response.partial_success  # type: ignore[attr-defined]
            setattr(partial, self.rejected_field, rejected)
            partial.error_message = message
        return response


TRACES = Signal(
    "traces",
    "/v1/traces",
    "opentelemetry.proto.collector.trace.v1.TraceService",
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
    trace_milestones,
    "rejected_spans",
)
LOGS = Signal(
    "logs",
    "/v1/logs",
    "opentelemetry.proto.collector.logs.v1.LogsService",
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
    log_milestones,
    "rejected_log_records",
)
SIGNALS = (TRACES, LOGS)
