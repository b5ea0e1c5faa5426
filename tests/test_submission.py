from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from batchd.admission.job_body import DEFAULT_MAX_RECEIVE_COUNT, JobSubmission, parse_submission
from batchd.admission.json_text import ENCODER
from batchd.admission.planning import plan_batches
from batchd.constants import CHUNK_BATCHES, CHUNK_MAX_BYTES
from batchd.errors import DomainError
from batchd.http.errors import status_of
from batchd.store.chunks import ChunkSpool

ITEMS: dict[str, Any] = {"item_list": {"items": [1, 2, 3], "batch_size": 2}}
BIG = 1 << 20


def parse(body: dict[str, Any]) -> JobSubmission:
    return parse_submission(json.dumps(body).encode())


def parse_error(body: bytes | dict[str, Any]) -> DomainError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(DomainError) as caught:
        parse_submission(raw)
    return caught.value


def plan_error(sub: JobSubmission, roots: list[Path], max_item_bytes: int = BIG) -> DomainError:
    with pytest.raises(DomainError) as caught:
        plan_batches(sub, roots, max_item_bytes)
    return caught.value


def decoded(payloads: list[bytes]) -> list[Any]:
    return [json.loads(payload) for payload in payloads]


# --- parsing -------------------------------------------------------------------------------


def test_defaults() -> None:
    sub = parse(ITEMS)
    assert sub.workers == 1
    assert sub.config == {}
    assert sub.timeout is None
    assert sub.max_receive_count == DEFAULT_MAX_RECEIVE_COUNT == 3
    assert sub.max_receive_count_value() == 3
    assert sub.priority == 0
    assert sub.source_kind == "item_list"
    assert sub.item_list is not None
    assert sub.item_list.items == [1, 2, 3]
    assert sub.item_list.batch_size == 2


def test_all_fields() -> None:
    sub = parse(
        {
            **ITEMS,
            "workers": 4,
            "config": {"model": "x", "nested": {"k": [1]}},
            "timeout": 2.5,
            "max_receive_count": 5,
            "priority": -2,
        }
    )
    assert (sub.workers, sub.timeout, sub.max_receive_count, sub.priority) == (4, 2.5, 5, -2)
    assert sub.config == {"model": "x", "nested": {"k": [1]}}


def test_integer_timeout_is_accepted() -> None:
    assert parse({**ITEMS, "timeout": 30}).timeout == 30.0


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"{'a': 1}", b'{"timeout": NaN}', b'{"timeout": 1e400}', b"\xff\xfe\xfa"],
)
def test_invalid_json_is_400(body: bytes) -> None:
    error = parse_error(body)
    assert status_of(error) == 400
    assert error.field is None
    assert "JSON" in error.message


def test_deeply_nested_json_is_400() -> None:
    error = parse_error(b"[" * 100_000 + b"]" * 100_000)
    assert (status_of(error), error.field) == (400, None)


@pytest.mark.parametrize(("body", "kind"), [(b"[1, 2]", "an array"), (b'"x"', "a string")])
def test_json_that_is_not_an_object_is_400(body: bytes, kind: str) -> None:
    error = parse_error(body)
    assert (status_of(error), error.field) == (400, None)
    assert kind in error.message


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"workers": 0}, "workers", "greater than or equal to 1"),
        ({"workers": "2"}, "workers", "must be an integer, not a string"),
        ({"workers": True}, "workers", "must be an integer, not a boolean"),
        ({"workers": 1.5}, "workers", "must be an integer, not a number"),
        ({"workers": 2**63}, "workers", "less than or equal"),
        ({"timeout": 0}, "timeout", "greater than 0"),
        ({"timeout": -1.5}, "timeout", "greater than 0"),
        ({"timeout": "10"}, "timeout", "must be a number, not a string"),
        ({"config": []}, "config", "must be an object, not an array"),
        ({"config": "x"}, "config", "must be an object, not a string"),
        ({"priority": True}, "priority", "must be an integer"),
        ({"max_receive_count": 0}, "max_receive_count", "greater than or equal to 1"),
        ({"surprise": 1}, "surprise", "unknown key"),
    ],
)
def test_bad_top_level_fields_are_422(change: dict[str, Any], field: str, words: str) -> None:
    error = parse_error({**ITEMS, **change})
    assert (status_of(error), error.field) == (422, field)
    assert words in error.message
    assert error.message.startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("item_list", "field", "words"),
    [
        ({"items": [1], "batch_size": 0}, "item_list.batch_size", "greater than or equal to 1"),
        ({"items": [1], "batch_size": True}, "item_list.batch_size", "must be an integer"),
        ({"items": [], "batch_size": 1}, "item_list.items", "at least 1 item"),
        ({"items": {"a": 1}, "batch_size": 1}, "item_list.items", "must be an array"),
        ({"items": [1]}, "item_list.batch_size", "is required"),
        ({"items": [1], "batch_size": 1, "extra": 2}, "item_list.extra", "unknown key"),
    ],
)
def test_bad_item_list_is_422(item_list: dict[str, Any], field: str, words: str) -> None:
    error = parse_error({"item_list": item_list})
    assert (status_of(error), error.field) == (422, field)
    assert words in error.message


def test_item_list_must_be_an_object() -> None:
    error = parse_error({"item_list": [1, 2]})
    assert (status_of(error), error.field) == (422, "item_list")
    assert "must be an object, not an array" in error.message


def test_missing_source_is_422_listing_the_options() -> None:
    error = parse_error({"workers": 2})
    assert (status_of(error), error.field) == (422, "item_list")
    for kind in ("item_list", "delimited_files", "file_path_lister"):
        assert kind in error.message


def test_two_sources_is_422_naming_the_second() -> None:
    body = {**ITEMS, "file_path_lister": {"paths": ["/x"], "batch_size": 1}}
    error = parse_error(body)
    assert (status_of(error), error.field) == (422, "file_path_lister")
    assert "item_list and file_path_lister" in error.message


def test_file_source_defaults() -> None:
    sub = parse({"delimited_files": {"paths": ["/data"], "batch_size": 5}})
    assert sub.source_kind == "delimited_files"
    assert sub.delimited_files is not None
    assert sub.delimited_files.paths == ["/data"]
    assert sub.delimited_files.includes == []
    assert sub.delimited_files.excludes == []


def test_s3_paths_is_a_synonym_of_paths() -> None:
    sub = parse({"file_path_lister": {"s3_paths": ["/data"], "batch_size": 1}})
    assert sub.file_path_lister is not None
    assert sub.file_path_lister.paths == ["/data"]


def test_paths_and_s3_paths_together_is_422() -> None:
    body = {"file_path_lister": {"paths": ["/a"], "s3_paths": ["/b"], "batch_size": 1}}
    error = parse_error(body)
    assert (status_of(error), error.field) == (422, "file_path_lister.s3_paths")
    assert "not both" in error.message


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"paths": [], "batch_size": 1}, "delimited_files.paths"),
        ({"batch_size": 1}, "delimited_files.paths"),
        ({"paths": ["/a", 3], "batch_size": 1}, "delimited_files.paths[1]"),
        ({"paths": ["/a"], "includes": ["ok", 1], "batch_size": 1}, "delimited_files.includes[1]"),
        ({"paths": ["/a"], "excludes": ["[z-a]"], "batch_size": 1}, "delimited_files.excludes[0]"),
        ({"paths": ["/a"], "batch_size": 1, "recursive": True}, "delimited_files.recursive"),
    ],
)
def test_bad_file_source_is_422(source: dict[str, Any], field: str) -> None:
    error = parse_error({"delimited_files": source})
    assert (status_of(error), error.field) == (422, field)


def test_dead_letter_queue_form_sets_max_receive_count() -> None:
    body = {**ITEMS, "sqs_dead_letter_queue": {"arn": "arn:aws:sqs:x", "max_receive_count": 7}}
    assert parse(body).max_receive_count == 7


def test_dead_letter_queue_without_arn() -> None:
    assert (
        parse({**ITEMS, "sqs_dead_letter_queue": {"max_receive_count": 2}}).max_receive_count == 2
    )


def test_both_max_receive_count_forms_agreeing() -> None:
    body = {**ITEMS, "max_receive_count": 4, "sqs_dead_letter_queue": {"max_receive_count": 4}}
    assert parse(body).max_receive_count == 4


def test_conflicting_max_receive_counts_is_422() -> None:
    body = {**ITEMS, "max_receive_count": 4, "sqs_dead_letter_queue": {"max_receive_count": 5}}
    error = parse_error(body)
    assert (status_of(error), error.field) == (422, "max_receive_count")
    assert "4" in error.message
    assert "5" in error.message


@pytest.mark.parametrize(
    ("queue", "field"),
    [
        ({"arn": "x"}, "sqs_dead_letter_queue.max_receive_count"),
        ({"max_receive_count": 0}, "sqs_dead_letter_queue.max_receive_count"),
        ({"max_receive_count": 1, "url": "x"}, "sqs_dead_letter_queue.url"),
    ],
)
def test_bad_dead_letter_queue_is_422(queue: dict[str, Any], field: str) -> None:
    error = parse_error({**ITEMS, "sqs_dead_letter_queue": queue})
    assert (status_of(error), error.field) == (422, field)


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    error = parse_error({**ITEMS, "workers": 0, "priority": "x"})
    assert error.field == "workers"
    assert "1 more" in error.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # Once a 500 (the payload could not be encoded as UTF-8).
        (rb'{"item_list": {"items": [1, "a\ud800"], "batch_size": 1}}', "item_list.items[1]"),
        # Once accepted: the job could never start a worker, which it retried forever.
        (
            rb'{"item_list": {"items": [1], "batch_size": 1}, "config": {"k": ["\udfff"]}}',
            "config.k[0]",
        ),
        (
            rb'{"item_list": {"items": [1], "batch_size": 1}, "config": {"\udc00": 1}}',
            "config.\\udc00",
        ),
        (
            rb'{"file_path_lister": {"paths": ["/\uDBFF"], "batch_size": 1}}',
            "file_path_lister.paths[0]",
        ),
    ],
)
def test_unpaired_surrogate_escapes_are_400_naming_the_field(body: bytes, field: str) -> None:
    error = parse_error(body)
    assert (status_of(error), error.field) == (400, field)
    assert "surrogate" in error.message


@pytest.mark.parametrize(
    "body",
    [
        # json.loads(bytes) lets surrogates encoded in the bytes themselves through.
        b'{"item_list": {"items": ["\xed\xa0\x80"], "batch_size": 1}}',
        '{"item_list": {"items": ["\ud800"], "batch_size": 1}}'.encode(
            "utf-16-le", "surrogatepass"
        ),
    ],
)
def test_encoded_surrogates_are_invalid_json(body: bytes) -> None:
    error = parse_error(body)
    assert (status_of(error), error.field) == (400, None)
    assert "not valid JSON" in error.message


def test_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    sub = parse_submission(
        rb'{"item_list": {"items": ["\ud83d\ude00", "\\ud800"], "batch_size": 1}}'
    )
    assert sub.item_list is not None
    assert sub.item_list.items == ["\U0001f600", "\\ud800"]
    utf16 = json.dumps(ITEMS, ensure_ascii=False).encode("utf-16")
    assert parse_submission(utf16).item_list == parse(ITEMS).item_list


# --- item_list batches ---------------------------------------------------------------------


def plan_items(items: list[Any], batch_size: int, max_item_bytes: int = BIG) -> list[bytes]:
    sub = parse({"item_list": {"items": items, "batch_size": batch_size}})
    plan = plan_batches(sub, [], max_item_bytes)
    assert plan.kind == "item_list"
    assert plan.matched_files is None
    assert plan.item_count == len(items)
    return plan.payloads


def test_ten_items_by_three() -> None:
    payloads = plan_items(list(range(10)), 3)
    assert payloads == [b"[0,1,2]", b"[3,4,5]", b"[6,7,8]", b"[9]"]


def test_payloads_are_compact_json_of_any_values() -> None:
    items = [{"a": [1, 2.5, None]}, "s", True, None, [], {"b": {"c": "d"}}]
    payloads = plan_items(items, 4)
    assert payloads[0] == b'[{"a":[1,2.5,null]},"s",true,null]'
    assert decoded(payloads) == [items[:4], items[4:]]


def test_unicode_items_round_trip_as_utf8() -> None:
    items = ["héllo", "日本語", {"emoji": "🎉"}, "\u0000 and \n"]
    payloads = plan_items(items, 10)
    assert "日本語".encode() in payloads[0]
    assert decoded(payloads) == [items]


def test_item_at_the_limit_is_accepted() -> None:
    # "abcd" encodes to 6 bytes with its quotes.
    assert plan_items(["abcd", "x"], 2, max_item_bytes=6) == [b'["abcd","x"]']


def test_oversized_item_names_its_index() -> None:
    sub = parse({"item_list": {"items": ["a", "b", "c", "d" * 50, "e"], "batch_size": 2}})
    error = plan_error(sub, [], max_item_bytes=20)
    assert (status_of(error), error.field) == (422, "item_list.items[3]")
    assert "52 bytes" in error.message
    assert "20" in error.message


def test_oversized_item_counts_utf8_bytes() -> None:
    sub = parse({"item_list": {"items": ["é" * 5], "batch_size": 1}})
    error = plan_error(sub, [], max_item_bytes=11)
    assert (status_of(error), error.field) == (422, "item_list.items[0]")
    assert "12 bytes" in error.message


@pytest.mark.parametrize(
    ("items", "max_item_bytes", "index", "size"),
    [
        # Control characters take six bytes each as JSON: 100 of them, 602 bytes.
        ([1, "\x00" * 100], 601, 1, 602),
        # Numbers are short, unless the limit is shorter still.
        ([7, 123456, 8.5], 5, 1, 6),
        # An item inside a large chunk of small ones.
        ([*range(5000), {"k": "v" * 300}, 1], 300, 5000, 308),
    ],
    ids=["escapes", "numbers", "deep-in-a-chunk"],
)
def test_oversized_items_are_found_whatever_their_kind(
    items: list[Any], max_item_bytes: int, index: int, size: int
) -> None:
    sub = parse({"item_list": {"items": items, "batch_size": 1}})
    error = plan_error(sub, [], max_item_bytes=max_item_bytes)
    assert (status_of(error), error.field) == (422, f"item_list.items[{index}]")
    assert f"{size} bytes" in error.message
    # At exactly that size, every item fits.
    assert len(plan_items(items, 1, max_item_bytes=size)) == len(items)


def test_large_batches_keep_their_encoding_and_are_grouped_into_chunks() -> None:
    # A model's inputs: 64 floats an item, 64 items a batch, 30 KB a batch as JSON. Planning
    # encodes these one batch at a time (how often it encodes is what bench's admission and
    # W4 figures measure; no test can see it): each payload is the batch's own encoding, and
    # the writer still packs them into chunks of up to CHUNK_MAX_BYTES.
    rng = random.Random(4)
    items = [[round(rng.uniform(-1, 1), 4) for _ in range(64)] for _ in range(64 * 300)]
    sub = parse({"item_list": {"items": items, "batch_size": 64}})
    plan = plan_batches(sub, [], 256 * 1024)
    expected = [ENCODER.encode(items[i : i + 64]).encode() for i in range(0, len(items), 64)]
    assert plan.payloads == expected
    chunks = list(plan.batches.chunks)
    assert sum(chunk.batches for chunk in chunks) == 300
    assert all(len(chunk.payloads) <= CHUNK_MAX_BYTES for chunk in chunks)
    # 9 MB of batches in 3 chunks, not 300.
    assert len(chunks) == -(-sum(map(len, expected)) // CHUNK_MAX_BYTES)


def test_batches_that_grow_past_the_first_are_still_checked_and_kept_whole() -> None:
    # The first batch sizes the chunks: later, larger batches overflow them and go one by
    # one, with every item still checked against the limit.
    items: list[Any] = [*range(2000), *([[0.5] * 200] * 50), *range(2000)]
    payloads = plan_items(items, 4, max_item_bytes=1000)
    assert decoded(payloads) == [items[i : i + 4] for i in range(0, len(items), 4)]
    sub = parse({"item_list": {"items": [*items, "x" * 2000], "batch_size": 4}})
    error = plan_error(sub, [], max_item_bytes=1000)
    assert (status_of(error), error.field) == (422, f"item_list.items[{len(items)}]")


def test_a_million_items_plan_fast() -> None:
    body = json.dumps({"item_list": {"items": list(range(1_000_000)), "batch_size": 100}})
    started = time.perf_counter()
    plan = plan_batches(parse_submission(body.encode()), [], 1024)
    elapsed = time.perf_counter() - started
    assert len(plan.payloads) == 10_000
    assert plan.item_count == 1_000_000
    assert json.loads(plan.payloads[0]) == list(range(100))
    assert json.loads(plan.payloads[-1]) == list(range(999_900, 1_000_000))
    assert elapsed < 5


# --- file sources --------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def files_job(kind: str, paths: list[str], batch_size: int = 2, **extra: Any) -> JobSubmission:
    return parse({kind: {"paths": paths, "batch_size": batch_size, **extra}})


def test_delimited_files_batch_across_files(tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.jsonl", '{"n": 1}\n\n  \n"two"\n[3]\n')
    write(tmp_path / "in" / "b.jsonl", '4\r\n{ "n" : 5 }\n')
    plan = plan_batches(files_job("delimited_files", [str(tmp_path / "in")]), [tmp_path], BIG)
    assert plan.kind == "delimited_files"
    assert plan.item_count == 5
    assert plan.matched_files == [
        str(tmp_path / "in" / "a.jsonl"),
        str(tmp_path / "in" / "b.jsonl"),
    ]
    assert plan.payloads == [b'[{"n":1},"two"]', b"[[3],4]", b'[{"n":5}]']


def test_delimited_files_bad_line_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "a.jsonl", '{"ok": 1}\n\n{not json}\n')
    error = plan_error(files_job("delimited_files", [str(bad)]), [tmp_path])
    assert (status_of(error), error.field) == (422, "delimited_files")
    assert f"{bad}:3" in error.message


@pytest.mark.parametrize("line", [b"NaN", b"1e400", b"\xff\xfe"])
def test_delimited_files_rejects_values_json_cannot_carry(tmp_path: Path, line: bytes) -> None:
    bad = tmp_path / "a.jsonl"
    bad.write_bytes(b"1\n" + line + b"\n")
    error = plan_error(files_job("delimited_files", [str(bad)]), [tmp_path])
    assert (status_of(error), error.field) == (422, "delimited_files")
    assert f"{bad}:2" in error.message


def test_delimited_files_oversized_line_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '"short"\n"' + "x" * 100 + '"\n')
    error = plan_error(files_job("delimited_files", [str(path)]), [tmp_path], max_item_bytes=50)
    assert (status_of(error), error.field) == (422, "delimited_files")
    assert f"{path}:2" in error.message
    assert "102 bytes" in error.message


def test_delimited_files_unreadable_file_is_422(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "a.jsonl", "1\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    # chmod cannot make a file unreadable to root, so fail the open itself.
    monkeypatch.setattr("batchd.admission.input_files.open", refuse, raising=False)
    error = plan_error(files_job("delimited_files", [str(path)]), [tmp_path])
    assert (status_of(error), error.field) == (422, "delimited_files")
    assert str(path) in error.message
    assert "Permission denied" in error.message


def test_delimited_files_without_items_is_422(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", "\n  \n")
    error = plan_error(files_job("delimited_files", [str(tmp_path)]), [tmp_path])
    assert (status_of(error), error.field) == (422, "delimited_files")
    assert "no batches" in error.message


def make_tree(root: Path) -> None:
    for name in ["a.json", "b.txt", "sub/c.json", "sub/deep/d.json", "skip/e.json", "z.json"]:
        write(root / name, "{}\n")


def test_file_path_lister_with_includes_and_excludes(tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    sub = files_job(
        "file_path_lister", [str(tmp_path / "in")], includes=["**/*.json"], excludes=["**/skip/**"]
    )
    plan = plan_batches(sub, [tmp_path], BIG)
    expected = [str(tmp_path / "in" / n) for n in ["a.json", "sub/c.json", "sub/deep/d.json"]]
    expected.append(str(tmp_path / "in" / "z.json"))
    assert plan.kind == "file_path_lister"
    assert plan.matched_files == expected
    assert plan.item_count == 4
    assert decoded(plan.payloads) == [expected[:2], expected[2:]]


def test_file_path_lister_files_and_dirs_deduplicated_and_sorted(tmp_path: Path) -> None:
    make_tree(tmp_path)
    paths = [str(tmp_path / "z.json"), str(tmp_path / "sub"), str(tmp_path / "sub" / "c.json")]
    plan = plan_batches(files_job("file_path_lister", paths, batch_size=10), [tmp_path], BIG)
    assert plan.matched_files == [
        str(tmp_path / "sub" / "c.json"),
        str(tmp_path / "sub" / "deep" / "d.json"),
        str(tmp_path / "z.json"),
    ]


def test_globs_match_the_path_as_given_not_the_realpath(tmp_path: Path) -> None:
    write(tmp_path / "real" / "a.json", "{}\n")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    sub = files_job("file_path_lister", [str(tmp_path / "alias")], includes=["**/alias/*"])
    plan = plan_batches(sub, [tmp_path], BIG)
    assert plan.matched_files == [str(tmp_path / "alias" / "a.json")]


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    write(tmp_path / "data" / "a.json", "{}\n")
    write(tmp_path / "in" / "b.json", "{}\n")
    (tmp_path / "in" / "link").symlink_to(tmp_path / "data")
    # A link back up the tree must not make the walk endless.
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")
    plan = plan_batches(files_job("file_path_lister", [str(tmp_path / "in")]), [tmp_path], BIG)
    assert plan.matched_files == [str(tmp_path / "in" / "b.json"), str(tmp_path / "in/link/a.json")]


def test_listers_without_input_roots_are_403(tmp_path: Path) -> None:
    for kind in ("delimited_files", "file_path_lister"):
        error = plan_error(files_job(kind, [str(tmp_path)]), [])
        assert (status_of(error), error.field) == (403, f"{kind}.paths")
        assert "input_roots" in error.message
        assert "disabled" in error.message


def test_path_outside_the_roots_is_403(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    outside = write(tmp_path / "secret.json", "{}\n")
    sub = files_job("file_path_lister", [str(root / "a.json"), str(outside)])
    error = plan_error(sub, [root])
    assert (status_of(error), error.field) == (403, "file_path_lister.paths[1]")
    assert str(outside) in error.message


def test_dotdot_escape_is_403(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    write(tmp_path / "secret.json", "{}\n")
    escape = f"{root}/../secret.json"
    error = plan_error(files_job("delimited_files", [escape]), [root])
    assert (status_of(error), error.field) == (403, "delimited_files.paths[0]")
    assert escape in error.message


def test_sibling_with_a_common_prefix_is_outside(tmp_path: Path) -> None:
    write(tmp_path / "root" / "a.json", "{}\n")
    sibling = write(tmp_path / "rootless" / "a.json", "{}\n")
    error = plan_error(files_job("file_path_lister", [str(sibling)]), [tmp_path / "root"])
    assert (status_of(error), error.field) == (403, "file_path_lister.paths[0]")


def test_dotdot_within_the_root_is_allowed(tmp_path: Path) -> None:
    make_tree(tmp_path)
    path = f"{tmp_path}/sub/../a.json"
    plan = plan_batches(files_job("file_path_lister", [path]), [tmp_path], BIG)
    assert plan.matched_files == [path]


def test_symlink_leaving_the_root_is_403(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    write(tmp_path / "outside" / "secret.json", "{}\n")
    (root / "sub" / "leak").symlink_to(tmp_path / "outside")
    error = plan_error(files_job("file_path_lister", [str(root)]), [root])
    assert (status_of(error), error.field) == (403, "file_path_lister.paths[0]")
    assert str(root / "sub" / "leak") in error.message


def test_file_symlink_leaving_the_root_is_403(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    secret = write(tmp_path / "secret.json", "{}\n")
    (root / "innocent.json").symlink_to(secret)
    error = plan_error(files_job("delimited_files", [str(root / "innocent.json")]), [root])
    assert (status_of(error), error.field) == (403, "delimited_files.paths[0]")


def test_root_that_is_a_symlink_is_resolved(tmp_path: Path) -> None:
    write(tmp_path / "real" / "a.json", "{}\n")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    path = str(tmp_path / "real" / "a.json")
    plan = plan_batches(files_job("file_path_lister", [path]), [tmp_path / "alias"], BIG)
    assert plan.matched_files == [path]


def test_path_with_nul_is_403(tmp_path: Path) -> None:
    error = plan_error(files_job("file_path_lister", [f"{tmp_path}/a\0b"]), [tmp_path])
    assert (status_of(error), error.field) == (403, "file_path_lister.paths[0]")


def test_relative_path_is_422(tmp_path: Path) -> None:
    error = plan_error(files_job("file_path_lister", ["data/a.json"]), [tmp_path])
    assert (status_of(error), error.field) == (422, "file_path_lister.paths[0]")
    assert "absolute" in error.message


def test_missing_path_is_422(tmp_path: Path) -> None:
    make_tree(tmp_path)
    missing = str(tmp_path / "nope.json")
    sub = files_job("file_path_lister", [str(tmp_path / "a.json"), missing])
    error = plan_error(sub, [tmp_path])
    assert (status_of(error), error.field) == (422, "file_path_lister.paths[1]")
    assert missing in error.message


def test_no_matching_files_is_422(tmp_path: Path) -> None:
    make_tree(tmp_path)
    sub = files_job("file_path_lister", [str(tmp_path)], includes=["**/*.csv"])
    error = plan_error(sub, [tmp_path])
    assert (status_of(error), error.field) == (422, "file_path_lister.paths")
    assert "no batches" in error.message


def test_empty_directory_is_422(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    error = plan_error(files_job("delimited_files", [str(tmp_path / "empty")]), [tmp_path])
    assert (status_of(error), error.field) == (422, "delimited_files.paths")


# --- chunks bounded by bytes, limits while streaming ----------------------------------------


def test_item_list_chunks_are_bounded_by_bytes() -> None:
    items = ["x" * 100_000, *range(CHUNK_BATCHES * 2), "y" * 3_000_000]
    plan = plan_batches(parse({"item_list": {"items": items, "batch_size": 1}}), [], 4_000_000)
    chunks = list(plan.batches.chunks)
    assert max(len(chunk.payloads) for chunk in chunks) <= CHUNK_MAX_BYTES
    assert max(chunk.batches for chunk in chunks) <= CHUNK_BATCHES
    assert sum(chunk.batches for chunk in chunks) == plan.batches.count == len(items)
    assert decoded(plan.payloads) == [[item] for item in items]


def test_item_list_batch_over_max_batch_size_is_413() -> None:
    sub = parse({"item_list": {"items": ["a" * 600, "b" * 600, "c"], "batch_size": 2}})
    with pytest.raises(DomainError) as caught:
        plan_batches(sub, [], BIG, max_batch_bytes=1024)
    assert (status_of(caught.value), caught.value.field) == (413, "item_list.batch_size")
    assert "batch 1 is 1207 bytes" in caught.value.message
    assert "max_batch_size" in caught.value.message


def test_delimited_batch_over_max_batch_size_is_413_before_it_is_read_whole(
    tmp_path: Path,
) -> None:
    lines = "".join(f'"{"x" * 500}"\n' for _ in range(10))
    write(tmp_path / "a.jsonl", "1\n" + lines)
    sub = files_job("delimited_files", [str(tmp_path)], batch_size=1_000)
    with pytest.raises(DomainError) as caught:
        plan_batches(sub, [tmp_path], BIG, max_batch_bytes=2048)
    assert (status_of(caught.value), caught.value.field) == (413, "delimited_files.batch_size")
    assert "batch 1 is over the 2048 byte limit" in caught.value.message


def test_max_batches_per_job_is_checked_while_streaming(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", "".join(f"{n}\n" for n in range(100)))
    sub = files_job("delimited_files", [str(tmp_path)], batch_size=10)
    assert plan_batches(sub, [tmp_path], BIG, max_batches=10).batches.count == 10
    with pytest.raises(DomainError) as caught:
        plan_batches(sub, [tmp_path], BIG, max_batches=9)
    assert (status_of(caught.value), caught.value.field) == (413, "delimited_files.batch_size")
    assert "more than 9 batches" in caught.value.message


def test_file_chunks_are_spooled_and_read_back(tmp_path: Path) -> None:
    items = [{"n": n, "pad": "p" * 3000} for n in range(3000)]
    write(tmp_path / "in" / "a.jsonl", "".join(json.dumps(item) + "\n" for item in items))
    sub = files_job("delimited_files", [str(tmp_path / "in")], batch_size=7)
    plan = plan_batches(sub, [tmp_path], BIG, spool_dir=tmp_path)
    try:
        assert isinstance(plan.batches.chunks, ChunkSpool)
        assert len(plan.batches.chunks) > 1
        # The spool has no name: nothing is left in its directory.
        assert sorted(path.name for path in tmp_path.iterdir()) == ["in"]
        assert decoded(plan.payloads) == [items[at : at + 7] for at in range(0, 3000, 7)]
    finally:
        plan.close()


def test_dry_run_plan_keeps_no_payloads(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", "".join(f"{n}\n" for n in range(50)))
    sub = files_job("delimited_files", [str(tmp_path)], batch_size=10)
    plan = plan_batches(sub, [tmp_path], BIG, spool_dir=tmp_path, keep_payloads=False)
    assert (plan.batches.count, plan.item_count, plan.payloads) == (5, 50, [])


def test_line_is_read_no_further_than_six_times_max_item_size(tmp_path: Path) -> None:
    # An escaped item may be written longer than it encodes: 6 bytes per \u00e9 for 2.
    escaped = '"' + "\\u00e9" * 100 + '"'
    path = write(tmp_path / "a.jsonl", f"{escaped}\n1\n" + "2" * 1300)
    error = plan_error(files_job("delimited_files", [str(path)]), [tmp_path], max_item_bytes=202)
    assert (status_of(error), error.field) == (422, "delimited_files")
    assert f"{path}:3: line 3 is longer than 1212 bytes" in error.message
