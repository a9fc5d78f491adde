"""his-otel benchmarks: each figure side by side with its reference, measured in the same run."""
