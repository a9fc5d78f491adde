"""Names of every environment variable his-otel reads, and how a value is resolved.

Precedence everywhere: an explicit argument, then the environment, then the default. One rule for
every setting: a bad value, argument or environment variable alike, raises :class:`InvalidSettingError`
(a ``ValueError``) where it is read, naming the setting, the value and what is expected. his-otel
never falls back to a default in silence: ``HIS_OTEL_MESSAGE_MODE=dropp`` would otherwise keep full
model text in every row and span, and a port or a yes/no that is not one would change what runs.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

# Ours.
ENV_TABLE = "HIS_OTEL_TABLE"
ENV_MAX_QUEUE_SIZE = "HIS_OTEL_MAX_QUEUE_SIZE"
ENV_MAX_QUEUE_BYTES = "HIS_OTEL_MAX_QUEUE_BYTES"
ENV_SCHEDULE_DELAY_MS = "HIS_OTEL_SCHEDULE_DELAY_MS"
ENV_EXPORT_TIMEOUT_MS = "HIS_OTEL_EXPORT_TIMEOUT_MS"
ENV_SHUTDOWN_TIMEOUT_MS = "HIS_OTEL_SHUTDOWN_TIMEOUT_MS"
ENV_MAX_MESSAGE_BYTES = "HIS_OTEL_MAX_MESSAGE_BYTES"
ENV_MESSAGE_MODE = "HIS_OTEL_MESSAGE_MODE"
ENV_REPORTING = "HIS_OTEL_REPORTING"
ENV_DISABLED = "HIS_OTEL_DISABLED"
ENV_MAX_ROW_AGE_MS = "HIS_OTEL_MAX_ROW_AGE_MS"
ENV_INVOCATION_FLUSH_MS = "HIS_OTEL_INVOCATION_FLUSH_MS"
ENV_WRITES_IN_FLIGHT = "HIS_OTEL_WRITES_IN_FLIGHT"
ENV_COPIES = "HIS_OTEL_COPIES"

# Theirs, for the region: botocore reads only AWS_DEFAULT_REGION; Lambda, AgentCore and the other AWS
# SDKs set AWS_REGION.
ENV_AWS_REGION = "AWS_REGION"
ENV_AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"

# Theirs, read where we decide whether to add an OTLP exporter (the SDK exporters read the rest).
ENV_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
ENV_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
ENV_OTLP_LOGS_ENDPOINT = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
ENV_OTLP_LOGS_PROTOCOL = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"
ENV_LOGS_EXPORTER = "OTEL_LOGS_EXPORTER"
ENV_BLRP_SCHEDULE_DELAY = "OTEL_BLRP_SCHEDULE_DELAY"
ENV_BLRP_MAX_QUEUE_SIZE = "OTEL_BLRP_MAX_QUEUE_SIZE"

DEFAULT_MAX_QUEUE_SIZE = 100_000
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024
DEFAULT_SCHEDULE_DELAY_MS = 50
DEFAULT_EXPORT_TIMEOUT_MS = 10_000
DEFAULT_SHUTDOWN_TIMEOUT_MS = 5_000
# A row that cannot be written (table missing or still CREATING, access denied, credentials expired,
# DynamoDB down) is retried with backoff for this long after its first failure, then rejected.
DEFAULT_MAX_ROW_AGE_MS = 600_000
# How long the end of an invocation waits for its rows to be written (0: do not wait).
DEFAULT_INVOCATION_FLUSH_MS = 2_000

MESSAGE_MODES = ("full", "drop")
REPORTING_MODES = ("hooks", "prompt", "both")
# Which copies of a milestone are emitted: the span event (the trace view; leaves with its span) and
# the log event (leaves at once: what makes the collector path live).
COPIES = ("both", "span", "log")
DEFAULT_COPIES = "both"
# The batch delay of the LoggerProvider configure() installs, unless OTEL_BLRP_SCHEDULE_DELAY says:
# the SDK's 1 s default is most of a row's way through a collector.
DEFAULT_LOG_SCHEDULE_DELAY_MS = 200
# ... and its queue, unless OTEL_BLRP_MAX_QUEUE_SIZE says: the SDK's 2,048 drops a burst of milestones
# (the SDK logs each drop; the in-process rows are not affected).
DEFAULT_LOG_QUEUE_SIZE = 32_768


class InvalidSettingError(ValueError):
    """A setting (an argument or a ``HIS_OTEL_*`` variable) has a value his-otel cannot use."""


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _bad_env(env: str, raw: str, expected: str) -> InvalidSettingError:
    return InvalidSettingError(
        f"{env}={raw[:100]!r} is not valid: expected {expected} (unset it for the default)"
    )


def _arg_name(env: str) -> str:
    """The argument a variable stands for, for error messages: HIS_OTEL_REPORTING -> reporting."""
    return env.removeprefix("HIS_OTEL_").lower()


def resolve_int(
    arg: int | None, env: str, default: int, *, minimum: int = 1, maximum: int | None = None
) -> int:
    """Resolve an integer knob: argument, then ``env``, then ``default``."""
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if arg is not None:
        if (
            isinstance(arg, bool)
            or not isinstance(arg, int)
            or arg < minimum
            or (maximum is not None and arg > maximum)
        ):
            raise InvalidSettingError(f"{_arg_name(env)}: expected an integer {bounds}, got {arg!r}")
        return arg
    raw = os.environ.get(env)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        raise _bad_env(env, raw, f"an integer {bounds}")
    return value


def resolve_choice(arg: str | None, env: str, default: str, choices: tuple[str, ...]) -> str:
    """Resolve a string knob that must be one of ``choices``."""
    if arg is not None:
        if arg not in choices:
            raise InvalidSettingError(f"{_arg_name(env)}: expected one of {choices}, got {arg!r}")
        return arg
    raw = os.environ.get(env, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise _bad_env(env, raw, f"one of {', '.join(choices)}")
    return raw


def resolve_str(arg: str | None, env: str, default: str = "") -> str:
    if arg is not None:
        return arg
    return os.environ.get(env, "").strip() or default


def env_flag(env: str, default: bool = False) -> bool:
    """A yes/no variable: ``1/true/yes/on`` or ``0/false/no/off`` (any case); unset or empty is
    ``default``; anything else raises."""
    raw = os.environ.get(env, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise _bad_env(env, raw, "one of " + ", ".join(TRUE_WORDS + FALSE_WORDS))


def resolve_region(arg: str | None = None) -> str | None:
    """The region for a DynamoDB client: the argument, then ``AWS_DEFAULT_REGION``, then ``AWS_REGION``.

    ``None`` leaves the choice to botocore (a profile's ``region``). botocore itself never reads
    ``AWS_REGION``, which is the variable Lambda, AgentCore and most AWS SDKs set.
    """
    if arg:
        return arg
    for env in (ENV_AWS_DEFAULT_REGION, ENV_AWS_REGION):
        value = os.environ.get(env, "").strip()
        if value:
            return value
    return None


def invocation_flush_s(millis: int | None) -> float:
    """How long the end of a run waits for its rows: the argument, else the environment, in seconds."""
    return resolve_int(millis, ENV_INVOCATION_FLUSH_MS, DEFAULT_INVOCATION_FLUSH_MS, minimum=0) / 1000
