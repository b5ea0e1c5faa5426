"""The records of the daemon <-> worker channel: no process, no socket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchd.store.records import Lease
from batchd.wire import framing
from batchd.wire.ids import batch_id
from batchd.wire.messages import (
    EMPTY_GRANT,
    Batches,
    Complete,
    Completed,
    Exit,
    Failed,
    Init,
    InitFailed,
    Launch,
    Next,
    Progress,
    Ready,
    Success,
    failure,
    from_worker,
    success,
)

FAILURE = failure(4, 0.25, "ValueError: no", "Traceback ...")

RECORDS: list[Any] = [
    Launch("/srv/job", {"TMPDIR": "/tmp/w1", "LANG": "C.UTF-8"}),
    Init("handler.py", {"k": [1, 2.5, None]}, {"job_id": "j1"}, "j1", 1024),
    Init("handler.py", {}, {"job_id": "j1"}, "j1", None),
    Batches(7, [[1, {"a": "\u00e9"}], [2, None], [3, [1, "two"]]]),
    Batches(0, []),
    Complete({"status": "succeeded", "batches_in_queue": 0}),
    Exit(),
    Ready(True),
    Ready(False),
    InitFailed("OSError: no model", "Traceback (most recent call last): ..."),
    Completed(True),
    Completed(False, "ValueError: hook broke", "Traceback ..."),
    Progress(7, [success(1, 0.5), success(2, 0.125, {"r": "\U0001f600"})], [FAILURE]),
    Progress(7, [success(1, 0.5)], [], more=True),
    Progress(7, [], []),
    Next(0, [], []),
    Next(9, [success(5, 1.0, [1, 2])], [FAILURE]),
]


def wire(record: Any) -> dict[str, Any]:
    """What the other end decodes from the record's frame."""
    data = record.encode()
    assert framing.frame_length(data[:4]) == len(data) - 4
    return framing.decode(data[4:])


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_message_round_trips(record: Any) -> None:
    message = wire(record)
    assert message["op"] == record.op
    assert type(record).decode(message) == record


def test_frames_are_compact_json_with_the_op_first() -> None:
    assert Exit().encode() == framing.frame(b'{"op":"exit"}')
    assert Ready(True).encode() == framing.frame(b'{"op":"ready","has_on_complete":true}')
    assert Completed(True).encode() == framing.frame(b'{"op":"completed","ok":true}')
    assert Progress(3, [[1, 0.5]], [], more=True).encode() == framing.frame(
        b'{"op":"progress","token":3,"done":[[1,0.5]],"failed":[],"more":true}'
    )
    # `more` is sent only when asked for.
    assert "more" not in wire(Progress(3, [], []))


def test_from_worker_reads_each_message_a_worker_sends() -> None:
    sent = [r for r in RECORDS if isinstance(r, Ready | InitFailed | Progress | Next | Completed)]
    assert len(sent) == 10
    assert [from_worker(wire(record)) for record in sent] == sent


@pytest.mark.parametrize("op", ["batches", "init", "exit", "dance", None, 3])
def test_from_worker_refuses_an_op_a_worker_does_not_send(op: Any) -> None:
    with pytest.raises(framing.BadFrame, match=f"unknown op {op!r} from worker"):
        from_worker({"op": op, "token": 1, "batches": []})


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_a_message_of_another_op_is_refused(record: Any) -> None:
    other = "exit" if record.op != "exit" else "next"
    with pytest.raises(framing.BadFrame, match=f"a '{other}' message where '{record.op}'"):
        type(record).decode({**wire(record), "op": other})
    with pytest.raises(framing.BadFrame, match="a None message"):
        type(record).decode({k: v for k, v in wire(record).items() if k != "op"})


# Each record's required fields, with a value of the wrong type for each.
REQUIRED: list[tuple[Any, str, Any]] = [
    (RECORDS[0], "cwd", ["/srv"]),
    (RECORDS[0], "env", [["A", "b"]]),
    (RECORDS[1], "handler_path", 3),
    (RECORDS[1], "config", "k=v"),
    (RECORDS[1], "job_spec", None),
    (RECORDS[3], "token", "7"),
    (RECORDS[3], "token", True),
    (RECORDS[3], "batches", {"1": "a"}),
    (RECORDS[5], "status", "succeeded"),
    (RECORDS[7], "has_on_complete", 1),
    (RECORDS[9], "error", None),
    (RECORDS[9], "traceback", ["Traceback"]),
    (RECORDS[10], "ok", "true"),
    (RECORDS[12], "token", 7.0),
    (RECORDS[12], "done", None),
    (RECORDS[12], "failed", {}),
    (RECORDS[16], "token", None),
    (RECORDS[16], "done", "[]"),
]


@pytest.mark.parametrize(
    ("record", "name", "wrong"), REQUIRED, ids=[f"{r.op}-{n}" for r, n, _ in REQUIRED]
)
def test_a_missing_or_mistyped_field_is_refused(record: Any, name: str, wrong: Any) -> None:
    message = wire(record)
    del message[name]
    with pytest.raises(framing.BadFrame, match=f"'{record.op}' message without '{name}'"):
        type(record).decode(message)
    message[name] = wrong
    kind = type(wrong).__name__
    with pytest.raises(framing.BadFrame, match=f"'{record.op}' message with a {kind} as '{name}'"):
        type(record).decode(message)


@pytest.mark.parametrize(
    ("record", "name", "wrong"),
    [
        (RECORDS[1], "job_id", 17),
        (RECORDS[1], "max_result_bytes", "1024"),
        (RECORDS[11], "error", 3),
        (RECORDS[11], "traceback", False),
        (RECORDS[13], "more", 1),
    ],
)
def test_a_mistyped_optional_field_is_refused(record: Any, name: str, wrong: Any) -> None:
    with pytest.raises(framing.BadFrame, match=f"as '{name}'"):
        type(record).decode({**wire(record), name: wrong})


def test_optional_fields_may_be_left_out() -> None:
    # The job id defaults to the job spec's; no result limit unless one is given.
    bare = {"op": "init", "handler_path": "h.py", "config": {}, "job_spec": {"job_id": "j9"}}
    assert Init.decode(bare) == Init("h.py", {}, {"job_id": "j9"}, "j9", None)
    assert Init.decode({**bare, "job_spec": {}}).job_id == ""
    assert Completed.decode({"op": "completed", "ok": False}) == Completed(False)
    assert Progress.decode({"op": "progress", "token": 1, "done": [], "failed": []}).more is False


def test_a_launch_environment_holds_only_text() -> None:
    with pytest.raises(framing.BadFrame, match="env holds a value that is not a str"):
        Launch.decode({"op": "launch", "cwd": "/", "env": {"A": "b", "N": 1}})


def test_a_grant_hands_its_pairs_over_as_they_came() -> None:
    # Thousands of pairs from the daemon, unpacked as they run: not checked, not copied.
    pairs: list[Any] = [[1, "ok"], [2, {"a": 1}]]
    grant = Batches.decode({"op": "batches", "token": 1, "batches": pairs})
    assert grant.batches is pairs


@pytest.mark.parametrize(
    "outcome",
    [[1], [1, 0.5, None, 2], ["1", 0.5], [True, 0.5], [1, "0.5"], [1, None], [1, 1], (1, 0.5), 1],
)
def test_a_malformed_success_is_refused(outcome: Any) -> None:
    message = {"op": "next", "token": 1, "done": [[2, 0.5], outcome], "failed": []}
    with pytest.raises(framing.BadFrame, match="a success reported as"):
        Next.decode(message)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"seq": "4"}, "a failure with a str as 'seq'"),
        ({"seq": None}, "a failure with a NoneType as 'seq'"),
        ({"duration": "0.25"}, "a failure with a str as 'duration'"),
        ({"duration": 1}, "a failure with a int as 'duration'"),
        ({"duration": False}, "a failure with a bool as 'duration'"),
        ({"error": None}, "a failure with a NoneType as 'error'"),
        ({"traceback": 3}, "a failure with a int as 'traceback'"),
    ],
)
def test_a_malformed_failure_is_refused(change: dict[str, Any], error: str) -> None:
    message = {"op": "progress", "token": 1, "done": [], "failed": [{**FAILURE, **change}]}
    with pytest.raises(framing.BadFrame, match=error):
        Progress.decode(message)
    message = {"op": "progress", "token": 1, "done": [], "failed": [[4, 0.25, "no"]]}
    with pytest.raises(framing.BadFrame, match="a failure reported as"):
        Progress.decode(message)
    del message["failed"][0]
    message["failed"].append({"duration": 0.1, "error": "x"})  # no seq
    with pytest.raises(framing.BadFrame, match="a failure without 'seq'"):
        Progress.decode(message)


def test_a_report_is_read_once_into_what_the_daemon_stores() -> None:
    results = {"r": "\u00e9\U0001f600", "n": [1, 2.5, None]}
    report = from_worker(
        wire(
            Next(
                12,
                [success(1, 0.5), success(2, 0.25, results), [3, 1.0]],
                [failure(4, 0.125, "E: x", "Traceback"), failure(5, 2.0, "E: y", None)],
            )
        )
    )
    assert isinstance(report, Next)
    # A result is kept as the compact JSON text the store holds, not decoded again.
    compact = json.dumps(results, separators=(",", ":"), ensure_ascii=False).encode()
    assert report.successes() == [
        Success(1, 12, 0.5, None),
        Success(2, 12, 0.25, compact),
        Success(3, 12, 1.0, None),
    ]
    assert [type(s.duration) for s in report.successes()] == [float] * 3
    assert report.failures() == [
        Failed(4, 12, 0.125, "E: x", "Traceback"),
        Failed(5, 12, 2.0, "E: y", None),
    ]
    assert report.seqs() == {1, 2, 3, 4, 5}
    assert report.seconds() == 0.5 + 0.25 + 1 + 0.125 + 2


def test_a_success_without_a_result_carries_none() -> None:
    assert success(3, 0.5) == success(3, 0.5, None) == [3, 0.5]
    assert success(3, 0.5, 0) == [3, 0.5, 0]
    assert success(3, 0.5, False) == [3, 0.5, False]


STORED_PAYLOADS = [
    {"a": "\u00e9\u6f22\U0001f600", "n": [1, 2.5, -3e-7, None, True]},
    [],
    'text with "quotes" and \\ and \n',
    12345678901234567890,
    None,
    {"nested": {"deep": [[[{}]]]}},
]


def test_the_grant_splices_stored_payloads_byte_for_byte_as_json_would() -> None:
    stored = [
        json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        for payload in STORED_PAYLOADS
    ]
    leases = [Lease("j1", seq, 42, 1, payload) for seq, payload in enumerate(stored, start=1000)]
    expected = framing.encode(
        {
            "op": "batches",
            "token": 42,
            "batches": [[seq, p] for seq, p in enumerate(STORED_PAYLOADS, start=1000)],
        }
    )
    assert Batches.splice(leases) == expected
    grant = Batches.decode(framing.decode(expected[4:]))
    assert grant == Batches(42, [[seq, p] for seq, p in enumerate(STORED_PAYLOADS, start=1000)])
    assert Batches.splice(leases[:1]) == Batches(42, [[1000, STORED_PAYLOADS[0]]]).encode()


def test_the_empty_grant_is_token_zero_with_no_batches() -> None:
    assert framing.encode({"op": "batches", "token": 0, "batches": []}) == EMPTY_GRANT
    assert Batches.decode(framing.decode(EMPTY_GRANT[4:])) == Batches(0, [])


def test_batch_ids_join_the_job_and_the_sequence_number() -> None:
    assert batch_id("69b93c1c-0d2b", 17) == "69b93c1c-0d2b-17"
    assert batch_id("j", 0) == "j-0"
