"""Status rows for ``strands.bidi`` voice sessions."""
