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
from ..samplers.generate import DPMOT_SAMPLERS
from .store import Cell
from .suites import Suite

if TYPE_CHECKING:
    from ..samplers.dpmot import Preset

REFERENCE_SEED = 10_000  # fresh true samples for W2 are drawn from seeds REFERENCE_SEED + cell seed


def paired_path(work: Path, dataset: str, method: str, nfe: int, seed: int, params: dict | None = None) -> Path:
    """Where a sample cell's per-sample values live (sigma_star sweeps have their own)."""
    extra = "".join(f"-{k}{v:g}" for k, v in sorted((params or {}).items()) if k != "n")  # side studies
    return work / "paired" / f"{dataset}-{method}-{nfe}-{seed}{extra}.npz"


class Context:
    """Memoised set-up shared by the cells of one run."""

    def __init__(self, suite: Suite, work: Path, device: torch.device, progress: bool, user=None):
        self.suite, self.work, self.device, self.progress = suite, work, device, progress
        self.user = user  # a UserData (bench/experiment.py): the user's dataset, model and feature space
        self._named = lru_cache(maxsize=None)(get_dataset)
        self._maps: dict = {}
        self._denoisers: dict = {}

    def dataset(self, name: str):
        """The dataset called ``name``: the user's (in its model's scale) or an embedded one."""
        if self.user is not None and name == self.user.name:
            return self.user.dataset
        return self._named(name)

    def sampler_options(self, dataset: str, sampler: str, fit: bool = False) -> dict:
        """Options every cell of ``sampler`` gets on a user's model (its grid inside the model's sigma range,
        its own NCSNv2 schedule): those that shape DPM-OT's fit with ``fit``, else the others."""
        from ..samplers.dpmot import FIT_FIELDS

        if self.user is None or dataset != self.user.name:
            return {}
        options = self.user.sampler_options(sampler)
        if sampler not in DPMOT_SAMPLERS:
            return {} if fit else options
        # the NCSNv2 schedule sets both the latents' level and the tail; a map given fixes the other fit fields
        return {k: v for k, v in options.items() if k.startswith("ncsn_") or (k in FIT_FIELDS) == fit}

    def denoiser(self, dataset: str, model: str | None = None):
        from ..models import default_model, get_denoiser

        if self.user is not None and dataset == self.user.name and model is None:
            return self.user.choice.denoiser
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

    def ot_map(self, dataset: str, sampler: str, nfe: int = 0, sigma_star: float | None = None,
               n_latents: int | None = None):
        """``(map, fit seconds or None)`` of a DPM-OT sampler: fitted once per run with seed 0, saved under
        work/maps and reloaded on resume. A preset whose sigma_star follows the budget (the paper's) has
        one map per latent level (NFE 1 and 2 share one); the others one per dataset (and sigma_star)."""
        from dataclasses import replace

        from ..ot import SemiDiscreteOT
        from ..ot.distributed import is_main_process

        from ..samplers.dpmot import preset_with

        preset = preset_with(self.preset(sampler), self.sampler_options(dataset, sampler, fit=True))
        preset = replace(preset, n_latents=n_latents or self.suite.latents_for(dataset, sampler),
                         **({} if sigma_star is None else {"sigma_star": sigma_star}))
        budget = preset.sigma_star == "budget"
        level = f"{preset.sigma_star_for(self.dataset(dataset), nfe):.6g}" if budget else 0
        key = (dataset, sampler, level, sigma_star) + ((f"n{n_latents}",) if n_latents else ())
        if key not in self._maps:
            name = "-".join(str(k) for k in key if k not in (None, 0))
            path = self.work / "maps" / f"{name}.npz"
            given = self.user.maps.get(sampler) if self.is_user(dataset) else None
            if given is not None:  # fitted elsewhere (e.g. dpmot reproduce --stage fit under torchrun)
                from ..ot.latents import check_latent_map

                fitted = SemiDiscreteOT.load(given, device=self.device)
                check_latent_map(fitted, self.dataset(dataset))
                self._maps[key] = (fitted, None)
            elif path.exists():
                self._maps[key] = (SemiDiscreteOT.load(path, device=self.device), None)
            else:
                start = time.perf_counter()
                fitted = preset.fit(self.dataset(dataset), nfe if budget else None, seed=0, device=self.device,
                                    progress=self.progress)
                seconds = time.perf_counter() - start
                if is_main_process():  # under torchrun every process fits the same map; one writes it
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

    def is_user(self, dataset: str) -> bool:
        return self.user is not None and dataset == self.user.name

    def features(self, dataset: str, x: torch.Tensor) -> torch.Tensor:
        """Quality features of rows of ``dataset``: the digits classifier's, or the user's feature space."""
        if self.is_user(dataset):
            return self.user.features(x)
        with torch.no_grad():
            return self.classifier.features(x.to(self.device)).cpu()

    def probs(self, dataset: str, x: torch.Tensor) -> torch.Tensor | None:
        """Class probabilities for the mode-mixture ratio (None: no classifier for this dataset)."""
        if self.is_user(dataset):
            return self.user.probs(x)
        with torch.no_grad():
            return self.classifier.probs(x.to(self.device)).cpu()

    @lru_cache(maxsize=None)
    def train_features(self, dataset: str = "digits") -> torch.Tensor:
        if self.is_user(dataset):
            return self.user.train_features
        return self.features(dataset, self.split(dataset, "train"))

    @lru_cache(maxsize=None)
    def reference_statistics(self, dataset: str):
        """(mu, sigma) the FID of ``dataset``'s samples is measured against (train features)."""
        from ..metrics.frechet import feature_statistics

        if self.is_user(dataset):
            return self.user.reference_statistics
        return feature_statistics(self.train_features(dataset))

    def audits_in_features(self, dataset: str) -> bool:
        """The memorisation audit runs in the user's Inception features (else on the rows themselves)."""
        return self.is_user(dataset) and self.user.experiment.features != "raw"

    @lru_cache(maxsize=None)
    def audit_split(self, dataset: str, split: str) -> torch.Tensor:
        """A split as the memorisation audit sees it."""
        return self.user.features_of(split) if self.audits_in_features(dataset) else self.split(dataset, split)

    @lru_cache(maxsize=None)
    def heldout_memorisation(self, dataset: str) -> dict:
        """Fresh data's memorisation metrics (held-out to train): the copy threshold and baseline rates
        every sample set of ``dataset`` is compared with."""
        from ..metrics import memorisation

        heldout, train = self.audit_split(dataset, "heldout"), self.audit_split(dataset, "train")
        return memorisation(heldout, train=train, heldout=heldout)

    def reference(self, dataset: str, n: int, seed: int) -> torch.Tensor:
        """Fresh true samples (GMMs) to compare generated samples with."""
        return self.dataset(dataset).sample(n, seed=REFERENCE_SEED + seed)[0]

    def save_paired(self, cell: Cell, **arrays) -> None:
        """Per-sample values of a sample cell (row i from the seed's noise row i, as in every arm), kept for
        the report's paired comparisons: ``work/paired/<cell>.npz``."""
        save_npz(paired_path(self.work, cell.dataset, cell.method, cell.nfe, cell.seed, dict(cell.params)),
                 **{k: np.asarray(v) for k, v in arrays.items()})

    def save_samples(self, cell: Cell, **arrays) -> None:
        save_npz(self.work / "samples" / f"{cell.task}-{cell.dataset}-{cell.method}.npz",
                 **{k: np.asarray(v) for k, v in arrays.items()})
