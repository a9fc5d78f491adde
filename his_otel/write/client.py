"""The DynamoDB client: who builds it, with which region, and what a forked child does with it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import config

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
            return lambda: caller_client
        return self._build

    def _build(self) -> Any:
        import boto3
        from botocore.config import Config

        sess = self.session or boto3.session.Session()
        cfg = Config(
            # Items are built by schema.to_item, never by hand; DynamoDB still validates them. The
            # client-side check was about a fifth of each call's CPU, on a thread sharing the GIL.
            parameter_validation=False,
            connect_timeout=2,
            read_timeout=5,
            retries={"mode": "standard", "max_attempts": 2},
            max_pool_connections=16,
        )
        # botocore reads AWS_DEFAULT_REGION but not AWS_REGION (what Lambda and AgentCore set).
        region = self.region_name or (None if self.session else config.resolve_region())
        return sess.client("dynamodb", region_name=region, endpoint_url=self.endpoint_url, config=cfg)


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
