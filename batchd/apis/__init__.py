"""batchd.apis."""
