"""Loading an API's Handler and calling it the way Cortex did (standard library only).

Shared by the worker and the deploy-time probe (``batchd.worker.probe``), which must load
a handler file exactly as a worker will.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from batchd.wire.textsafe import escape_surrogates


def call_with_declared(function: Callable[..., Any], **available: Any) -> Any:
    """Pass only the arguments the function's signature names (Cortex behaviour)."""
    return declared_caller(function, tuple(available))(*available.values())


def declared_caller(function: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """A caller taking values for `names` positionally and passing on only those the
    function declares. Reading the signature once, not per call, keeps it cheap."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return lambda *values: function(**dict(zip(names, values, strict=True)))
    declared = {p.name: p.kind for p in parameters}
    positional = [
        i for i, name in enumerate(names) if declared.get(name) is inspect.Parameter.POSITIONAL_ONLY
    ]
    named = [
        (i, name)
        for i, name in enumerate(names)
        if name in declared and declared[name] is not inspect.Parameter.POSITIONAL_ONLY
    ]
    if not named and positional == list(range(len(positional))):
        count = len(positional)
        return lambda *values: function(*values[:count])
    if not positional and [i for i, _ in named] == list(range(len(named))):
        keys = [name for _, name in named]
        if len(keys) == 1:
            (key,) = keys
            return lambda *values: function(**{key: values[0]})
        return lambda *values: function(**dict(zip(keys, values, strict=False)))
    return lambda *values: function(
        *[values[i] for i in positional], **{name: values[i] for i, name in named}
    )


def load_handler_class(handler_path: str) -> type:
    path = Path(handler_path).resolve()
    spec = importlib.util.spec_from_file_location("handler", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {handler_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler"] = module
    spec.loader.exec_module(module)
    handler_class = getattr(module, "Handler", None)
    if not isinstance(handler_class, type):
        raise TypeError(f"{handler_path} does not define class Handler")
    return handler_class


# Not resolved: workers import batchd through a link, and frames carry the linked path.
_WORKER_DIR = Path(__file__).parent
# With the separator: a handler at /srv/batchd/worker_tools/ is not batchd's worker.
_OWN_FILES = (str(_WORKER_DIR) + os.sep, "<frozen importlib")
# Built-in model handlers live under the worker: their frames are the handler's.
_BUILTIN_HANDLERS = str(_WORKER_DIR / "models") + os.sep


def handler_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the first frame that is not batchd's worker or importlib's."""
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not name.startswith(_OWN_FILES) or name.startswith(_BUILTIN_HANDLERS):
            break
        tb = tb.tb_next
    return tb


def drop_own_frames(exc: BaseException) -> BaseException:
    """`exc` with its traceback starting at the handler's frame, so what users read (the
    stored error, the log) shows their code, not the worker calling it. An exception
    raised by the worker itself keeps its whole traceback: that is a batchd bug to read."""
    trimmed = handler_frames(exc.__traceback__)
    if trimmed is not None:
        exc.__traceback__ = trimmed
    return exc


def describe_exception(exc: BaseException) -> dict[str, str]:
    drop_own_frames(exc)
    # A message may hold text decoded with surrogateescape: escaped, it can be sent.
    return {
        "error": escape_surrogates(f"{type(exc).__name__}: {exc}"),
        "traceback": escape_surrogates("".join(traceback.format_exception(exc))),
    }
