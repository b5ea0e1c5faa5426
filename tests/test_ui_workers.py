"""The dashboard's workers page (#/workers) in a real headless browser: live workers with
their memory and CPU, and worker exits with their cause. Saved as a screenshot under
test-artifacts/ui/, like tests/test_ui.py's pages (whose browser fixtures this uses)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import Daemon, wait_for
from tests.test_ui import browser, page, screenshot  # noqa: F401

if TYPE_CHECKING:
    from playwright.sync_api import Page

# "crash" exits the worker with code 7; "gate" waits for the file named by the config.
HANDLER = """
import os
import time


class Handler:
    def __init__(self, config):
        self.gate = config.get("gate")

    def handle_batch(self, payload):
        if payload == ["crash"]:
            os._exit(7)
        while not os.path.exists(self.gate):
            time.sleep(0.02)
        return payload
"""
SIZE = re.compile(r"^\d+(\.\d)? (KiB|MiB)$")
PERCENT = re.compile(r"^\d+%$")


def test_workers_page_shows_live_workers_and_exits(
    page: Page,  # noqa: F811
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    daemon = make_daemon()
    client = daemon.client
    client.deploy(make_project("flaky", HANDLER))
    gate = tmp_path / "gate"
    body = {"config": {"gate": str(gate)}, "max_receive_count": 1}
    crashed = client.submit("flaky", {**body, "item_list": {"items": ["crash"], "batch_size": 1}})
    held = client.submit("flaky", {**body, "item_list": {"items": ["wait"], "batch_size": 1}})
    pid = wait_for(
        lambda: next(
            (
                w["pid"]
                for w in client.workers()["workers"]
                if w["job_id"] == held["job_id"] and w["batch_id"] is not None
            ),
            None,
        ),
        what="a worker on the held batch",
    )

    page.goto(f"{daemon.url}/")
    page.click("nav a[href='#/workers']")
    row = page.locator(f"#live-workers tr[data-pid='{pid}']")
    expect(row).to_contain_text(held["job_id"])
    expect(row).to_contain_text("running")
    expect(row.locator("td.rss")).to_have_text(SIZE)
    expect(row.locator("td.cpu")).to_have_text(PERCENT)
    expect(row.locator("td.gpu-memory")).to_have_text("-")  # no nvidia-smi here
    crash = page.locator("#worker-events tr[data-cause='crashed']")
    expect(crash).to_contain_text(crashed["job_id"])
    expect(crash).to_contain_text("worker exited with code 7")
    expect(crash.locator(".badge")).to_have_text("crashed")
    screenshot(page, "workers")

    gate.touch()
    expect(page.locator("#live-workers")).to_contain_text("no live workers")
    expect(page.locator("#worker-events tr[data-cause='exited']")).to_contain_text(held["job_id"])
