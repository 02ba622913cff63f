"""Sample-quality metrics: Frechet distance (digits classifier or InceptionV3 features), mode mixture
(classifier rule and Gaussian-mixture rule), W2 with its sampling floor, precision / recall / density /
coverage, and memorisation (nearest-neighbour distances and copy rates).

Every function takes torch tensors or numpy arrays of shape (n, d) and returns floats or dicts; bad input
raises an error from :mod:`dpmot_bench.errors`.
"""
from .classifier import DigitsClassifier, TorchScriptClassifier, get_digits_classifier
from .frechet import feature_statistics, frechet_distance, frechet_distance_from_stats
from .inception import InceptionFeatures, inception_statistics, load_fid_stats, save_fid_stats
from .kid import kernel_inception_distance
from .manifold import precision_recall_density_coverage
from .memorisation import memorisation
from .mmd import default_bandwidth, mixture_kernel_constant, mixture_kernel_mean, mmd2_contributions, mmd2_to_mixture
from .modes import (gmm_mode_metrics, high_quality_radius, mode_mixture_curve, mode_mixture_ratio,
                    per_mode_statistics)
from .wasserstein import exact_w2, sliced_w2, w2, w2_floor, w2_method

__all__ = [
    "DigitsClassifier",  # small CNN on the digits train split: .probs, .features, .heldout_accuracy
    "get_digits_classifier",  # the cached (trained on first use) digits classifier
    "TorchScriptClassifier",  # a user's classifier (TorchScript, logits) for the mode-mixture ratio
    "InceptionFeatures",  # FID InceptionV3 pool3 features from a local weights file (torch only)
    "inception_statistics",  # (mu, sigma) of Inception features
    "save_fid_stats",  # reference statistics in pytorch-fid's .npz format
    "load_fid_stats",  # ... read and checked
    "kernel_inception_distance",  # KID: unbiased polynomial-kernel MMD^2 over subsets (torch-fidelity's)
    "mmd2_to_mixture",  # unbiased MMD^2 against a Gaussian mixture, kernel means in closed form
    "mmd2_contributions",  # per-sample terms of it (for paired bootstraps)
    "mixture_kernel_mean",  # E_y k(x, y) under a Gaussian mixture, closed form
    "mixture_kernel_constant",  # E k(y, y') under a Gaussian mixture, closed form
    "default_bandwidth",  # sqrt(d) x the median component std
    "per_mode_statistics",  # per-mode counts, weight errors and spreads of samples of a mixture
    "feature_statistics",  # mean and unbiased covariance of features, float64
    "frechet_distance",  # FD between Gaussians fitted to two feature sets (pytorch-fid formula)
    "frechet_distance_from_stats",  # FD from (mu, cov) pairs, pytorch-fid's calculate_frechet_distance
    "mode_mixture_ratio",  # share of samples with >= 2 classes at softmax >= lambda (reference code)
    "mode_mixture_curve",  # mode_mixture_ratio over a grid of lambdas
    "gmm_mode_metrics",  # high-quality / between-modes / outlier shares, modes covered, KL and TV
    "high_quality_radius",  # the "3 std" radius in d dims, in units of the mode's std
    "w2",  # W2 between sample sets: exact (POT emd2) up to a few thousand points, sliced beyond
    "exact_w2",  # exact W2 with ot.emd2
    "sliced_w2",  # sliced W2 over fixed seeded directions
    "w2_method",  # which of exact / sliced w2 uses at given sizes
    "w2_floor",  # W2 between independent true samples of the same size (mean, std)
    "precision_recall_density_coverage",  # k-NN manifold PRDC (prdc's definitions), chunked
    "memorisation",  # NN distances to targets / train, copy rates, held-out baseline
]
