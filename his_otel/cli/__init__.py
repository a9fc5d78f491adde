"""``his-otel``: the command line. It only wires the library's parts together."""

from .main import main

__all__ = ["main"]
