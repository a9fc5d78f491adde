"""Status rows for Swarm and Graph runs, from Strands' multi-agent hooks.

The orchestration's own rows (MULTIAGENT_START, NODE_START, NODE_COMPLETION/NODE_ERROR, HANDOFF,
INTERRUPT, MULTIAGENT_COMPLETION/MULTIAGENT_ERROR, MULTIAGENT_STATS) sit on its ``invoke_swarm`` /
``invoke_graph`` span. Each node writes its own agent rows (START, TOOLING, ...) to the same session
under its node id: the provider gives every node his-otel hooks when the orchestration is built (or,
for a node that already has them, its identity in this session), nested orchestrations included.

Strands fires ``BeforeMultiAgentInvocationEvent`` before the orchestration's span exists, so
MULTIAGENT_START is written when the first node is about to run (or at the end, for a run that
stops before any node).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace as trace_api
from strands.hooks import (
    AfterMultiAgentInvocationEvent,
    AfterNodeCallEvent,
    BeforeMultiAgentInvocationEvent,
    BeforeNodeCallEvent,
    HookOrder,
    HookProvider,
    HookRegistry,
    MultiAgentInitializedEvent,
)
from strands.multiagent.base import MultiAgentBase, Status

from .. import config
from ..agent import attached
from ..agent.hooks import HISHooks
from ..agent.identity import resolve_identity
from ..capture.settle import settle
from ..emit import Identity
from ..emit import milestone as _milestone
from ..schema import SPAN_ATTR_SESSION_ID, MultiAgentEventType
from ..tracing import ensure_configured
from . import tally as t

logger = logging.getLogger(__name__)

E = MultiAgentEventType


def kind_of(source: Any) -> str:
    """ "Swarm", "Graph" (also for their subclasses, HISSwarm's included), or another class name."""
    for cls in type(source).__mro__:
        if cls.__module__.startswith("strands.multiagent"):
            return cls.__name__
    return type(source).__name__


def status_of(source: Any) -> Status | None:
    state = getattr(source, "state", None)
    # Swarm keeps it in completion_status, Graph in status.
    status = getattr(state, "completion_status", None) or getattr(state, "status", None)
    return status if isinstance(status, Status) else None


def describe(executor: Any) -> str:
    if isinstance(executor, MultiAgentBase):
        nodes = getattr(executor, "nodes", {}) or {}
        return f"{kind_of(executor).lower()} {getattr(executor, 'id', '?')}, {len(nodes)} nodes"
    return f"agent {getattr(executor, 'name', None) or type(executor).__name__}"


def failure_text(result: Any) -> str:
    """Why a node's result is FAILED: the exception, or the agent's stop reason."""
    inner = getattr(result, "result", None)
    if isinstance(inner, BaseException):
        return f"{type(inner).__name__}: {inner}"[:500]
    stop_reason = getattr(inner, "stop_reason", None)
    if stop_reason:
        return f"stop_reason={stop_reason}"
    status = status_of(inner) if inner is not None else None
    return f"nested run ended {status.value}" if status else "failed"


@dataclass
class _Pending:
    before: BeforeNodeCallEvent
    started: float
    previous: Any
    usage: t.Usage
    tools: t.Tools


@dataclass
class _Run:
    started: float
    span: trace_api.Span | None = None
    announced: bool = False
    nodes: dict[str, t.NodeTally] = field(default_factory=dict)
    pending: dict[str, _Pending] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    waves: list[list[str]] = field(default_factory=list)
    """Nodes by start: one started while another ran joins that one's wave (a Graph's parallel
    nodes); the completion row draws waves in sequence and a wave's nodes side by side."""
    handoffs: int = 0
    failures: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)


class HISMultiAgentHooks(HookProvider):
    """Status rows for a Swarm or Graph: pass it in ``hooks=[...]`` (``GraphBuilder.set_hook_providers``).

    Args:
        status_dynamo_table_name: The status table.
        session_id: The session (partition key) the orchestration and all its nodes write to.
            Omitted inside a Bedrock AgentCore Runtime invocation: the runtime's session id.
        agent_id: The ``agent_id`` of the orchestration's own rows (default: its ``id``, e.g.
            ``default_swarm``). Nodes write under their node id; a HISAgent node given an explicit
            ``agent_id`` keeps it.
        user: Stored in MULTIAGENT_STATS and the nodes' AGENT_STATS.
        configure_tracing: Call :func:`his_otel.configure` when it has not run yet.
        invocation_flush_millis: How long the end of a run (and of each node) waits for its rows
            (``HIS_OTEL_INVOCATION_FLUSH_MS``, default 2000; 0: do not wait).
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
        identity = resolve_identity(status_dynamo_table_name, session_id, agent_id)
        self.identity: Identity | None = identity if agent_id else None
        self._session = identity
        self._nested = False
        self.user = user
        self.invocation_flush_s = config.invocation_flush_s(invocation_flush_millis)
        self._runs: dict[int, _Run] = {}
        self._attached: set[int] = set()
        self.last_usage: t.Usage = {}
        self.last_tools: t.Tools = {}
        if configure_tracing:
            ensure_configured(status_dynamo_table_name)

    def register_hooks(self, registry: HookRegistry, **kwargs: Any) -> None:
        attached.note(registry, self)
        registry.add_callback(MultiAgentInitializedEvent, self._initialized)
        registry.add_callback(BeforeMultiAgentInvocationEvent, self._before_run)
        # Last, so a hook that cancels the node has decided by then.
        registry.add_callback(BeforeNodeCallEvent, self._before_node, order=HookOrder.SDK_LAST)
        registry.add_callback(AfterNodeCallEvent, self._after_node)
        # After-events run in reverse: registered first, _settle runs after _after_run.
        registry.add_callback(AfterMultiAgentInvocationEvent, self._settle)
        registry.add_callback(AfterMultiAgentInvocationEvent, self._after_run)

    @property
    def session_id(self) -> str:
        return self._session.session_id

    def adopt(self, identity: Identity) -> None:
        """Write to ``identity`` as a node of an enclosing orchestration (its nodes under
        ``<agent_id>/<node id>``)."""
        self.identity = identity
        self._session = identity
        self._nested = True
        self.invocation_flush_s = 0.0  # the enclosing run's end waits for these rows
        self._attached.clear()

    # -- identities -------------------------------------------------------------------------

    def _own(self, source: Any) -> Identity:
        if self.identity is None:
            name = str(getattr(source, "id", None) or "multiagent")
            self.identity = Identity(self._session.session_id, name, self._session.table)
        return self.identity

    def _node_identity(self, source: Any, node_id: str) -> Identity:
        prefix = f"{self._own(source).agent_id}/" if self._nested else ""
        return Identity(self._session.session_id, f"{prefix}{node_id}", self._session.table)

    def _attach(self, source: Any) -> None:
        """Give every node his-otel hooks in this session (once per orchestration and identity)."""
        if id(source) in self._attached:
            return
        self._attached.add(id(source))
        for node_id, node in (getattr(source, "nodes", None) or {}).items():
            executor = getattr(node, "executor", None)
            registry = getattr(executor, "hooks", None)
            if not isinstance(registry, HookRegistry):
                continue  # a remote agent (A2A): its own service writes its rows, if any
            identity = self._node_identity(source, str(node_id))
            existing = attached.provider_of(registry)
            if isinstance(executor, MultiAgentBase):
                if isinstance(existing, HISMultiAgentHooks):
                    existing.adopt(identity)
                else:
                    nested = HISMultiAgentHooks(
                        identity.table,
                        identity.session_id,
                        agent_id=identity.agent_id,
                        user=self.user,
                        configure_tracing=False,
                        invocation_flush_millis=0,
                    )
                    nested.adopt(identity)
                    registry.add_hook(nested)
                continue
            if isinstance(existing, HISHooks):
                # A HISAgent given an explicit agent_id keeps it; "default" would name every node alike.
                own = existing.identity.agent_id
                if own != "default":
                    identity = Identity(identity.session_id, own, identity.table)
                existing.adopt(identity)
            else:
                registry.add_hook(
                    # The orchestration's end waits for every node's rows; a node waiting too would
                    # only hold up the next node.
                    HISHooks(identity, user=self.user, invocation_flush_millis=0)
                )
            attributes = getattr(executor, "trace_attributes", None)
            if isinstance(attributes, dict):
                attributes[SPAN_ATTR_SESSION_ID] = identity.session_id
                attributes["his.agent_id"] = identity.agent_id

    # -- emitting ---------------------------------------------------------------------------

    def _emit(self, source: Any, run: _Run, evt_type: E, message: str) -> None:
        identity = self._own(source)
        _milestone(
            evt_type,
            message,
            span=run.span,
            session_id=identity.session_id,
            agent_id=identity.agent_id,
            table=identity.table,
        )

    def _guard(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            logger.exception("hook=<%s> | his-otel multi-agent hook failed; the orchestration goes on", what)

    def _run(self, source: Any) -> _Run:
        run = self._runs.get(id(source))
        if run is None:  # the provider was added while a run was under way
            run = self._runs[id(source)] = _Run(started=time.perf_counter())
        return run

    def _announce(self, source: Any, run: _Run) -> None:
        if run.announced:
            return
        run.announced = True
        if run.span is None:
            run.span = trace_api.get_current_span()
        identity = self._own(source)
        run.span.set_attribute(SPAN_ATTR_SESSION_ID, identity.session_id)
        run.span.set_attribute("his.agent_id", identity.agent_id)
        nodes = list((getattr(source, "nodes", None) or {}).keys())
        entry = getattr(getattr(source, "state", None), "current_node", None)  # a Swarm's first node
        entry_points = getattr(source, "entry_points", None) or ([entry] if entry is not None else [])
        starts = ", ".join(sorted(str(getattr(n, "node_id", n)) for n in entry_points))
        listed = ", ".join(map(str, nodes))
        text = f"{kind_of(source)} {identity.agent_id} started: {len(nodes)} nodes ({listed})"
        self._emit(source, run, E.MULTIAGENT_START, f"{text}, starting at {starts}" if starts else text)

    # -- callbacks --------------------------------------------------------------------------

    def _initialized(self, event: MultiAgentInitializedEvent) -> None:
        self._guard("initialized", lambda: self._attach(event.source))

    def _before_run(self, event: BeforeMultiAgentInvocationEvent) -> None:
        def run() -> None:
            self._attach(event.source)
            self._runs[id(event.source)] = _Run(started=time.perf_counter())

        self._guard("before_multiagent_invocation", run)

    def _before_node(self, event: BeforeNodeCallEvent) -> None:
        def go() -> None:
            source, node_id = event.source, event.node_id
            run = self._run(source)
            self._announce(source, run)
            node = (getattr(source, "nodes", None) or {}).get(node_id)
            executor = getattr(node, "executor", None)
            results = getattr(getattr(source, "state", None), "results", None) or {}
            if run.waves and any(other != node_id for other in run.pending):
                run.waves[-1].append(node_id)
            else:
                run.waves.append([node_id])
            run.pending[node_id] = _Pending(
                before=event,
                started=time.perf_counter(),
                previous=results.get(node_id),
                usage=t.usage_of(executor),
                tools=t.tools_of(executor),
            )
            if node_id not in run.nodes:
                kind = kind_of(executor).lower() if isinstance(executor, MultiAgentBase) else "agent"
                agent = str(getattr(executor, "name", None) or node_id)
                run.nodes[node_id] = t.NodeTally(agent=agent, kind=kind)
            if event.cancel_node:
                return  # reported when the node ends, as cancelled
            self._emit(source, run, E.NODE_START, f"Node {node_id} started ({describe(executor)})")

        self._guard("before_node_call", go)

    def _after_node(self, event: AfterNodeCallEvent) -> None:
        def go() -> None:
            source, node_id = event.source, event.node_id
            run = self._run(source)
            pending = run.pending.pop(node_id, None)
            node = (getattr(source, "nodes", None) or {}).get(node_id)
            executor = getattr(node, "executor", None)
            tally = run.nodes.setdefault(node_id, t.NodeTally(agent=node_id, kind="agent"))
            seconds = time.perf_counter() - pending.started if pending else 0.0
            tally.runs += 1
            tally.seconds += seconds
            nested = attached.provider_of(getattr(executor, "hooks", None))
            if isinstance(executor, MultiAgentBase) and isinstance(nested, HISMultiAgentHooks):
                usage, tools = nested.last_usage, nested.last_tools
            elif pending is not None:
                usage = t.minus_usage(t.usage_of(executor), pending.usage)
                tools = t.minus_tools(t.tools_of(executor), pending.tools)
            else:
                usage, tools = {}, {}
            t.add_usage(tally.usage, usage)
            t.add_tools(tally.tools, tools)
            run.history.append(node_id)

            results = getattr(getattr(source, "state", None), "results", None) or {}
            result = results.get(node_id)
            fresh = result is not None and (pending is None or result is not pending.previous)
            cancel = pending.before.cancel_node if pending else False
            if cancel:
                reason = cancel if isinstance(cancel, str) else "node cancelled by user"
                tally.status = "cancelled"
                run.failures.append(f"node {node_id} cancelled: {reason}")
                self._emit(source, run, E.NODE_ERROR, f"Node {node_id} cancelled before it ran: {reason}")
                return
            if not fresh:
                tally.status = "cancelled"
                run.cut.append(node_id)
                text = f"Node {node_id} stopped after {seconds:.2f} s: the run was cancelled"
                self._emit(source, run, E.NODE_ERROR, text)
                return
            status = getattr(result, "status", None)
            tally.status = status.value if isinstance(status, Status) else str(status)
            if status == Status.FAILED:
                why = failure_text(result)
                run.failures.append(f"node {node_id} failed ({why})")
                self._emit(source, run, E.NODE_ERROR, f"Node {node_id} failed after {seconds:.2f} s: {why}")
                return
            calls = t.tool_calls(tools)
            self._emit(
                source,
                run,
                E.NODE_COMPLETION,
                f"Node {node_id} completed in {seconds:.2f} s ({usage.get('totalTokens', 0)} tokens,"
                f" {calls} tool call{'' if calls == 1 else 's'})",
            )
            state = getattr(source, "state", None)
            target = getattr(state, "handoff_node", None)
            if target is not None:
                run.handoffs += 1
                note = getattr(state, "handoff_message", None)
                to = getattr(target, "node_id", target)
                self._emit(source, run, E.HANDOFF, f"{node_id} -> {to}" + (f": {note}" if note else ""))

        self._guard("after_node_call", go)

    def _after_run(self, event: AfterMultiAgentInvocationEvent) -> None:
        source = event.source
        run = self._runs.pop(id(source), None) or _Run(started=time.perf_counter())
        seconds = time.perf_counter() - run.started
        kind = kind_of(source)
        status = status_of(source)
        name = self._own(source).agent_id

        def outcome() -> None:
            self._announce(source, run)
            if status == Status.COMPLETED:
                path = " -> ".join(" + ".join(wave) for wave in run.waves) or "no node ran"
                text = f"{kind} {name} completed in {seconds:.2f} s: {path}"
                self._emit(source, run, E.MULTIAGENT_COMPLETION, text)
            elif status == Status.INTERRUPTED:
                self._emit(source, run, E.INTERRUPT, self._interrupt_text(source, kind, name))
            elif status == Status.FAILED:
                why = "; ".join(run.failures) or "stopped by one of its limits (hand-offs, iterations, time)"
                text = f"{kind} {name} failed after {seconds:.2f} s: {why}"
                self._emit(source, run, E.MULTIAGENT_ERROR, text)
            else:
                running = ", ".join([*run.cut, *run.pending]) or "between nodes"
                text = f"{kind} {name} cancelled after {seconds:.2f} s ({running})"
                self._emit(source, run, E.MULTIAGENT_ERROR, text)

        def stats() -> None:
            text, self.last_usage, self.last_tools = t.stats_payload(
                kind=kind.lower(),
                orchestration_id=str(getattr(source, "id", name)),
                status=status.value if status is not None and status != Status.EXECUTING else "cancelled",
                seconds=seconds,
                history=run.history,
                handoffs=run.handoffs,
                nodes=run.nodes,
                user=self.user,
            )
            self._emit(source, run, E.MULTIAGENT_STATS, text)

        self._guard("after_multiagent_invocation", outcome)
        self._guard("multiagent_stats", stats)

    def _interrupt_text(self, source: Any, kind: str, name: str) -> str:
        state = getattr(source, "state", None)
        where = [getattr(n, "node_id", str(n)) for n in getattr(state, "interrupted_nodes", None) or ()]
        current = getattr(state, "current_node", None)
        if not where and current is not None:
            where = [str(getattr(current, "node_id", current))]
        interrupt_state = getattr(source, "_interrupt_state", None)
        interrupts = list((getattr(interrupt_state, "interrupts", None) or {}).values())
        asks = ", ".join(
            str(getattr(i, "name", "?")) + (f" ({i.reason})" if getattr(i, "reason", None) else "")
            for i in interrupts
        )
        at = f" at {', '.join(sorted(where))}" if where else ""
        return f"{kind} {name} interrupted{at}, waiting for a response" + (f": {asks}" if asks else "")[:1000]

    async def _settle(self, event: AfterMultiAgentInvocationEvent) -> None:
        await settle(trace_api.get_current_span(), self.invocation_flush_s)
