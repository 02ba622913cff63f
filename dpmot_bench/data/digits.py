"""scikit-learn's 8x8 handwritten digits (1797 images, shipped inside scikit-learn: no download).

Pixels 0..16 are scaled to [-1, 1] (``x / 8 - 1``). Images are (1, 8, 8); the toolkit works on the flat
64-d view. The train / held-out split is fixed: stratified by label, 25% held out, ``random_state=0``
(``sklearn.model_selection.train_test_split``): 1347 train and 450 held-out images.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

HELDOUT_FRACTION = 0.25
SPLIT_SEED = 0
IMAGE_SHAPE = (1, 8, 8)


@lru_cache(maxsize=1)
def load_digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (x, y), "heldout": (x, y)}`` with x float32 (n, 64) in [-1, 1] and y int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 8.0 - 1.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_ho, y_tr, y_ho = train_test_split(x, y, test_size=HELDOUT_FRACTION, stratify=y,
                                              random_state=SPLIT_SEED)
    return {"train": (x_tr, y_tr), "heldout": (x_ho, y_ho)}


def to_images(x: torch.Tensor) -> torch.Tensor:
    """Flat (n, 64) rows as (n, 1, 8, 8) images."""
    return x.reshape(x.shape[0], *IMAGE_SHAPE)
