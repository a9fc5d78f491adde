"""``HISAgent``: here-i-strand's agent, with its status rows carried by OpenTelemetry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from strands import Agent
from strands.types.traces import AttributeValue

from .. import config
from ..schema import SPAN_ATTR_SESSION_ID
from ..tracing import ensure_configured
from .hooks import EventLoopTracker, HISHooks
from .identity import resolve_identity
from .prompt import DEFAULT_DYNAMODB_REPORTING_PROMPT_TEMPLATE, build_system_prompt
from .report_tool import write_dynamo


class _Unset:
    """Marks an argument the caller did not pass, so Strands' own default applies."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


class HISAgent(Agent):
    """A Strands ``Agent`` whose status milestones become rows of an append-only DynamoDB table.

    A drop-in for here-i-strand 0.2.13's ``HISAgent``: same constructor arguments, event types and
    row schema. Milestones are span events on Strands' own spans, written to the table live by
    his-otel's span processor (installed by :func:`his_otel.configure` on first use when the
    application has not called it).

    Args:
        status_dynamo_table_name: The status table. This agent's rows always go here.
        session_id: The session (partition key). Also the S3 session id when ``bucket_name`` is set.
            Omitted inside a Bedrock AgentCore Runtime invocation: the runtime's session id.
        bucket_name: Persist the conversation in S3 (prefix ``ac-sessions/{name}``).
        model, messages, tools, system_prompt, structured_output_model, conversation_manager,
        record_direct_tool_call, load_tools_from_directory, trace_attributes, name, description,
        state, context_manager, hooks, tool_executor, retry_strategy: as ``strands.Agent``
            (``retry_strategy`` left unset keeps Strands' default retries; ``None`` disables them).
        callback_handler: Called with every stream event, after EVENT_LOOP milestones are taken
            from it. Unset or None: no printing (here-i-strand's default).
        agent_id: Stored in every row (default ``"default"``).
        user: Stored in AGENT_STATS.
        reporting: ``"hooks"`` (default; lifecycle milestones from code), ``"prompt"``
            (here-i-strand's behaviour: its reporting prompt, the model reports START, TOOLING,
            ...), or ``"both"``. Else ``HIS_OTEL_REPORTING``.
        configure_tracing: Call :func:`his_otel.configure` when it has not run yet.
        invocation_flush_millis: How long the end of each invocation waits for its rows to be
            written (``HIS_OTEL_INVOCATION_FLUSH_MS``, default 2000; 0: do not wait).
        **agent_kwargs: Any other ``strands.Agent`` argument (plugins, session_manager, ...).
    """

    def __init__(
        self,
        status_dynamo_table_name: str,
        session_id: str | None = None,
        bucket_name: str | None = None,
        model: Any = None,
        messages: Any = None,
        tools: list[Any] | None = None,
        system_prompt: Any = None,
        structured_output_model: Any = None,
        callback_handler: Callable[..., Any] | Any | None = None,
        conversation_manager: Any = None,
        record_direct_tool_call: bool = True,
        load_tools_from_directory: bool = False,
        trace_attributes: Mapping[str, AttributeValue] | None = None,
        *,
        agent_id: str | None = None,
        name: str | None = None,
        description: str | None = None,
        state: Any = None,
        context_manager: Any = None,
        hooks: list[Any] | None = None,
        tool_executor: Any = None,
        retry_strategy: Any = _UNSET,
        user: Any | None = None,
        reporting: str | None = None,
        configure_tracing: bool = True,
        invocation_flush_millis: int | None = None,
        **agent_kwargs: Any,
    ) -> None:
        self.his_identity = resolve_identity(status_dynamo_table_name, session_id, agent_id)
        session_id = self.his_identity.session_id
        mode = config.resolve_choice(reporting, config.ENV_REPORTING, "hooks", config.REPORTING_MODES)
        self.his_reporting = mode
        self._his_user = user

        if configure_tracing:
            ensure_configured(status_dynamo_table_name)

        self.his_hooks = his_hooks = HISHooks(
            self.his_identity,
            user=user,
            lifecycle=mode != "prompt",
            invocation_flush_millis=invocation_flush_millis,
        )
        all_hooks = [*(hooks or []), his_hooks]

        if mode != "hooks":
            reporting_prompt = DEFAULT_DYNAMODB_REPORTING_PROMPT_TEMPLATE.format(
                table_name=status_dynamo_table_name, session_id=session_id, agent_id=agent_id or "default"
            )
            system_prompt = build_system_prompt(system_prompt, reporting_prompt)

        attributes: dict[str, AttributeValue] = dict(trace_attributes or {})
        attributes.setdefault(SPAN_ATTR_SESSION_ID, session_id)
        attributes.setdefault("his.agent_id", agent_id or "default")

        if bucket_name:
            from strands.session import S3SessionManager

            # here-i-strand's prefix, byte for byte, so existing sessions load.
            agent_kwargs.setdefault(
                "session_manager",
                S3SessionManager(session_id=session_id, bucket=bucket_name, prefix=f"ac-sessions/{name}"),
            )
        if retry_strategy is not _UNSET:
            agent_kwargs["retry_strategy"] = retry_strategy

        super().__init__(
            model=model,
            messages=messages,
            tools=[*(t for t in (tools or []) if t is not write_dynamo), write_dynamo],
            system_prompt=system_prompt,
            structured_output_model=structured_output_model,
            callback_handler=EventLoopTracker(
                his_hooks, callback_handler if callable(callback_handler) else None
            ),
            conversation_manager=conversation_manager,
            record_direct_tool_call=record_direct_tool_call,
            load_tools_from_directory=load_tools_from_directory,
            trace_attributes=attributes,
            agent_id=agent_id,
            name=name,
            description=description,
            state=state,
            context_manager=context_manager,
            hooks=all_hooks,
            tool_executor=tool_executor,
            **agent_kwargs,
        )
