"""The failed view (#/failed) pages through more dead letters than fit on a page, in a
real headless browser (the fixtures are tests/test_ui.py's)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import Daemon, wait_job
from tests.test_ui import browser, job_body, page, squares  # noqa: F401

if TYPE_CHECKING:
    from playwright.sync_api import Page

FAILED_PAGE = 25  # app.js's page of dead letters


def test_the_failed_view_pages_newer_and_older(
    page: Page,  # noqa: F811
    squares: Daemon,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    gate.touch()
    client = squares.client
    items = [-n for n in range(1, FAILED_PAGE + 4)]
    job_id = client.submit("squares", job_body(gate, items, max_receive_count=1))["job_id"]
    assert wait_job(client, "squares", job_id)["status"] == "completed_with_failures"
    page.goto(f"{squares.url}/#/failed")
    rows = page.locator("#failed-list tbody tr")
    newer, older, where = (
        page.locator("button.newer"),
        page.locator("button.older"),
        page.locator(".pager-where"),
    )
    expect(rows).to_have_count(FAILED_PAGE)
    expect(where).to_have_text("page 1")
    expect(newer).to_be_disabled()
    first_page = rows.evaluate_all("rows => rows.map(r => r.dataset.batchId)")
    older.click()
    expect(rows).to_have_count(3)
    expect(where).to_have_text("page 2")
    expect(older).to_be_disabled()
    second_page = rows.evaluate_all("rows => rows.map(r => r.dataset.batchId)")
    # Every dead letter once, over the two pages.
    assert sorted(first_page + second_page) == sorted(
        f"{job_id}-{n}" for n in range(1, len(items) + 1)
    )
    newer.click()
    expect(where).to_have_text("page 1")
    expect(rows.first).to_have_attribute("data-batch-id", first_page[0])
    # A new filter starts again from the first page.
    older.click()
    expect(where).to_have_text("page 2")
    page.fill("#failed-q", "negative input")
    expect(where).to_have_text("page 1")
    expect(rows).to_have_count(FAILED_PAGE)
