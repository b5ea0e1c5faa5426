"""batchd.admission."""
