"""Status rows for a ``strands.bidi.BidiAgent`` session, from its hooks.

A voice session lasts minutes and its ``bidi_session`` span ends only when the session does, so
every row goes through the live path while the span is open: SESSION_START, TOOLING (and ERROR for
a failed tool), RESPONSE_COMPLETION with the response's tokens, BARGE_IN, CONNECTION_RESTART /
CONNECTION_RESTARTED (ERROR when a restart fails), then SESSION_END and AGENT_STATS.

Strands' bidi hooks do not say when a session starts and fire the stop event after the session span
has ended; :class:`~his_otel.HISBidiAgent` calls :meth:`HISBidiHooks.started` and
:meth:`HISBidiHooks.ending` around ``start()`` and ``stop()`` so those rows sit on the open span.
Used alone, the hooks write SESSION_START with the first event they see and the end rows at the
stop event (their span link still names the session span).

The session span, and the session's token totals, are fields of Strands' bidi loop
(``agent._loop``); a Strands release that renames them costs the trace link and the token figures,
never a row.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from strands.bidi.hooks import (
    BidiAfterConnectionRestartEvent,
    BidiAgentStopEvent,
    BidiBargeInEvent,
    BidiBeforeConnectionRestartEvent,
    BidiResponseStopEvent,
)
from strands.hooks import AfterToolCallEvent, BeforeToolCallEvent, HookRegistry

from ..agent import attached
from ..agent.hooks import HISHooks, model_id_of, tool_failure
from ..agent.payloads import jsonable
from ..emit import Identity
from ..multiagent.tally import TOOL_KEYS, Tools, tool_calls
from ..schema import SPAN_ATTR_SESSION_ID, BidiEventType, EventType
from ..tracing import ensure_configured

logger = logging.getLogger(__name__)

B = BidiEventType
_TOKENS = (
    ("input_tokens", "_accumulated_input_tokens"),
    ("output_tokens", "_accumulated_output_tokens"),
    ("total_tokens", "_accumulated_total_tokens"),
    ("cache_read_tokens", "_accumulated_cache_read_tokens"),
)


def session_span(agent: Any) -> trace_api.Span | None:
    span = getattr(getattr(agent, "_loop", None), "_session_span", None)
    return span if isinstance(span, trace_api.Span) else None


def session_tokens(agent: Any) -> dict[str, int]:
    """The session's token totals so far (empty when Strands no longer exposes them)."""
    loop = getattr(agent, "_loop", None)
    out: dict[str, int] = {}
    for name, field in _TOKENS:
        value = getattr(loop, field, None)
        if isinstance(value, int):
            out[name] = value
    return out


class HISBidiHooks(HISHooks):
    """Registers a bidi session's milestones. Prefer :class:`~his_otel.HISBidiAgent`, which adds
    these hooks and writes SESSION_START when the connection opens.

    Args:
        status_dynamo_table_name, session_id, agent_id, user, configure_tracing,
        invocation_flush_millis: as :class:`~his_otel.HISAgent`.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        user: Any = None,
        configure_tracing: bool = True,
        invocation_flush_millis: int | None = None,
    ) -> None:
        super().__init__(identity, user=user, invocation_flush_millis=invocation_flush_millis)
        if configure_tracing:
            ensure_configured(identity.table)
        self._span: trace_api.Span | None = None
        self._live = False
        self._began = 0.0
        self._counts = {"responses": 0, "barge_ins": 0, "restarts": 0, "failed_restarts": 0}
        self._tools: Tools = {}
        self._tokens_at_response: dict[str, int] = {}
        self._contexts: dict[str, contextvars.Token[otel_context.Context]] = {}

    def register_hooks(self, registry: HookRegistry, **kwargs: Any) -> None:
        attached.note(registry, self)
        registry.add_callback(BeforeToolCallEvent, self._bidi_before_tool)
        registry.add_callback(AfterToolCallEvent, self._bidi_after_tool)
        registry.add_callback(BidiResponseStopEvent, self._response_stop)
        registry.add_callback(BidiBargeInEvent, self._barge_in)
        registry.add_callback(BidiBeforeConnectionRestartEvent, self._before_restart)
        registry.add_callback(BidiAfterConnectionRestartEvent, self._after_restart)
        registry.add_callback(BidiAgentStopEvent, self._stopped)

    def emit(self, evt_type: str, message: str, span: trace_api.Span | None = None) -> None:
        super().emit(evt_type, message, span or self._span)

    # -- the session's two ends ------------------------------------------------------------

    def started(self, agent: Any) -> None:
        """The connection is open: SESSION_START on the session span."""

        def run() -> None:
            self._span = session_span(agent) or trace_api.get_current_span()
            self._live = True
            self._began = time.perf_counter()
            self._counts = dict.fromkeys(self._counts, 0)
            self._tools = {}
            self._tokens_at_response = session_tokens(agent)
            self._span.set_attribute(SPAN_ATTR_SESSION_ID, self.identity.session_id)
            self._span.set_attribute("his.agent_id", self.identity.agent_id)
            tools = ", ".join(getattr(agent, "tool_names", None) or []) or "none"
            model = model_id_of(getattr(agent, "model", None)) or "default"
            self.emit(B.SESSION_START, f"Bidi session started (model {model}, tools: {tools})")

        self._guard("bidi_started", run)

    def ending(self, agent: Any) -> None:
        """The session is about to stop: SESSION_END and AGENT_STATS, once per session."""
        if not self._live:
            return
        self._live = False

        def run() -> None:
            seconds = time.perf_counter() - self._began
            c = self._counts
            calls = tool_calls(self._tools)
            self.emit(
                B.SESSION_END,
                f"Bidi session ended after {seconds:.1f} s: {c['responses']} responses,"
                f" {calls} tool call{'' if calls == 1 else 's'},"
                f" {c['barge_ins']} barge-ins, {c['restarts']} connection restarts",
            )
            tokens = session_tokens(agent)
            stats = {
                "total_tokens": tokens.get("total_tokens", 0),
                "input_tokens": tokens.get("input_tokens", 0),
                "output_tokens": tokens.get("output_tokens", 0),
                "cache_read_tokens": tokens.get("cache_read_tokens", 0),
                "user": jsonable(self.user),
                "execution_time_in_seconds": seconds,
                "tools": self._tools,
                "model_id": model_id_of(getattr(agent, "model", None)),
                **c,
            }
            self.emit(EventType.AGENT_STATS, json.dumps(stats, default=str))

        self._guard("bidi_ending", run)

    def _ensure_started(self, agent: Any) -> None:
        if not self._live:
            self.started(agent)

    # -- callbacks -------------------------------------------------------------------------

    def _tool(self, name: str) -> dict[str, int]:
        return self._tools.setdefault(name, dict.fromkeys(TOOL_KEYS, 0))

    def _bidi_before_tool(self, event: BeforeToolCallEvent) -> None:
        self._ensure_started(event.agent)
        name = str(event.tool_use.get("name", "unknown"))
        self._tool(name)["call_count"] += 1
        if self._span is not None:
            # Strands' bidi loop runs a tool without making any span current, so milestone() in its
            # body would have no trace; the tool's task gets the session span until the call ends.
            tool_use_id = str(event.tool_use.get("toolUseId", ""))
            self._contexts[tool_use_id] = otel_context.attach(trace_api.set_span_in_context(self._span))
        self._before_tool_call(event)

    def _bidi_after_tool(self, event: AfterToolCallEvent) -> None:
        name = str(event.tool_use.get("name", "unknown"))
        self._tool(name)["error_count" if tool_failure(event) is not None else "success_count"] += 1
        self._after_tool_call(event)
        token = self._contexts.pop(str(event.tool_use.get("toolUseId", "")), None)
        if token is not None:
            otel_context.detach(token)

    def _response_stop(self, event: BidiResponseStopEvent) -> None:
        self._ensure_started(event.agent)

        def run() -> None:
            self._counts["responses"] += 1
            now = session_tokens(event.agent)
            used = {k: v - self._tokens_at_response.get(k, 0) for k, v in now.items()}
            self._tokens_at_response = now
            detail = (
                f": {used.get('input_tokens', 0)} input / {used.get('output_tokens', 0)} output tokens"
                f" (session total {now.get('total_tokens', 0)})"
                if now
                else ""
            )
            self.emit(B.RESPONSE_COMPLETION, f"Response {event.response_id} completed{detail}")

        self._guard("bidi_response_stop", run)

    def _barge_in(self, event: BidiBargeInEvent) -> None:
        self._ensure_started(event.agent)

        def run() -> None:
            self._counts["barge_ins"] += 1
            self.emit(B.BARGE_IN, "User barged in: the current response was interrupted")

        self._guard("bidi_barge_in", run)

    def _before_restart(self, event: BidiBeforeConnectionRestartEvent) -> None:
        self._ensure_started(event.agent)
        why = f"reason={event.reason}"
        if event.timeout_error is not None:
            why += f": {event.timeout_error}"
        self._guard(
            "bidi_before_restart",
            lambda: self.emit(B.CONNECTION_RESTART, f"Restarting the model connection ({why})"),
        )

    def _after_restart(self, event: BidiAfterConnectionRestartEvent) -> None:
        def run() -> None:
            if event.exception is None:
                self._counts["restarts"] += 1
                self.emit(B.CONNECTION_RESTARTED, f"Model connection restarted (reason={event.reason})")
            else:
                self._counts["failed_restarts"] += 1
                error = f"{type(event.exception).__name__}: {event.exception}"[:500]
                self.emit(
                    EventType.ERROR, f"Model connection restart failed (reason={event.reason}): {error}"
                )

        self._guard("bidi_after_restart", run)

    def _stopped(self, event: BidiAgentStopEvent) -> None:
        self.ending(event.agent)
