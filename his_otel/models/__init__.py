"""Models: an offline scripted model for demos and tests."""
