"""Capture: the span processor that takes milestones live and at span end."""
