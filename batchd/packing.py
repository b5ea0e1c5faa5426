"""Packing a Handler project folder into the tar.gz that ``POST /apis`` takes.

Standard library only: :func:`batchd.client.Client.deploy` runs it inside a handler's own
interpreter, which may lack the daemon's packages. ``.batchdignore`` is applied with
``pathspec`` when it imports; without it the file is uploaded unapplied (the server applies
it anyway) and the client-side size check is skipped, since ignored files would count.
The server validates the spec fully (:mod:`batchd.apis.spec`) and unpacks with suspicion
(:mod:`batchd.apis.archive`). It sits at the bottom of the layers, beside the client that
imports it, and imports nothing of batchd but :mod:`batchd.errors`.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from batchd.errors import Invalid, TooLarge

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

PROJECT_CONFIG = "batchd.toml"
# A Cortex project's config, used when there is no batchd.toml (the server translates it).
CORTEX_CONFIGS = ("cortex.yaml", "cortex.yml")
IGNORE_FILE = ".batchdignore"
CORTEX_IGNORE_FILE = ".cortexignore"
# The ignore files in order of precedence: only the first present one applies.
IGNORE_FILES = (IGNORE_FILE, CORTEX_IGNORE_FILE)
ENV_FILE = ".env"
# Cortex's project limit; the daemon's `max_project_size` is what really counts.
DEFAULT_MAX_PROJECT_BYTES = 32 * 1024 * 1024

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A config file named with --config: a plain file name at the top of the project.
CONFIG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_COMPILED_SUFFIXES = (".pyc", ".pyo", ".pyd")
_LARGEST_SHOWN = 5
# The handler types with a built-in handler (batchd.apis.spec.MODEL_HANDLER_TYPES).
_MODEL_TYPES = ("tensorflow", "onnx")

# Given the config file's name and text, the text of .env (or None) and the project's files,
# checks them and returns the handler files the APIs need.
SpecCheck = Callable[[str, str, str | None, Collection[str]], list[str]]


# --- what belongs in a project --------------------------------------------------------------


def excluded_component(part: str) -> bool:
    return part.startswith(".") or part == "__pycache__"


def is_excluded(relpath: str) -> bool:
    """The fixed rules: dotfiles, ``__pycache__``, compiled files and the root batchd.toml."""
    return (
        relpath == PROJECT_CONFIG
        or relpath.endswith(_COMPILED_SUFFIXES)
        or any(excluded_component(part) for part in relpath.split("/"))
    )


def is_cortex_config(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def choose_config(present: Callable[[str], bool], given: str | None, where: str) -> str:
    """The project's config file: `given` (a file at the project's top), else batchd.toml,
    else cortex.yaml or cortex.yml. `present` says whether a top-level file exists in
    `where` (named in the error when none does)."""
    if given is not None:
        if not CONFIG_NAME.fullmatch(given):
            raise Invalid(
                f"config {given!r} must name a file at the top of the project folder "
                "(letters, digits, '.', '_' and '-', not starting with '.')",
                field="config",
            )
        if not present(given):
            raise Invalid(f"the project has no config file {given!r}", field="config")
        return given
    for name in (PROJECT_CONFIG, *CORTEX_CONFIGS):
        if present(name):
            return name
    raise Invalid(
        f"{where} has no {PROJECT_CONFIG}, {' or '.join(CORTEX_CONFIGS)}", field=PROJECT_CONFIG
    )


def compile_ignore(text: str, name: str = IGNORE_FILE) -> GitIgnoreSpec:
    from pathspec import GitIgnoreSpec

    try:
        return GitIgnoreSpec.from_lines(text.splitlines())
    except ValueError as exc:
        raise Invalid(f"{name}: {exc}", field=name) from exc


def parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def ignored(relpath: str, ignore: GitIgnoreSpec | None) -> bool:
    if ignore is None:
        return False
    # As in git, a file inside an ignored directory stays ignored whatever later patterns say.
    return any(ignore.match_file(f"{parent}/") for parent in parents(relpath)) or bool(
        ignore.match_file(relpath)
    )


def skipped(relpath: str, ignore: GitIgnoreSpec | None) -> bool:
    return is_excluded(relpath) or ignored(relpath, ignore)


def pathspec_available() -> bool:
    try:
        import pathspec  # noqa: F401
    except ImportError:
        return False
    return True


def _client_ignore(root: Path) -> tuple[GitIgnoreSpec | None, bool]:
    """The compiled .batchdignore (else .cortexignore), and whether it was applied (False:
    present, no pathspec)."""
    name = next((name for name in IGNORE_FILES if (root / name).is_file()), None)
    if name is None:
        return None, True
    if not pathspec_available():
        return None, False
    return compile_ignore(decode((root / name).read_bytes(), name), name), True


def project_files(root: Path) -> list[tuple[str, Path]]:
    """(archive name, path) of every project file, sorted, without descending into skips."""
    return _project_files(root, _client_ignore(root)[0])


def _project_files(root: Path, ignore: GitIgnoreSpec | None) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    _walk(root, "", ignore, found)
    return found


def _walk(
    directory: Path, prefix: str, ignore: GitIgnoreSpec | None, found: list[tuple[str, Path]]
) -> None:
    with os.scandir(directory) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        relpath = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            if not (excluded_component(entry.name) or ignored(relpath + "/", ignore)):
                _walk(Path(entry.path), relpath + "/", ignore, found)
            continue
        kept = entry.is_file(follow_symlinks=False) or entry.is_symlink()
        if kept and not skipped(relpath, ignore):
            found.append((relpath, Path(entry.path)))


# --- checks ---------------------------------------------------------------------------------


def decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"{name} is not UTF-8: {exc}", field=name) from exc


def parse_dotenv(text: str) -> dict[str, str]:
    """``VARIABLE=value`` lines (``export`` and quotes allowed, ``#`` comments)."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            name, value = _dotenv_assignment(line, number)
            env[name] = value
    return env


def _dotenv_assignment(line: str, number: int) -> tuple[str, str]:
    name, equals, value = line.removeprefix("export ").partition("=")
    name = name.strip()
    # The line itself is never echoed back: .env files hold secrets.
    if not equals or not ENV_NAME.fullmatch(name):
        raise Invalid(
            f"{ENV_FILE} line {number}: expected VARIABLE=value "
            "with VARIABLE made of letters, digits and '_', not starting with a digit",
            field=ENV_FILE,
        )
    return name, _unquote(value.strip(), number)


def _unquote(value: str, number: int) -> str:
    if not value or value[0] not in "'\"":
        return value
    if len(value) < 2 or value[-1] != value[0]:
        raise Invalid(f"{ENV_FILE} line {number}: unterminated quote", field=ENV_FILE)
    return value[1:-1]


def load_toml(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Invalid(f"{PROJECT_CONFIG} is not valid TOML: {exc}", field=PROJECT_CONFIG) from exc


def basic_spec_check(
    config_name: str, config_text: str, env_text: str | None, project_files: Collection[str]
) -> list[str]:
    """The client's check: TOML parses, ``name`` and ``[handler] path`` are there (a model
    type's may be left out: the built-in handler). A Cortex config (YAML, which the standard
    library cannot read) is left to the server."""
    if env_text is not None:
        parse_dotenv(env_text)
    if is_cortex_config(config_name):
        return []
    data = load_toml(config_text)
    if not isinstance(data.get("name"), str):
        raise Invalid(f"{PROJECT_CONFIG} needs a string 'name'", field="name")
    handler = data.get("handler")
    path = handler.get("path") if isinstance(handler, dict) else None
    if path is None and isinstance(handler, dict) and handler.get("type") in _MODEL_TYPES:
        return []
    if not isinstance(path, str):
        raise Invalid(
            f"{PROJECT_CONFIG} needs a [handler] table with a string 'path'", "handler.path"
        )
    return [PurePosixPath(path).as_posix()]


def check_size(sizes: Mapping[str, int], max_bytes: int) -> None:
    total = sum(sizes.values())
    if total <= max_bytes:
        return
    largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    shown = [f"{name} ({human_size(size)})" for name, size in largest[:_LARGEST_SHOWN]]
    more = ", ..." if len(largest) > _LARGEST_SHOWN else ""
    raise TooLarge(
        f"project is {human_size(total)}, over the {human_size(max_bytes)} limit; "
        f"largest files: {', '.join(shown)}{more}",
        field="project",
    )


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


# --- packing --------------------------------------------------------------------------------


def pack_project(
    root: Path,
    max_bytes: int = DEFAULT_MAX_PROJECT_BYTES,
    check_spec: SpecCheck = basic_spec_check,
    config: str | None = None,
    config_text: bytes | None = None,
) -> bytes:
    """The project under `root` as a tar.gz; Invalid or TooLarge for what the server refuses.

    Its config is `config` (a file at the top of `root`), else batchd.toml, else cortex.yaml
    or cortex.yml: the server, told the same `config`, picks the same one. `config_text` is
    a config given in code (as Cortex's client took a spec) in place of any file: it goes
    in as `config` (batchd.toml by default), and the folder's own config files stay out."""
    if config_text is None:
        config_name = choose_config(lambda name: (root / name).is_file(), config, str(root))
        config_text = (root / config_name).read_bytes()
        left_out = {config_name}
    else:
        config_name = choose_config(lambda _: True, config or PROJECT_CONFIG, str(root))
        left_out = {config_name, PROJECT_CONFIG, *CORTEX_CONFIGS}
    controls = {config_name: config_text}
    controls.update(
        (name, (root / name).read_bytes())
        for name in (ENV_FILE, *IGNORE_FILES)
        if (root / name).is_file()
    )
    env = controls.get(ENV_FILE)
    ignore, applied = _client_ignore(root)
    # The config is a control file, never a project file (as Cortex left its cortex.yaml out).
    files = [pair for pair in _project_files(root, ignore) if pair[0] not in left_out]
    relpaths = {relpath for relpath, _ in files}
    handler_paths = check_spec(
        config_name,
        decode(controls[config_name], config_name),
        None if env is None else decode(env, ENV_FILE),
        relpaths,
    )
    for handler_path in handler_paths:
        if handler_path not in relpaths:
            raise Invalid(
                f"handler.path {handler_path!r} is not among the project files "
                f"(missing, or excluded by {' or '.join(IGNORE_FILES)} or the built-in rules)",
                field="handler.path",
            )
    if applied:
        check_size({relpath: _packed_size(path) for relpath, path in files}, max_bytes)
    return _tar_gz(controls, files)


def _packed_size(path: Path) -> int:
    info = path.lstat()
    return 0 if stat.S_ISLNK(info.st_mode) else info.st_size


def _tar_gz(controls: Mapping[str, bytes], files: Iterable[tuple[str, Path]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in controls.items():
            # Added as plain bytes so a symlinked .env still arrives as the file the server needs.
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for relpath, path in files:
            tar.add(path, arcname=relpath, recursive=False)
    return buffer.getvalue()
