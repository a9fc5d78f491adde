"""``HISBidiAgent``: Strands' ``BidiAgent`` whose voice session writes status rows live."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace as trace_api
from strands.bidi import BidiAgent

from ..agent.identity import resolve_identity
from ..capture.settle import settle
from ..emit import reset_identity, set_identity
from ..schema import EventType
from .hooks import HISBidiHooks, session_span


class HISBidiAgent(BidiAgent):
    """A ``strands.bidi.BidiAgent`` whose session milestones become status rows while it runs.

    Args:
        status_dynamo_table_name: The status table.
        session_id: The session (partition key). Omitted inside a Bedrock AgentCore Runtime
            invocation: the runtime's session id.
        agent_id: Stored in every row (default ``"default"``); also Strands' ``agent_id``.
        user: Stored in AGENT_STATS.
        configure_tracing: Call :func:`his_otel.configure` when it has not run yet.
        invocation_flush_millis: How long ``stop()`` waits for the session's last rows
            (``HIS_OTEL_INVOCATION_FLUSH_MS``, default 2000; 0: do not wait).
        hooks, **bidi_kwargs: as ``strands.bidi.BidiAgent`` (model, tools, system_prompt, ...).
    """

    def __init__(
        self,
        status_dynamo_table_name: str,
        session_id: str | None = None,
        *,
        agent_id: str | None = None,
        user: Any = None,
        hooks: list[Any] | None = None,
        configure_tracing: bool = True,
        invocation_flush_millis: int | None = None,
        **bidi_kwargs: Any,
    ) -> None:
        self.his_identity = resolve_identity(status_dynamo_table_name, session_id, agent_id)
        self.his_hooks = HISBidiHooks(
            self.his_identity,
            user=user,
            configure_tracing=configure_tracing,
            invocation_flush_millis=invocation_flush_millis,
        )
        if agent_id is not None:
            bidi_kwargs["agent_id"] = agent_id
        super().__init__(hooks=[*(hooks or []), self.his_hooks], **bidi_kwargs)

    async def start(self, invocation_state: dict[str, Any] | None = None) -> None:
        # The loop's tasks (the model reader, the tools) copy the context they start in, so code a
        # tool calls finds this session through it; the caller's context is left as it was.
        token = set_identity(self.his_identity)
        try:
            await super().start(invocation_state)
        except Exception as e:
            self.his_hooks.emit(
                EventType.ERROR, f"Bidi session could not start: {type(e).__name__}: {e}"[:1000]
            )
            await settle(trace_api.get_current_span(), self.his_hooks.invocation_flush_s)
            raise
        finally:
            reset_identity(token, None)
        self.his_hooks.started(self)

    async def stop(self) -> None:
        span = session_span(self)
        # Before Strands ends the session span, so the end rows are events of the open span.
        self.his_hooks.ending(self)
        try:
            await super().stop()
        finally:
            await settle(span, self.his_hooks.invocation_flush_s)
