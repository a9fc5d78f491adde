"""Serve: the command line (demo, create-table, tail) and the embedded local DynamoDB."""
