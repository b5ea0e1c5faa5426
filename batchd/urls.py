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


# What a daemon's URL may start with: TCP, TLS (behind a proxy), or a Unix socket.
URL_SCHEMES = ("http", "https", UNIX_SCHEME)


def checked_url(url: str) -> str:
    """`url` without a trailing slash, or ValueError with one line saying what is wrong:
    no scheme ("127.0.0.1:8780"), one batchd does not speak ("ftp://..."), no host."""
    if "://" not in url:
        raise ValueError(f"batchd URL {url!r} has no scheme: did you mean http://{url}?")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  an invalid port raises here
    except ValueError as exc:
        raise ValueError(f"batchd URL {url!r} is not valid: {exc}") from None
    if parts.scheme.lower() not in URL_SCHEMES:
        schemes = ", ".join(f"{scheme}://" for scheme in URL_SCHEMES)
        raise ValueError(f"batchd URL {url!r}: scheme {parts.scheme}:// is not one of {schemes}")
    if not parts.netloc:
        raise ValueError(f"batchd URL {url!r} names no host")
    return url.rstrip("/")
