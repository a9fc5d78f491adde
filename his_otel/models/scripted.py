"""``ScriptedModel``: an offline ``strands.models.Model`` that plays back a script of turns.

For the demo and for tests (yours and ours): real Strands agent runs, real tools, real spans, no
Bedrock. Each call to the model plays the next turn:

- a ``str``: the model answers with that text and ends its turn;
- a :class:`ToolCall` or a list of them: the model asks for those tools (run concurrently);
- an ``Exception`` instance: the model call raises it (``ModelThrottledException`` to test
  throttling);
- a callable taking the messages and returning any of the above: a turn decided at run time.

Usage figures are estimated from text length so AGENT_STATS has believable numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from strands.models import Model
from strands.types.content import Messages
from strands.types.event_loop import StopReason
from strands.types.streaming import StreamEvent
from strands.types.tools import ToolSpec

T = TypeVar("T", bound=BaseModel)

_ids = itertools.count(1)


@dataclass(frozen=True)
class ToolCall:
    """The model asks for tool ``name`` with ``input``."""

    name: str
    input: dict[str, Any] = field(default_factory=dict)
    tool_use_id: str = ""


Turn = str | ToolCall | Sequence[ToolCall] | BaseException | Callable[[Messages], Any]


class ScriptExhaustedError(RuntimeError):
    """The agent called the model more times than the script has turns."""


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class ScriptedModel(Model):
    """Plays back ``turns``, one per model call.

    Args:
        turns: The script.
        model_id: Reported as the model id (AGENT_STATS ``model_id``).
        delay_s: Sleep before each turn, to make runs take time (asyncio sleep; cancellable).
        loop: Start the script again when it runs out, instead of raising :class:`ScriptExhaustedError`.
    """

    def __init__(
        self,
        turns: Sequence[Turn],
        *,
        model_id: str = "scripted-model",
        delay_s: float = 0.0,
        loop: bool = False,
    ) -> None:
        self._turns = list(turns)
        self._config: dict[str, Any] = {"model_id": model_id}
        self._delay_s = delay_s
        self._loop = loop
        self._index = 0
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        """How many turns were played."""
        return self._index

    def update_config(self, **model_config: Any) -> None:
        self._config.update(model_config)

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)

    def _next_turn(self, messages: Messages) -> Any:
        with self._lock:
            if self._index >= len(self._turns) and not (self._loop and self._turns):
                raise ScriptExhaustedError(
                    f"script has {len(self._turns)} turns; call {self._index + 1} asked for more"
                )
            turn = self._turns[self._index % len(self._turns)]
            self._index += 1
        if callable(turn) and not isinstance(turn, (ToolCall, BaseException)):
            turn = turn(messages)
        return turn

    async def stream(
        self,
        messages: Messages,
        tool_specs: list[ToolSpec] | None = None,
        system_prompt: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterable[StreamEvent]:
        turn = self._next_turn(messages)
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        if isinstance(turn, BaseException):
            raise turn
        input_tokens = _tokens(json.dumps(messages, default=str)) + _tokens(system_prompt or "")
        yield {"messageStart": {"role": "assistant"}}
        if isinstance(turn, str):
            yield {"contentBlockStart": {"start": {}}}
            yield {"contentBlockDelta": {"delta": {"text": turn}}}
            yield {"contentBlockStop": {}}
            stop_reason: StopReason = "end_turn"
            output_tokens = _tokens(turn)
        else:
            calls = [turn] if isinstance(turn, ToolCall) else list(turn)
            output_tokens = 0
            for call in calls:
                tool_use_id = call.tool_use_id or f"tooluse_{next(_ids)}"
                payload = json.dumps(call.input)
                output_tokens += _tokens(payload)
                yield {
                    "contentBlockStart": {"start": {"toolUse": {"name": call.name, "toolUseId": tool_use_id}}}
                }
                yield {"contentBlockDelta": {"delta": {"toolUse": {"input": payload}}}}
                yield {"contentBlockStop": {}}
            stop_reason = "tool_use"
        yield {"messageStop": {"stopReason": stop_reason}}
        yield {
            "metadata": {
                "usage": {
                    "inputTokens": input_tokens,
                    "outputTokens": output_tokens,
                    "totalTokens": input_tokens + output_tokens,
                },
                "metrics": {"latencyMs": int(self._delay_s * 1000)},
            }
        }

    async def structured_output(
        self, output_model: type[T], prompt: Messages, system_prompt: str | None = None, **kwargs: Any
    ) -> AsyncGenerator[dict[str, T | Any], None]:
        turn = self._next_turn(prompt)
        if isinstance(turn, BaseException):
            raise turn
        data = json.loads(turn) if isinstance(turn, str) else turn
        yield {"output": output_model.model_validate(data)}
