"""s3:// paths in delimited_files and file_path_lister, against a real S3 server (moto's
server mode, tests/s3server.py) through a real daemon whose ``[s3] endpoint_url`` names it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from batchd.admission.job_body import parse_submission
from batchd.admission.planning import plan_batches
from batchd.admission.s3_files import S3Objects, _refusal
from batchd.client import BatchdError, Client
from batchd.config import S3Config
from batchd.errors import DomainError, Forbidden, Invalid
from testkit.launcher import Daemon, free_port
from tests.conftest import wait_job
from tests.s3server import S3Server

# Reads each s3:// URL it is given with boto3, from the endpoint in the API's config.
READING_HANDLER = """
import boto3

class Handler:
    def __init__(self, config):
        self.s3 = boto3.client("s3", endpoint_url=config["endpoint_url"])

    def handle_batch(self, payload):
        if all(isinstance(item, str) and item.startswith("s3://") for item in payload):
            read = []
            for url in payload:
                bucket, key = url[len("s3://"):].split("/", 1)
                body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                read.append([url, body.decode()])
            return read
        return payload
"""

# Cortex's docs example folder (docs/workloads/batch/jobs.md, "Filtering files").
IMAGES = {
    "images/img_1.png": "1",
    "images/img_2.jpg": "2",
    "images/img_3.jpg": "3",
    "images/img_4.gif": "4",
}


@pytest.fixture
def s3_daemon(
    make_daemon: Callable[..., Daemon], s3_server: S3Server, make_project: Callable[..., Path]
) -> Client:
    """A daemon reading S3 through `[s3] endpoint_url` (not AWS_ENDPOINT_URL), with only
    the credentials in its environment, and a `reader` API deployed."""
    daemon = make_daemon(start=False)
    s3_server.add_to_config(daemon.config_path)
    daemon.env.update(
        {key: value for key, value in s3_server.env.items() if key != "AWS_ENDPOINT_URL"}
    )
    daemon.start()
    project = make_project(
        "reader", READING_HANDLER, config={"endpoint_url": s3_server.endpoint_url}
    )
    daemon.client.deploy(project)
    return daemon.client


def dry_run(client: Client, kind: str, source: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = client.submit(
        "reader", {kind: {"batch_size": 2, **source}}, dry_run=True
    )
    return report


def refused(client: Client, job: dict[str, Any]) -> BatchdError:
    with pytest.raises(BatchdError) as caught:
        client.submit("reader", job)
    return caught.value


def test_cortex_docs_filtering_examples_on_a_real_bucket(
    s3_daemon: Client, s3_server: S3Server
) -> None:
    bucket = s3_server.bucket({**IMAGES, "images/": "", "imagery/x.jpg": "x", "other/y.jpg": "y"})
    url = f"s3://{bucket}/images/img_"
    images = f"s3://{bucket}/images/"
    examples: list[tuple[dict[str, Any], list[str]]] = [
        ({"s3_paths": [images]}, ["1.png", "2.jpg", "3.jpg", "4.gif"]),
        ({"s3_paths": [f"s3://{bucket}/images/img"]}, ["1.png", "2.jpg", "3.jpg", "4.gif"]),
        ({"s3_paths": [url + "1.png", url + "2.jpg"]}, ["1.png", "2.jpg"]),
        ({"s3_paths": [images], "includes": ["**.jpg"]}, ["2.jpg", "3.jpg"]),
        ({"s3_paths": [images], "includes": ["**.jpg"], "excludes": ["**_3.jpg"]}, ["2.jpg"]),
        ({"s3_paths": [images], "excludes": ["**.gif"]}, ["1.png", "2.jpg", "3.jpg"]),
    ]
    for source, names in examples:
        report = dry_run(s3_daemon, "file_path_lister", source)
        assert report["matched_files"] == [url + name for name in names], source
        assert report["item_count"] == len(names)


def test_a_key_prefix_is_no_folder_and_folder_markers_are_skipped(
    s3_daemon: Client, s3_server: S3Server
) -> None:
    bucket = s3_server.bucket(
        {"images/a.jpg": "a", "images/sub/": "", "images/sub/b.jpg": "b", "imagery/c.jpg": "c"}
    )
    everything = dry_run(s3_daemon, "file_path_lister", {"s3_paths": [f"s3://{bucket}/image"]})
    assert everything["matched_files"] == [
        f"s3://{bucket}/imagery/c.jpg",
        f"s3://{bucket}/images/a.jpg",
        f"s3://{bucket}/images/sub/b.jpg",
    ]
    whole_bucket = dry_run(
        s3_daemon,
        "file_path_lister",
        {"s3_paths": [f"s3://{bucket}"], "includes": [f"s3://{bucket}/*/*.jpg"]},
    )
    assert whole_bucket["matched_files"] == [
        f"s3://{bucket}/imagery/c.jpg",
        f"s3://{bucket}/images/a.jpg",
    ]


def test_a_listing_over_many_pages_is_read_whole(s3_daemon: Client, s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    client = s3_server.client()
    keys = [f"many/{index:05d}.json" for index in range(1010)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=b"1"), keys))
    report = dry_run(
        s3_daemon, "file_path_lister", {"s3_paths": [f"s3://{bucket}/many/"], "batch_size": 100}
    )
    assert report["matched_files"] == [f"s3://{bucket}/{key}" for key in keys]
    assert report["total_batch_count"] == 11


def test_the_handler_gets_s3_urls_it_can_read(s3_daemon: Client, s3_server: S3Server) -> None:
    bucket = s3_server.bucket(IMAGES)
    job = {"file_path_lister": {"s3_paths": [f"s3://{bucket}/images/"], "batch_size": 3}}
    job_id = s3_daemon.submit("reader", job)["job_id"]
    status = wait_job(s3_daemon, "reader", job_id)
    assert status["status"] == "succeeded"
    results = {row["batch_id"]: row["result"] for row in s3_daemon.results("reader", job_id)}
    urls = [f"s3://{bucket}/{key}" for key in IMAGES]
    assert results == {
        f"{job_id}-1": [[url, content] for url, content in zip(urls[:3], "123", strict=True)],
        f"{job_id}-2": [[urls[3], "4"]],
    }


def test_delimited_files_read_from_s3(s3_daemon: Client, s3_server: S3Server) -> None:
    first = [{"id": 1, "text": "caf\u00e9"}, [1, 2], "three"]
    second = [4.5, None]
    bucket = s3_server.bucket(
        {
            "in/a.jsonl": "\n".join(json.dumps(v) for v in first) + "\n\n",
            "in/b.jsonl": "\n".join(json.dumps(v) for v in second),
            "in/skip.txt": "not json",
        }
    )
    job = {
        "delimited_files": {
            "s3_paths": [f"s3://{bucket}/in/"],
            "includes": ["**.jsonl"],
            "batch_size": 2,
        }
    }
    job_id = s3_daemon.submit("reader", job)["job_id"]
    assert wait_job(s3_daemon, "reader", job_id)["status"] == "succeeded"
    results = {row["batch_id"]: row["result"] for row in s3_daemon.results("reader", job_id)}
    items = first + second
    assert results == {f"{job_id}-{n + 1}": items[2 * n : 2 * n + 2] for n in range(3)}


def test_a_bad_line_in_an_object_is_422_naming_it_and_its_line(
    s3_daemon: Client, s3_server: S3Server
) -> None:
    bucket = s3_server.bucket({"in/a.jsonl": '1\n2\n{"broken": \n4\n'})
    error = refused(
        s3_daemon, {"delimited_files": {"s3_paths": [f"s3://{bucket}/in/"], "batch_size": 1}}
    )
    assert error.status == 422 and error.field == "delimited_files"
    assert error.message.startswith(f"s3://{bucket}/in/a.jsonl:3: not valid JSON")
    assert s3_daemon.list_jobs("reader") == []


def test_a_line_too_long_in_an_object_is_refused_unread(
    make_daemon: Callable[..., Daemon], s3_server: S3Server, make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon(start=False, max_item_size=10)
    s3_server.add_to_config(daemon.config_path)
    daemon.env.update(s3_server.env)
    daemon.start()
    daemon.client.deploy(make_project("reader", READING_HANDLER))
    bucket = s3_server.bucket({"big.jsonl": "1\n" + "7" * 1000 + "\n"})
    error = refused(
        daemon.client,
        {"delimited_files": {"s3_paths": [f"s3://{bucket}/big.jsonl"], "batch_size": 1}},
    )
    assert (error.status, error.field) == (422, "delimited_files")
    assert f"s3://{bucket}/big.jsonl:2: line 2 is longer than 60 bytes" in error.message


@pytest.mark.parametrize("kind", ["file_path_lister", "delimited_files"])
def test_a_missing_bucket_is_422_naming_the_path(s3_daemon: Client, kind: str) -> None:
    job = {kind: {"s3_paths": ["s3://no-such-bucket-here/x/"], "batch_size": 1}}
    error = refused(s3_daemon, job)
    assert (error.status, error.field) == (422, f"{kind}.s3_paths[0]")
    assert error.message == (
        "cannot read s3://no-such-bucket-here/x/: bucket 'no-such-bucket-here' does not exist"
    )
    assert s3_daemon.list_jobs("reader") == []


def test_a_later_bad_path_refuses_the_whole_job(s3_daemon: Client, s3_server: S3Server) -> None:
    bucket = s3_server.bucket(IMAGES)
    job = {
        "file_path_lister": {
            "paths": [f"s3://{bucket}/images/", f"s3://{bucket}", "s3:///key"],
            "batch_size": 1,
        }
    }
    error = refused(s3_daemon, job)
    assert (error.status, error.field) == (422, "file_path_lister.paths[2]")
    assert error.message == "'s3:///key' names no bucket: write s3://bucket/key"
    assert s3_daemon.list_jobs("reader") == []


def test_a_prefix_matching_nothing_is_422(s3_daemon: Client, s3_server: S3Server) -> None:
    bucket = s3_server.bucket(IMAGES)
    job = {
        "file_path_lister": {
            "s3_paths": [f"s3://{bucket}/images/"],
            "includes": ["images/**"],
            "batch_size": 1,
        }
    }
    error = refused(s3_daemon, job)
    assert (error.status, error.field) == (422, "file_path_lister.s3_paths")
    assert "start it with ** to match at any depth" in error.message


def test_an_unreachable_endpoint_is_422_naming_the_path(
    make_daemon: Callable[..., Daemon], s3_server: S3Server, make_project: Callable[..., Path]
) -> None:
    # Nothing listens on a port just freed.
    daemon = make_daemon(start=False, input_roots=[])
    daemon.config_path.write_text(
        daemon.config_path.read_text()
        + f'\n[s3]\nendpoint_url = "http://127.0.0.1:{free_port()}"\n'
    )
    daemon.env.update(s3_server.env)
    daemon.start()
    daemon.client.deploy(make_project("reader", READING_HANDLER))
    error = refused(
        daemon.client, {"delimited_files": {"s3_paths": ["s3://bucket/in/"], "batch_size": 1}}
    )
    assert (error.status, error.field) == (422, "delimited_files.s3_paths[0]")
    assert error.message.startswith(
        "cannot read s3://bucket/in/: Could not connect to the endpoint"
    )


def test_s3_paths_need_no_input_roots(
    make_daemon: Callable[..., Daemon], s3_server: S3Server, make_project: Callable[..., Path]
) -> None:
    # AWS_ENDPOINT_URL in the daemon's environment serves as well as [s3] endpoint_url.
    daemon = make_daemon(start=False, input_roots=[])
    daemon.env.update(s3_server.env)
    daemon.start()
    daemon.client.deploy(make_project("reader", READING_HANDLER))
    bucket = s3_server.bucket(IMAGES)
    report = daemon.client.submit(
        "reader",
        {"file_path_lister": {"s3_paths": [f"s3://{bucket}/images/img_2"], "batch_size": 1}},
        dry_run=True,
    )
    assert report["matched_files"] == [f"s3://{bucket}/images/img_2.jpg"]
    # A local path next to it still needs them.
    job = {"file_path_lister": {"s3_paths": [f"s3://{bucket}/images/", "/tmp"], "batch_size": 1}}
    error = refused(daemon.client, job)
    assert (error.status, error.field) == (403, "file_path_lister.s3_paths")


# --- without a daemon ----------------------------------------------------------------------


def test_without_boto3_an_s3_path_is_422_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes `import boto3` raise ImportError, as when absent.
    monkeypatch.setitem(sys.modules, "boto3", None)
    body = {"delimited_files": {"s3_paths": ["s3://bucket/in/"], "batch_size": 1}}
    with pytest.raises(Invalid) as caught:
        plan_batches(parse_submission(json.dumps(body).encode()), [], 1024)
    assert caught.value.field == "delimited_files.s3_paths[0]"
    assert "install batchd[s3]" in caught.value.message


@pytest.mark.parametrize(
    ("code", "kind", "said"),
    [
        ("AccessDenied", Forbidden, "S3 refused access (AccessDenied: Access Denied)"),
        ("InvalidAccessKeyId", Forbidden, "S3 refused access (InvalidAccessKeyId: no key)"),
        ("NoSuchKey", Invalid, "no such object"),
        ("SlowDown", Invalid, "S3 said SlowDown: please"),
    ],
)
def test_s3_error_codes_become_refusals(code: str, kind: type[DomainError], said: str) -> None:
    messages = {
        "AccessDenied": "Access Denied",
        "InvalidAccessKeyId": "no key",
        "SlowDown": "please",
    }
    response = {"Error": {"Code": code, "Message": messages.get(code, "")}}
    refusal = _refusal(response, "s3://b/k", "delimited_files.s3_paths[0]")
    assert type(refusal) is kind
    assert (refusal.message, refusal.field) == (
        f"cannot read s3://b/k: {said}",
        "delimited_files.s3_paths[0]",
    )


def test_a_bad_aws_config_is_a_refusal_naming_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3 reads the profile when the client is made, before any request.
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    objects = S3Objects(S3Config(endpoint_url="http://127.0.0.1:9"))
    field = "file_path_lister.paths[0]"
    with pytest.raises(Invalid) as listing:
        list(objects.list("s3://b/k", field))
    with pytest.raises(Invalid) as opening:
        objects.open("s3://b/k", field)
    for caught in (listing, opening):
        assert caught.value.field == field
        assert caught.value.message.startswith("cannot read s3://b/k: ")
        assert "no-such-profile" in caught.value.message


def test_a_bad_aws_endpoint_url_is_a_refusal_naming_the_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # [s3] endpoint_url is checked at start; the environment's is seen by boto3 only.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://a b")
    with pytest.raises(Invalid) as caught:
        list(S3Objects(S3Config()).list("s3://b/k", "delimited_files.paths[0]"))
    assert caught.value.field == "delimited_files.paths[0]"
    assert caught.value.message.startswith("the daemon's S3 endpoint cannot be used: ")


# --- local paths: the same prefix rule --------------------------------------------------------


def local_plan(tmp_path: Path, paths: list[str], **source: Any) -> list[str] | None:
    body = {"file_path_lister": {"paths": paths, "batch_size": 1, **source}}
    plan = plan_batches(parse_submission(json.dumps(body).encode()), [tmp_path], 1024)
    plan.close()
    return plan.matched_files


def test_a_local_path_naming_nothing_is_a_prefix_like_an_s3_key(tmp_path: Path) -> None:
    for name in ["img_1.png", "img_2.jpg", "img_dir/deep.jpg", "imgs.txt", "other.jpg"]:
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / name).write_text(name)
    images = tmp_path / "images"
    assert local_plan(tmp_path, [f"{images}/img_"]) == [
        f"{images}/img_1.png",
        f"{images}/img_2.jpg",
        f"{images}/img_dir/deep.jpg",
    ]
    assert local_plan(tmp_path, [f"{images}/img"], excludes=["**.png"]) == [
        f"{images}/img_2.jpg",
        f"{images}/img_dir/deep.jpg",
        f"{images}/imgs.txt",
    ]
    # An existing folder is that folder, not a prefix of its siblings' names.
    (tmp_path / "images2").mkdir()
    (tmp_path / "images2" / "x.jpg").write_text("x")
    assert local_plan(tmp_path, [str(images)], includes=["**/other.jpg"]) == [f"{images}/other.jpg"]


def test_a_local_prefix_matching_nothing_is_still_no_such_file(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for given in [f"{tmp_path}/images/nothing", f"{tmp_path}/nope/x", f"{tmp_path}/images/x/"]:
        with pytest.raises(Invalid) as caught:
            local_plan(tmp_path, [given])
        assert caught.value.field == "file_path_lister.paths[0]"
        assert caught.value.message == f"{given!r} cannot be read: No such file or directory"


def test_a_local_prefix_stays_inside_input_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "root-sibling.txt").write_text("secret")
    with pytest.raises(Forbidden) as caught:
        local_plan(root, [f"{tmp_path}/root-"])
    assert caught.value.field == "file_path_lister.paths[0]"
    # A link the prefix selects is refused as a walk's is; one it does not select is not
    # looked at.
    (root / "d").mkdir()
    (root / "d" / "in.txt").write_text("in")
    (root / "d" / "link").symlink_to(tmp_path)
    with pytest.raises(Forbidden) as caught:
        local_plan(root, [f"{root}/d/li"])
    assert caught.value.message == f"{root}/d/link links outside the daemon's input_roots"
    assert local_plan(root, [f"{root}/d/i"]) == [f"{root}/d/in.txt"]


def test_a_local_prefix_at_the_bottom_of_a_2000_deep_tree(tmp_path: Path) -> None:
    # Built a folder at a time, relative: no call is given the whole path until the job.
    # 2,000 deep, or as deep as PATH_MAX (4,096) allows below a long tmp_path.
    depth = min(2000, (4080 - len(str(tmp_path))) // 2)
    top = os.open(tmp_path, os.O_RDONLY)
    try:
        here = top
        for _ in range(depth):
            os.mkdir("a", dir_fd=here)
            below = os.open("a", os.O_RDONLY, dir_fd=here)
            if here != top:
                os.close(here)
            here = below
        os.close(os.open("img_1", os.O_WRONLY | os.O_CREAT, dir_fd=here))
        os.close(here)
    finally:
        os.close(top)
    try:
        deep = str(tmp_path) + "/a" * depth
        assert local_plan(tmp_path, [f"{deep}/im"]) == [f"{deep}/img_1"]
        # Past PATH_MAX the path is refused, naming it, rather than failing the daemon.
        too_deep = str(tmp_path) + "/a" * 2100 + "/im"
        with pytest.raises(Invalid) as caught:
            local_plan(tmp_path, [too_deep])
        assert caught.value.field == "file_path_lister.paths[0]"
        assert caught.value.message.endswith("cannot be read: File name too long")
    finally:
        _remove_chain(tmp_path, depth, "img_1")


def _remove_chain(top: Path, depth: int, leaf: str) -> None:
    """Remove top/a/a/.../leaf a folder at a time: shutil.rmtree (pytest's cleanup of old
    temp dirs included) recurses once per level and fails on a tree this deep."""
    fds = [os.open(top, os.O_RDONLY)]
    try:
        for _ in range(depth):
            fds.append(os.open("a", os.O_RDONLY, dir_fd=fds[-1]))
        os.unlink(leaf, dir_fd=fds[-1])
        for parent in reversed(fds[:-1]):
            os.rmdir("a", dir_fd=parent)
    finally:
        for fd in fds:
            os.close(fd)
