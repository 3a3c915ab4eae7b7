"""Training coverage: has a model seen stars like this one, and learned each of its labels from them?

A network's uncertainty grows outside its training set only as far as its dropout
ensemble happens to disagree there. Where the training set held the spectra but not a
label (APOGEE DR14 gave no LOGG for dwarfs, so the paper's network never learned a
dwarf's gravity), the ensemble may agree on a wrong value: on the mock universe the
dwarfs' LOGG uncertainty of both BCNNs grew only ×1.4–1.8 and 4 % of them were
flagged by it. Coverage asks the training set directly, in a feature space of the
model (for the BCNNs the 64 units of the full-spectrum branch, dropout off):

- ``coverage[i, l]``: the share of star *i*'s ``neighbours`` nearest training spectra
  that had a known value of label *l*. Below one half, label *l* of star *i* is an
  extrapolation from stars whose label *l* the model never saw;
- ``distance[i]``: the distance to its ``neighbours``-th nearest training spectrum over
  the ``quantile`` of the same distance among the training spectra themselves (each
  without itself). Above 1, the star is farther from the training set than all but
  1 % of the training spectra are from each other.

On the mock universe (benchmarks/eval_bcnn_mock.py) the censored network's trunk
features put the LOGG coverage of 95 % of the held-out dwarfs below one half and of
no held-out giant, and every hot star beyond the distance limit; 0.2–1.2 % of the
held-out giants were flagged ``outside_training_set`` in all.

Features are standardised by their spread over the training spectra; the training
features and label masks are kept (at most ``max_rows`` of them, a seeded random subset)
and saved with the model: 64 float32 and one byte per label per row (20,000 rows: 5.6 MB).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.neighbors import NearestNeighbors

from ..exceptions import ShapeError

__all__ = ["TrainingCoverage"]


class TrainingCoverage:
    """Nearest training spectra in a model's feature space, and which labels they had.

    Parameters
    ----------
    features : array_like, shape (n_train, n_features)
        The model's features of its training spectra.
    known : array_like of bool, shape (n_train, n_labels)
        Which labels each training spectrum had (not missing).
    neighbours : int
        Nearest training spectra a star is compared with.
    quantile : float
        Share of the training spectra within the distance limit of their own neighbours.
    max_rows : int
        Training spectra kept (a random subset of this many when there are more).
    seed : int
        Seed of that subset.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> features = rng.normal(size=(400, 3))
    >>> known = np.column_stack([np.ones(400, bool), features[:, 0] < 0])  # label 1 only on one side
    >>> coverage = TrainingCoverage(features, known)
    >>> share, distance = coverage.assess([[-2.0, 0, 0], [2.0, 0, 0], [30.0, 0, 0]])
    >>> share.round(1).tolist(), (distance > 1).tolist()
    ([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]], [False, False, True])
    """

    def __init__(self, features, known, *, neighbours: int = 10, quantile: float = 0.99, max_rows: int = 20_000,
                 seed: int = 0):
        features = np.asarray(features, dtype=np.float32)
        known = np.asarray(known, dtype=bool)
        if features.ndim != 2 or known.ndim != 2 or len(features) != len(known):
            raise ShapeError(f"coverage: expected features (n, n_features) and known (n, n_labels) with the same n, "
                             f"got {features.shape} and {known.shape}")
        if len(features) <= neighbours:
            raise ShapeError(f"coverage: expected more than {neighbours} training spectra, got {len(features)}")
        if len(features) > max_rows:
            keep = np.sort(np.random.default_rng(seed).choice(len(features), max_rows, replace=False))
            features, known = features[keep], known[keep]
        spread = features.std(axis=0)
        # a unit no training spectrum moved: any activity there is new (a tiny scale, not a division by 0)
        self.scale = np.where(spread > 0, spread, np.float32(1e-6)).astype(np.float32)
        self.features = features / self.scale
        self.known = known
        self.neighbours = int(neighbours)
        own, _ = self._search().kneighbors(self.features, n_neighbors=self.neighbours + 1)  # the first is itself
        self.radius = float(np.quantile(own[:, -1], quantile))

    def _search(self) -> NearestNeighbors:
        search = self.__dict__.get("_nearest")
        if search is None:
            search = NearestNeighbors(n_neighbors=self.neighbours, algorithm="brute").fit(self.features)
            self.__dict__["_nearest"] = search
        return search

    def assess(self, features) -> tuple[np.ndarray, np.ndarray]:
        """``(coverage, distance)`` of stars with *features*: see the module notes.

        Returns
        -------
        coverage : numpy.ndarray, shape (n, n_labels)
            Share of the nearest training spectra with a known value of each label.
        distance : numpy.ndarray, shape (n,)
            Distance to the ``neighbours``-th nearest training spectrum over the limit.
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.features.shape[1]:
            raise ShapeError(f"coverage: expected features of shape (n, {self.features.shape[1]}), "
                             f"got {features.shape}")
        distance, index = self._search().kneighbors(features / self.scale)
        return self.known[index].mean(axis=1), distance[:, -1] / self.radius

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays that :meth:`from_arrays` rebuilds it from (for a model's weights file)."""
        return {"coverage_features": self.features, "coverage_known": self.known.astype(np.uint8),
                "coverage_scale": self.scale, "coverage_limits": np.array([self.neighbours, self.radius])}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "TrainingCoverage | None":
        """The coverage saved by :meth:`to_arrays`, or None for a model saved without one."""
        if "coverage_features" not in arrays:
            return None
        coverage = cls.__new__(cls)
        coverage.features = np.asarray(arrays["coverage_features"], dtype=np.float32)
        coverage.known = np.asarray(arrays["coverage_known"]).astype(bool)
        coverage.scale = np.asarray(arrays["coverage_scale"], dtype=np.float32)
        neighbours, radius = np.asarray(arrays["coverage_limits"], dtype=np.float64)
        coverage.neighbours, coverage.radius = int(neighbours), float(radius)
        if (coverage.features.ndim != 2 or coverage.known.shape[0] != len(coverage.features)
                or coverage.scale.shape != coverage.features.shape[1:]):
            raise ValueError("coverage arrays of inconsistent shapes")
        return coverage
