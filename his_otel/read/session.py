"""Reading a session's rows back, in sort-key (emission) order."""

from __future__ import annotations

from typing import Any


def _plain(item: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, typed in item.items():
        ((kind, value),) = typed.items()
        out[key] = int(value) if kind == "N" else value
    return out


def session_rows(
    client: Any, table: str, session_id: str, *, after: str | None = None
) -> list[dict[str, Any]]:
    """A session's rows in ``event_id`` order (emission order), optionally only those after ``after``."""
    condition = "session_id = :s"
    values: dict[str, Any] = {":s": {"S": session_id}}
    if after:
        condition += " AND event_id > :e"
        values[":e"] = {"S": after}
    rows: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": values,
        "ConsistentRead": True,
    }
    while True:
        page = client.query(**kwargs)
        rows.extend(_plain(item) for item in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return rows
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
