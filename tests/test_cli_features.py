"""`submit --wait`/`-q`/JSON lines, `get --status`, `logs --tail`/`--since`, coloured
statuses on a terminal, `--version` and shell completion: the CLI as a subprocess against
one real daemon shared by this module."""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from batchd.cli.commands import jobs
from batchd.client import Client
from batchd.constants import VERSION
from testkit.launcher import Daemon
from tests.conftest import DEFAULT_TEST_CONFIG, EXAMPLE, wait_job
from tests.test_cli import PICKY_HANDLER, batchd, cli_env, command, failed, ok, table

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A foreground colour among an SGR sequence's codes.
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with `hello`, `picky` and `fussy` (picky again) deployed, and two finished
    picky jobs: the first completed_with_failures, the second succeeded."""
    root = tmp_path_factory.mktemp("served")
    projects = [EXAMPLE]
    for name in ("picky", "fussy"):
        project = root / name
        project.mkdir()
        (project / "handler.py").write_text(textwrap.dedent(PICKY_HANDLER))
        (project / "batchd.toml").write_text(f'name = "{name}"\n[handler]\npath = "handler.py"\n')
        projects.append(project)
    daemon = Daemon(
        state_dir=root / "state",
        config_path=root / "batchd.toml",
        config=DEFAULT_TEST_CONFIG,
        log_path=root / "daemon.log",
        projects=projects,
    )
    with daemon:
        client = daemon.client
        for items in (["a", "bad"], ["b"]):
            job = {"max_receive_count": 1, "item_list": {"items": items, "batch_size": 1}}
            wait_job(client, "picky", client.submit("picky", job)["job_id"])
        yield daemon


def picky_jobs(client: Client) -> tuple[str, str]:
    """The ids of the (completed_with_failures, succeeded) picky jobs."""
    newer, older = (job["job_id"] for job in client.list_jobs("picky"))
    return older, newer


# --- submit ---------------------------------------------------------------------------------


def test_submit_print_job_id_and_wait(served: Daemon, tmp_path: Path) -> None:
    client = served.client
    job = json.dumps({"item_list": {"items": [1, 2], "batch_size": 1}}).encode()
    job_id = ok(batchd(served.url, "submit", "hello", "-q", stdin=job)).strip()
    assert re.fullmatch(r"[0-9a-f]+", job_id)
    assert client.get_job("hello", job_id)["job_status"]["job_id"] == job_id

    # --wait: the id, the progress, the summary; the exit code is how the job ended.
    done = batchd(served.url, "submit", "hello", "--wait", "--interval", "0.05", stdin=job)
    assert (done.returncode, done.stderr) == (0, "")
    first, *_, last = done.stdout.splitlines()
    job_id = first.removeprefix("submitted job ")
    assert re.fullmatch(rf"job {job_id} succeeded: 2/2 batches succeeded, 0 failed, took .+", last)
    bad = json.dumps({"max_receive_count": 1, "item_list": {"items": ["bad"], "batch_size": 1}})
    done = batchd(served.url, "submit", "fussy", "-q", "-w", stdin=bad.encode())
    assert (done.returncode, done.stderr) == (1, "")
    (job_id,) = done.stdout.splitlines()
    assert client.get_job("fussy", job_id)["job_status"]["status"] == "completed_with_failures"
    assert ok(batchd(served.url, "submit", "hello", "-q", "--dry-run", stdin=job)) == ""
    err = failed(batchd(served.url, "submit", "hello", "--wait", "--dry-run", stdin=job), 2)
    assert err == "error: --dry-run stores no job to --wait for\n"


def test_submit_takes_a_json_lines_file_of_items(served: Daemon, tmp_path: Path) -> None:
    client = served.client
    for name, text in (("items.jsonl", '1\n{"a": 2}\n\n3\n'), ("items.txt", '1\n{"a": 2}\n3\n')):
        path = tmp_path / name
        path.write_text(text)
        spec = json.loads(ok(batchd(served.url, "submit", "hello", str(path), "--batch-size", "2")))
        assert (spec["total_batch_count"], spec["source"]) == (2, "item_list"), name
        wait_job(client, "hello", spec["job_id"])
        results = [r["result"] for r in client.results("hello", spec["job_id"])]
        assert results == [["hello one!", "hello {'a': 2}!"], ["hello three!"]], name
    # One item alone in a .jsonl file is still items, not a job body.
    single = tmp_path / "one.jsonl"
    single.write_text('{"item_list": 1}\n')
    spec = json.loads(ok(batchd(served.url, "submit", "hello", str(single), "--batch-size", "1")))
    assert spec["total_batch_count"] == 1

    before = [job["job_id"] for job in client.list_jobs("hello")]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('1\n2\n{"a":\n4\n')
    err = failed(batchd(served.url, "submit", "hello", str(broken), "--batch-size", "1"))
    assert err.startswith(f"error: {broken} line 3 is not JSON: ")
    err = failed(batchd(served.url, "submit", "hello", str(broken)), 2)
    assert err == f"error: {broken} holds items (JSON lines): give --batch-size\n"
    assert [job["job_id"] for job in client.list_jobs("hello")] == before


# --- get --status, logs --tail/--since ------------------------------------------------------


def test_get_filters_jobs_by_status(served: Daemon) -> None:
    mixed, clean = picky_jobs(served.client)

    def listed(*args: str) -> list[list[str]]:
        _, rows = table(ok(batchd(served.url, "get", "picky", *args)))
        return [row[:2] for row in rows]

    assert listed("--status", "failed") == [[mixed, "completed_with_failures"]]
    assert listed("--status", "succeeded") == [[clean, "succeeded"]]
    assert listed("--status", "running,completed_with_failures") == [
        [mixed, "completed_with_failures"]
    ]
    assert listed("--status", "succeeded,failed") == [
        [clean, "succeeded"],
        [mixed, "completed_with_failures"],
    ]
    assert listed("--status", "succeeded,failed", "--limit", "1") == [[clean, "succeeded"]]
    assert listed("--status", "active") == []
    out = ok(batchd(served.url, "get", "picky", "--status", "SUCCEEDED", "-o", "json"))
    assert [job["job_id"] for job in json.loads(out)] == [clean]

    done = batchd(served.url, "get", "picky", "--status", "running,finished")
    assert (done.returncode, done.stdout) == (2, "")
    assert "argument --status: unknown status 'finished' (one of: active, failed, " in done.stderr
    err = failed(batchd(served.url, "get", "--status", "running"), 2)
    assert err == "error: --status goes with API alone (it filters the API's jobs)\n"


def test_get_status_pages_through_the_daemons_filter(
    served: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon filters (GET /jobs?api=&status=); pages of one job show the `before` paging.
    mixed, clean = picky_jobs(served.client)
    monkeypatch.setattr(jobs, "FILTER_PAGE", 1)
    both = frozenset({"succeeded", "completed_with_failures"})
    listed = jobs.list_jobs(served.client, "picky", 5, both)
    assert [(job["job_id"], job["status"]) for job in listed] == [
        (clean, "succeeded"),
        (mixed, "completed_with_failures"),
    ]
    assert [job["job_id"] for job in jobs.list_jobs(served.client, "picky", 1, both)] == [clean]
    assert jobs.list_jobs(served.client, "picky", 5, frozenset({"stopped"})) == []


def test_logs_tail_and_since(served: Daemon) -> None:
    mixed, _ = picky_jobs(served.client)
    records = list(served.client.stream_job_logs("picky", mixed))
    assert [r["message"] for r in records] == ["ready", "took a", "handle_batch failed"]

    def messages(*args: str) -> list[str]:
        out = ok(batchd(served.url, "logs", "picky", mixed, "-o", "json", *args))
        return [json.loads(line)["message"] for line in out.splitlines()]

    assert messages("--tail", "1") == ["handle_batch failed"]
    assert messages("--tail", "2", "--level", "warning") == ["took a", "handle_batch failed"]
    assert messages("--since", "1h") == messages() == [r["message"] for r in records]
    assert messages("--since", "1h30m", "--tail", "2") == ["took a", "handle_batch failed"]
    later = (datetime.now() + timedelta(minutes=5)).isoformat(timespec="seconds")
    assert messages("--since", later) == []
    first = datetime.strptime(records[1]["asctime"], "%Y-%m-%d %H:%M:%S,%f")
    assert messages("--since", first.isoformat()) == ["took a", "handle_batch failed"]
    done = batchd(served.url, "logs", "picky", mixed, "--since", "yesterday")
    assert done.returncode == 2
    assert "'yesterday' is neither a duration (90s, 10m, 2h, 1d) nor an ISO time" in done.stderr
    assert failed(batchd(served.url, "logs", "picky", mixed, "--tail", "0"), 2) == (
        "error: --tail must be 1 or more\n"
    )


# --- colours, version, completion -----------------------------------------------------------


def on_a_terminal(*args: str, **env: str) -> str:
    """The command's output as a terminal shows it (run under a pseudo-terminal)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        command(*args),
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=cli_env(TERM="xterm-256color", COLUMNS="200", **env),
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command has ended and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_statuses_are_coloured_on_a_terminal_only(served: Daemon) -> None:
    mixed, clean = picky_jobs(served.client)
    env = {key: "" for key in ("NO_COLOR", "FORCE_COLOR") if key in os.environ}
    shown = on_a_terminal(served.url, "get", "picky", **env)
    # The two statuses, each in its own colour (rich's SGR codes), the rest plain.
    green = re.search(r"\x1b\[32msucceeded *\x1b\[0m", shown)
    yellow = re.search(r"\x1b\[33mcompleted_with_failures *\x1b\[0m", shown)
    assert green and yellow, repr(shown)
    assert ANSI.sub("", shown).count(mixed) == 1
    detail = on_a_terminal(served.url, "get", "picky", clean, **env)
    (line,) = (line for line in detail.splitlines() if ANSI.sub("", line).startswith("status "))
    assert re.search(r"\x1b\[32msucceeded *\x1b\[0m", line), repr(line)
    # NO_COLOR: no colour (bold headers stay); a pipe: no escape codes at all.
    plain = on_a_terminal(served.url, "get", "picky", NO_COLOR="1")
    assert not COLOUR.search(plain) and "completed_with_failures" in plain
    assert not ANSI.search(ok(batchd(served.url, "get", "picky")))
    piped = ok(batchd(served.url, "get", "picky"))
    assert [line.split()[:2] for line in ANSI.sub("", shown).splitlines()] == [
        line.split()[:2] for line in piped.splitlines()
    ]


def test_version() -> None:
    assert ok(batchd(None, "--version")) == f"batchd {VERSION}\n"


def test_bad_numbers_and_non_utf8_arguments_are_usage_errors() -> None:
    # Refused before anything is sent: a 0 or negative --interval once crashed a watch
    # (time.sleep) or polled without pause; a non-UTF-8 name was a UnicodeEncodeError.
    for args in (
        ("get", "hello", "--limit", "0"),
        ("get", "hello", "--status", "active", "--limit", "-1"),
        ("workers", "--events", "-1"),
        ("get", "hello", "job", "-w", "--interval", "-1"),
        ("submit", "hello", "--wait", "--interval", "0"),
    ):
        done = batchd("http://127.0.0.1:9", *args)
        assert (done.returncode, done.stdout) == (2, ""), (args, done.stderr)
        flag = next(arg for arg in reversed(args) if arg.startswith("--"))
        assert f"error: argument {flag}: must be a number above 0, not {args[-1]}\n" in (
            done.stderr
        )
    for args in (("get", "\udcffname"), ("logs", "hello", "\udcffname")):
        done = batchd("http://127.0.0.1:9", *args)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == "error: argument b'\\xffname' is not UTF-8\n"


def shtab_env() -> dict[str, str]:
    """The CLI's environment with shtab importable (skips when it is not installed)."""
    spec = importlib.util.find_spec("shtab")
    if spec is None or spec.origin is None:
        pytest.skip("shtab is not installed")
    where = str(Path(spec.origin).parent.parent)
    env = cli_env()
    env["PYTHONPATH"] += os.pathsep + where
    return env


def completions(script: Path, *words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash offers after `words` (the last one being typed), with `script` loaded."""
    line = " ".join(words)
    probe = (
        f"source {script}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}\n"
        f'COMP_LINE="{line}"; COMP_POINT={len(line)}\n'
        f"_shtab_batchd {words[0]} {words[-1]} {words[-2]}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, timeout=30, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_shell_completion(served: Daemon, tmp_path: Path) -> None:
    env = shtab_env()
    script = tmp_path / "batchd.bash"
    script.write_text(ok(batchd(None, "completion", "bash", env=env)))
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert completions(script, "batchd", "su") == ["submit"]
    assert {"get", "logs", "deploy", "completion"} <= set(completions(script, "batchd", ""))
    assert "--watch" in completions(script, "batchd", "get", "--w")
    assert completions(script, "batchd", "logs", "--ta") == ["--tail"]
    # API names come from `batchd apis`, asked of the daemon of $BATCHD_URL.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "batchd").write_text(f'#!/bin/sh\nexec {sys.executable} -m batchd "$@"\n')
    (bin_dir / "batchd").chmod(0o755)
    shell_env = {**env, "BATCHD_URL": served.url, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    assert completions(script, "batchd", "get", "", env=shell_env) == ["fussy", "hello", "picky"]
    assert completions(script, "batchd", "logs", "pi", env=shell_env) == ["picky"]
    assert completions(script, "batchd", "stop", "f", env=shell_env) == ["fussy"]

    zsh_script = ok(batchd(None, "completion", "zsh", env=env))
    assert zsh_script.startswith("#compdef batchd")
    if shutil.which("zsh"):
        zsh_file = tmp_path / "_batchd"
        zsh_file.write_text(zsh_script)
        check = subprocess.run(["zsh", "-n", str(zsh_file)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    done = batchd(None, "completion", "fish")
    assert done.returncode == 2 and "invalid choice: 'fish'" in done.stderr
