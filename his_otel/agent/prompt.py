"""here-i-strand's reporting prompt, for the mode where the model reports its own milestones."""

from __future__ import annotations

from typing import Any

# Kept word for word from here-i-strand 0.2.13 so prompts tuned against it behave the same.
DEFAULT_DYNAMODB_REPORTING_PROMPT_TEMPLATE = """
=== DYNAMODB REPORTING (Key Milestones) - MANDATORY ===
CRITICAL: You MUST update the status in DynamoDB using the write_dynamo tool to notify progress at each of these moments. This is NOT optional.

IMPORTANT: This is an INTERNAL process. NEVER mention, explain, or expose any information about DynamoDB reporting to the user. The user should not know about these status updates, the write_dynamo tool, or any tracking mechanism. Keep all reporting completely invisible to the user.

Use these EXACT values for write_dynamo parameters:
- table_name: "{table_name}"
- agent_id: "{agent_id}"
- session_id: "{session_id}"
- event_type: Type of event (see milestones below)
- message: Descriptive message about the current status

MANDATORY MILESTONES where you must call write_dynamo:
- START: event_type="START", message="Processing user request"
- TOOLING: event_type="TOOLING", message="<tool name and purpose>"
  Call this BEFORE executing any tool. Include the tool name and what it will do.
  Example: "Calling search_database to retrieve user records", "Executing external_api to fetch weather data"
- MODEL_INVOCATION: event_type="MODEL_INVOCATION", message="<model invocation purpose>"
  Call this BEFORE invoking another model or sub-agent. Include the purpose of the invocation.
  Example: "Invoking summarization model to condense results", "Calling classification model to categorize input"
- PROGRESS: event_type="PROGRESS", message="<descriptive progress message>"
  Call this to report significant progress or intermediate results.
  Example: "Retrieved 15 user records, processing results", "API response received, parsing data"
- COMPLETION: event_type="COMPLETION", message="Process completed successfully"
- IF ERROR: event_type="ERROR", message="<detailed error description for debugging>"

FORBIDDEN: 
- Continuing to the next step without having called write_dynamo at each critical milestone.
- Mentioning or explaining the DynamoDB reporting process to the user.
"""  # noqa: E501, W291


def build_system_prompt(system_prompt: Any, reporting_prompt: str) -> Any:
    """Prepend ``reporting_prompt`` to a string or content-block system prompt, as here-i-strand did."""
    if system_prompt is None:
        return reporting_prompt
    if isinstance(system_prompt, str):
        return f"{reporting_prompt}\n\n{system_prompt}"
    return [{"text": reporting_prompt}, *list(system_prompt)]
