"""One status client for the status-under-load workload (a process of its own).

Usage: python -m bench.status_client URL API WINDOW_S; reads the job id from stdin, then
GETs the job's status back to back until the job has ended or WINDOW_S has passed, and
prints one JSON line: {"latencies": [seconds...], "start": t, "end": t} (perf_counter is
not shared between processes, so the times are time.time()).
"""

from __future__ import annotations

import json
import sys
import time

from batchd.client import TERMINAL_STATUSES, Client


def main(argv: list[str]) -> int:
    url, api, window = argv[0], argv[1], float(argv[2])
    job_id = sys.stdin.readline().strip()
    client = Client(url, timeout=60)
    latencies: list[float] = []
    errors = 0
    start = time.time()
    deadline = time.perf_counter() + window
    while time.perf_counter() < deadline:
        before = time.perf_counter()
        try:
            status = client.get_job(api, job_id)["job_status"]["status"]
        except Exception:
            errors += 1
            continue
        latencies.append(time.perf_counter() - before)
        if status in TERMINAL_STATUSES:
            break
    json.dump(
        {"latencies": latencies, "errors": errors, "start": start, "end": time.time()}, sys.stdout
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
