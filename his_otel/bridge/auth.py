"""Who may write through the bridge: a bearer token, required wherever strangers can connect.

A bridge that listens beyond loopback without a token lets anyone who reaches it write status rows
(append-only writes stop them rewriting rows, not adding false ones), so that needs an explicit opt-in.
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from .. import config

ENV_TOKEN = "HIS_OTEL_BRIDGE_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_TOKEN_FILE = "HIS_OTEL_BRIDGE_TOKEN_FILE"  # noqa: S105
ENV_ALLOW_UNAUTHENTICATED = "HIS_OTEL_BRIDGE_ALLOW_UNAUTHENTICATED"


def resolve_token(
    token: str | None, token_file: str | None, env: str = ENV_TOKEN, env_file: str = ENV_TOKEN_FILE
) -> str | None:
    """The token: the argument, then ``env`` (``HIS_OTEL_BRIDGE_TOKEN``), then the file the argument
    or ``env_file`` (``HIS_OTEL_BRIDGE_TOKEN_FILE``) names (a mounted secret; surrounding whitespace
    ignored)."""
    value = config.resolve_str(token, env)
    if value:
        return value
    path = config.resolve_str(token_file, env_file)
    if not path:
        return None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ValueError(f"cannot read the token file {path!r}: {e.strerror or e}") from e
    if not value:
        raise ValueError(f"the token file {path!r} is empty")
    return value


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(
    host: str,
    token: str | None,
    allow_unauthenticated: bool | None,
    *,
    env: str = ENV_TOKEN,
    env_file: str = ENV_TOKEN_FILE,
    env_allow: str = ENV_ALLOW_UNAUTHENTICATED,
    danger: str = "write status rows",
) -> None:
    """Refuse to listen beyond loopback without a token unless explicitly allowed."""
    allowed = allow_unauthenticated if allow_unauthenticated is not None else config.env_flag(env_allow)
    if token is None and not allowed and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} without a token: anyone who reaches it could {danger}."
            f" Set {env} (or {env_file}), or pass --allow-unauthenticated"
            f" ({env_allow}=1) if a network policy already keeps strangers out"
        )


class TokenCheck:
    """``Authorization: Bearer <token>``; the scheme is case-insensitive (RFC 9110), the token is not."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    def allows(self, authorization: str | None) -> bool:
        if self._token is None:
            return True
        scheme, _, supplied = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(supplied.strip().encode(), self._token)
