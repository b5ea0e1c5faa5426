"""The Handler lifecycle on real worker processes: config, failures, crashes, hooks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchd.client import BatchdError
from tests.conftest import Daemon, wait_for, wait_job

Project = Callable[..., Path]

RECORDING_HANDLER = """
import json, os

class Handler:
    def __init__(self, config, job_spec):
        self.config = config
        self.job_spec = job_spec

    def handle_batch(self, payload, batch_id):
        return {"config": self.config, "job_spec": self.job_spec, "payload": payload,
                "batch_id": batch_id, "env": {k: os.environ.get(k) for k in
                ("FROM_DOTENV", "FROM_TOML", "BATCHD_API_NAME", "BATCHD_JOB_ID", "BATCHD_URL")},
                "cwd_files": sorted(os.listdir("."))}
"""


def test_config_merge_job_spec_env_and_project_files(daemon: Daemon, make_project: Project) -> None:
    project = make_project(
        "recorder",
        RECORDING_HANDLER,
        config={"model": {"name": "base", "size": 1}, "threshold": 0.5},
        files={".env": "# comment\nFROM_DOTENV=yes\n", "data/values.json": "{}"},
        extra_toml='[handler.env]\nFROM_TOML = "toml"\n',
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit(
        "recorder",
        {
            "workers": 1,
            "item_list": {"items": ["a"], "batch_size": 1},
            "config": {"model": {"size": 2}, "extra": True},
            "timeout": 300,
        },
    )
    assert wait_job(client, "recorder", job["job_id"])["status"] == "succeeded"
    (row,) = list(client.results("recorder", job["job_id"]))
    result = row["result"]
    assert result["config"] == {
        "model": {"name": "base", "size": 2},
        "threshold": 0.5,
        "extra": True,
    }
    assert result["job_spec"]["job_id"] == job["job_id"]
    assert result["job_spec"]["config"] == {"model": {"size": 2}, "extra": True}
    assert result["job_spec"]["total_batch_count"] == 1
    assert result["job_spec"]["timeout"] == 300
    assert result["job_spec"]["max_receive_count"] == 3
    assert result["payload"] == ["a"]
    assert result["batch_id"] == row["batch_id"] == f"{job['job_id']}-1"
    assert result["env"] == {
        "FROM_DOTENV": "yes",
        "FROM_TOML": "toml",
        "BATCHD_API_NAME": "recorder",
        "BATCHD_JOB_ID": job["job_id"],
        "BATCHD_URL": daemon.url,
    }
    # batchd.toml and dotfiles are not project files; the rest is the current directory.
    assert result["cwd_files"] == ["data", "handler.py"]


def test_handler_with_only_the_parameters_it_declares(
    daemon: Daemon, make_project: Project
) -> None:
    project = make_project(
        "minimal",
        """
        class Handler:
            def __init__(self, config):
                self.offset = config["offset"]

            def handle_batch(self, payload):
                return [item + self.offset for item in payload]
        """,
        config={"offset": 10},
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit("minimal", {"item_list": {"items": [1, 2, 3], "batch_size": 2}})
    assert wait_job(client, "minimal", job["job_id"])["status"] == "succeeded"
    assert [r["result"] for r in client.results("minimal", job["job_id"])] == [[11, 12], [13]]


def test_none_results_are_not_stored(daemon: Daemon, make_project: Project) -> None:
    project = make_project(
        "quiet",
        """
        class Handler:
            def __init__(self, config):
                pass

            def handle_batch(self, payload):
                return payload[0] if payload[0] % 2 else None
        """,
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit("quiet", {"item_list": {"items": [1, 2, 3, 4], "batch_size": 1}})
    status = wait_job(client, "quiet", job["job_id"])
    assert status["batch_metrics"]["succeeded"] == 4
    assert [r["result"] for r in client.results("quiet", job["job_id"])] == [1, 3]


FLAKY_HANDLER = """
import os

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload, batch_id):
        item = payload[0]
        if item == "bad":
            raise ValueError(f"cannot handle {item}")
        if item == "flaky":
            marker = os.path.join(os.environ["MARKERS"], batch_id)
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("first attempt fails")
        return item
"""


def test_failed_batches_are_retried_then_dead_lettered(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    project = make_project(
        "flaky", FLAKY_HANDLER, extra_toml=f'[handler.env]\nMARKERS = "{markers}"\n'
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit(
        "flaky",
        {
            "workers": 2,
            "item_list": {"items": ["ok", "bad", "flaky", "ok2"], "batch_size": 1},
            "sqs_dead_letter_queue": {"arn": "ignored", "max_receive_count": 2},
        },
    )
    status = wait_job(client, "flaky", job["job_id"])
    assert status["status"] == "completed_with_failures"
    assert status["max_receive_count"] == 2
    assert status["batch_metrics"]["succeeded"] == 3
    assert status["batch_metrics"]["failed"] == 1
    # "bad" failed twice, "flaky" once.
    assert status["batch_metrics"]["failed_attempts"] == 3
    (dead,) = list(client.failed("flaky", job["job_id"]))
    assert dead["batch_id"] == f"{job['job_id']}-2"
    assert dead["payload"] == ["bad"]
    assert dead["attempts"] == 2
    assert dead["error"] == "ValueError: cannot handle bad"
    assert 'raise ValueError(f"cannot handle {item}")' in dead["traceback"]
    assert sorted(r["result"] for r in client.results("flaky", job["job_id"])) == [
        "flaky",
        "ok",
        "ok2",
    ]

    # Fix the handler, redeploy, and retry the dead-lettered batch on the new version.
    fixed = FLAKY_HANDLER.replace('raise ValueError(f"cannot handle {item}")', "return 'fixed'")
    make_project("flaky", fixed, extra_toml=f'[handler.env]\nMARKERS = "{markers}"\n')
    assert client.deploy(project)["version"] == 2
    retry = client.retry("flaky", job["job_id"])
    assert retry["retry_of"] == job["job_id"]
    assert retry["total_batch_count"] == 1
    assert retry["api_version"] == 2
    assert wait_job(client, "flaky", retry["job_id"])["status"] == "succeeded"
    assert [r["result"] for r in client.results("flaky", retry["job_id"])] == ["fixed"]


def test_init_failure_ends_job_without_burning_attempts(
    daemon: Daemon, make_project: Project
) -> None:
    project = make_project(
        "broken",
        """
        class Handler:
            def __init__(self, config):
                raise FileNotFoundError("model.bin is missing")

            def handle_batch(self, payload):
                return payload
        """,
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit("broken", {"workers": 2, "item_list": {"items": [1, 2], "batch_size": 1}})
    status = wait_job(client, "broken", job["job_id"])
    assert status["status"] == "worker_error"
    assert "FileNotFoundError: model.bin is missing" in status["error"]
    assert "Traceback" in status["error"]
    assert status["batch_metrics"]["failed_attempts"] == 0
    assert status["batch_metrics"]["failed"] == 0
    assert status["batches_in_queue"] == 2


def test_on_job_complete_failure_is_a_worker_error(daemon: Daemon, make_project: Project) -> None:
    project = make_project(
        "hookfail",
        """
        class Handler:
            def __init__(self, config):
                pass

            def handle_batch(self, payload):
                return None

            def on_job_complete(self):
                raise RuntimeError("could not publish the report")
        """,
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit("hookfail", {"item_list": {"items": [1], "batch_size": 1}})
    status = wait_job(client, "hookfail", job["job_id"])
    assert status["status"] == "worker_error"
    assert "on_job_complete failed: RuntimeError: could not publish the report" in status["error"]
    assert status["batch_metrics"]["succeeded"] == 1


def test_on_job_complete_runs_once_with_final_status(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    out = tmp_path / "hook"
    out.mkdir()
    project = make_project(
        "hooked",
        f"""
        import json, os

        class Handler:
            def __init__(self, config):
                pass

            def handle_batch(self, payload):
                if payload == ["bad"]:
                    raise ValueError("bad")

            def on_job_complete(self, status):
                path = os.path.join({str(out)!r}, str(os.getpid()) + "-" + str(os.urandom(4).hex()))
                with open(path, "w") as f:
                    json.dump(status, f)
        """,
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit(
        "hooked",
        {
            "workers": 3,
            "item_list": {"items": ["a", "bad", "c", "d"], "batch_size": 1},
            "max_receive_count": 1,
        },
    )
    final = wait_job(client, "hooked", job["job_id"])
    assert final["status"] == "completed_with_failures"
    (record,) = list(out.iterdir())
    seen = json.loads(record.read_text())
    assert seen["job_id"] == job["job_id"]
    assert seen["status"] == "completed_with_failures"
    assert seen["batch_metrics"]["succeeded"] == 3
    assert seen["batch_metrics"]["failed"] == 1


CRASHING_HANDLER = """
import os, signal

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        if payload == ["crash"]:
            os._exit(17)
        if payload == ["kill"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return payload
"""


def test_worker_crash_costs_one_attempt_and_job_goes_on(
    daemon: Daemon, make_project: Project
) -> None:
    project = make_project("crashy", CRASHING_HANDLER)
    client = daemon.client
    client.deploy(project)
    job = client.submit(
        "crashy",
        {
            "workers": 2,
            "max_receive_count": 2,
            "item_list": {"items": ["a", "crash", "b", "c"], "batch_size": 1},
        },
    )
    status = wait_job(client, "crashy", job["job_id"])
    assert status["status"] == "completed_with_failures"
    assert status["batch_metrics"]["succeeded"] == 3
    assert status["batch_metrics"]["failed"] == 1
    assert status["batch_metrics"]["failed_attempts"] == 2
    assert status["worker_counts"]["failed"] >= 2
    (dead,) = list(client.failed("crashy", job["job_id"]))
    assert dead["payload"] == ["crash"]
    assert dead["error"] == "worker exited with code 17"


def test_crash_loop_stops_at_the_restart_budget(
    make_daemon: Callable[..., Daemon], make_project: Project
) -> None:
    daemon = make_daemon(max_worker_restarts=2)
    project = make_project("crashloop", CRASHING_HANDLER)
    client = daemon.client
    client.deploy(project)
    job = client.submit(
        "crashloop",
        {"max_receive_count": 10, "item_list": {"items": ["crash"] * 5, "batch_size": 1}},
    )
    status = wait_job(client, "crashloop", job["job_id"])
    assert status["status"] == "worker_error"
    assert "workers died 3 times in a row" in status["error"]
    assert "worker exited with code 17" in status["error"]


SLEEPING_HANDLER = """
import os, time

class Handler:
    def __init__(self, config):
        open(os.path.join(os.environ["PIDS"], str(os.getpid())), "w").close()

    def handle_batch(self, payload):
        time.sleep(600)
"""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def wait_workers_gone(pids: Path) -> None:
    started = [int(p.name) for p in pids.iterdir()]
    assert started, "no worker ever started"
    wait_for(lambda: not any(pid_alive(pid) for pid in started), what="workers to exit")


def test_timeout_stops_the_job(daemon: Daemon, make_project: Project, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    project = make_project(
        "slow",
        SLEEPING_HANDLER,
        extra_toml=f'[handler.env]\nPIDS = "{pids}"\n',
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit("slow", {"timeout": 1, "item_list": {"items": [1, 2], "batch_size": 1}})
    status = wait_job(client, "slow", job["job_id"])
    assert status["status"] == "timed_out"
    assert status["end_time"] is not None
    # Workers are gone and nothing is leased any more.
    wait_workers_gone(pids)
    assert client.get_job("slow", job["job_id"])["job_status"]["batch_metrics"]["in_progress"] == 0


def test_stop_is_final_and_stopping_twice_is_a_conflict(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()

    project = make_project(
        "stoppable",
        SLEEPING_HANDLER,
        extra_toml=f'[handler.env]\nPIDS = "{pids}"\n',
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit(
        "stoppable", {"workers": 2, "item_list": {"items": [1, 2, 3], "batch_size": 1}}
    )
    wait_for(
        lambda: (
            client.get_job("stoppable", job["job_id"])["job_status"]["batch_metrics"]["in_progress"]
            == 2
        ),
        what="two batches in progress",
    )
    assert client.stop_job("stoppable", job["job_id"]) == {
        "message": f"stopped job {job['job_id']}"
    }
    status = client.get_job("stoppable", job["job_id"])["job_status"]
    assert status["status"] == "stopped"
    with pytest.raises(BatchdError) as conflict:
        client.stop_job("stoppable", job["job_id"])
    assert conflict.value.status == 409
    assert "already ended (stopped)" in conflict.value.message
    wait_workers_gone(pids)
    assert client.get_job("stoppable", job["job_id"])["job_status"]["status"] == "stopped"


GATED_VERSION_HANDLER = """
import os, time

VERSION = "{version}"

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        while not os.path.exists(os.environ["GATE"]):
            time.sleep(0.01)
        return VERSION
"""


def test_redeploy_never_changes_a_submitted_job(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    env = f'[handler.env]\nGATE = "{gate}"\n'
    client = daemon.client
    project = make_project("versioned", GATED_VERSION_HANDLER.format(version="v1"), extra_toml=env)
    client.deploy(project)
    old = client.submit(
        "versioned", {"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1}}
    )
    wait_for(
        lambda: (
            client.get_job("versioned", old["job_id"])["job_status"]["batch_metrics"]["in_progress"]
            == 1
        ),
        what="the first job to start",
    )
    make_project("versioned", GATED_VERSION_HANDLER.format(version="v2"), extra_toml=env)
    assert client.deploy(project)["version"] == 2
    new = client.submit("versioned", {"item_list": {"items": [1], "batch_size": 1}})
    assert (old["api_version"], new["api_version"]) == (1, 2)
    gate.touch()
    for job in (old, new):
        assert wait_job(client, "versioned", job["job_id"])["status"] == "succeeded"
    assert [r["result"] for r in client.results("versioned", old["job_id"])] == ["v1", "v1"]
    assert [r["result"] for r in client.results("versioned", new["job_id"])] == ["v2"]
    versions = [v["version"] for v in client.get_api("versioned")["versions"]]
    assert versions == [2, 1]


def test_workers_run_under_the_apis_own_interpreter(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    """A bare venv without any of the daemon's packages still runs the worker."""
    import subprocess
    import sys

    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    project = make_project(
        "otherpy",
        """
        import sys
        import batchd

        class Handler:
            def __init__(self, config):
                pass

            def handle_batch(self, payload):
                try:
                    import aiohttp  # noqa: F401  the daemon's packages must not leak in
                    leaked = True
                except ImportError:
                    leaked = False
                batchd.logger.info("from the bare venv", extra={"leaked": leaked})
                return {"prefix": sys.prefix, "leaked": leaked, "client": batchd.client().url}
        """,
        extra_toml=f'python = "{python}"\n',
    )
    toml = project / "batchd.toml"
    # `python` belongs to [handler]: put it right after the handler path.
    lines = toml.read_text().splitlines()
    lines.remove(f'python = "{python}"')
    lines.insert(lines.index('path = "handler.py"') + 1, f'python = "{python}"')
    toml.write_text("\n".join(lines) + "\n")
    client = daemon.client
    client.deploy(project)
    job = client.submit("otherpy", {"item_list": {"items": [1], "batch_size": 1}})
    assert wait_job(client, "otherpy", job["job_id"])["status"] == "succeeded"
    (row,) = list(client.results("otherpy", job["job_id"]))
    assert row["result"] == {"prefix": str(venv), "leaked": False, "client": daemon.url}

    # The structured logger works there too, with its labels added by the daemon.
    def logged() -> list[dict[str, Any]]:
        records = client.stream_job_logs("otherpy", job["job_id"])
        return [r for r in records if r["message"] == "from the bare venv"]

    (record,) = wait_for(logged, what="the handler's log record")
    assert record["leaked"] is False
    assert record["labels"]["batchID"] == row["batch_id"]
    assert record["labels"]["apiName"] == "otherpy"


MODULES_HANDLER = """
import os, sys

class Handler:
    def handle_batch(self, payload):
        loaded = sorted(m for m in sys.modules if m == "batchd" or m.startswith("batchd."))
        return {"pid": os.getpid(), "modules": loaded}
"""


def test_a_worker_imports_only_the_worker_wire_and_constants(
    daemon: Daemon, make_project: Project
) -> None:
    """A worker may run under an interpreter without the daemon's dependencies: of batchd
    it loads only what it needs, whether started fresh or adopted as the spare."""
    from tests.test_spare import spare_pids

    client = daemon.client
    client.deploy(make_project("modules", MODULES_HANDLER))

    def loaded() -> dict[str, Any]:
        job = client.submit("modules", {"workers": 1, "item_list": {"items": [1], "batch_size": 1}})
        assert wait_job(client, "modules", job["job_id"])["status"] == "succeeded"
        (row,) = client.results("modules", job["job_id"])
        result: dict[str, Any] = row["result"]
        return result

    fresh = loaded()
    (spare,) = wait_for(lambda: spare_pids(daemon), what="a spare worker")
    adopted = loaded()
    assert adopted["pid"] == spare != fresh["pid"]
    for modules in (fresh["modules"], adopted["modules"]):
        # What it must load: the check below would pass on a report of nothing.
        assert {"batchd.worker.main", "batchd.wire.messages", "batchd.constants"} <= set(modules)
        others = [
            m
            for m in modules
            if m not in ("batchd", "batchd.constants") and m.split(".")[1] not in ("worker", "wire")
        ]
        assert others == []


def test_batch_timeout_kills_a_hung_handler(daemon: Daemon, make_project: Project) -> None:
    project = make_project(
        "hangs",
        """
        import time

        class Handler:
            def __init__(self, config):
                pass

            def handle_batch(self, payload):
                if payload == ["hang"]:
                    time.sleep(600)
                return payload
        """,
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit(
        "hangs",
        {
            "workers": 2,
            "batch_timeout": 1,
            "max_receive_count": 2,
            "item_list": {"items": ["a", "hang", "b"], "batch_size": 1},
        },
    )
    assert job["batch_timeout"] == 1
    status = wait_job(client, "hangs", job["job_id"])
    assert status["status"] == "completed_with_failures"
    assert status["batch_metrics"]["succeeded"] == 2
    assert status["batch_metrics"]["failed_attempts"] == 2
    (dead,) = list(client.failed("hangs", job["job_id"]))
    assert dead["payload"] == ["hang"]
    assert dead["error"] == "batch exceeded its time limit of 1s"


def test_batch_timeouts_do_not_count_as_a_crash_loop(
    make_daemon: Callable[..., Daemon], make_project: Project
) -> None:
    daemon = make_daemon(max_worker_restarts=0)
    client = daemon.client
    client.deploy(
        make_project(
            "slowpokes",
            "import time\nclass Handler:\n    def __init__(self, config): pass\n"
            "    def handle_batch(self, payload):\n        time.sleep(600)\n",
        )
    )
    job = client.submit(
        "slowpokes",
        {
            "batch_timeout": 0.5,
            "max_receive_count": 1,
            "item_list": {"items": [1, 2], "batch_size": 1},
        },
    )
    final = wait_job(client, "slowpokes", job["job_id"])
    assert final["status"] == "completed_with_failures"
    assert final["batch_metrics"]["failed"] == 2


def test_an_api_sets_the_batch_time_limit_and_a_job_overrides_it(
    daemon: Daemon, make_project: Project
) -> None:
    client = daemon.client
    project = make_project(
        "apilimit",
        "import time\nclass Handler:\n    def __init__(self, config): pass\n"
        "    def handle_batch(self, payload):\n        time.sleep(payload[0])\n",
    )
    toml = project / "batchd.toml"
    toml.write_text(
        toml.read_text().replace('path = "handler.py"', 'path = "handler.py"\nbatch_timeout = 0.5')
    )
    client.deploy(project)
    limited = client.submit(
        "apilimit", {"max_receive_count": 1, "item_list": {"items": [30], "batch_size": 1}}
    )
    assert limited["batch_timeout"] == 0.5
    final = wait_job(client, "apilimit", limited["job_id"])
    assert final["status"] == "completed_with_failures"
    own = client.submit(
        "apilimit", {"batch_timeout": 60, "item_list": {"items": [1], "batch_size": 1}}
    )
    assert own["batch_timeout"] == 60
    assert wait_job(client, "apilimit", own["job_id"])["status"] == "succeeded"
