"""The dashboard's Pause/Resume buttons, on a job's page and on an API's, in a real
headless browser (the fixtures are tests/test_ui.py's). Screenshots go to
test-artifacts/ui/."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import Daemon, wait_for
from tests.test_ui import browser, job_body, page, screenshot, squares  # noqa: F401

if TYPE_CHECKING:
    from playwright.sync_api import Page


def test_pause_and_resume_a_job_from_its_page(
    page: Page,  # noqa: F811
    squares: Daemon,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    client = squares.client
    job_id = client.submit("squares", job_body(gate, [1, 2, 3], workers=1))["job_id"]

    def metrics() -> tuple[int, int, int]:
        status = client.get_job("squares", job_id)["job_status"]
        done = status["batch_metrics"]
        return done["succeeded"], done["in_progress"], status["batches_in_queue"]

    wait_for(lambda: metrics() == (0, 1, 2), what="the first batch at the gate")
    page.goto(f"{squares.url}/#/job/squares/{job_id}")
    expect(page.locator("#job-status")).to_have_text("running")
    button = page.locator("#pause-button")
    expect(button).to_have_text("Pause job")
    button.click()
    expect(page.locator("#job-status")).to_have_text("paused")
    expect(button).to_have_text("Resume job")
    expect(page.locator("#action-note")).to_have_text("job paused")

    # The batch in hand finishes; the others wait.
    gate.touch()

    wait_for(lambda: metrics() == (1, 0, 2), what="the batch in hand to finish")
    assert client.get_job("squares", job_id)["job_status"]["status"] == "paused"
    expect(page.locator("#job-done")).to_have_text("1 / 3 batches finished")
    screenshot(page, "job-paused")

    button.click()
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#job-done")).to_have_text("3 / 3 batches finished")
    expect(button).to_be_hidden()


def test_pause_and_resume_an_api_from_its_page(
    page: Page,  # noqa: F811
    squares: Daemon,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{squares.url}/#/api/squares")
    button = page.locator("#api-pause-button")
    expect(button).to_have_text("Pause API")
    button.click()
    expect(button).to_have_text("Resume API")
    expect(page.locator("#api-pause-note")).to_have_text("paused API squares")
    assert squares.client.get_api("squares")["paused"] is True
    screenshot(page, "api-paused")
    button.click()
    expect(button).to_have_text("Pause API")
    expect(page.locator("#api-pause-note")).to_have_text("resumed API squares")
    assert squares.client.get_api("squares")["paused"] is False
