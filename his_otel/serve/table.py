"""The status table: create it, and read a session's rows in order."""

from __future__ import annotations

from typing import Any

from ..schema import KEY_EVENT_ID, KEY_SESSION_ID


def create_table(client: Any, name: str, *, wait: bool = True) -> bool:
    """Create the status table (on-demand billing). Returns False when it already existed."""
    try:
        client.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": KEY_SESSION_ID, "AttributeType": "S"},
                {"AttributeName": KEY_EVENT_ID, "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": KEY_SESSION_ID, "KeyType": "HASH"},
                {"AttributeName": KEY_EVENT_ID, "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except client.exceptions.ResourceInUseException:
        return False
    if wait:
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return True


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
