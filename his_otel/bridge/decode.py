"""OTLP trace requests -> spans the exporter reads. Decoding is the OTLP protobuf package's
(``opentelemetry-proto``); this module only undoes HTTP transport encodings, repairs what OTLP/JSON
senders get wrong, and maps protobuf spans onto the SDK's ``ReadableSpan``, so the bridge and the
in-process path share one mapping (``milestones_of`` -> ``milestone_from_event`` -> ``to_item``)."""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from ..schema import EVENT_NAME, clean_text

PROTOBUF = "application/x-protobuf"
_NO_RESOURCE = Resource.get_empty()
JSON = "application/json"


class BadRequestError(ValueError):
    """The body cannot be decoded (HTTP 400, gRPC INVALID_ARGUMENT)."""


class TooLargeError(ValueError):
    """The body, once decompressed, is over the limit (HTTP 413)."""


class UnsupportedError(ValueError):
    """Unknown content type or encoding (HTTP 415)."""


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding``, refusing to inflate past ``limit`` bytes (a zip bomb stays small)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS  # zlib-wrapped, as HTTP's "deflate" means
    else:
        raise UnsupportedError(f"unsupported Content-Encoding {encoding!r}")
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise TooLargeError(f"decompressed body over {limit} bytes")
        if not inflater.eof:
            raise BadRequestError(f"truncated {encoding} body")
        return out
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


def parse_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, ValueError, RecursionError) as e:
            raise BadRequestError(f"invalid protobuf body: {e}") from e
        return request
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


def milestone_spans(request: ExportTraceServiceRequest) -> tuple[list[ReadableSpan], int]:
    """The spans of ``request`` that carry ``his.milestone`` events (only those events), and the
    number of spans in the request."""
    spans: list[ReadableSpan] = []
    total = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                total += 1
                events = [
                    Event(EVENT_NAME, {kv.key: _value(kv.value) for kv in e.attributes}, e.time_unix_nano)
                    for e in span.events
                    if e.name == EVENT_NAME
                ]
                if not events:
                    continue
                context = SpanContext(
                    trace_id=int.from_bytes(span.trace_id, "big") if len(span.trace_id) == 16 else 0,
                    span_id=int.from_bytes(span.span_id, "big") if len(span.span_id) == 8 else 0,
                    is_remote=True,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED),
                )
                # An explicit resource: the default would run the resource detectors (threads) per span.
                spans.append(
                    ReadableSpan(name=span.name, context=context, events=events, resource=_NO_RESOURCE)
                )
    return spans, total
