"""batchd.daemon."""
