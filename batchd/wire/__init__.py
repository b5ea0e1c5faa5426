"""batchd.wire."""
