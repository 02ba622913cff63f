"""The OT file (DESIGN.md "Public contract") and solver checkpoints, both ``.npz`` written atomically.

OT file: ``targets`` (N, d) float32, ``weights`` (N,) float64, ``h`` (N,) float64 and ``meta``, a JSON
string with at least ``source``, ``sigma_star``, ``dataset``, ``seed``, ``solver``, ``version``. Anyone can
draw from the source, recompute ``argmax_i <x, y_i> + h_i`` and check the cell masses against ``weights``.

Checkpoint: the solver state's tensors (``tensor_<name>``) and a JSON string ``state`` holding its scalars,
the history so far and a fingerprint of the problem (so a checkpoint of another fit is never resumed).
Files are read with ``allow_pickle=False``: data, never code.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CorruptFileError, InputError, check_weights
from ..io import save_npz

FORMAT = "dpmot-ot"
REQUIRED_META = ("source", "sigma_star", "dataset", "seed", "solver", "version")


def _json(obj, what: str) -> str:
    try:
        return json.dumps(obj, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise InputError(f"{what} must be JSON-serialisable: {err}") from None


def _read_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"no {what} at {str(path)!r}; check the path")
    if not zipfile.is_zipfile(path):
        raise CorruptFileError(f"{str(path)!r} is not a {what}: not an .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise CorruptFileError(f"{str(path)!r} is not a readable {what} (.npz without pickles): {err}") from None


def _meta(arrays: dict, path, what: str) -> dict:
    try:
        meta = json.loads(str(arrays["meta"][()]))
    except (KeyError, ValueError, TypeError) as err:
        raise CorruptFileError(f"{str(path)!r} has no valid JSON 'meta' entry, so it is not a {what}: {err}") from None
    if not isinstance(meta, dict):
        raise CorruptFileError(f"{str(path)!r}: 'meta' must be a JSON object, so it is not a {what}")
    return meta


def save_ot(path: str | Path, targets: torch.Tensor, weights: torch.Tensor, h: torch.Tensor, meta: dict) -> None:
    missing = [key for key in REQUIRED_META if key not in meta]
    assert not missing, f"OT meta lacks {missing}"
    save_npz(path, targets=targets.detach().float().cpu().numpy(), weights=weights.detach().double().cpu().numpy(),
             h=h.detach().double().cpu().numpy(), meta=np.array(_json({"format": FORMAT, **meta}, "OT metadata")))


def load_ot(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """``targets, weights, h, meta`` of an OT file, validated; ``CorruptFileError`` for anything else."""
    what = "OT file"
    arrays = _read_npz(path, what)
    missing = [key for key in ("targets", "weights", "h", "meta") if key not in arrays]
    if missing:
        raise CorruptFileError(f"{str(path)!r} lacks {', '.join(missing)}, so it is not an {what} "
                               "(expected targets, weights, h, meta)")
    meta = _meta(arrays, path, what)
    lacking = [key for key in REQUIRED_META if key not in meta]
    if lacking:
        raise CorruptFileError(f"{str(path)!r}: meta lacks {', '.join(lacking)}, so it is not an {what}")
    targets, weights, h = (arrays[key] for key in ("targets", "weights", "h"))
    if targets.ndim != 2 or targets.shape[0] < 2 or weights.shape != (targets.shape[0],) or h.shape != weights.shape:
        raise CorruptFileError(f"{str(path)!r}: inconsistent shapes targets {targets.shape}, weights "
                               f"{weights.shape}, h {h.shape} (need (N, d), (N,), (N,) with N >= 2)")
    if not all(np.issubdtype(a.dtype, np.floating) for a in (targets, weights, h)):
        raise CorruptFileError(f"{str(path)!r}: targets, weights and h must be floating point")
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (targets, weights, h)]
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise CorruptFileError(f"{str(path)!r}: targets, weights or h hold NaN or infinity")
    try:
        check_weights(tensors[1].double(), targets.shape[0])
    except InputError as err:
        raise CorruptFileError(f"{str(path)!r}: {err}") from None
    return tensors[0].float(), tensors[1].double(), tensors[2].double(), meta


def save_checkpoint(path: str | Path, state: dict, history: list[dict], fingerprint: str) -> None:
    tensors = {f"tensor_{k}": v.detach().cpu().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}
    scalars = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor) and k != "log"}
    record = {"format": FORMAT + "-checkpoint", "fingerprint": fingerprint, "state": scalars, "history": history}
    save_npz(path, **tensors, meta=np.array(_json(record, "solver state")))


def load_checkpoint(path: str | Path, fingerprint: str, device: torch.device) -> tuple[dict, list[dict]]:
    """The solver state and history saved by :func:`save_checkpoint` for the same problem."""
    what = "checkpoint"
    arrays = _read_npz(path, what)
    record = _meta(arrays, path, what)
    if record.get("format") != FORMAT + "-checkpoint" or not isinstance(record.get("state"), dict):
        raise CorruptFileError(f"{str(path)!r} is not a dpmot OT checkpoint")
    if record.get("fingerprint") != fingerprint:
        raise InputError(f"checkpoint {str(path)!r} belongs to a different fit (other targets, weights, source, "
                         "solver, options or seed); delete it or choose another checkpoint path")
    state = dict(record["state"])
    for name, array in arrays.items():
        if name.startswith("tensor_"):
            state[name.removeprefix("tensor_")] = torch.from_numpy(array).to(device)
    return state, list(record.get("history", []))
