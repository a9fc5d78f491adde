"""``TimeoutConcurrentToolExecutor``: here-i-strand's per-tool timeout, plus a milestone when it fires."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from strands.tools.executors import ConcurrentToolExecutor
from strands.tools.executors._executor import ToolExecutor
from strands.types._events import ToolResultEvent
from strands.types.tools import ToolResult, ToolUse

from ..emit import milestone
from ..schema import TOOL_TIMEOUT

if TYPE_CHECKING:
    from strands import Agent

logger = logging.getLogger(__name__)

"""The milestone type recorded when a tool is cut off (the run goes on, so it is not an ERROR)."""


class TimeoutConcurrentToolExecutor(ConcurrentToolExecutor):
    """Runs tools concurrently; a tool that exceeds ``timeout_seconds`` gets an error result.

    The other tools of the same turn go on; the model sees the timed-out tool's error and decides.

    Args:
        timeout_seconds: Most time one tool call may take. Defaults to 300 s.
    """

    def __init__(self, timeout_seconds: float = 300.0) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds!r}")
        self.timeout_seconds = timeout_seconds

    async def _task(
        self,
        agent: Agent,
        tool_use: ToolUse,
        tool_results: list[ToolResult],
        cycle_trace: Any,
        cycle_span: Any,
        invocation_state: dict[str, Any],
        task_id: int,
        task_queue: asyncio.Queue[Any],
        task_event: asyncio.Event,
        stop_event: object,
        structured_output_context: Any,
    ) -> None:
        tool_use_id = str(tool_use.get("toolUseId", ""))
        tool_name = str(tool_use.get("name", "unknown"))

        async def run_tool() -> None:
            # Strands' own per-tool loop, so asyncio.wait_for can cut it off.
            events = ToolExecutor._stream_with_trace(
                agent,
                tool_use,
                tool_results,
                cycle_trace,
                cycle_span,
                invocation_state,
                structured_output_context,
            )
            async for event in events:
                task_queue.put_nowait((task_id, event))
                await task_event.wait()
                task_event.clear()

        try:
            await asyncio.wait_for(run_tool(), timeout=self.timeout_seconds)
        except asyncio.TimeoutError:
            logger.warning(
                "tool=<%s>, tool_use_id=<%s>, timeout_s=<%s> | tool timed out",
                tool_name,
                tool_use_id,
                self.timeout_seconds,
            )
            error_result: ToolResult = {
                "toolUseId": tool_use_id,
                "status": "error",
                "content": [{"text": f"Tool execution timed out after {self.timeout_seconds}s."}],
            }
            tool_results.append(error_result)
            identity = getattr(agent, "his_identity", None)
            milestone(
                TOOL_TIMEOUT,
                f"Tool {tool_name} timed out after {self.timeout_seconds}s",
                span=cycle_span,
                session_id=getattr(identity, "session_id", None),
                agent_id=getattr(identity, "agent_id", None),
                table=getattr(identity, "table", None),
            )
            task_queue.put_nowait((task_id, ToolResultEvent(error_result)))
        except Exception as e:
            task_queue.put_nowait((task_id, e))
        finally:
            task_queue.put_nowait((task_id, stop_event))
