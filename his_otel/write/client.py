"""The DynamoDB client: who builds it, with which region, and what a forked child does with it."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .. import config
from . import request_body

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientSource:
    """How to get a DynamoDB client: the caller's client wins, then a session, then boto3's defaults."""

    client: Any = None
    session: Any = None
    region_name: str | None = None
    endpoint_url: str | None = None

    @property
    def owned(self) -> bool:
        """True when his-otel builds the client (and so may rebuild it in a forked child)."""
        return self.client is None

    def factory(self) -> Callable[[], Any]:
        if self.client is not None:
            caller_client = self.client
            return lambda: insist_on_dynamodb(caller_client)
        return lambda: insist_on_dynamodb(request_body.install(self._build()))

    def _build(self) -> Any:
        import boto3
        from botocore.config import Config

        cfg = Config(
            # Items are built by schema.to_item, never by hand; DynamoDB still validates them. The
            # client-side check was about a fifth of each call's CPU, on a thread sharing the GIL.
            parameter_validation=False,
            connect_timeout=2,
            read_timeout=5,
            retries={"mode": "standard", "max_attempts": 2},
            max_pool_connections=16,
        )
        if self.session is not None:
            return self.session.client(
                "dynamodb", region_name=self.region_name, endpoint_url=self.endpoint_url, config=cfg
            )
        kwargs = client_arguments(self.endpoint_url, self.region_name)
        return boto3.session.Session().client("dynamodb", config=cfg, **kwargs)


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# What DynamoDB Local and moto accept; never sent anywhere but a loopback endpoint.
PLACEHOLDER_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
LOOPBACK_REGION = "us-east-1"


def configured_endpoint(endpoint_url: str | None = None) -> str | None:
    """The DynamoDB endpoint boto3 will use: the argument, else its two environment variables."""
    return (
        endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB", "").strip()
        or os.environ.get("AWS_ENDPOINT_URL", "").strip()
        or None
    )


def is_loopback(endpoint: str | None) -> bool:
    return bool(endpoint) and urlsplit(str(endpoint)).hostname in LOOPBACK_HOSTS


def _local_credentials_configured(session: Any) -> bool:
    """Whether botocore finds credentials without asking the network (instance or container roles)."""
    resolver = session.get_component("credential_provider")
    for remote in ("container-role", "iam-role"):
        with contextlib.suppress(Exception):
            resolver.remove(remote)
    try:
        return resolver.load_credentials() is not None
    except Exception:
        return False


def client_arguments(endpoint_url: str | None, region_name: str | None = None) -> dict[str, Any]:
    """boto3 ``client()`` arguments for DynamoDB: the region from AWS_REGION too (botocore reads only
    AWS_DEFAULT_REGION), and for a loopback endpoint (DynamoDB Local, moto) whatever is missing of a
    region and credentials, so a local table works in a fresh shell."""
    region = region_name or config.resolve_region()
    kwargs: dict[str, Any] = {"endpoint_url": endpoint_url, "region_name": region}
    if is_loopback(configured_endpoint(endpoint_url)):
        import botocore.session

        session = botocore.session.get_session()
        if region is None and not _profile_region(session):
            kwargs["region_name"] = LOOPBACK_REGION
        if not _local_credentials_configured(session):
            kwargs.update(PLACEHOLDER_CREDENTIALS)
    return kwargs


def _profile_region(session: Any) -> str | None:
    """The region of boto3's default profile, if it names one."""
    try:
        return session.get_config_variable("region")  # type: ignore[no-any-return]
    except Exception:
        return None


def drop_inherited_connections(client: Any) -> None:
    """Close, in a forked child, the pooled connections a caller's client inherited from its parent.

    Parent and child would otherwise share keep-alive sockets and read each other's responses.
    Closing the child's copies of the descriptors leaves the parent's connections open. This reaches
    into botocore's endpoint (``_endpoint.http_session``): there is no public way to reset a pool.
    """
    try:
        client._endpoint.http_session.close()
    except Exception:
        logger.warning(
            "client=<%s> | could not reset the inherited connection pool in a forked child; pass no"
            " client (his-otel then builds its own per process) to be fork-safe",
            type(client).__name__,
        )


class NotDynamoDBError(Exception):
    """The endpoint answered, but not as DynamoDB does (a web UI or another service answering 200)."""


# DynamoDB (and DynamoDB Local, moto, dynalite) answer every call in its JSON 1.0 protocol.
_DYNAMODB_CONTENT_TYPE = "application/x-amz-json-1"


def _answers_like_dynamodb(http_response: Any = None, **kwargs: Any) -> None:
    """botocore ``after-call`` hook: a success is one only in DynamoDB's own terms. botocore parses a
    200 ``text/html`` page as an empty answer, which would count every row as written."""
    headers = getattr(http_response, "headers", None)
    if headers is None:
        return  # a stubbed client (botocore's Stubber): no HTTP at all
    kind = str(headers.get("content-type", ""))
    ok = int(getattr(http_response, "status_code", 200)) < 300
    if ok and not kind.startswith(_DYNAMODB_CONTENT_TYPE):
        url = str(getattr(http_response, "url", "") or "the endpoint")
        endpoint = url.split("?", 1)[0]
        raise NotDynamoDBError(
            f"{endpoint} did not answer like DynamoDB (HTTP {http_response.status_code}, {kind or 'no'}"
            " content type): check AWS_ENDPOINT_URL_DYNAMODB / endpoint_url"
        )


def insist_on_dynamodb(client: Any) -> Any:
    """Make ``client`` raise :class:`NotDynamoDBError` for an answer that is not DynamoDB's."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is not None:
        events.register("after-call.dynamodb", _answers_like_dynamodb, unique_id="his-otel-insist-dynamodb")
    return client
