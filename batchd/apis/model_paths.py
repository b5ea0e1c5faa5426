"""The deploy-time check of a model API's `[handler.models]`: every path holds a model.

Relative paths are looked up in the new snapshot, absolute ones on this machine, where
they stay: a model outside the project is read in place by each worker, never copied into
the snapshot. Layout rules are the worker's own (batchd.worker.models.discovery).
"""

from __future__ import annotations

from pathlib import Path

from batchd.apis.spec import HandlerSpec
from batchd.errors import Invalid
from batchd.packing import PROJECT_CONFIG
from batchd.worker.models.discovery import ModelLayoutError, discover


def check_model_paths(
    handler: HandlerSpec, snapshot: Path, config_file: str = PROJECT_CONFIG
) -> None:
    """Raise Invalid (a 422 naming the setting, in `config_file`, the deploy's batchd.toml
    or cortex.yaml) unless each configured path holds a model."""
    if handler.models is None:
        return
    try:
        discover(handler.type, handler.models.model_dump(), snapshot)
    except ModelLayoutError as exc:
        raise Invalid(f"{config_file}: {exc}", field=exc.field) from None
