"""batchd.scheduler."""
