"""The in-memory throughput rings behind GET /history (pure functions, no process)."""

from __future__ import annotations

from batchd.observe.history import WINDOWS, History, Ring

HOUR, DAY = WINDOWS["1h"], WINDOWS["1d"]


def test_a_ring_counts_per_second_and_forgets_what_left_the_window() -> None:
    ring = Ring(HOUR)
    ring.add(1000.2, 3, 0)
    ring.add(1000.9, 2, 1)
    ring.add(1001.0, 0, 1)
    start, succeeded, failed = ring.series(1001.5)
    assert start == 1001 - 3599 and len(succeeded) == len(failed) == 3600
    assert succeeded[-2:] == [5, 0] and failed[-2:] == [1, 1]
    assert sum(succeeded) == 5
    # An hour on, the same slots hold new seconds: the old counts are gone, not added.
    ring.add(1000.5 + 3600, 7, 0)
    _, succeeded, failed = ring.series(1000.5 + 3600)
    assert succeeded[-1] == 7 and sum(succeeded) == 7
    assert failed[0] == 1 and sum(failed) == 1  # second 1001: the window's first
    _, succeeded, _ = ring.series(1000 + 2 * 3600 + 5)
    assert sum(succeeded) == 0


def test_a_day_ring_counts_per_minute() -> None:
    ring = Ring(DAY)
    for second in range(120, 240):
        ring.add(second, 1, 0)
    start, succeeded, _ = ring.series(250)
    assert len(succeeded) == 1440 and start == (250 // 60 - 1439) * 60
    assert succeeded[-3:] == [60, 60, 0]
    assert sum(succeeded) == 120


def test_history_keeps_a_ring_per_api() -> None:
    history = History()
    history.record("a", 4, 0)
    history.record("a", 0, 1)
    history.record("b", 1, 0)
    for window in (HOUR, DAY):
        _, succeeded, failed = history.series("a", window)
        assert (sum(succeeded), sum(failed)) == (4, 1)
    assert sum(history.series("b", HOUR)[1]) == 1
    assert history.series("never", DAY)[1] == [0] * 1440
