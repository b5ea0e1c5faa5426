"""The dashboard: its HTTP surface, and the page itself in a real headless browser.

The browser tests drive Debian's Chromium (`make test` installs it as root when missing)
with Playwright; they skip, saying why, where that browser is missing. Each page is saved
as a screenshot under test-artifacts/ui/.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from batchd.client import Client
from tests.conftest import EXAMPLE, REPO, Daemon, wait_for, wait_job

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts" / "ui"
TOKEN = "ui-token-0123456789abcdef"
LONG = 60_000  # ms: generous, for a loaded 2-core machine

# Every batch waits until the file named by the job's config `gate` exists; a negative
# item fails unless `<gate>.fixed` exists too.
HANDLER = """
import os
import time


class Handler:
    def __init__(self, config):
        self.gate = config["gate"]

    def handle_batch(self, payload, batch_id):
        while not os.path.exists(self.gate):
            time.sleep(0.02)
        if any(n < 0 for n in payload) and not os.path.exists(self.gate + ".fixed"):
            raise ValueError(f"negative input in batch {batch_id}")
        print(f"handled {batch_id}")
        return [n * n for n in payload]
"""


def get(daemon: Daemon, path: str, token: str | None = None) -> tuple[int, Any, Any]:
    request = urllib.request.Request(daemon.url + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), exc.headers
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, raw, headers


@pytest.fixture
def squares(make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]) -> Daemon:
    daemon = make_daemon()
    daemon.client.deploy(make_project("squares", HANDLER))
    return daemon


def job_body(gate: Path, items: list[int], **extra: Any) -> dict[str, Any]:
    return {"item_list": {"items": items, "batch_size": 1}, "config": {"gate": str(gate)}, **extra}


# -- the HTTP surface -------------------------------------------------------------------------


def test_static_files_are_public_and_data_is_not(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    daemon = make_daemon(token_file=str(tmp_path / "token"))
    for path in ("/", "/ui/", "/ui/index.html"):
        status, body, headers = get(daemon, path)
        assert status == 200 and b'<script src="/ui/app.js"' in body, path
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, body, headers = get(daemon, "/ui/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert headers["Cache-Control"] == "no-cache" and headers["ETag"]
    request = urllib.request.Request(
        daemon.url + "/ui/app.js", headers={"If-None-Match": headers["ETag"]}
    )
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request, timeout=30)
    assert not_modified.value.code == 304
    status, body, _ = get(daemon, "/ui/nope.js")
    assert status == 404 and "nope.js" in body["error"]["message"]
    with urllib.request.urlopen(daemon.url + "/ui", timeout=30) as response:
        assert response.url.endswith("/ui/")  # redirected
    # Everything else still needs the token, however the path is spelled.
    for path in ("/status", "/jobs", "/apis", "/ui/../status", "/ui/%2e%2e/apis", "//status"):
        status, body, _ = get(daemon, path)
        assert status in (401, 404), (path, status)
        assert status == 401 or "token" not in body["error"]["message"]
    assert get(daemon, "/status")[0] == 401
    assert get(daemon, "/jobs", TOKEN)[0] == 200


def test_job_listings_page_by_cursor_and_refuse_bad_input(daemon: Daemon) -> None:
    client = daemon.client
    client.deploy(EXAMPLE)
    ids = [
        client.submit("hello", {"item_list": {"items": [n], "batch_size": 1}})["job_id"]
        for n in range(7)
    ]
    for job_id in ids:
        wait_job(client, "hello", job_id)
    newest_first = ids[::-1]
    for path in ("/batch/hello", "/jobs"):
        pages, before = [], ""
        while True:
            status, body, _ = get(daemon, f"{path}?limit=3{before}")
            assert status == 200, body
            page = [job["job_id"] for job in body["jobs"]]
            pages.append(page)
            if len(page) < 3:
                break
            before = f"&before={page[-1]}"
        assert [job_id for page in pages for job_id in page] == newest_first, path
        assert [len(page) for page in pages] == [3, 3, 1]
    assert get(daemon, "/jobs?active=true")[1] == {"jobs": []}
    for path, field in [
        ("/batch/hello?before=nosuchjob", "before"),
        ("/batch/hello?before=", "before"),
        ("/jobs?before=nosuchjob", "before"),
        ("/jobs?limit=0", "limit"),
        ("/jobs?limit=abc", "limit"),
        ("/jobs?limit=1001", "limit"),
        ("/jobs?active=maybe", "active"),
        (f"/batch/hello/failed?jobID={ids[0]}&limit=0", "limit"),
        (f"/batch/hello/failed?jobID={ids[0]}&limit=x", "limit"),
        (f"/batch/hello/logs?jobID={ids[0]}&tail=-1", "tail"),
        (f"/batch/hello/logs?jobID={ids[0]}&tail=many", "tail"),
    ]:
        status, body, _ = get(daemon, path)
        assert status == 400, (path, body)
        assert body["error"]["field"] == field, (path, body)


def test_failed_limit_and_log_tail(squares: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    client = squares.client
    job = client.submit("squares", job_body(gate, [-1, -2, -3, 4, 5], max_receive_count=1))
    wait_job(client, "squares", job["job_id"])
    query = f"jobID={job['job_id']}"
    status, raw, _ = get(squares, f"/batch/squares/failed?{query}&limit=2")
    lines = raw.splitlines() if isinstance(raw, bytes) else [json.dumps(raw)]
    assert status == 200 and len(lines) == 2
    assert [json.loads(line)["batch_id"] for line in lines] == [
        f"{job['job_id']}-1",
        f"{job['job_id']}-2",
    ]
    status, raw, _ = get(squares, f"/batch/squares/logs?{query}")
    everything = raw.splitlines()
    assert status == 200 and len(everything) >= 5
    for tail in (1, 3, len(everything), len(everything) + 10):
        status, raw, _ = get(squares, f"/batch/squares/logs?{query}&tail={tail}")
        tail_lines = raw.splitlines() if isinstance(raw, bytes) else [json.dumps(raw)]
        assert status == 200
        assert [json.loads(line) for line in tail_lines] == [
            json.loads(line) for line in everything[-tail:]
        ]


def test_history_failed_and_job_filters_refuse_bad_input(squares: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    job_id = squares.client.submit("squares", job_body(gate, [1]))["job_id"]
    wait_job(squares.client, "squares", job_id)
    for path, status, field in [
        ("/history?window=1w", 400, "window"),
        ("/history?api=nosuch", 404, "api"),
        ("/failed?api=nosuch", 404, "api"),
        ("/failed?limit=0", 400, "limit"),
        ("/failed?limit=501", 400, "limit"),
        ("/failed?cursor=abc", 400, "cursor"),
        ("/failed?cursor=-5", 400, "cursor"),
        (f"/failed?q={'x' * 201}", 400, "q"),
        ("/jobs?status=bogus", 400, "status"),
        ("/jobs?status=running,,nope", 400, "status"),
        ("/jobs?api=nosuch", 404, "api"),
        (f"/jobs?api=squares&before={job_id}&status=%27", 400, "status"),
        ("/batch/squares/history", 400, "jobID"),
        ("/batch/squares/history?jobID=nosuchjob", 404, "jobID"),
    ]:
        got, body, _ = get(squares, path)
        assert got == status, (path, body)
        assert body["error"]["field"] == field, (path, body)
    # Wildcards are text: no LIKE pattern reaches the store.
    assert get(squares, "/failed?q=%25")[1] == {"failed": [], "next_cursor": None}
    status, body, _ = get(squares, f"/failed?q={'x' * 200}")
    assert status == 200 and body["failed"] == []


def test_a_jobs_history_comes_from_the_store_and_outlives_a_restart(
    squares: Daemon, tmp_path: Path
) -> None:
    client = squares.client
    gate = tmp_path / "gate"
    gate.touch()
    job_id = client.submit("squares", job_body(gate, [1, -2, 3, -4, 5, 6], max_receive_count=2))[
        "job_id"
    ]
    assert wait_job(client, "squares", job_id)["status"] == "completed_with_failures"
    status, before, _ = get(squares, "/history?api=squares&window=1h")
    assert status == 200 and before["scope"] == "node" and before["step_seconds"] == 1
    series = before["apis"]["squares"]
    assert len(series["succeeded"]) == 3600 and sum(series["succeeded"]) == 4
    assert sum(series["failed"]) == 4  # two batches, two attempts each
    day = get(squares, "/history?window=1d")[1]
    assert day["step_seconds"] == 60 and len(day["apis"]["squares"]["succeeded"]) == 1440
    assert sum(day["apis"]["squares"]["succeeded"]) == 4
    durations = before["batch_durations"]["squares"]
    assert len(durations["counts"]) == len(before["batch_duration_bounds"]) + 1
    assert sum(durations["counts"]) == 4

    squares.restart()
    status, history, _ = get(squares, f"/batch/squares/history?jobID={job_id}")
    assert status == 200, history
    assert history["job_id"] == job_id and history["step_seconds"] == 1 and history["end_time"]
    assert sum(bucket[1] for bucket in history["buckets"]) == 4
    assert sum(bucket[2] for bucket in history["buckets"]) == 4
    # The in-memory series are this daemon's: they start again empty.
    after = get(squares, "/history?api=squares")[1]
    assert sum(after["apis"]["squares"]["succeeded"]) == 0


def test_jobs_listed_by_status_and_api(squares: Daemon, tmp_path: Path) -> None:
    client = squares.client
    running = client.submit("squares", job_body(tmp_path / "never", [1]))["job_id"]
    stopped = client.submit("squares", job_body(tmp_path / "never", [1]))["job_id"]
    client.stop_job("squares", stopped)

    def listed(query: str) -> list[str]:
        status, body, _ = get(squares, f"/jobs?{query}")
        assert status == 200, body
        return [job["job_id"] for job in body["jobs"]]

    assert listed("status=stopped") == [stopped]
    assert listed("status=running,pending") == [running]
    assert listed("status=stopped,running,pending&api=squares") == [stopped, running]
    assert listed("status=stopped&active=true") == []
    assert listed("status=succeeded") == []
    assert listed("api=squares&limit=1") == [stopped]
    assert listed(f"api=squares&before={stopped}") == [running]
    client.stop_job("squares", running)


# -- the page in a browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: run `make browser` as root (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    sync_api.expect.set_options(timeout=LONG)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(LONG)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"script errors in the page: {errors}"


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_submit_a_job_and_watch_its_progress_bar_reach_100(
    page: Page, squares: Daemon, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    page.goto(f"{squares.url}/#/api/squares")
    expect(page.locator("#api-summary")).to_contain_text("handler.py")
    expect(page.locator("#versions tbody tr")).to_have_count(1)
    expect(page.locator("#api-jobs")).to_contain_text("no jobs yet")
    page.fill("#job-body", json.dumps(job_body(gate, list(range(12)), workers=2)))
    page.click("#submit-job")
    expect(page).to_have_url(re.compile(r"#/job/squares/[0-9a-f]{17}$"))
    job_id = page.url.rsplit("/", 1)[1]
    progress = page.locator("#job-progress")
    # The gate is shut: the job runs and makes no progress.
    expect(page.locator("#job-status")).to_have_text("running")
    expect(progress).to_have_attribute("aria-valuenow", "0")
    expect(page.locator("#stop-button")).to_be_visible()
    expect(page.locator("#job-workers tbody tr")).to_have_count(2)

    page.goto(f"{squares.url}/")
    row = page.locator(f"#active-jobs tr[data-job-id='{job_id}']")
    expect(row).to_contain_text("running")
    expect(row).to_contain_text("0/12")
    expect(page.locator("#workers tbody tr")).to_have_count(2)
    expect(page.locator("#apis tr[data-api='squares']")).to_be_visible()
    expect(page.locator("#stat-active")).to_contain_text("1")
    screenshot(page, "overview")

    page.click(f"#active-jobs a[href='#/job/squares/{job_id}']")
    expect(progress).to_have_attribute("aria-valuenow", "0")
    gate.touch()
    # Polled, not reloaded: the same bar moves to 100%.
    expect(progress).to_have_attribute("aria-valuenow", "100")
    expect(progress).to_have_text("100%")
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#stop-button")).to_be_hidden()
    expect(page.locator("#job-done")).to_have_text("12 / 12 batches finished")
    expect(page.locator("#job-log")).to_contain_text(f"handled {job_id}-12")
    expect(page.locator("#throughput-chart polyline")).to_have_count(1)
    href = page.get_attribute("#results-link", "href")
    assert href == f"/batch/squares/results?jobID={job_id}"
    screenshot(page, "job")

    page.click("#job-subtitle a[href='#/api/squares']")
    expect(page.locator(f"#api-jobs tr[data-job-id='{job_id}']")).to_contain_text("succeeded")
    screenshot(page, "api")


def test_retry_a_dead_lettered_batch(page: Page, squares: Daemon, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    gate.touch()
    client = squares.client
    job_id = client.submit("squares", job_body(gate, [1, -2, 3], max_receive_count=1))["job_id"]
    assert wait_job(client, "squares", job_id)["status"] == "completed_with_failures"
    page.goto(f"{squares.url}/#/job/squares/{job_id}")
    expect(page.locator("#job-status")).to_have_text("completed with failures")
    failed = page.locator(f"#failed-batches tr[data-batch-id='{job_id}-2']")
    expect(failed).to_contain_text("ValueError: negative input")
    expect(page.locator("#failed-batches tbody tr")).to_have_count(1)
    failed.locator("summary").click()
    expect(failed.locator("pre").first).to_contain_text("Traceback")
    expect(page.locator("#job-log")).to_contain_text("handle_batch failed")
    screenshot(page, "job-failed")

    (tmp_path / "gate.fixed").touch()
    page.click("#retry-button")
    link = page.locator("#retry-job-link")
    expect(link).to_be_visible()
    retry_id = link.inner_text()
    assert retry_id != job_id
    expect(page.locator("#retry-result")).to_have_text(
        f"Job {job_id}'s dead-lettered batches were submitted as job {retry_id}"
        " (1 batch, version 1)."
    )
    link.click()
    expect(page).to_have_url(re.compile(f"#/job/squares/{retry_id}$"))
    expect(page.locator("#job-subtitle")).to_contain_text(f"retry of {job_id}")
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#job-progress")).to_have_attribute("aria-valuenow", "100")
    assert [line["result"] for line in client.results("squares", retry_id)] == [[4]]


def test_stop_a_running_job_through_the_confirm_dialog(
    page: Page, squares: Daemon, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    client = squares.client
    job_id = client.submit("squares", job_body(tmp_path / "never", [1, 2, 3]))["job_id"]
    page.goto(f"{squares.url}/#/job/squares/{job_id}")
    expect(page.locator("#job-status")).to_have_text("running")
    dialog = page.locator("#confirm-dialog")
    page.click("#stop-button")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(job_id)
    page.click("#confirm-cancel")
    expect(dialog).to_be_hidden()
    assert client.get_job("squares", job_id)["job_status"]["status"] == "running"

    page.click("#stop-button")
    expect(dialog).to_be_visible()
    screenshot(page, "job-stop-dialog")
    page.click("#confirm-ok")
    expect(page.locator("#action-note")).to_have_text(f"stopped job {job_id}")
    expect(page.locator("#job-status")).to_have_text("stopped")
    expect(page.locator("#stop-button")).to_be_hidden()
    wait_for(
        lambda: client.get_job("squares", job_id)["job_status"]["status"] == "stopped",
        what="the job to be stopped",
    )


def test_job_lists_page_through_a_long_history(page: Page, squares: Daemon, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    client = squares.client
    # Gated, so they stay running or pending (max_workers is 4) until stopped.
    ids = [client.submit("squares", job_body(tmp_path / "never", [1]))["job_id"] for _ in range(23)]
    page.goto(f"{squares.url}/")
    expect(page.locator("#active-jobs tbody tr")).to_have_count(23)
    expect(page.locator("#active-jobs")).to_contain_text("pending")
    page.goto(f"{squares.url}/#/api/squares")
    rows = page.locator("#api-jobs tbody tr")
    expect(rows).to_have_count(20)
    expect(rows.first).to_have_attribute("data-job-id", ids[-1])
    newer, older = page.locator(".pager .newer"), page.locator(".pager .older")
    expect(newer).to_be_disabled()
    older.click()
    expect(rows).to_have_count(3)
    expect(rows.first).to_have_attribute("data-job-id", ids[2])
    expect(rows.last).to_have_attribute("data-job-id", ids[0])
    expect(older).to_be_disabled()
    screenshot(page, "api-page-2")
    newer.click()
    expect(rows).to_have_count(20)
    expect(rows.last).to_have_attribute("data-job-id", ids[3])
    for job_id in ids:
        client.stop_job("squares", job_id)


def test_login_with_a_token(page: Page, make_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    (tmp_path / "token").write_text(TOKEN + "\n")
    daemon = make_daemon(token_file=str(tmp_path / "token"))
    Client(daemon.url, token=TOKEN).deploy(EXAMPLE)
    page.goto(f"{daemon.url}/")
    login = page.locator("#login")
    expect(login).to_be_visible()
    expect(page.locator("#main")).to_be_empty()
    # Nothing is live before a login: no green dot.
    expect(page.locator("#live")).to_be_hidden()
    screenshot(page, "login")
    page.fill("#token", "wrong-token-0123456789")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_contain_text("wrong bearer token")
    expect(login).to_be_visible()
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    expect(login).to_be_hidden()
    expect(page.locator("#apis tr[data-api='hello']")).to_be_visible()
    expect(page.locator("#logout")).to_be_visible()
    expect(page.locator("#live")).to_be_visible()
    # Kept for the tab's session: a reload needs no new login.
    page.reload()
    expect(page.locator("#apis tr[data-api='hello']")).to_be_visible()
    expect(login).to_be_hidden()
    page.click("#logout")
    expect(login).to_be_visible()
    expect(page.locator("#live")).to_be_hidden()


def failing_jobs(daemon: Daemon, gate: Path) -> tuple[str, str]:
    """Two finished jobs with dead letters: [1, -2, 3] then [-5, 6], one attempt each."""
    gate.touch()
    client = daemon.client
    first = client.submit("squares", job_body(gate, [1, -2, 3], max_receive_count=1))["job_id"]
    second = client.submit("squares", job_body(gate, [-5, 6], max_receive_count=1))["job_id"]
    for job_id in (first, second):
        assert wait_job(client, "squares", job_id)["status"] == "completed_with_failures"
    return first, second


def test_charts_draw_a_finished_jobs_history_and_the_apis_throughput(
    page: Page, squares: Daemon, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    first, _ = failing_jobs(squares, tmp_path / "gate")
    page.goto(f"{squares.url}/#/job/squares/{first}")
    chart = page.locator("#throughput-chart")
    # The whole job, read from the store: every success and failed attempt it had.
    expect(chart).to_have_attribute("data-succeeded", "2")
    expect(chart).to_have_attribute("data-failed", "1")
    expect(chart).to_have_attribute("data-step", "1")
    expect(chart.locator("polyline")).to_have_count(2)
    assert int(chart.get_attribute("data-points") or 0) >= 1
    expect(page.locator("#throughput-note")).to_contain_text("over the whole job")
    screenshot(page, "job-history")

    page.goto(f"{squares.url}/")
    overview = page.locator("#history-chart")
    expect(overview).to_have_attribute("data-succeeded", "3")
    expect(overview).to_have_attribute("data-failed", "2")
    expect(overview).to_have_attribute("data-points", "3600")
    page.click("button[data-window='1d']")
    expect(overview).to_have_attribute("data-window", "1d")
    expect(overview).to_have_attribute("data-points", "1440")
    expect(overview).to_have_attribute("data-succeeded", "3")
    screenshot(page, "overview-history")

    page.goto(f"{squares.url}/#/api/squares")
    bars = page.locator("#duration-histogram")
    expect(bars).to_have_attribute("data-total", "3")
    expect(bars.locator(".hist-bar")).to_have_count(19)  # 18 bounds and +Inf
    # Each bar is its bucket of the daemon's histogram, its height in proportion to the tallest.
    history = get(squares, "/history?window=1h&api=squares")[1]
    counts = history["batch_durations"]["squares"]["counts"]
    shown = bars.locator(".hist-bar").evaluate_all(
        "bars => bars.map(b => [+b.dataset.count, b.querySelector('.hist-fill').style.height])"
    )
    assert [count for count, _ in shown] == counts and sum(counts) == 3
    heights = [float(height.removesuffix("%")) for _, height in shown]
    assert heights == pytest.approx([100 * c / max(counts) for c in counts])
    expect(page.locator("#duration-note")).to_contain_text("3 succeeded batches")
    screenshot(page, "api-histogram")
    # A daemon gone is no longer shown as live.
    live = page.locator("#live")
    expect(live).to_have_text("live")
    squares.stop()
    expect(live).to_have_text("offline")
    expect(live).to_have_class(re.compile(r"\bstale\b"))


def test_failed_view_filters_and_retries_and_job_lists_filter_by_status(
    page: Page, squares: Daemon, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    first, second = failing_jobs(squares, tmp_path / "gate")
    status, one, _ = get(squares, "/failed?limit=1&api=squares")
    assert status == 200 and [f["batch_id"] for f in one["failed"]] == [f"{second}-1"]
    rest = get(squares, f"/failed?limit=1&cursor={one['next_cursor']}")[1]
    assert [f["batch_id"] for f in rest["failed"]] == [f"{first}-2"]
    assert rest["failed"][0]["error"].startswith("ValueError: negative input")
    assert "Traceback" in rest["failed"][0]["traceback"] and rest["failed"][0]["attempts"] == 1
    assert rest["next_cursor"] is None
    page.goto(f"{squares.url}/#/failed")
    rows = page.locator("#failed-list tbody tr")
    # Newest job first.
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-batch-id", f"{second}-1")
    expect(rows.last).to_have_attribute("data-batch-id", f"{first}-2")
    expect(rows.last).to_contain_text("ValueError: negative input")
    page.fill("#failed-q", f"batch {first}-2")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-batch-id", f"{first}-2")
    page.fill("#failed-q", "no such error")
    expect(page.locator("#failed-list")).to_contain_text("no dead-lettered batch matches")
    page.fill("#failed-q", "")
    expect(rows).to_have_count(2)
    page.select_option("#failed-api", "squares")
    expect(rows).to_have_count(2)
    screenshot(page, "failed")
    page.goto(f"{squares.url}/#/api/squares")
    page.click("#api-failed-link")
    expect(page).to_have_url(re.compile("#/failed/squares$"))
    expect(page.locator("#failed-api")).to_have_value("squares")
    expect(rows).to_have_count(2)

    (tmp_path / "gate.fixed").touch()
    rows.last.locator(".retry-job").click()
    link = page.locator("#failed-retry-link")
    expect(link).to_be_visible()
    retry_id = link.inner_text()
    assert retry_id not in (first, second)
    expect(page.locator("#failed-retry-result")).to_contain_text(
        f"Job {first}'s dead-lettered batches were submitted as job {retry_id} (1 batch"
    )
    client = squares.client
    assert wait_job(client, "squares", retry_id)["status"] == "succeeded"
    assert client.get_job("squares", retry_id)["job_status"]["retry_of"] == first
    assert [line["result"] for line in client.results("squares", retry_id)] == [[4]]

    page.goto(f"{squares.url}/")
    recent = page.locator("#recent-jobs tbody tr")
    expect(recent).to_have_count(3)
    page.select_option("#status-filter", "completed_with_failures")
    expect(recent).to_have_count(2)
    expect(recent.first).to_have_attribute("data-job-id", second)
    page.select_option("#status-filter", "succeeded")
    expect(recent).to_have_count(1)
    expect(recent.first).to_have_attribute("data-job-id", retry_id)
    page.select_option("#api-filter", "squares")
    expect(recent).to_have_count(1)
    page.select_option("#status-filter", "stopped")
    expect(page.locator("#recent-jobs")).to_contain_text("no job matches the filter")
    # "13m ago", the rate and the other figures keep to one line however narrow the page.
    page.select_option("#status-filter", "")
    expect(recent).to_have_count(3)
    spacing = recent.first.evaluate(
        "row => [...row.cells].map(cell => getComputedStyle(cell).whiteSpace)"
    )
    # batches, failed, rate, ETA, started, duration
    assert [spacing[i] for i in (4, 5, 6, 7, 8, 9)] == ["nowrap"] * 6, spacing
    screenshot(page, "overview-filtered")
