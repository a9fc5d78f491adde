"""his-otel: agent status tracking for Strands Agents as a first-class part of OpenTelemetry.

Milestones are ``his.milestone`` events on Strands' own spans; a span processor writes them live
to an append-only DynamoDB table (here-i-strand's schema), and the same traces go to any OTLP
backend.

Example:
    ```python
    from his_otel import HISAgent

    agent = HISAgent(status_dynamo_table_name="AgentStatus", session_id="s-1", tools=[...])
    agent("Summarise the ticket")   # START, MODEL_INVOCATION, TOOLING, ... rows land as it runs
    ```
"""

import logging

from .agent.compat import HISBedrockThrottlingLogger, configure_logging, event_loop_tracker
from .agent.executor import TimeoutConcurrentToolExecutor
from .agent.his_agent import HISAgent
from .agent.hooks import EventLoopTracker, HISHooks
from .agent.prompt import DEFAULT_DYNAMODB_REPORTING_PROMPT_TEMPLATE
from .agent.report_tool import write_dynamo
from .bidi.agent import HISBidiAgent
from .bidi.hooks import HISBidiHooks
from .capture.live import HISSpanProcessor, ProcessorStats
from .emit import Identity, milestone, session
from .models.scripted import ScriptedModel, ScriptExhaustedError, ToolCall
from .models.scripted_bidi import BARGE_IN, ScriptedBidiModel, Speech
from .multiagent.conveniences import HISGraphBuilder, HISSwarm
from .multiagent.hooks import HISMultiAgentHooks
from .notice import HISOtelWarning
from .schema import EVENT_NAME, BidiEventType, EventType, Milestone, MultiAgentEventType
from .tracing import Handle, configure, current_handle
from .write.exporter import DynamoDBSpanExporter

__version__ = "0.1.0"

__all__ = [
    "BARGE_IN",
    "DEFAULT_DYNAMODB_REPORTING_PROMPT_TEMPLATE",
    "EVENT_NAME",
    "BidiEventType",
    "DynamoDBSpanExporter",
    "EventLoopTracker",
    "EventType",
    "HISAgent",
    "HISBedrockThrottlingLogger",
    "HISBidiAgent",
    "HISBidiHooks",
    "HISGraphBuilder",
    "HISHooks",
    "HISMultiAgentHooks",
    "HISOtelWarning",
    "HISSpanProcessor",
    "HISSwarm",
    "Handle",
    "Identity",
    "Milestone",
    "MultiAgentEventType",
    "ProcessorStats",
    "ScriptExhaustedError",
    "ScriptedBidiModel",
    "ScriptedModel",
    "Speech",
    "TimeoutConcurrentToolExecutor",
    "ToolCall",
    "__version__",
    "configure",
    "configure_logging",
    "current_handle",
    "event_loop_tracker",
    "milestone",
    "session",
    "write_dynamo",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
