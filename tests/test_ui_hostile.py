"""The dashboard given hostile text, in a real headless browser (the fixtures are
tests/test_ui.py's): markup in an error, a traceback or a log line shows as text and runs
nothing, and text with no space in it wraps instead of widening the page past 800 px.
Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import Daemon, wait_job
from tests.test_ui import browser, page, screenshot  # noqa: F401

if TYPE_CHECKING:
    from playwright.sync_api import Page

MARKUP = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>"
UNBROKEN = "x" * 400  # a long path or repr: nowhere to break but anywhere
HANDLER = f"""
class Handler:
    def handle_batch(self, payload):
        print({MARKUP!r}, flush=True)
        if payload[0] < 0:
            raise ValueError({MARKUP + UNBROKEN!r})
        return payload
"""


def test_hostile_text_shows_as_text_and_the_pages_fit_800px(
    page: Page,  # noqa: F811
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
) -> None:
    from playwright.sync_api import expect

    daemon = make_daemon()
    client = daemon.client
    client.deploy(make_project("hostile", HANDLER))
    body = {"item_list": {"items": [1, -2], "batch_size": 1}, "max_receive_count": 1}
    job_id = client.submit("hostile", body)["job_id"]
    assert wait_job(client, "hostile", job_id)["status"] == "completed_with_failures"

    page.set_viewport_size({"width": 800, "height": 900})
    views = {
        "hostile-overview": ("/", "#recent-jobs tbody tr", "hostile"),
        "hostile-job": (f"/#/job/hostile/{job_id}", "#job-log", MARKUP),
        "hostile-failed": ("/#/failed", "#failed-list summary", MARKUP + UNBROKEN),
        "hostile-workers": ("/#/workers", "#worker-events tbody tr", "hostile"),
    }
    for name, (path, where, text) in views.items():
        page.goto(daemon.url + path)
        expect(page.locator(where).first).to_contain_text(text)
        if name == "hostile-failed":
            page.click("#failed-list summary")
            expect(page.locator("#failed-list details pre")).to_contain_text(MARKUP)
        elif name == "hostile-job":
            expect(page.locator("#failed-batches")).to_contain_text(MARKUP)
        assert page.evaluate("window.__pwned") is None, name
        assert page.locator("main img, main script").count() == 0, name
        # Nothing widens the page: a wide table scrolls in its own box.
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], (name, widths)
        screenshot(page, name)
