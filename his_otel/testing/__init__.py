"""What demos and tests run offline: an embedded local DynamoDB (moto's server in a subprocess)."""
