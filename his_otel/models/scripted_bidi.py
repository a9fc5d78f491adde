"""``ScriptedBidiModel``: an offline ``strands.bidi`` model that plays back a voice session.

For the demo and for tests: a real ``BidiAgent`` session (its loop, tools, hooks, restarts and
spans) with no Bedrock connection. Every complete message the agent sends (the user's text, or a
tool group's results) plays the next turn as one response. A turn is one beat or a list of them:

- a ``str``: the model says it (a text block);
- :class:`Speech`: the model speaks (an assistant transcript and audio chunks);
- a :class:`~his_otel.ToolCall`: the model asks for a tool; the turn ends there and the tool's
  result plays the next turn;
- :data:`BARGE_IN`: the user talks over the model; the rest of the turn is dropped;
- a ``ConnectionTimeoutError``: the connection times out (the agent restarts it); the rest of the
  turn plays on the new connection, as a provider that resumes would.

Each response ends with a usage event whose figures are estimated from text length.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from strands.bidi.models.model import BidiModel, ConnectionTimeoutError
from strands.bidi.types.content import BidiContentDelta, BidiMessage
from strands.bidi.types.events import (
    BidiAudioDeltaEvent,
    BidiBargeInEvent,
    BidiOutputEvent,
    BidiResponseStartEvent,
    BidiResponseStopEvent,
    BidiTextDeltaEvent,
    BidiTextStartEvent,
    BidiTextStopEvent,
    BidiToolUseBlocksEvent,
    BidiTranscriptDeltaEvent,
    BidiTranscriptStartEvent,
    BidiTranscriptStopEvent,
    BidiUsageEvent,
)
from strands.types.content import Messages
from strands.types.tools import ToolSpec

from .scripted import ScriptExhaustedError, ToolCall

_ids = itertools.count(1)
_SILENCE = base64.b64encode(bytes(320)).decode()  # 10 ms of 16 kHz 16-bit mono silence


@dataclass(frozen=True)
class Speech:
    """The model speaks ``text``: an assistant transcript and ``chunks`` audio deltas."""

    text: str
    chunks: int = 2


class _BargeIn:
    def __repr__(self) -> str:
        return "BARGE_IN"


BARGE_IN: Any = _BargeIn()
"""A beat: the user barges in (talks over the model)."""

Beat = str | Speech | ToolCall | _BargeIn | ConnectionTimeoutError
BidiTurn = Beat | Sequence[Beat]


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class ScriptedBidiModel(BidiModel):
    """Plays back ``turns``, one per complete message the agent sends.

    Args:
        turns: The script.
        model_id: Reported as the model id.
        delay_s: Sleep before each turn (asyncio; cancellable), to make a session take time.
        connection: Strands' ``ConnectionConfig`` (e.g. ``{"restart_after_s": ...}``).
    """

    def __init__(
        self,
        turns: Sequence[BidiTurn],
        *,
        model_id: str = "scripted-bidi-model",
        delay_s: float = 0.0,
        connection: dict[str, Any] | None = None,
    ) -> None:
        self._turns = list(turns)
        self._config: dict[str, Any] = {"model_id": model_id}
        if connection is not None:
            self._config["connection"] = dict(connection)
        self._delay_s = delay_s
        self._index = 0
        self._queue: asyncio.Queue[list[Beat] | None] | None = None
        self._carry: list[Beat] = []
        self._responses = itertools.count(1)
        self.starts = 0
        self.received: list[BidiMessage] = []
        self.audio_received = 0

    @property
    def turns_played(self) -> int:
        return self._index

    def update_config(self, **model_config: Any) -> None:
        self._config.update(model_config)

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)

    async def start(
        self,
        system_prompt: str | None = None,
        tools: list[ToolSpec] | None = None,
        messages: Messages | None = None,
        **kwargs: Any,
    ) -> None:
        self.starts += 1
        self._queue = asyncio.Queue()
        if self._carry:
            self._queue.put_nowait(self._carry)
            self._carry = []

    async def stop(self) -> None:
        if self._queue is not None:
            self._queue.put_nowait(None)  # ends this connection's receive()
            self._queue = None

    async def send(self, content: BidiMessage | BidiContentDelta) -> None:
        if not isinstance(content, BidiMessage):
            self.audio_received += 1
            return
        if self._queue is None:
            raise RuntimeError("connection not started | call start before send")
        self.received.append(content)
        if self._index >= len(self._turns):
            raise ScriptExhaustedError(
                f"script has {len(self._turns)} turns; message {self._index + 1} asked for more"
            )
        turn = self._turns[self._index]
        self._index += 1
        beats: list[Beat] = list(turn) if isinstance(turn, (list, tuple)) else [cast(Beat, turn)]
        self._queue.put_nowait(beats)

    def receive(self) -> AsyncIterable[BidiOutputEvent]:
        return self._receive()

    async def _receive(self) -> AsyncIterator[BidiOutputEvent]:
        queue = self._queue
        if queue is None:
            raise RuntimeError("connection not started | call start before receive")
        while True:
            beats = await queue.get()
            if beats is None:
                return
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            async for event in self._play(beats):
                yield event

    async def _play(self, beats: list[Beat]) -> AsyncIterator[BidiOutputEvent]:
        response_id = f"response-{next(self._responses)}"
        yield BidiResponseStartEvent(response_id)
        output = 0
        for i, beat in enumerate(beats):
            if isinstance(beat, ConnectionTimeoutError):
                self._carry = beats[i + 1 :]
                raise beat
            if isinstance(beat, _BargeIn):
                yield BidiBargeInEvent()
                return
            if isinstance(beat, ToolCall):
                tool_use_id = beat.tool_use_id or f"tooluse_{next(_ids)}"
                output += _tokens(json.dumps(beat.input))
                yield BidiToolUseBlocksEvent(
                    [{"toolUseId": tool_use_id, "name": beat.name, "input": beat.input}]
                )
                break
            content_id = f"content-{next(_ids)}"
            if isinstance(beat, Speech):
                yield BidiTranscriptStartEvent("assistant", content_id)
                yield BidiTranscriptDeltaEvent(beat.text, "assistant", content_id)
                yield BidiTranscriptStopEvent("assistant", content_id)
                for _ in range(beat.chunks):
                    yield BidiAudioDeltaEvent(_SILENCE, "pcm", 16000, 1, f"audio-{content_id}")
                output += _tokens(beat.text)
            else:
                yield BidiTextStartEvent(content_id)
                yield BidiTextDeltaEvent(str(beat), content_id)
                yield BidiTextStopEvent(content_id)
                output += _tokens(str(beat))
        heard = _tokens(json.dumps([str(m) for m in self.received[-1:]]))
        yield BidiUsageEvent(input_tokens=heard, output_tokens=output, total_tokens=heard + output)
        yield BidiResponseStopEvent(response_id)
