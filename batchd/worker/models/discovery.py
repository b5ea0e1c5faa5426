"""Which models an API serves, and their versions on disk (standard library only).

Cortex's layout rules (v0.35 lib/model/validation.py; ONNX from v0.25): a model is a folder
whose integer-named subfolders are its versions (the highest is "latest"), or, without
version folders, the model itself, which is version 1. A TensorFlow model (or version) is
a SavedModel folder, holding ``saved_model.pb``; an ONNX one holds a single ``*.onnx``
file, or is that file. With ``dir``, each subfolder is a model named after it, and
subfolders that are no valid model are passed over (as Cortex did) unless none is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The name of the one model of `[handler.models] path` (Cortex's consts.SINGLE_MODEL_NAME).
DEFAULT_MODEL_NAME = "_cortex_default"
SAVED_MODEL_FILE = "saved_model.pb"
ONNX_SUFFIX = ".onnx"


class ModelLayoutError(ValueError):
    """A configured model path that holds no model: `field` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A configured model: its name, its path as written and the setting that names it."""

    name: str
    path: str
    field: str
    signature_key: str | None


@dataclass(frozen=True, slots=True)
class FoundModel:
    name: str
    # version -> the SavedModel folder or the .onnx file
    versions: dict[int, Path]
    signature_key: str | None

    @property
    def latest(self) -> int:
        return max(self.versions)


def model_sources(models: dict[str, Any]) -> list[ModelSource]:
    """The models of `[handler.models]` (ModelsSpec as a dict) named by path or paths;
    with dir, the one folder that holds them (named by the folder's subfolders)."""
    common_key = models.get("signature_key")
    if models.get("path") is not None:
        return [ModelSource(DEFAULT_MODEL_NAME, models["path"], "handler.models.path", common_key)]
    if models.get("paths") is not None:
        return [
            ModelSource(
                entry["name"],
                entry["path"],
                f"handler.models.paths.{index}.path",
                entry.get("signature_key") or common_key,
            )
            for index, entry in enumerate(models["paths"])
        ]
    return [ModelSource("", models["dir"], "handler.models.dir", common_key)]


def discover(runtime: str, models: dict[str, Any], base: Path) -> dict[str, FoundModel]:
    """name -> FoundModel for every configured model; relative paths are under `base`.
    ModelLayoutError names the setting whose path holds no model."""
    found: dict[str, FoundModel] = {}
    for source in model_sources(models):
        root = base / source.path
        if not root.exists():
            raise ModelLayoutError(source.field, f"{source.path!r} does not exist")
        if source.name:
            versions = _versions_or_error(runtime, root, source)
            found[source.name] = FoundModel(source.name, versions, source.signature_key)
            continue
        if not root.is_dir():
            raise ModelLayoutError(source.field, f"{source.path!r} is not a folder")
        skipped: list[str] = []
        for child in sorted(_entries(root)):
            try:
                versions = model_versions(runtime, child)
            except ValueError as exc:
                skipped.append(f"{child.name}: {exc}")
                continue
            found[child.name] = FoundModel(child.name, versions, source.signature_key)
        if not found:
            why = "; ".join(skipped) or "it is empty"
            raise ModelLayoutError(
                source.field, f"{source.path!r} holds no {runtime} model folder ({why})"
            )
    return found


def _versions_or_error(runtime: str, root: Path, source: ModelSource) -> dict[int, Path]:
    try:
        return model_versions(runtime, root)
    except ValueError as exc:
        raise ModelLayoutError(source.field, f"{source.path!r}: {exc}") from None


def model_versions(runtime: str, root: Path) -> dict[int, Path]:
    """version -> path of one model folder (or .onnx file); ValueError says what is wrong."""
    if runtime == "onnx" and root.is_file():
        if root.suffix != ONNX_SUFFIX:
            raise ValueError(f"an ONNX model file must end in {ONNX_SUFFIX}")
        return {1: root}
    if not root.is_dir():
        raise ValueError("not a folder")
    single = _one_model(runtime, root)
    if single is not None:
        return {1: single}
    entries = _entries(root)
    numbered = sorted(
        # isascii: "\u00b2" (superscript two) is a digit to isdigit, but no int.
        (entry for entry in entries if _is_version(entry.name) and entry.is_dir()),
        key=lambda entry: int(entry.name),
    )
    if not numbered or len(numbered) != len(entries):
        raise ValueError(f"expected {_what(runtime)}, or integer version folders that hold one")
    versions: dict[int, Path] = {}
    for entry in numbered:
        model = _one_model(runtime, entry)
        if model is None:
            raise ValueError(f"version {entry.name} does not hold {_what(runtime)}")
        versions[int(entry.name)] = model
    return versions


def _one_model(runtime: str, folder: Path) -> Path | None:
    """The model a folder holds itself (not in version folders), or None."""
    if runtime == "tensorflow":
        return folder if (folder / SAVED_MODEL_FILE).is_file() else None
    files = [entry for entry in _entries(folder) if entry.suffix == ONNX_SUFFIX]
    if len(files) > 1:
        raise ValueError(f"{folder.name} holds {len(files)} .onnx files where one was expected")
    return files[0] if files and files[0].is_file() else None


def _is_version(name: str) -> bool:
    return name.isascii() and name.isdigit()


def _what(runtime: str) -> str:
    return f"a SavedModel ({SAVED_MODEL_FILE})" if runtime == "tensorflow" else "one .onnx file"


def _entries(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
