"""A resumable, crash-safe store of benchmark results.

A suite is a list of cells; each finished cell is one JSON file ``cells/<key>.json`` written atomically
(temp file + rename), so an interrupted run leaves only whole results behind and ``--resume`` skips exactly
the cells whose files exist. Rows are flat dicts: the cell's fields, its metrics and provenance.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CorruptFileError
from ..io import ensure_writable_dir, remove_stale_temps, write_json


@dataclass(frozen=True)
class Cell:
    """One unit of work: a task (what is measured) on a dataset with a method, an NFE and a seed, plus
    free-form parameters (sorted key/value pairs, so cells stay hashable and their keys stable)."""

    task: str
    dataset: str = ""
    method: str = ""
    nfe: int = 0
    seed: int = 0
    params: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    @classmethod
    def make(cls, task, dataset="", method="", nfe=0, seed=0, **params) -> "Cell":
        return cls(task, dataset, method, int(nfe), int(seed), tuple(sorted(params.items())))

    def fields(self) -> dict:
        record = asdict(self)
        record.update(dict(self.params))
        del record["params"]
        return record

    @property
    def key(self) -> str:
        text = json.dumps(self.fields(), sort_keys=True, default=str)
        readable = "-".join(str(part) for part in (self.task, self.dataset, self.method, self.nfe, self.seed)
                            if part not in ("", None))
        return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:10]}".replace("/", "_")


# What a run writes into its work directory: result cells, fitted OT maps, sample sets.
RUN_PRODUCTS = ("cells", "maps", "samples")


class ResultStore:
    """Finished cells of one run directory. A fresh run (not ``resume``) first deletes every product of an
    earlier run there (``RUN_PRODUCTS``), so nothing computed by older code (a map fitted by an older
    solver, say) leaks into it; only ``resume`` reuses them. Either way, temp files left there by killed
    runs are removed (``remove_stale_temps``; a live concurrent run's are kept)."""

    def __init__(self, directory: str | Path, resume: bool = False):
        self.directory = ensure_writable_dir(Path(directory))
        remove_stale_temps(self.directory)
        self.cells = self.directory / "cells"
        if not resume:
            for product in RUN_PRODUCTS:
                shutil.rmtree(self.directory / product, ignore_errors=True)
        self.cells.mkdir(exist_ok=True)

    def path(self, cell: Cell) -> Path:
        return self.cells / f"{cell.key}.json"

    def done(self, cell: Cell) -> bool:
        return self.path(cell).exists()

    def write(self, cell: Cell, results: dict | list[dict]) -> list[dict]:
        """Store a cell's result: one row (a dict) or several (a list, e.g. a convergence curve)."""
        rows = [{**cell.fields(), **row, "cell": cell.key} for row in
                (results if isinstance(results, list) else [results])]
        write_json(self.path(cell), rows)
        return rows

    def rows(self) -> list[dict]:
        rows = []
        for path in sorted(self.cells.glob("*.json")):
            try:
                rows.extend(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError) as err:
                raise CorruptFileError(f"result file {path} is unreadable ({err}); delete it and rerun "
                                       "with --resume") from None
        return rows
