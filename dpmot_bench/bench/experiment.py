"""A user's own data and model in a benchmark run (``dpmot report --data/--model``, ``dpmot reproduce``).

An :class:`Experiment` names the files; :class:`UserData` opens them once per run: the dataset (mapped into
the model's data range), the denoiser, and the feature space the quality metrics use:

- ``inception``: InceptionV3 pool3 features from a local weights file (pytorch-fid's or torch-fidelity's;
  images mapped from the model's data range to [-1, 1] and quantised as PNGs), the FID of the papers;
- ``raw``: the rows themselves (Frechet distance of raw pixels: comparable within a run only).

Reference statistics for FID come from the train split's features, or from a file written by
``dpmot fid-stats`` (``fid_stats``), so the 50 000 training images need not be embedded every run. A
TorchScript classifier (``classifier``) gives class probabilities for the mode-mixture ratio (the
reference code's lambda rule).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

FEATURE_SPACES = ("inception", "raw")


@dataclass(frozen=True)
class Experiment:
    data: str  # an .npz / .npy / image folder (see dpmot_bench.data.files)
    value_range: tuple[float, float] | None = None
    name: str | None = None  # the dataset's name in the report (default: the file name)
    model: str | None = None  # exact / trained / a model file or directory (default: trained)
    model_config: str | None = None
    scheduler: str | None = None
    features: str = "raw"
    inception_weights: str | None = None
    fid_stats: str | None = None  # precomputed train statistics (dpmot fid-stats)
    classifier: str | None = None  # a TorchScript classifier returning logits
    kid: bool = True
    reference_rows: int | None = None  # train rows whose features are the FID reference (default all)
    options: dict = field(default_factory=dict)  # sampler -> --option values for every cell

    def __post_init__(self):
        if self.features not in FEATURE_SPACES:
            from ..errors import unknown_name

            raise unknown_name("feature space", self.features, FEATURE_SPACES)
        if self.features == "inception" and not self.inception_weights:
            raise InputError("features: inception needs inception_weights: FILE (pytorch-fid's "
                             "pt_inception-2015-12-05-6726825d.pth or torch-fidelity's "
                             "weights-inception-2015-12-05-6726825d.pth; nothing is downloaded)")
        for key in ("data", "model_config", "scheduler", "inception_weights", "fid_stats", "classifier"):
            value = getattr(self, key)
            if value is not None and not Path(value).exists():
                raise InputError(f"{key}: {value!r} does not exist")
        if self.model not in (None, "exact", "trained") and not Path(self.model).exists():
            raise InputError(f"model: {self.model!r} does not exist")


class UserData:
    """The opened files of an :class:`Experiment` (built lazily, once per run)."""

    def __init__(self, experiment: Experiment, device: torch.device, progress: bool):
        from ..data import from_path
        from ..models.select import choose_model

        self.experiment, self.device = experiment, device
        raw = from_path(experiment.data, name=experiment.name, value_range=experiment.value_range)
        self.choice = choose_model(raw, experiment.model or "trained", config=experiment.model_config,
                                   scheduler=experiment.scheduler, device=device, progress=progress)
        self.dataset = self.choice.dataset
        self.name = self.dataset.name
        self.maps: dict = {}  # sampler -> an OT map file fitted elsewhere

    def sampler_options(self, sampler: str) -> dict:
        """The options of every cell of ``sampler``: the experiment's, then the model's (its own NCSNv2
        schedule for the paper preset, the grid inside its sigma range: samplers.generate.model_options)."""
        from ..samplers.generate import model_options

        return model_options(sampler, self.experiment.options.get(sampler, {}), self.choice)

    @cached_property
    def _inception(self):
        from ..metrics import InceptionFeatures

        return InceptionFeatures(self.experiment.inception_weights, device=self.device)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of flat rows in the dataset's (the model's) scale."""
        if self.experiment.features == "raw":
            return x.double()
        low, high = self.dataset.value_range
        images = ((x - low) * (2.0 / (high - low)) - 1.0).reshape(-1, *self.dataset.shape)
        return self._inception(images).double().cpu()

    @cached_property
    def _classifier(self):
        if self.experiment.classifier is None:
            return None
        from ..metrics.classifier import TorchScriptClassifier

        return TorchScriptClassifier(self.experiment.classifier, device=self.device)

    def probs(self, x: torch.Tensor) -> torch.Tensor | None:
        """Class probabilities of the user's classifier (images in the dataset's scale), or None."""
        if self._classifier is None:
            return None
        return self._classifier.probs(x.reshape(-1, *self.dataset.shape)).cpu()

    @cached_property
    def reference_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of the train split's features, or of the fid_stats file."""
        from ..metrics.frechet import feature_statistics

        if self.experiment.fid_stats is not None:
            from ..metrics.inception import load_fid_stats

            return load_fid_stats(self.experiment.fid_stats)
        return feature_statistics(self.train_features)

    @cached_property
    def train_features(self) -> torch.Tensor:
        rows = self.experiment.reference_rows
        return self.features_of("train", rows)

    @lru_cache(maxsize=None)
    def features_of(self, split: str, n: int | None = None, batch: int = 500) -> torch.Tensor:
        total = self.dataset.size(split) if n is None else min(n, self.dataset.size(split))
        x, _ = self.dataset.data(split, total)
        return torch.cat([self.features(x[i:i + batch].to(self.device)) for i in range(0, total, batch)])
