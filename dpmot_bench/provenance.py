"""Where a result came from: seed, device, dtype, library versions, git commit, wall time."""
from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the source tree this package runs from, with ``+dirty`` for local changes;
    ``"unknown"`` outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        run = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True, timeout=10)
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        if not commit:
            return "unknown"
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(seed: int | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, **extra) -> dict:
    """A JSON-ready record of everything needed to reproduce a result."""
    from . import __version__

    record = {
        "seed": seed,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "dpmot_bench": __version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name() if str(device).startswith("cuda") else None,
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node() if os.environ.get("DPMOT_RECORD_HOST") else None,
    }
    record.update(extra)
    return record
