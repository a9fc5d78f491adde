"""here-i-strand's remaining public names, writing through his-otel's pipeline: the
``event_loop_tracker`` callback handler, the ``HISBedrockThrottlingLogger`` hook provider for plain
``strands.Agent``s, and the logging set-up ``import his`` did (offered here as an opt-in call).

Each writes to the table, session and agent id its caller names, as here-i-strand's did: these are
the developer's code, not the model's (the model's ``write_dynamo`` calls never choose).
"""

from __future__ import annotations

import logging
from typing import Any

from strands.hooks import AfterModelCallEvent, HookProvider, HookRegistry
from strands.types.exceptions import ModelThrottledException

from ..emit import milestone
from ..schema import EventType
from ..tracing import ensure_configured
from .hooks import throttling_message

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "AgentCoreAgentStatus"  # here-i-strand's default for event_loop_tracker


def record(table: str, session_id: str, agent_id: str, evt_type: str, message: str) -> str | None:
    """One milestone for an explicit destination, on the current span; its event id, or None."""
    ensure_configured(table)
    return milestone(evt_type, message, session_id=session_id, agent_id=agent_id, table=table)


def event_loop_tracker(**kwargs: Any) -> None:
    """here-i-strand's callback handler: ``EVENT_LOOP`` rows ``init_event_loop``, ``result`` and
    ``force_stop``, for a plain ``strands.Agent``::

        Agent(callback_handler=partial(event_loop_tracker, status_dynamo_table_name="AgentStatus",
                                       session_id="s-1", agent_id="a-1"))

    A HISAgent records these rows itself; do not give it this handler too.
    """
    if kwargs.get("init_event_loop"):
        message = "init_event_loop"
    elif "result" in kwargs:
        message = "result"
    elif kwargs.get("force_stop"):
        message = "force_stop"  # the reason is in the invocation's ERROR row and the log, not here
    else:
        return
    try:
        record(
            str(kwargs.get("status_dynamo_table_name", DEFAULT_TABLE)),
            str(kwargs.get("session_id", "default")),
            str(kwargs.get("agent_id", "default")),
            EventType.EVENT_LOOP,
            message,
        )
    except Exception:
        logger.exception("event_loop_tracker could not record %s; the agent goes on", message)


class HISBedrockThrottlingLogger(HookProvider):
    """here-i-strand's hook provider for plain ``strands.Agent``s: a ``BEDROCK_THROTTLING`` row each
    time a model call is throttled. It changes no retry behaviour. A HISAgent records these itself.

    Args:
        table_name: The status table.
        session_id: The session the rows belong to.
        agent_id: The agent id on the rows.
    """

    def __init__(self, *, table_name: str, session_id: str, agent_id: str = "default") -> None:
        self._table_name = table_name
        self._session_id = session_id
        self._agent_id = agent_id
        ensure_configured(table_name)

    def register_hooks(self, registry: HookRegistry, **kwargs: Any) -> None:
        registry.add_callback(AfterModelCallEvent, self._after_model_call)

    def _after_model_call(self, event: AfterModelCallEvent) -> None:
        if not isinstance(event.exception, ModelThrottledException):
            return
        try:
            message = throttling_message(event)
            record(self._table_name, self._session_id, self._agent_id, EventType.BEDROCK_THROTTLING, message)
        except Exception:
            logger.exception(
                "HISBedrockThrottlingLogger could not record a throttling row; the agent goes on"
            )


def configure_logging(level: int = logging.INFO) -> logging.Logger:
    """What ``import his`` did on import, as an opt-in call: ``logging.basicConfig`` at ``level``
    with here-i-strand's format, and the ``strands`` logger at ``level``. his-otel never configures
    logging by itself (a library must not); call this once at startup if your app relied on it.
    Returns the ``his_otel`` logger."""
    logging.basicConfig(level=level, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    logging.getLogger("strands").setLevel(level)
    his_logger = logging.getLogger("his_otel")
    his_logger.setLevel(level)
    return his_logger
