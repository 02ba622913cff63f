"""Datasets with exact structure (Gaussian mixtures), small real data (8x8 digits), and a user's own data
from arrays, ``.npy`` / ``.npz`` files or image folders (:func:`from_array`, :func:`from_path`)."""
from .files import from_array, from_path
from .gmm import GaussianMixture
from .prompts import Prompt, PromptSet, get_prompt_set, prompt_sets
from .registry import SPLITS, Dataset, dataset_names, get_dataset


def empirical_denoiser(points, weights=None) -> GaussianMixture:
    """The optimal denoiser of a finite point set: a mixture of point masses (see GaussianMixture)."""
    return GaussianMixture(points, 0.0, weights)


__all__ = ["GaussianMixture", "Dataset", "SPLITS", "dataset_names", "get_dataset", "empirical_denoiser",
           "from_array", "from_path", "Prompt", "PromptSet", "get_prompt_set", "prompt_sets"]
