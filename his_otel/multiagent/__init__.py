"""Status rows for Strands' multi-agent orchestrations (Swarm, Graph)."""
