"""Neighbour of case 8: delimited_files under a directory and a file whose names are not
UTF-8. Their contents are what counts, so they are read; wherever a name is shown (the
dry run's matched_files, an error) its bytes appear as \\xNN escapes, never as the lone
surrogates Python holds them as, which no UTF-8 JSON text can carry."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_job
from tests.hostile.helpers import ECHO_HANDLER, refused


def test_non_utf8_names_in_delimited_files(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], inputs_dir: Path
) -> None:
    client = make_daemon().client
    client.deploy(make_project("echo", ECHO_HANDLER))
    folder = os.fsencode(inputs_dir) + b"/dir\xfe"
    os.mkdir(folder)
    with open(folder + b"/items\xff.jsonl", "wb") as items:
        items.write(b'{"n": 1}\n{"n": 2}\n')
    shown = f"{inputs_dir}/dir\\xfe/items\\xff.jsonl"
    job = {"delimited_files": {"paths": [str(inputs_dir)], "batch_size": 1}}

    report = client.submit("echo", job, dry_run=True)
    assert report["matched_files"] == [shown]
    job_id = client.submit("echo", job)["job_id"]
    assert wait_job(client, "echo", job_id)["status"] == "succeeded"
    assert sorted(row["result"][0]["n"] for row in client.results("echo", job_id)) == [1, 2]

    with open(folder + b"/items\xff.jsonl", "ab") as items:
        items.write(b"{not json}\n")
    error = refused(client, "echo", job)
    assert (error.status, error.field) == (422, "delimited_files"), error
    assert f"{shown}:3" in error.message, error.message
