"""batchd.cli."""
