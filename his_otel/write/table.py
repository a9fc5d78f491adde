"""The status table's administration: reach DynamoDB, create the table, and explain in a sentence
what to do when boto3 cannot."""

from __future__ import annotations

from typing import Any

from ..schema import KEY_EVENT_ID, KEY_SESSION_ID
from .client import NotDynamoDBError, client_arguments, insist_on_dynamodb


class TableError(Exception):
    """A problem with DynamoDB that the user can fix, stated as what to do."""


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


def make_client(endpoint: str | None) -> Any:
    import boto3

    try:
        return insist_on_dynamodb(boto3.client("dynamodb", **client_arguments(endpoint)))
    except Exception as e:  # botocore's NoRegionError and friends
        raise explain(e, endpoint) from e


def explain(e: Exception, endpoint: str | None) -> TableError:
    """Turn boto3's errors into sentences that say what to do."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

    where = endpoint or "AWS"
    if isinstance(e, NoCredentialsError):
        return TableError(
            "no AWS credentials found. Set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or point"
            " --endpoint at a local DynamoDB (`his-otel demo` starts one for you)."
        )
    if isinstance(e, NoRegionError):
        return TableError(
            "no AWS region configured: neither AWS_REGION nor AWS_DEFAULT_REGION is set and the AWS"
            " profile names none. Set AWS_REGION (e.g. export AWS_REGION=us-east-1)."
        )
    if isinstance(e, EndpointConnectionError):
        return TableError(f"cannot reach DynamoDB at {where}: {e}")
    if isinstance(e, NotDynamoDBError):
        return TableError(f"{e}: is the endpoint a DynamoDB one?")
    not_dynamodb = f"{where} did not answer like DynamoDB"
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        message = str(e.response.get("Error", {}).get("Message", ""))
        if code.isdigit() or message.lstrip().startswith("<"):
            # DynamoDB errors are JSON with an exception name; this is some other HTTP server.
            return TableError(f"{not_dynamodb} (HTTP {code or '?'}): is the endpoint a DynamoDB one?")
        if code == "ResourceNotFoundException":
            return TableError(f"table not found at {where}. Create it with: his-otel create-table NAME")
        return TableError(f"DynamoDB at {where} refused the request ({code}): {_first_line(message)}")
    if type(e).__module__.startswith("botocore"):
        return TableError(f"{not_dynamodb}: {type(e).__name__}: {_first_line(str(e))}")
    return TableError(f"{type(e).__name__}: {_first_line(str(e))}")


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
