"""batchd.worker."""
