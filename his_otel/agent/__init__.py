"""Emitters on the agent side: lifecycle hooks, the report tool, the HISAgent, the tool executor."""
