"""Frechet distance between the Gaussians fitted to two feature sets (FID when the features are
InceptionV3 pool3 activations).

    FD = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

computed exactly as pytorch-fid's ``calculate_frechet_distance``: means and unbiased (ddof = 1)
covariances in float64, ``scipy.linalg.sqrtm`` of the product; if that square root is not finite (a
singular product) ``eps`` is added to both diagonals and it is recomputed; an imaginary part (rounding of
a non-symmetric product) is dropped when the diagonal's is below 1e-3, otherwise it is an error.

``method="eigh"`` computes the same trace without ``sqrtm``: ``S_1 S_2`` is similar to the symmetric
positive semi-definite ``S_1^{1/2} S_2 S_1^{1/2}``, so ``tr (S_1 S_2)^{1/2} = sum_i sqrt(lambda_i)`` over the
eigenvalues of the latter (two ``eigh`` of symmetric matrices, negative rounding clipped to 0; no eps
needed for singular covariances). At d = 2048 it is 5-10x faster than ``sqrtm`` and agrees with it to
1e-14 relative for full-rank covariances (8e-8 for singular ones, where pytorch-fid's eps shifts its
value); the benchmarks use it, ``sqrtm`` stays the default for bit-level comparability with pytorch-fid.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

from ..errors import InputError, ShapeError, check_finite
from ._points import as_points, same_dim


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of features (n, d), n >= 2, as float64 numpy arrays
    (``np.mean(axis=0)`` and ``np.cov(rowvar=False)``; the sums run on the features' device)."""
    x = as_points(feats, "features", min_rows=2)
    mu = x.mean(0)
    centred = x - mu
    cov = centred.T @ centred / (x.shape[0] - 1)
    return mu.cpu().numpy(), cov.cpu().numpy()


def _stats_array(value, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    array = np.atleast_1d(array) if ndim == 1 else np.atleast_2d(array)  # as pytorch-fid: 1-D stats as scalars
    if array.ndim != ndim:
        raise ShapeError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    check_finite(torch.from_numpy(array), name)
    return array


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """``tr (cov1 cov2)^{1/2}`` for symmetric PSD matrices, by eigenvalues (see the module docstring)."""
    w, v = np.linalg.eigh(cov1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    product = root @ cov2 @ root
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum())


def frechet_distance_from_stats(mu1, cov1, mu2, cov2, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2): pytorch-fid's formula and fallbacks
    (``method="sqrtm"``), or the same trace by eigenvalues (``"eigh"``, module docstring)."""
    if method not in ("sqrtm", "eigh"):
        from ..errors import unknown_name

        raise unknown_name("Frechet distance method", method, ("sqrtm", "eigh"))
    mu1, mu2 = _stats_array(mu1, "mu1", 1), _stats_array(mu2, "mu2", 1)
    cov1, cov2 = _stats_array(cov1, "cov1", 2), _stats_array(cov2, "cov2", 2)
    d = mu1.shape[0]
    for name, shape in (("mu2", mu2.shape), ("cov1", cov1.shape), ("cov2", cov2.shape)):
        expected = (d,) if name == "mu2" else (d, d)
        if shape != expected:
            raise ShapeError(f"{name} must have shape {expected} to match mu1 {mu1.shape}, got {shape}")
    diff = mu1 - mu2
    if method == "eigh":
        return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt_product(cov1, cov2))
    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"Frechet distance: singular covariance product; adding {eps} to the diagonals",
                      RuntimeWarning, stacklevel=2)
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise InputError(f"Frechet distance: sqrtm(cov1 @ cov2) has an imaginary part of "
                             f"{np.abs(covmean.imag).max():.3g}; the covariances must be symmetric "
                             "positive semi-definite")
        covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets (n_a, d) and (n_b, d)."""
    a = as_points(feats_a, "feats_a", min_rows=2)
    b = as_points(feats_b, "feats_b", min_rows=2)
    same_dim(a, b, "feats_a", "feats_b")
    return frechet_distance_from_stats(*feature_statistics(a), *feature_statistics(b), eps=eps)
