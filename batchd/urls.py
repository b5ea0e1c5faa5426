"""How a daemon's address is written as a URL (standard library only).

The daemon hands its URL to workers (``BATCHD_URL``) and the client parses it back, so the
two share this spelling; it lives below both.
"""

from __future__ import annotations

import urllib.parse

# urllib opens these through the client's Unix-socket handler.
UNIX_SCHEME = "http+unix"


def unix_socket_url(path: str) -> str:
    """The URL of a daemon listening on the Unix socket at `path`."""
    return f"{UNIX_SCHEME}://{urllib.parse.quote(path, safe='')}"
