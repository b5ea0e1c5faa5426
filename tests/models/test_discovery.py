"""Finding models on disk, naming them and the LRU of loaded ones: pure functions and a
client with a fake runtime, no process and no model venv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchd.apis.model_paths import check_model_paths
from batchd.apis.spec import HandlerSpec
from batchd.errors import Invalid
from batchd.worker.models.client import ModelClient, ModelNotFound
from batchd.worker.models.discovery import (
    DEFAULT_MODEL_NAME,
    FoundModel,
    ModelLayoutError,
    discover,
    model_versions,
)
from batchd.worker.models.tensorflow import _signature_key


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_integer_subfolders_are_versions_and_a_bare_model_is_version_1(tmp_path: Path) -> None:
    v3 = touch(tmp_path / "tf/3/saved_model.pb").parent
    v10 = touch(tmp_path / "tf/10/saved_model.pb").parent
    assert model_versions("tensorflow", tmp_path / "tf") == {3: v3, 10: v10}
    bare = touch(tmp_path / "bare/saved_model.pb").parent
    assert model_versions("tensorflow", bare) == {1: bare}

    one = touch(tmp_path / "onnx/1/a.onnx")
    two = touch(tmp_path / "onnx/2/b.onnx")
    assert model_versions("onnx", tmp_path / "onnx") == {1: one, 2: two}
    file = touch(tmp_path / "file/model.onnx")
    assert model_versions("onnx", file) == {1: file}
    assert model_versions("onnx", file.parent) == {1: file}


@pytest.mark.parametrize(
    ("runtime", "files", "error"),
    [
        ("tensorflow", ["1/saved_model.pb", "notes.txt"], "or integer version folders"),
        ("tensorflow", ["1/saved_model.pb", "2/variables/x"], "version 2 does not hold"),
        ("onnx", ["1/a.onnx", "1/b.onnx"], "holds 2 .onnx files"),
        ("onnx", ["model.txt"], "expected one .onnx file"),
        # A digit to str.isdigit, but no int: no version folder.
        ("tensorflow", ["1/saved_model.pb", "\u00b2/saved_model.pb"], "or integer version"),
    ],
)
def test_a_folder_that_is_no_model_says_why(
    tmp_path: Path, runtime: str, files: list[str], error: str
) -> None:
    for name in files:
        touch(tmp_path / "m" / name)
    with pytest.raises(ValueError, match=error):
        model_versions(runtime, tmp_path / "m")


def test_discover_names_models_and_the_setting_of_a_bad_path(tmp_path: Path) -> None:
    touch(tmp_path / "models/a/1/model.onnx")
    touch(tmp_path / "models/b/model.onnx")
    touch(tmp_path / "models/junk/readme.txt")
    found = discover("onnx", {"dir": "models", "signature_key": None}, tmp_path)
    # The folder that holds no model is passed over, as Cortex did.
    assert sorted(found) == ["a", "b"]
    assert found["a"].versions == {1: tmp_path / "models/a/1/model.onnx"}

    single = discover("onnx", {"path": "models/b"}, tmp_path)
    assert list(single) == [DEFAULT_MODEL_NAME]

    paths = {"paths": [{"name": "a", "path": "models/a"}, {"name": "z", "path": "nowhere"}]}
    with pytest.raises(ModelLayoutError) as caught:
        discover("onnx", paths, tmp_path)
    assert caught.value.field == "handler.models.paths.1.path"
    assert caught.value.message == "'nowhere' does not exist"

    # The deploy's 422 names the config file it was read from (a cortex.yaml too).
    handler = HandlerSpec.model_validate({"type": "onnx", "models": paths})
    with pytest.raises(Invalid) as refused:
        check_model_paths(handler, tmp_path, "cortex.yaml")
    assert refused.value.field == "handler.models.paths.1.path"
    assert refused.value.message == (
        "cortex.yaml: handler.models.paths.1.path: 'nowhere' does not exist"
    )


class FakeClient(ModelClient):
    runtime = "fake"

    def __init__(self, models: dict[str, FoundModel], cache_size: int | None) -> None:
        super().__init__(models, cache_size)
        self.loads: list[tuple[str, int]] = []

    def _load(self, found: FoundModel, version: int, path: Any) -> Any:
        if "broken" in str(path):
            raise OSError("unreadable")
        self.loads.append((found.name, version))
        return (found.name, version)

    def _run(self, model: Any, model_input: Any, name: str) -> dict[str, Any]:
        return {"model": model, "input": model_input}

    def _native(self, model: Any) -> Any:
        return model


def fake(cache_size: int | None, **versions: list[int]) -> FakeClient:
    models = {
        name: FoundModel(name, {v: Path(f"/m/{name}/{v}") for v in numbers}, None)
        for name, numbers in versions.items()
    }
    return FakeClient(models, cache_size)


def test_the_least_recently_used_model_is_evicted_at_cache_size() -> None:
    client = fake(2, a=[1, 2], b=[1], c=[5])
    client.load_initial()
    assert client.loaded() == [("a", 2), ("b", 1)]
    assert client.predict("in", "a")["model"] == ("a", 2)
    # b is the least recently used now: loading c evicts it.
    assert client.predict("in", "c", "5") == {"model": ("c", 5), "input": "in"}
    assert client.loaded() == [("a", 2), ("c", 5)]
    assert client.get_model("b") == ("b", 1)
    assert client.loaded() == [("c", 5), ("b", 1)]
    assert client.loads == [("a", 2), ("b", 1), ("c", 5), ("b", 1)]


def test_names_and_versions_resolve_as_in_cortex() -> None:
    client = fake(None, a=[1, 7], b=[2])
    with pytest.raises(
        ModelNotFound, match=r"model_name was not given; choose one of \['a', 'b'\]"
    ):
        client.predict("in")
    with pytest.raises(ModelNotFound, match="model 'x' does not exist"):
        client.predict("in", "x")
    with pytest.raises(
        ModelNotFound, match=r"model 'a' has no version 2; its versions are \[1, 7\]"
    ):
        client.predict("in", "a", 2)
    with pytest.raises(ValueError, match="an integer or 'latest', not True"):
        client.predict("in", "a", True)
    assert client.predict("in", "a", "latest")["model"] == ("a", 7)
    assert client.versions("a") == [1, 7]
    # `[handler.models] path`: the one model answers whatever name is asked (Cortex).
    single = fake(None, **{DEFAULT_MODEL_NAME: [1]})
    assert single.predict("in", "anything")["model"] == (DEFAULT_MODEL_NAME, 1)
    only = fake(None, a=[3])
    assert only.predict("in")["model"] == ("a", 3)


def test_a_model_that_fails_to_load_is_named_with_its_path() -> None:
    client = fake(None, broken=[1])
    with pytest.raises(RuntimeError) as caught:
        client.load_initial()
    assert str(caught.value) == (
        "fake model 'broken' version 1 at /m/broken/1 failed to load: OSError: unreadable"
    )


def test_the_signature_key_is_chosen_as_cortex_chose_it() -> None:
    assert _signature_key(None, ["serving_default"], "m", 1) == "serving_default"
    assert _signature_key(None, ["a", "predict"], "m", 1) == "predict"
    assert _signature_key("a", ["a", "predict"], "m", 1) == "a"
    with pytest.raises(ValueError, match="several signatures, \\['a', 'b'\\]: set signature_key"):
        _signature_key(None, ["a", "b"], "m", 1)
    with pytest.raises(ValueError, match="signature_key 'c' is not among"):
        _signature_key("c", ["a", "b"], "m", 1)
