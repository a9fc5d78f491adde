"""Lifecycle milestones from Strands hooks: deterministic, and no model call spent on them.

BeforeInvocation -> START; BeforeModelCall -> MODEL_INVOCATION; AfterModelCall with
ModelThrottledException -> BEDROCK_THROTTLING; BeforeToolCall -> TOOLING; AfterToolCall with an
error -> ERROR; AfterInvocation -> COMPLETION or ERROR, then AGENT_STATS and RESULT. Each callback
is guarded: a hook that raises aborts the agent run, and a status row is never worth that.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace as trace_api
from strands.hooks import (
    AfterInvocationEvent,
    AfterModelCallEvent,
    AfterToolCallEvent,
    BeforeInvocationEvent,
    BeforeModelCallEvent,
    BeforeToolCallEvent,
    HookProvider,
    HookRegistry,
)
from strands.tools.structured_output.structured_output_tool import StructuredOutputTool
from strands.types.exceptions import ModelThrottledException

from .. import config
from ..capture.settle import settle
from ..emit import Identity, current_identity, reset_identity, set_identity
from ..emit import milestone as _milestone
from ..schema import EventType
from . import attached
from .payloads import agent_stats, result_payload

logger = logging.getLogger(__name__)

REPORT_TOOL_NAME = "write_dynamo"
NORMAL_STOP_REASONS = frozenset({"end_turn", "stop_sequence", "tool_use"})


def model_id_of(model: Any) -> str | None:
    try:
        cfg = model.get_config()
        value = cfg.get("model_id") if isinstance(cfg, dict) else getattr(cfg, "model_id", None)
        return str(value) if value else None
    except Exception:
        return None


def will_retry(event: AfterModelCallEvent) -> str:
    """Whether Strands will call the model again after this failure: "yes", "no" or "unknown".

    Our callback runs before the agent's retry strategy (after-events run in reverse registration
    order, and the agent registers its strategy first), so ``event.retry`` is not set yet; the
    strategy's own test is asked instead, and its attempt count (a private field: "unknown" if
    Strands renames it).
    """
    if event.retry:
        return "yes"
    strategy = getattr(event.agent, "_retry_strategy", None)
    attempt = getattr(strategy, "_current_attempt", None)
    most = getattr(strategy, "_max_attempts", None)
    if (
        strategy is None
        or not isinstance(attempt, int)
        or not isinstance(most, int)
        or event.exception is None
    ):
        return "unknown"
    try:
        retryable = bool(strategy.is_retryable(event.exception))
    except Exception:
        return "unknown"
    return "yes" if retryable and attempt + 1 < most else "no"


def throttling_message(event: AfterModelCallEvent) -> str:
    """The BEDROCK_THROTTLING text: model, whether Strands will retry, and the error."""
    parts = ["Bedrock throttling detected"]
    model_id = model_id_of(event.agent.model)
    if model_id:
        parts.append(f"model={model_id}")
    parts.append(f"retry={will_retry(event)}")
    parts.append(f"error={event.exception}")
    return " | ".join(parts)


def tool_failure(event: AfterToolCallEvent) -> str | None:
    """The error text of a failed tool call, or None when it succeeded (or was cancelled)."""
    result: Any = event.result
    if isinstance(result, BaseException):
        return f"{type(result).__name__}: {result}"[:500]
    if not isinstance(result, dict) or result.get("status") != "error":
        return None
    texts = [str(block.get("text", "")) for block in result.get("content") or [] if isinstance(block, dict)]
    text = " ".join(t for t in texts if t).removeprefix("Error: ")  # Strands' wording of a raised error
    return text[:500] or "error"


class HISHooks(HookProvider):
    """Registers the lifecycle milestones of one agent.

    Args:
        identity: Where this agent's rows go.
        user: Stored in AGENT_STATS (here-i-strand's ``user``).
        lifecycle: Emit START, MODEL_INVOCATION, TOOLING, COMPLETION and ERROR. False in the prompt
            mode, where the model reports those itself.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        user: Any = None,
        lifecycle: bool = True,
        invocation_flush_millis: int | None = None,
    ) -> None:
        self.identity = identity
        self.user = user
        self.lifecycle = lifecycle
        self.invocation_flush_s = config.invocation_flush_s(invocation_flush_millis)
        self._started: dict[int, float] = {}
        self._failed_tools: dict[int, int] = {}
        self._tokens: dict[int, tuple[contextvars.Token[Identity | None], Identity | None]] = {}

    def register_hooks(self, registry: HookRegistry, **kwargs: Any) -> None:
        attached.note(registry, self)
        registry.add_callback(BeforeInvocationEvent, self._before_invocation)
        registry.add_callback(BeforeModelCallEvent, self._before_model_call)
        registry.add_callback(AfterModelCallEvent, self._after_model_call)
        registry.add_callback(BeforeToolCallEvent, self._before_tool_call)
        registry.add_callback(AfterToolCallEvent, self._after_tool_call)
        # After-events run their callbacks in reverse: registered first, _settle runs last.
        registry.add_callback(AfterInvocationEvent, self._settle)
        registry.add_callback(AfterInvocationEvent, self._after_invocation)

    def adopt(self, identity: Identity) -> None:
        """Write to ``identity`` from now on: an orchestration placing this agent in its session.
        Its invocations no longer wait for their rows: the orchestration's end waits for them all."""
        self.identity = identity
        self.invocation_flush_s = 0.0

    def emit(self, evt_type: str, message: str, span: trace_api.Span | None = None) -> None:
        _milestone(
            evt_type,
            message,
            span=span,
            session_id=self.identity.session_id,
            agent_id=self.identity.agent_id,
            table=self.identity.table,
        )

    def _guard(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            logger.exception("hook=<%s> | his-otel hook failed; the agent goes on", what)

    def _before_invocation(self, event: BeforeInvocationEvent) -> None:
        def run() -> None:
            key = id(event.invocation_state)
            self._started[key] = time.perf_counter()
            # Code a tool calls finds this run's session through the context.
            previous = current_identity()
            self._tokens[key] = (set_identity(self.identity), previous)
            if getattr(event.agent, "his_identity", None) is not None:
                # An orchestration that adopted this agent placed it in its session: the model's
                # reports (write_dynamo) and tool timeouts follow, as the lifecycle rows do.
                event.agent.his_identity = self.identity  # type: ignore[attr-defined]
            # here-i-strand's tracker wrote this before START; from here it is also covered by the
            # end-of-invocation wait, which a stream callback after the invocation is not.
            self.emit(EventType.EVENT_LOOP, "init_event_loop", event.agent.trace_span)
            if self.lifecycle:
                self.emit(EventType.START, "Processing user request", event.agent.trace_span)

        self._guard("before_invocation", run)

    def _before_model_call(self, event: BeforeModelCallEvent) -> None:
        if not self.lifecycle:
            return
        self._guard(
            "before_model_call",
            lambda: self.emit(
                EventType.MODEL_INVOCATION, f"Invoking model {model_id_of(event.agent.model) or 'default'}"
            ),
        )

    def _after_model_call(self, event: AfterModelCallEvent) -> None:
        if not isinstance(event.exception, ModelThrottledException):
            return

        self._guard(
            "after_model_call", lambda: self.emit(EventType.BEDROCK_THROTTLING, throttling_message(event))
        )

    def _before_tool_call(self, event: BeforeToolCallEvent) -> None:
        if not self.lifecycle:
            return
        name = str(event.tool_use.get("name", "unknown"))
        # Strands' structured-output tool is how it shapes the answer, not a step of the work: its
        # description is an instruction to the model, not something to show a user.
        if name == REPORT_TOOL_NAME or isinstance(event.selected_tool, StructuredOutputTool):
            return

        def run() -> None:
            purpose = ""
            spec = getattr(event.selected_tool, "tool_spec", None) or {}
            description = str(spec.get("description", "")).strip().splitlines()
            if description:
                purpose = f": {description[0][:200]}"
            self.emit(EventType.TOOLING, f"Calling {name}{purpose}")

        self._guard("before_tool_call", run)

    def _after_tool_call(self, event: AfterToolCallEvent) -> None:
        """A tool that failed is an ERROR row (here-i-strand's users saw one when a step failed);
        the invocation may still complete, and its COMPLETION then says how many tools failed."""
        if not self.lifecycle or isinstance(event.selected_tool, StructuredOutputTool):
            return
        failure = tool_failure(event)
        if failure is None:
            return

        def run() -> None:
            key = id(event.invocation_state)
            self._failed_tools[key] = self._failed_tools.get(key, 0) + 1
            name = str(event.tool_use.get("name", "unknown"))
            self.emit(EventType.ERROR, f"Tool {name} failed: {failure}")

        self._guard("after_tool_call", run)

    def _after_invocation(self, event: AfterInvocationEvent) -> None:
        key = id(event.invocation_state)
        failed_tools = self._failed_tools.pop(key, 0)
        started = self._started.pop(key, None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        result = event.result
        span = event.agent.trace_span

        def outcome() -> None:
            if not self.lifecycle:
                return
            if result is None:
                exc = sys.exc_info()[1]
                detail = f"{type(exc).__name__}: {exc}" if exc is not None else "invocation did not complete"
                self.emit(EventType.ERROR, f"Invocation failed: {detail}", span)
            elif result.stop_reason == "cancelled":
                self.emit(EventType.ERROR, "Invocation cancelled (stop_reason=cancelled)", span)
            elif result.stop_reason in NORMAL_STOP_REASONS and failed_tools:
                calls = "tool call" if failed_tools == 1 else "tool calls"
                self.emit(EventType.COMPLETION, f"Process completed ({failed_tools} {calls} failed)", span)
            elif result.stop_reason in NORMAL_STOP_REASONS:
                self.emit(EventType.COMPLETION, "Process completed successfully", span)
            else:
                self.emit(EventType.COMPLETION, f"Process stopped (stop_reason={result.stop_reason})", span)

        def loop_result() -> None:
            # Before AGENT_STATS and RESULT, as here-i-strand wrote it, and inside the invocation so
            # its row is written before the invocation returns.
            if result is not None:
                self.emit(EventType.EVENT_LOOP, "result", span)

        def stats() -> None:
            if result is None:
                return
            payload = agent_stats(
                result,
                user=self.user,
                execution_time_in_seconds=elapsed,
                model_id=model_id_of(event.agent.model),
            )
            self.emit(EventType.AGENT_STATS, payload, span)

        def final() -> None:
            if result is None:
                return
            payload = result_payload(result, event.agent.messages)
            if payload is not None:
                self.emit(EventType.RESULT, payload, span)

        self._guard("after_invocation", outcome)
        self._guard("event_loop", loop_result)
        self._guard("agent_stats", stats)
        self._guard("result", final)
        saved = self._tokens.pop(key, None)
        if saved is not None:
            self._guard("restore_identity", lambda: reset_identity(*saved))

    async def _settle(self, event: AfterInvocationEvent) -> None:
        """Hold the invocation's return until its rows are written (``capture.settle`` says why)."""
        await settle(event.agent.trace_span, self.invocation_flush_s)


class EventLoopTracker:
    """A callback handler that records EVENT_LOOP milestones, then calls the wrapped handler.

    here-i-strand's ``event_loop_tracker`` replaced the user's handler; this one wraps it, so a
    custom ``callback_handler`` keeps working and the milestones are still recorded.
    """

    def __init__(self, hooks: HISHooks, inner: Callable[..., Any] | None) -> None:
        self._hooks = hooks
        self._inner = inner

    def __call__(self, **kwargs: Any) -> None:
        # init_event_loop and result come from the invocation hooks (in here-i-strand's order, and
        # covered by the end-of-invocation wait); only force_stop is taken from the stream.
        if kwargs.get("force_stop"):
            # here-i-strand's closed set of messages; the reason is in the invocation's ERROR row.
            self._hooks._guard("event_loop", lambda: self._hooks.emit(EventType.EVENT_LOOP, "force_stop"))
        if self._inner is not None:
            self._inner(**kwargs)
