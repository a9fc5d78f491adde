"""Write: span events to rows, and rows to DynamoDB."""
