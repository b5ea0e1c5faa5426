"""Cortex's serving library: only ``log`` (``logger``), which Cortex's docs tell handlers
to import."""
