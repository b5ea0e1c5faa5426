"""Case 8: file_path_lister over a directory holding a file whose name is not UTF-8.

It used to answer 500 (the name could not be encoded into the batch's JSON). batchd
refuses it with a 422 that names the entry, its bytes escaped (docs/submitting.md:
file_path_lister); excluding the file admits the rest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_job
from tests.hostile.helpers import ECHO_HANDLER, refused


def test_non_utf8_file_name_in_file_path_lister(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], inputs_dir: Path
) -> None:
    client = make_daemon().client
    client.deploy(make_project("echo", ECHO_HANDLER))
    folder = inputs_dir / "names"
    folder.mkdir()
    (folder / "good.txt").write_text("fine\n")
    with open(os.fsencode(folder) + b"/bad\xff.txt", "wb") as bad:
        bad.write(b"fine too\n")
    job = {"file_path_lister": {"paths": [str(folder)], "batch_size": 10}}

    for dry_run in (True, False):
        error = refused(client, "echo", job, dry_run=dry_run)
        assert (error.status, error.field) == (422, "file_path_lister.paths[0]"), error
        assert f"{folder}/bad\\xff.txt" in error.message, error.message
        assert "UTF-8" in error.message, error.message
    assert client.list_jobs("echo") == []

    job["file_path_lister"]["excludes"] = ["**/bad*"]
    job_id = client.submit("echo", job)["job_id"]
    assert wait_job(client, "echo", job_id)["status"] == "succeeded"
    results = [row["result"] for row in client.results("echo", job_id)]
    assert results == [[str(folder / "good.txt")]]
