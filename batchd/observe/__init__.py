"""batchd.observe."""
