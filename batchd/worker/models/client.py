"""What the tensorflow and onnx clients share: naming a model and a version, and keeping
the loaded ones in a least-recently-used cache (standard library only)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from batchd.worker.models.discovery import DEFAULT_MODEL_NAME, FoundModel

LATEST = "latest"


class ModelNotFound(LookupError):
    """A model name or version the API does not serve."""


class ModelClient:
    """A runtime's client: `predict`, `get_model` and the table of models and versions.

    Subclasses load one model version (`_load`) and run it (`_run`). At most `cache_size`
    model versions stay loaded (None: all); using one makes it the most recent, and
    loading one more evicts the least recently used.
    """

    runtime = ""

    def __init__(self, models: dict[str, FoundModel], cache_size: int | None = None) -> None:
        self._models = models
        self._cache_size = cache_size
        self._loaded: OrderedDict[tuple[str, int], Any] = OrderedDict()

    # --- Cortex's interface --------------------------------------------------------------

    def predict(
        self, model_input: Any, model_name: str | None = None, model_version: Any = None
    ) -> dict[str, Any]:
        """Run `model_input` through a model: a dict of output name -> numpy array."""
        name, version = self._resolve(model_name, model_version)
        return self._run(self._get(name, version), model_input, name)

    def get_model(self, model_name: str | None = None, model_version: Any = None) -> Any:
        """The runtime's own loaded model (an onnxruntime InferenceSession, or the object
        tf.saved_model.load returns), loading it if need be."""
        name, version = self._resolve(model_name, model_version)
        return self._native(self._get(name, version))

    @property
    def models(self) -> list[str]:
        """The names of the models this API serves."""
        return sorted(self._models)

    def versions(self, model_name: str | None = None) -> list[int]:
        """A model's versions on disk, lowest first (the last is "latest")."""
        name, _ = self._resolve(model_name, None)
        return sorted(self._models[name].versions)

    def loaded(self) -> list[tuple[str, int]]:
        """The (name, version) pairs loaded now, least recently used first."""
        return list(self._loaded)

    # --- loading --------------------------------------------------------------------------

    def load_initial(self) -> None:
        """Load the latest version of each model, up to the cache's size: a model that
        cannot be loaded fails the worker at its start, not at its first batch."""
        for name in self.models[: self._cache_size]:
            self._get(name, self._models[name].latest)

    def _get(self, name: str, version: int) -> Any:
        key = (name, version)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        if self._cache_size is not None:
            while len(self._loaded) >= self._cache_size:
                self._loaded.popitem(last=False)
        found = self._models[name]
        path = found.versions[version]
        try:
            model = self._load(found, version, path)
        except Exception as exc:
            raise RuntimeError(
                f"{self.runtime} model {name!r} version {version} at {path} failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._loaded[key] = model
        return model

    def _resolve(self, model_name: str | None, model_version: Any) -> tuple[str, int]:
        """The (name, version) a call means; ModelNotFound when the API has no such."""
        if DEFAULT_MODEL_NAME in self._models:
            # `[handler.models] path`: one model, whatever name is asked for (Cortex).
            name = DEFAULT_MODEL_NAME
        elif model_name is None:
            if len(self._models) != 1:
                raise ModelNotFound(f"model_name was not given; choose one of {self.models}")
            (name,) = self._models
        elif model_name not in self._models:
            raise ModelNotFound(
                f"model {model_name!r} does not exist; this API serves {self.models}"
            )
        else:
            name = model_name
        versions = self._models[name].versions
        if model_version is None or model_version == LATEST:
            return name, max(versions)
        if isinstance(model_version, str) and model_version.isdigit():
            model_version = int(model_version)
        if isinstance(model_version, bool) or not isinstance(model_version, int):
            raise ValueError(f"model_version must be an integer or 'latest', not {model_version!r}")
        if model_version not in versions:
            raise ModelNotFound(
                f"model {name!r} has no version {model_version}; its versions are "
                f"{sorted(versions)}"
            )
        return name, model_version

    # --- what a runtime provides ----------------------------------------------------------

    def _load(self, found: FoundModel, version: int, path: Any) -> Any:
        raise NotImplementedError

    def _run(self, model: Any, model_input: Any, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def _native(self, model: Any) -> Any:
        raise NotImplementedError
