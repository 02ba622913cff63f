"""UniBench-small's judge: which class does a sample show? It never guides sampling.

Independent of the models it judges, by family and by data: the text-conditional denoiser (a neural
network) trains on the train split's even rows and the matcher (a neural dual encoder) on its odd rows;
the evaluator is a support-vector machine with an RBF kernel (scikit-learn's ``SVC``) fitted on the
**held-out** split. Its *ceiling* is its accuracy on the train split's real rows, which it never saw:
what a generator whose samples were indistinguishable from real data would score.

Its *features* (the space of the per-class Frechet distances, precision / recall and diversity): the
first 16 principal components of the pixels for ``digits`` (PCA fitted on the same held-out rows), the
raw coordinates for ``gmm-grid25``.

Refitted in each process (about a second) and never stored: a fitted scikit-learn model could only be
written with pickle, and this project loads no pickles.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..data import get_dataset
from ..errors import InputError, ShapeError, unknown_name

EVALUATED = ("digits", "gmm-grid25")
CEILING_ROWS = 5000  # train rows scored for the ceiling (all of digits' 1347)
PCA_COMPONENTS = 16


@dataclass(frozen=True)
class Evaluator:
    """A fitted evaluator of one dataset (module docstring): :meth:`predict`, :meth:`features`,
    ``ceiling`` (accuracy on the train split's real rows) and ``ceiling_per_class``."""
    dataset: str
    dim: int
    classifier: object  # a fitted sklearn estimator on flat rows
    projection: object | None  # a fitted PCA, or None (raw rows are the features)
    ceiling: float
    ceiling_per_class: tuple[float, ...]
    n_fit: int

    def _rows(self, x) -> np.ndarray:
        rows = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
        rows = rows.reshape(rows.shape[0], -1) if rows.ndim > 1 else rows
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ShapeError(f"the {self.dataset} evaluator takes rows of {self.dim} values, got shape {rows.shape}")
        if not np.isfinite(rows).all():
            raise InputError("the evaluator got non-finite samples (NaN or inf)")
        return rows

    def predict(self, x) -> np.ndarray:
        """The class of each row of x (n, dim), int64 (n,)."""
        rows = self._rows(x)
        return self.classifier.predict(rows).astype(np.int64) if len(rows) else np.zeros(0, np.int64)

    def features(self, x) -> np.ndarray:
        """The evaluator's features of x: (n, 16) principal components (digits) or the rows (gmm-grid25)."""
        rows = self._rows(x)
        return rows if self.projection is None else self.projection.transform(rows)

    def in_classes(self, x, classes) -> np.ndarray:
        """Per row: is its predicted class in ``classes`` (a prompt's class set)? bool (n,)."""
        return np.isin(self.predict(x), sorted(int(c) for c in classes))


def _fit(name: str) -> Evaluator:
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    dataset = get_dataset(name)
    x, y = (t.double().numpy() for t in dataset.data("heldout"))
    y = y.astype(np.int64)
    projection = PCA(PCA_COMPONENTS, random_state=0).fit(x) if name == "digits" else None
    classifier = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=10.0, gamma="scale")).fit(x, y)
    n_train = dataset.size("train") if dataset.is_finite else CEILING_ROWS
    x_train, y_train = (t.double().numpy() for t in dataset.data("train", min(n_train, CEILING_ROWS)))
    correct = classifier.predict(x_train) == y_train.astype(np.int64)
    per_class = tuple(float(correct[y_train == c].mean()) for c in range(dataset.n_classes))
    return Evaluator(name, dataset.dim, classifier, projection, float(correct.mean()), per_class, len(y))


@lru_cache(maxsize=None)
def _cached(name: str) -> Evaluator:
    return _fit(name)


def get_evaluator(dataset: str) -> Evaluator:
    """The evaluator of ``dataset`` (``digits`` or ``gmm-grid25``), fitted once per process."""
    if not isinstance(dataset, str) or dataset not in EVALUATED:
        raise unknown_name("evaluated dataset", str(dataset), EVALUATED)
    return _cached(dataset)
