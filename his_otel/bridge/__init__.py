"""The bridge: OTLP receivers (HTTP on uvicorn, gRPC on grpcio) that write ``his.milestone`` events
as status rows, append-only, for agents that only export OTLP."""

from .ingest import BridgeStats
from .server import Bridge

__all__ = ["Bridge", "BridgeStats"]
