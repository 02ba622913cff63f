"""Sample-quality metrics: Frechet distance (digits classifier or InceptionV3 features), mode mixture
(classifier rule and Gaussian-mixture rule), W2 with its sampling floor, precision / recall / density /
coverage, and memorisation (nearest-neighbour distances and copy rates).

Every function takes torch tensors or numpy arrays of shape (n, d) and returns floats or dicts; bad input
raises an error from :mod:`dpmot_bench.errors`.
"""
from .classifier import DigitsClassifier, get_digits_classifier
from .frechet import feature_statistics, frechet_distance, frechet_distance_from_stats
from .inception import InceptionFeatures
from .manifold import precision_recall_density_coverage
from .memorisation import memorisation
from .modes import gmm_mode_metrics, high_quality_radius, mode_mixture_curve, mode_mixture_ratio
from .wasserstein import exact_w2, sliced_w2, w2, w2_floor, w2_method

__all__ = [
    "DigitsClassifier",  # small CNN on the digits train split: .probs, .features, .heldout_accuracy
    "get_digits_classifier",  # the cached (trained on first use) digits classifier
    "InceptionFeatures",  # InceptionV3 pool3 features from a local weights file (needs torch-fidelity)
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
