from __future__ import annotations

import gzip
import io
import os
import stat
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchd.apis.archive import remove_snapshot, unpack_project
from batchd.apis.spec import (
    ApiSpec,
    ComputeSpec,
    HandlerSpec,
    pack_project,
    parse_api_spec,
    validate_api_name,
)
from batchd.errors import DomainError
from batchd.http.errors import status_of
from batchd.packing import is_excluded, parse_dotenv, project_files

MINIMAL_TOML = 'name = "hello"\n[handler]\npath = "handler.py"\n'
HANDLER_SOURCE = b"class Handler:\n    pass\n"
MiB = 1 << 20

Member = tuple[tarfile.TarInfo, bytes]


def _write_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(data)
    return root


def _file(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def _special(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, b""


def _base() -> list[Member]:
    return [_file("batchd.toml", MINIMAL_TOML.encode()), _file("handler.py", HANDLER_SOURCE)]


def _archive(members: list[Member], compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    raw = buffer.getvalue()
    return gzip.compress(raw) if compress else raw


@pytest.fixture
def snapshots(tmp_path: Path) -> Iterator[Path]:
    parent = tmp_path / "snapshots"
    parent.mkdir()
    yield parent
    for child in parent.iterdir():
        remove_snapshot(child)


def _refuse(archive: bytes, dest: Path, max_bytes: int = MiB) -> DomainError:
    with pytest.raises(DomainError) as caught:
        unpack_project(archive, dest, max_bytes)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []
    return caught.value


# --- names and specs ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "hello", "my-api-2", "a" * 42, "a-b-c"])
def test_valid_api_names_are_returned(name: str) -> None:
    assert validate_api_name(name) == name


@pytest.mark.parametrize("name", ["Hello", "a" * 43, "-api", "api-", "", "9lives", "my_api"])
def test_invalid_api_names_are_422_on_name(name: str) -> None:
    with pytest.raises(DomainError) as caught:
        validate_api_name(name)
    assert (status_of(caught.value), caught.value.field) == (422, "name")


def test_too_long_name_message_says_the_limit() -> None:
    with pytest.raises(DomainError, match="1 to 42 characters, got 43"):
        validate_api_name("a" * 43)


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_api_spec(MINIMAL_TOML)
    assert spec == ApiSpec(name="hello", handler=HandlerSpec(path="handler.py"))
    assert spec.handler.config == {}
    assert spec.handler.env == {}
    assert spec.handler.python is None
    assert spec.compute == ComputeSpec(gpu=0)


def test_full_spec_is_parsed() -> None:
    spec = parse_api_spec(
        'name = "img"\n'
        "[handler]\n"
        'path = "./src/handler.py"\n'
        'python = "/usr/bin/python3"\n'
        'config = { size = 3, labels = ["a", "b"] }\n'
        'env = { MODE = "fast" }\n'
        "[compute]\n"
        "gpu = 2\n"
    )
    assert spec.handler.path == "src/handler.py"
    assert spec.handler.python == "/usr/bin/python3"
    assert spec.handler.config == {"size": 3, "labels": ["a", "b"]}
    assert spec.handler.env == {"MODE": "fast"}
    assert spec.compute.gpu == 2


@pytest.mark.parametrize(
    ("toml", "field", "message"),
    [
        ("replicas = 3\n" + MINIMAL_TOML, "replicas", "unknown key 'replicas'"),
        (MINIMAL_TOML + "bogus = 1\n", "handler.bogus", "unknown key 'handler.bogus'"),
        (MINIMAL_TOML + "[compute]\ncpu = 1\n", "compute.cpu", "unknown key 'compute.cpu'"),
        ('[handler]\npath = "h.py"\n', "name", "missing the required key 'name'"),
        ('name = "x"\n', "handler", "missing the required key 'handler'"),
        (MINIMAL_TOML.replace("hello", "Hello"), "name", "lowercase"),
        (MINIMAL_TOML + "[compute]\ngpu = -1\n", "compute.gpu", "greater than or equal to 0"),
        (MINIMAL_TOML + '[compute]\ngpu = "1"\n', "compute.gpu", "valid integer"),
        (MINIMAL_TOML + "[compute]\ngpu = true\n", "compute.gpu", "valid integer"),
        (MINIMAL_TOML + 'python = "python3"\n', "handler.python", "absolute path"),
        (MINIMAL_TOML + 'env = { "1BAD" = "x" }\n', "handler.env", "'1BAD'"),
        (MINIMAL_TOML + "env = { A = 1 }\n", "handler.env.A", "valid string"),
        # Values JSON cannot carry: once a 500 (a date), or an `Infinity` in API summaries.
        (MINIMAL_TOML + "config = { a = { b = [1979-05-27] } }\n", "handler.config", r"a\.b\[0\]"),
        (MINIMAL_TOML + "config = { a = nan }\n", "handler.config", "not a JSON value"),
        (MINIMAL_TOML + "batch_timeout = inf\n", "handler.batch_timeout", "finite"),
        (MINIMAL_TOML + "[retention]\ndays = inf\n", "retention.days", "finite"),
        (MINIMAL_TOML + '[compute]\nmem = "9999999999T"\n', "compute.mem", "largest"),
        (MINIMAL_TOML + '[compute]\ndisk = "lots"\n', "compute.disk", "not a size"),
        (MINIMAL_TOML + '[compute]\ndisk = "0"\n', "compute.disk", "not a positive size"),
    ],
)
def test_spec_errors_name_the_field(toml: str, field: str, message: str) -> None:
    with pytest.raises(DomainError, match=message) as caught:
        parse_api_spec(toml)
    assert (status_of(caught.value), caught.value.field) == (422, field)


@pytest.mark.parametrize("path", ["/abs/handler.py", "../handler.py", "a/../../h.py", "h.txt", ""])
def test_bad_handler_paths_are_refused(path: str) -> None:
    with pytest.raises(DomainError, match=r"relative path to a \.py file") as caught:
        parse_api_spec(f'name = "x"\n[handler]\npath = "{path}"\n')
    assert (status_of(caught.value), caught.value.field) == (422, "handler.path")


def test_bad_toml_reports_the_toml_error() -> None:
    with pytest.raises(DomainError, match=r"not valid TOML: .*line 2") as caught:
        parse_api_spec('name = "x"\n[handler\n')
    assert (status_of(caught.value), caught.value.field) == (422, "batchd.toml")


# --- .env -----------------------------------------------------------------------------------


def test_dotenv_handles_comments_blanks_quotes_and_export() -> None:
    text = (
        "# settings\n"
        "\n"
        "PLAIN=value\n"
        "  SPACED = padded  \n"
        'DOUBLE="with spaces # not a comment"\n'
        "SINGLE='single'\n"
        "export EXPORTED=yes\n"
        "EQUALS=a=b\n"
        "EMPTY=\n"
        "_under_1=x\r\n"
        "PLAIN=overridden\n"
    )
    assert parse_dotenv(text) == {
        "PLAIN": "overridden",
        "SPACED": "padded",
        "DOUBLE": "with spaces # not a comment",
        "SINGLE": "single",
        "EXPORTED": "yes",
        "EQUALS": "a=b",
        "EMPTY": "",
        "_under_1": "x",
    }


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("A=1\n\nno equals sign\n", 3),
        ("# c\n1ABC=x\n", 2),
        ("BAD-NAME=x\n", 1),
        ('A=1\nB="open\n', 2),
    ],
)
def test_dotenv_bad_line_is_reported_by_number(text: str, line: int) -> None:
    with pytest.raises(DomainError, match=f"line {line}:") as caught:
        parse_dotenv(text)
    assert (status_of(caught.value), caught.value.field) == (422, ".env")


def test_dotenv_error_does_not_echo_the_secret() -> None:
    with pytest.raises(DomainError) as caught:
        parse_dotenv("TOKEN hunter2\n")
    assert "hunter2" not in caught.value.message


# --- exclusion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relpath", "excluded"),
    [
        ("handler.py", False),
        ("pkg/mod.py", False),
        ("mod.pyc", True),
        ("pkg/mod.pyo", True),
        ("ext.pyd", True),
        ("__pycache__/mod.cpython-311.pyc", True),
        ("pkg/__pycache__/notes.txt", True),
        (".env", True),
        (".git/config", True),
        ("pkg/.hidden", True),
        ("pkg/.venv/lib/site.py", True),
        ("batchd.toml", True),
        ("sub/batchd.toml", False),
        ("data.pyc.txt", False),
    ],
)
def test_fixed_exclusion_rules(relpath: str, excluded: bool) -> None:
    assert is_excluded(relpath) is excluded


def test_project_files_walks_sorted_and_skips_excluded(tmp_path: Path) -> None:
    root = _write_tree(
        tmp_path,
        {
            "batchd.toml": MINIMAL_TOML,
            "handler.py": HANDLER_SOURCE,
            "b/z.py": "",
            "b/a.py": "",
            "a.py": "",
            "mod.pyc": "",
            "__pycache__/x.pyc": "",
            ".git/config": "",
            "b/.secret": "",
            "sub/batchd.toml": "",
            ".env": "A=1\n",
        },
    )
    (root / "link.py").symlink_to("a.py")
    assert [relpath for relpath, _ in project_files(root)] == [
        "a.py",
        "b/a.py",
        "b/z.py",
        "handler.py",
        "link.py",
        "sub/batchd.toml",
    ]
    assert dict(project_files(root))["b/a.py"] == root / "b" / "a.py"


def test_project_files_applies_batchdignore_without_descending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _write_tree(
        tmp_path,
        {
            ".batchdignore": "data/\n*.csv\n!keep.csv\n",
            "handler.py": HANDLER_SOURCE,
            "data/big.bin": "x",
            "data/keep.csv": "x",
            "rows.csv": "x",
            "keep.csv": "x",
            "sub/more.csv": "x",
            "sub/keep.csv": "x",
            ".git/objects/ab": "x",
        },
    )
    visited: list[str] = []
    real_scandir: Callable[..., Iterator[os.DirEntry[str]]] = os.scandir

    def recording_scandir(path: Path) -> Iterator[os.DirEntry[str]]:
        visited.append(Path(path).relative_to(root).as_posix())
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    assert [relpath for relpath, _ in project_files(root)] == [
        "handler.py",
        "keep.csv",
        "sub/keep.csv",
    ]
    assert visited == [".", "sub"]


# --- client packing -------------------------------------------------------------------------


def _tar_names(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {member.name: member for member in tar}


def test_pack_includes_control_files_and_project_files(tmp_path: Path) -> None:
    root = _write_tree(
        tmp_path,
        {
            "batchd.toml": MINIMAL_TOML,
            ".env": "A=1\n",
            ".batchdignore": "*.log\n",
            "handler.py": HANDLER_SOURCE,
            "run.log": "noise",
            "__pycache__/handler.cpython-311.pyc": "",
        },
    )
    (root / "alias.py").symlink_to("handler.py")
    members = _tar_names(pack_project(root, MiB))
    assert sorted(members) == [".batchdignore", ".env", "alias.py", "batchd.toml", "handler.py"]
    assert members["alias.py"].issym()
    assert members["alias.py"].linkname == "handler.py"
    assert members["handler.py"].isreg()


def test_pack_without_batchd_toml_is_422(tmp_path: Path) -> None:
    root = _write_tree(tmp_path, {"handler.py": HANDLER_SOURCE})
    with pytest.raises(DomainError, match=r"no batchd\.toml") as caught:
        pack_project(root, MiB)
    assert (status_of(caught.value), caught.value.field) == (422, "batchd.toml")


def test_pack_validates_the_spec_first(tmp_path: Path) -> None:
    root = _write_tree(tmp_path, {"batchd.toml": MINIMAL_TOML + "oops = 1\n"})
    with pytest.raises(DomainError) as caught:
        pack_project(root, MiB)
    assert (status_of(caught.value), caught.value.field) == (422, "handler.oops")


def test_pack_validates_the_dotenv(tmp_path: Path) -> None:
    root = _write_tree(
        tmp_path, {"batchd.toml": MINIMAL_TOML, "handler.py": HANDLER_SOURCE, ".env": "nope\n"}
    )
    with pytest.raises(DomainError, match="line 1") as caught:
        pack_project(root, MiB)
    assert (status_of(caught.value), caught.value.field) == (422, ".env")


@pytest.mark.parametrize(
    "files",
    [
        {"batchd.toml": MINIMAL_TOML, "other.py": ""},
        {"batchd.toml": MINIMAL_TOML, "handler.py": "", ".batchdignore": "handler.py\n"},
    ],
)
def test_pack_requires_the_handler_file(tmp_path: Path, files: dict[str, bytes | str]) -> None:
    with pytest.raises(DomainError, match=r"'handler\.py' is not among") as caught:
        pack_project(_write_tree(tmp_path, files), MiB)
    assert (status_of(caught.value), caught.value.field) == (422, "handler.path")


def test_pack_over_the_limit_names_the_largest_files(tmp_path: Path) -> None:
    root = _write_tree(
        tmp_path,
        {
            "batchd.toml": MINIMAL_TOML,
            "handler.py": HANDLER_SOURCE,
            "model.bin": b"\0" * (3 * MiB),
            "data.csv": b"\0" * (MiB + MiB // 2),
        },
    )
    with pytest.raises(DomainError) as caught:
        pack_project(root, 2 * MiB)
    assert (status_of(caught.value), caught.value.field) == (413, "project")
    assert caught.value.message == (
        "project is 4.5 MiB, over the 2.0 MiB limit; largest files: "
        "model.bin (3.0 MiB), data.csv (1.5 MiB), handler.py (24 B)"
    )


# --- round trip -----------------------------------------------------------------------------


def test_round_trip_writes_exactly_the_project(tmp_path: Path, snapshots: Path) -> None:
    files: dict[str, bytes | str] = {
        "batchd.toml": MINIMAL_TOML.replace('"handler.py"', '"src/handler.py"'),
        ".env": "# secrets\nexport TOKEN='abc'\nMODE=fast\n",
        ".batchdignore": "data/\n*.csv\n!keep.csv\n",
        "src/handler.py": HANDLER_SOURCE,
        "src/util.py": "X = 1\n",
        "keep.csv": "a,b\n",
        "skip.csv": "c,d\n",
        "data/raw.bin": b"\xff" * 100,
        "src/__pycache__/util.cpython-311.pyc": b"\0",
        "run.sh": "#!/bin/sh\n",
    }
    root = _write_tree(tmp_path / "project", files)
    (root / "run.sh").chmod(0o755)
    (root / "util.py").symlink_to("src/util.py")
    dest = snapshots / "hello-1"

    deployed = unpack_project(pack_project(root, MiB), dest, MiB)

    expected = ["keep.csv", "run.sh", "src/handler.py", "src/util.py", "util.py"]
    assert deployed.files == expected
    assert deployed.dotenv == {"TOKEN": "abc", "MODE": "fast"}
    assert deployed.spec.handler.path == "src/handler.py"
    kept = ["keep.csv", "run.sh", "src/handler.py", "src/util.py"]
    assert deployed.size == sum((root / name).stat().st_size for name in kept)
    written = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if not p.is_dir())
    assert written == expected
    for name in kept:
        assert (dest / name).read_bytes() == (root / name).read_bytes()
    assert os.readlink(dest / "util.py") == "src/util.py"
    assert stat.S_IMODE((dest / "src" / "util.py").stat().st_mode) == 0o444
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o555
    assert stat.S_IMODE((dest / "src").stat().st_mode) == 0o555
    assert [p.name for p in snapshots.iterdir()] == ["hello-1"]


def test_remove_snapshot_deletes_a_read_only_snapshot(snapshots: Path) -> None:
    dest = snapshots / "v1"
    unpack_project(_archive([*_base(), _file("pkg/deep/mod.py", b"x")]), dest, MiB)
    remove_snapshot(dest)
    assert not dest.exists()


def test_server_applies_batchdignore_and_fixed_rules(snapshots: Path) -> None:
    archive = _archive(
        [
            *_base(),
            _file(".batchdignore", b"data/\n*.csv\n!keep.csv\n"),
            _file("data/keep.csv", b"1"),
            _file("data/big.bin", b"2"),
            _file("rows.csv", b"3"),
            _file("keep.csv", b"4"),
            _file("__pycache__/handler.cpython-311.pyc", b"5"),
            _file(".git/config", b"6"),
            _file("sub/batchd.toml", b"7"),
        ]
    )
    dest = snapshots / "v1"
    deployed = unpack_project(archive, dest, MiB)
    assert deployed.files == ["handler.py", "keep.csv", "sub/batchd.toml"]
    assert sorted(p.name for p in dest.iterdir()) == ["handler.py", "keep.csv", "sub"]


def test_server_accepts_plain_tar_and_dot_slash_names(snapshots: Path) -> None:
    archive = _archive(
        [
            _special("./", tarfile.DIRTYPE),
            _file("./batchd.toml", MINIMAL_TOML.encode()),
            _file("./handler.py", HANDLER_SOURCE),
        ],
        compress=False,
    )
    deployed = unpack_project(archive, snapshots / "v1", MiB)
    assert deployed.files == ["handler.py"]
    assert deployed.size == len(HANDLER_SOURCE)


def test_server_accepts_symlinks_and_hardlinks_inside(snapshots: Path) -> None:
    archive = _archive(
        [
            *_base(),
            _file("src/util.py", b"X = 1\n"),
            _link("lib", "src"),
            _link("src/alias.py", "util.py"),
            _link("src/up.py", "../handler.py"),
            _link("copy.py", "src/util.py", tarfile.LNKTYPE),
        ]
    )
    dest = snapshots / "v1"
    deployed = unpack_project(archive, dest, MiB)
    assert deployed.files == [
        "copy.py",
        "handler.py",
        "lib",
        "src/alias.py",
        "src/up.py",
        "src/util.py",
    ]
    assert deployed.size == len(HANDLER_SOURCE) + 2 * len(b"X = 1\n")
    assert (dest / "lib" / "util.py").read_bytes() == b"X = 1\n"
    assert (dest / "src" / "up.py").read_bytes() == HANDLER_SOURCE
    assert (dest / "copy.py").stat().st_ino == (dest / "src" / "util.py").stat().st_ino


def test_server_size_limit_names_the_largest_file(snapshots: Path) -> None:
    archive = _archive([*_base(), _file("model.bin", b"\0" * 5000), _file("a.txt", b"x" * 10)])
    error = _refuse(archive, snapshots / "v1", max_bytes=4096)
    assert (status_of(error), error.field) == (413, "project")
    assert error.message == (
        "project is 4.9 KiB, over the 4.0 KiB limit; largest files: "
        "model.bin (4.9 KiB), handler.py (24 B), a.txt (10 B)"
    )


def test_server_size_skips_ignored_files(snapshots: Path) -> None:
    ignored = [_file(".batchdignore", b"*.bin\n"), _file("huge.bin", b"\0" * 10_000)]
    deployed = unpack_project(_archive([*_base(), *ignored]), snapshots / "v1", 100)
    assert deployed.size == len(HANDLER_SOURCE)


def test_server_size_counts_hardlinks(snapshots: Path) -> None:
    linked = [_file("a.txt", b"x" * 40), _link("b.txt", "a.txt", tarfile.LNKTYPE)]
    error = _refuse(_archive([*_base(), *linked]), snapshots / "v2", max_bytes=100)
    assert status_of(error) == 413
    assert "a.txt (40 B), b.txt (40 B)" in error.message


# --- hostile archives -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (_file("/etc/cron.d/evil", b"x"), "has an absolute path"),
        (_file("../evil", b"x"), "has a '..' path component"),
        (_file("a/../../evil", b"x"), "has a '..' path component"),
        (_file("é\0b.py", b"x"), "contains a NUL byte"),
        # Once a 500: bytes that are not UTF-8 in a name.
        (_file("data\udcff.txt", b"x"), "has a path that is not UTF-8"),
        (_link("passwd", "/etc/passwd"), "outside the project"),
        (_link("a", "../../x"), "resolves outside the project"),
        (_link("sub/a", "../../x"), "resolves outside the project"),
        (_link("hard", "../outside", tarfile.LNKTYPE), "outside the project"),
        (_link("hard", "/etc/shadow", tarfile.LNKTYPE), "outside the project"),
        (_special("tty", tarfile.CHRTYPE), "is a character device"),
        (_special("disk", tarfile.BLKTYPE), "is a block device"),
        (_special("pipe", tarfile.FIFOTYPE), "is a fifo"),
    ],
    ids=lambda value: value[0].name if isinstance(value, tuple) else None,
)
def test_hostile_members_are_refused(snapshots: Path, member: Member, problem: str) -> None:
    error = _refuse(_archive([*_base(), member]), snapshots / "v1")
    assert (status_of(error), error.field) == (422, "archive")
    assert repr(member[0].name) in error.message
    assert problem in error.message


def test_hostile_member_is_refused_even_when_ignored(snapshots: Path) -> None:
    archive = _archive([*_base(), _link(".git/evil", "/etc/passwd")])
    error = _refuse(archive, snapshots / "v1")
    assert error.message == (
        "archive member '.git/evil' is a symlink to '/etc/passwd', outside the project"
    )


def test_symlink_chain_that_escapes_is_refused(snapshots: Path) -> None:
    # Textually "s/up/../x" is "s/x", but s/up is the project root, so it really leaves.
    archive = _archive([*_base(), _link("s/up", ".."), _link("a", "s/up/../x")])
    error = _refuse(archive, snapshots / "v1")
    assert error.message == (
        "archive member 'a' is a symlink to 's/up/../x', which resolves outside the project"
    )


def test_symlink_loop_is_refused(snapshots: Path) -> None:
    error = _refuse(_archive([*_base(), _link("a", "b"), _link("b", "a")]), snapshots / "v1")
    assert error.message == "archive member 'a' is part of a symlink loop"


def test_writing_through_a_symlink_is_refused(snapshots: Path) -> None:
    archive = _archive([*_base(), _link("lib", "src"), _file("lib/evil.py", b"x")])
    error = _refuse(archive, snapshots / "v1")
    assert error.message == "archive member 'lib/evil.py' is inside 'lib', which is not a directory"


def test_duplicate_member_is_refused(snapshots: Path) -> None:
    archive = _archive([*_base(), _link("x.py", "handler.py"), _file("x.py", b"x")])
    error = _refuse(archive, snapshots / "v1")
    assert error.message == "archive member 'x.py' appears more than once"


def test_hardlink_to_a_later_or_excluded_file_is_refused(snapshots: Path) -> None:
    later = [_link("h.py", "handler.py", tarfile.LNKTYPE), *_base()]
    assert "not an earlier file" in _refuse(_archive(later), snapshots / "v1").message
    hidden = [*_base(), _file(".hidden", b"x"), _link("h.py", ".hidden", tarfile.LNKTYPE)]
    error = _refuse(_archive(hidden), snapshots / "v1")
    assert error.message == "archive member 'h.py' is a hard link to excluded '.hidden'"


def test_huge_tar_header_is_refused_without_reading_it(snapshots: Path) -> None:
    error = _refuse(_archive([*_base(), _file("a" * (2 * MiB), b"x")]), snapshots / "v1")
    assert (status_of(error), error.field) == (413, "archive")


@pytest.mark.parametrize(
    "archive",
    [b"", b"this is not a tar file at all" * 40, gzip.compress(b"not a tar" * 100)],
    ids=["empty", "text", "gzipped-text"],
)
def test_unreadable_upload_is_400(snapshots: Path, archive: bytes) -> None:
    error = _refuse(archive, snapshots / "v1")
    assert (status_of(error), error.field) == (400, "archive")
    assert error.message.startswith("archive is not a readable tar file")


def test_truncated_upload_is_400(snapshots: Path) -> None:
    archive = _archive([*_base(), _file("big.bin", os.urandom(100_000))])
    error = _refuse(archive[: len(archive) // 2], snapshots / "v1")
    assert (status_of(error), error.field) == (400, "archive")


# --- spec checks on the server --------------------------------------------------------------


def test_archive_without_batchd_toml_is_422(snapshots: Path) -> None:
    error = _refuse(_archive([_file("handler.py", HANDLER_SOURCE)]), snapshots / "v1")
    assert (status_of(error), error.field, error.message) == (
        422,
        "batchd.toml",
        "archive has no batchd.toml, cortex.yaml or cortex.yml",
    )


def test_symlinked_batchd_toml_is_422(snapshots: Path) -> None:
    archive = _archive(
        [_file("real.toml", MINIMAL_TOML.encode()), _link("batchd.toml", "real.toml")]
    )
    error = _refuse(archive, snapshots / "v1")
    assert (status_of(error), error.field) == (422, "batchd.toml")


def test_missing_handler_file_is_422_after_cleanup(snapshots: Path) -> None:
    archive = _archive([_file("batchd.toml", MINIMAL_TOML.encode()), _file("other.py", b"x")])
    error = _refuse(archive, snapshots / "v1")
    assert (status_of(error), error.field) == (422, "handler.path")


def test_handler_file_excluded_by_batchdignore_is_422(snapshots: Path) -> None:
    archive = _archive([*_base(), _file(".batchdignore", b"handler.py\n")])
    error = _refuse(archive, snapshots / "v1")
    assert (status_of(error), error.field) == (422, "handler.path")


def test_nonexistent_python_is_422(snapshots: Path, tmp_path: Path) -> None:
    toml = MINIMAL_TOML + f'python = "{tmp_path / "no-such-python"}"\n'
    archive = _archive([_file("batchd.toml", toml.encode()), _file("handler.py", HANDLER_SOURCE)])
    error = _refuse(archive, snapshots / "v1")
    assert (status_of(error), error.field) == (422, "handler.python")


def test_existing_python_is_accepted(snapshots: Path) -> None:
    toml = MINIMAL_TOML + f'python = "{sys.executable}"\n'
    archive = _archive([_file("batchd.toml", toml.encode()), _file("handler.py", HANDLER_SOURCE)])
    deployed = unpack_project(archive, snapshots / "v1", MiB)
    assert deployed.spec.handler.python == sys.executable


def test_existing_dest_is_not_overwritten(snapshots: Path) -> None:
    dest = snapshots / "v1"
    dest.mkdir()
    with pytest.raises(FileExistsError):
        unpack_project(_archive(_base()), dest, MiB)
    assert list(dest.iterdir()) == []
