"""The HTTP API (aiohttp)."""
