"""What the cells of one run share: :class:`Context` builds the expensive things (denoisers, fitted DPM-OT
maps, reference data, the digits classifier) once per run; fitted maps are also saved in the run directory,
so a resumed run uses the very same map."""
from __future__ import annotations

import time
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data import get_dataset
from ..io import save_npz
from .store import Cell
from .suites import Suite

if TYPE_CHECKING:
    from ..samplers.dpmot import Preset

REFERENCE_SEED = 10_000  # fresh true samples for W2 are drawn from seeds REFERENCE_SEED + cell seed


class Context:
    """Memoised set-up shared by the cells of one run."""

    def __init__(self, suite: Suite, work: Path, device: torch.device, progress: bool):
        self.suite, self.work, self.device, self.progress = suite, work, device, progress
        self.dataset = lru_cache(maxsize=None)(get_dataset)
        self._maps: dict = {}
        self._denoisers: dict = {}

    def denoiser(self, dataset: str, model: str | None = None):
        from ..models import default_model, get_denoiser

        model = model or default_model(self.dataset(dataset))
        if (dataset, model) not in self._denoisers:
            self._denoisers[dataset, model] = get_denoiser(self.dataset(dataset), model, device=self.device,
                                                           progress=self.progress)
        return self._denoisers[dataset, model]

    @staticmethod
    def preset(sampler: str) -> "Preset":
        from ..samplers.dpmot import PRESETS
        from ..samplers.generate import DPMOT_SAMPLERS

        return PRESETS[DPMOT_SAMPLERS[sampler]]

    def ot_map(self, dataset: str, sampler: str, nfe: int = 0, sigma_star: float | None = None):
        """``(map, fit seconds or None)`` of a DPM-OT sampler: fitted once per run with seed 0, saved under
        work/maps and reloaded on resume. A preset whose sigma_star follows the budget (the paper's) has
        one map per latent level (NFE 1 and 2 share one); the others one per dataset (and sigma_star)."""
        from dataclasses import replace

        from ..ot import SemiDiscreteOT

        preset = replace(self.preset(sampler), n_latents=self.suite.latents_for(dataset),
                         **({} if sigma_star is None else {"sigma_star": sigma_star}))
        budget = preset.sigma_star == "budget"
        level = f"{preset.sigma_star_for(self.dataset(dataset), nfe):.6g}" if budget else 0
        key = (dataset, sampler, level, sigma_star)
        if key not in self._maps:
            name = "-".join(str(k) for k in key if k not in (None, 0))
            path = self.work / "maps" / f"{name}.npz"
            if path.exists():
                self._maps[key] = (SemiDiscreteOT.load(path, device=self.device), None)
            else:
                start = time.perf_counter()
                fitted = preset.fit(self.dataset(dataset), nfe if budget else None, seed=0, device=self.device,
                                    progress=self.progress)
                seconds = time.perf_counter() - start
                path.parent.mkdir(parents=True, exist_ok=True)
                fitted.save(path, **fitted.meta_)
                self._maps[key] = (fitted, seconds)
        return self._maps[key]

    @cached_property
    def classifier(self):
        from ..metrics import get_digits_classifier

        return get_digits_classifier(device=self.device, progress=self.progress)

    @lru_cache(maxsize=None)
    def split(self, dataset: str, split: str) -> torch.Tensor:
        return self.dataset(dataset).data(split)[0]

    @lru_cache(maxsize=None)
    def train_features(self) -> torch.Tensor:
        return self.classifier.features(self.split("digits", "train").to(self.device)).cpu()

    @lru_cache(maxsize=None)
    def heldout_memorisation(self, dataset: str) -> dict:
        """Fresh data's memorisation metrics (held-out to train): the copy threshold and baseline rates
        every sample set of ``dataset`` is compared with."""
        from ..metrics import memorisation

        heldout, train = self.split(dataset, "heldout"), self.split(dataset, "train")
        return memorisation(heldout, train=train, heldout=heldout)

    def reference(self, dataset: str, n: int, seed: int) -> torch.Tensor:
        """Fresh true samples (GMMs) to compare generated samples with."""
        return self.dataset(dataset).sample(n, seed=REFERENCE_SEED + seed)[0]

    def save_samples(self, cell: Cell, **arrays) -> None:
        save_npz(self.work / "samples" / f"{cell.task}-{cell.dataset}-{cell.method}.npz",
                 **{k: np.asarray(v) for k, v in arrays.items()})
