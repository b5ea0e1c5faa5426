"""Which GPUs this machine has: `nvidia-smi -L`, or the configured list."""

from __future__ import annotations

import logging
import re
import subprocess

from batchd.config import DaemonConfig

log = logging.getLogger("batchd.gpus")

_GPU_LINE = re.compile(r"^GPU (\d+):", re.MULTILINE)


def detect_gpus(config: DaemonConfig) -> list[int]:
    if config.gpus != "auto":
        return sorted(set(config.gpus))
    try:
        listing = subprocess.run(
            [config.nvidia_smi, "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except FileNotFoundError:
        return []
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("GPU detection failed; running without GPUs", extra={"error": str(exc)})
        return []
    return sorted({int(index) for index in _GPU_LINE.findall(listing)})
