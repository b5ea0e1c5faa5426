"""A deploy archive whose member has a 300-character name, a path 2,000 folders deep or
a 4 KiB path is refused with a 422 that names the member (shortened), not a 500."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.conftest import Daemon

SPEC = b'name = "deep"\n[handler]\npath = "handler.py"\n'
HANDLER = b"class Handler:\n    def handle_batch(self, payload):\n        return None\n"


def archive_with(member: str) -> bytes:
    buffer = io.BytesIO()
    # PAX headers carry names of any length, as an attacker would send them.
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("batchd.toml", SPEC), ("handler.py", HANDLER), (member, b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def post_archive(daemon: Daemon, archive: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        daemon.url + "/apis",
        data=archive,
        method="POST",
        headers={"Content-Type": "application/gzip"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        ("x" * 300 + ".txt", "file name of 304 bytes"),
        ("/".join(["d"] * 2000) + "/f.txt", "is 2001 folders deep"),
        ("/".join(["a" * 99] * 41), "path of 4099 bytes"),
    ],
    ids=["300-character-name", "2000-folders-deep", "4099-byte-path"],
)
def test_long_member_name_gets_422_naming_it(daemon: Daemon, member: str, problem: str) -> None:
    status, body = post_archive(daemon, archive_with(member))
    assert status == 422, body
    message = body["error"]["message"]
    assert body["error"]["field"] == "archive"
    assert problem in message
    # The member is named by its head and tail, not pasted whole.
    assert repr(member[:40]) in message and repr(member[-40:]) in message
    assert len(message) < 300
    assert daemon.client.list_apis() == []
    assert "unhandled error" not in daemon.output()
