"""``HISSwarm`` and ``HISGraphBuilder``: Strands' own classes with :class:`HISMultiAgentHooks` in place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strands import Agent
from strands.hooks import HookProvider
from strands.multiagent import GraphBuilder, Swarm
from strands.multiagent.graph import Graph
from strands.types.traces import AttributeValue

from ..schema import SPAN_ATTR_SESSION_ID
from .hooks import HISMultiAgentHooks


class HISSwarm(Swarm):
    """A Strands ``Swarm`` whose run and nodes write status rows to one session.

    Args:
        nodes: The swarm's agents (plain ``Agent`` or ``HISAgent``); each writes its own rows
            under its name.
        status_dynamo_table_name, session_id, agent_id, user, configure_tracing,
        invocation_flush_millis: as :class:`HISMultiAgentHooks` (``agent_id`` defaults to ``id``).
        hooks, trace_attributes, **swarm_kwargs: as ``strands.multiagent.Swarm``.
    """

    def __init__(
        self,
        nodes: list[Agent],
        status_dynamo_table_name: str,
        session_id: str | None = None,
        *,
        agent_id: str | None = None,
        user: Any = None,
        hooks: list[HookProvider] | None = None,
        trace_attributes: Mapping[str, AttributeValue] | None = None,
        configure_tracing: bool = True,
        invocation_flush_millis: int | None = None,
        **swarm_kwargs: Any,
    ) -> None:
        self.his_hooks = HISMultiAgentHooks(
            status_dynamo_table_name,
            session_id,
            agent_id=agent_id,
            user=user,
            configure_tracing=configure_tracing,
            invocation_flush_millis=invocation_flush_millis,
        )
        attributes: dict[str, AttributeValue] = dict(trace_attributes or {})
        attributes.setdefault(SPAN_ATTR_SESSION_ID, self.his_hooks.session_id)
        super().__init__(
            nodes, hooks=[*(hooks or []), self.his_hooks], trace_attributes=attributes, **swarm_kwargs
        )


class HISGraphBuilder(GraphBuilder):
    """A Strands ``GraphBuilder`` whose graphs write status rows to one session.

    Args: as :class:`HISMultiAgentHooks` (``agent_id`` defaults to the graph's id). Hook providers
    set with ``set_hook_providers`` are kept beside his-otel's.
    """

    def __init__(
        self,
        status_dynamo_table_name: str,
        session_id: str | None = None,
        *,
        agent_id: str | None = None,
        user: Any = None,
        configure_tracing: bool = True,
        invocation_flush_millis: int | None = None,
    ) -> None:
        super().__init__()
        self.his_hooks = HISMultiAgentHooks(
            status_dynamo_table_name,
            session_id,
            agent_id=agent_id,
            user=user,
            configure_tracing=configure_tracing,
            invocation_flush_millis=invocation_flush_millis,
        )

    def build(self) -> Graph:
        own = list(self._hooks or [])
        self._hooks = [*own, self.his_hooks]
        try:
            return super().build()
        finally:
            self._hooks = own or None
