"""Where trained models, classifiers and fitted maps are cached, and how cache entries are keyed.

The directory is ``$DPMOT_CACHE`` when set, else ``~/.cache/dpmot-bench``. An entry's key is a hash of
everything that determines its content (a JSON-able config including the package version), so a changed
config never reuses a stale entry.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import InputError


def cache_dir(*parts: str) -> Path:
    """``$DPMOT_CACHE/parts...`` (created on demand)."""
    root = Path(os.environ.get("DPMOT_CACHE") or Path.home() / ".cache" / "dpmot-bench")
    path = root.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create cache directory {str(path)!r} ({err.strerror}); "
                         "set DPMOT_CACHE to a writable directory") from None
    return path


def config_key(config: dict) -> str:
    """A short stable hash of a JSON-able config (keys sorted)."""
    from . import __version__

    text = json.dumps({"config": config, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
