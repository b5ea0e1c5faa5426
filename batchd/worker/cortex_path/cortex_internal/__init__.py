"""Cortex's serving package, as far as a Cortex Batch handler imports it (batchd's)."""
