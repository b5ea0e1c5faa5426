"""batchd.pool."""
