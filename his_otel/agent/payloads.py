"""The JSON payloads of AGENT_STATS and RESULT rows, with here-i-strand's field names."""

from __future__ import annotations

import json
import re
from typing import Any


def jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def agent_stats(result: Any, *, user: Any, execution_time_in_seconds: float, model_id: str | None) -> str:
    """AGENT_STATS as here-i-strand wrote it: token usage, cache tokens, user, time, tools, model."""
    metrics = getattr(result, "metrics", None)
    usage: dict[str, Any] = dict(getattr(metrics, "accumulated_usage", None) or {})
    tool_metrics: dict[str, Any] = dict(getattr(metrics, "tool_metrics", None) or {})
    stats = {
        "total_tokens": usage.get("totalTokens", 0),
        "input_tokens": usage.get("inputTokens", 0),
        "output_tokens": usage.get("outputTokens", 0),
        "cache_write_tokens": usage.get("cacheWriteInputTokens", 0),
        "cache_read_tokens": usage.get("cacheReadInputTokens", 0),
        "user": jsonable(user),
        "execution_time_in_seconds": execution_time_in_seconds,
        "tools": {
            name: {
                "call_count": getattr(tm, "call_count", 0),
                "success_count": getattr(tm, "success_count", 0),
                "error_count": getattr(tm, "error_count", 0),
                "total_time": getattr(tm, "total_time", 0.0),
            }
            for name, tm in tool_metrics.items()
        },
        "model_id": model_id,
    }
    return json.dumps(stats, default=str)


def final_text(result: Any, messages: list[Any] | None) -> str:
    """The last non-empty assistant text: from the result's message, else from the history."""
    candidates = [getattr(result, "message", None) or {}, *reversed(messages or [])]
    for msg in candidates:
        if not isinstance(msg, dict) or msg.get("role") != "assistant":
            continue
        for block in msg.get("content") or []:
            text = (block or {}).get("text") if isinstance(block, dict) else None
            if isinstance(text, str) and text.strip():
                return text.strip()
    return ""


def extract_json(text: str) -> Any:
    """Best-effort JSON from model text (here-i-strand's rules); ``{"raw": text}`` when there is none."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    fenced = re.search(r"```(?:json)?\s*(.+?)```", text, re.DOTALL | re.IGNORECASE)
    if fenced:
        try:
            return json.loads(fenced.group(1).strip())
        except json.JSONDecodeError:
            pass
    match = re.search(r"(\{.*\}|\[.*\])", text, re.DOTALL)
    if match:
        try:
            return json.loads(match.group(1))
        except json.JSONDecodeError:
            pass
    start = text.find("{")
    if start != -1:
        try:
            payload, _ = json.JSONDecoder().raw_decode(text[start:])
            return payload
        except ValueError:
            pass
    return {"raw": text}


def result_payload(result: Any, messages: list[Any] | None) -> str | None:
    """RESULT: the structured output when there is one, else JSON extracted from the final text."""
    structured = getattr(result, "structured_output", None)
    if structured is not None and hasattr(structured, "model_dump"):
        return json.dumps(structured.model_dump(mode="json"), default=str)
    text = final_text(result, messages)
    if not text:
        return None
    return json.dumps(extract_json(text), default=str)
