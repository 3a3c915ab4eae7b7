"""Ridge-regression baseline: labels as a linear function of the flux.

The simplest honest method, used as the reference the other methods must beat and as
the model that exercises the shared interface in the conformance tests. Each label is
fitted on the stars where it is known (missing labels are simply left out of that
label's fit). ``predictive_std`` is the cross-validated residual scatter per label,
``model_std`` the spread over bootstrap refits, and the sensitivity d label / d pixel is
the regression coefficient itself.
"""

from __future__ import annotations

import numpy as np

from ..prediction import LabelPrediction
from .base import LabelModel, dataset_hash, load_npz, register_model, save_npz

__all__ = ["RidgeBaseline"]


def _design(spectra, pixel_mean: np.ndarray) -> np.ndarray:
    """Flux with masked pixels replaced by the training mean of that pixel."""
    flux = np.where(spectra.mask, pixel_mean, spectra.flux).astype(np.float64)
    return flux - pixel_mean


class _GramRidge:
    """Ridge fits on any subset of the training rows from one Gram matrix ``X Xᵀ``.

    Every label, cross-validation fold and bootstrap refit is a ridge problem on a subset
    of the same rows; building the n x n Gram matrix once and centring its sub-blocks
    (``H K H`` with ``H = I - 11ᵀ/m``) replaces one O(n² p) product per fit by one in all,
    which is what made the naive baseline slow when n < p.
    """

    def __init__(self, x: np.ndarray, alpha: float):
        self.x = x
        self.alpha = alpha
        self.gram = x @ x.T if x.shape[0] < x.shape[1] else None

    def fit(self, rows: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Intercept and coefficients of the ridge fit of *y* on ``x[rows]``."""
        x = self.x[rows]
        x_mean = x.mean(axis=0)
        y_centred = y - y.mean()
        if self.gram is None:
            xc = x - x_mean
            coef = np.linalg.solve(xc.T @ xc + self.alpha * np.eye(x.shape[1]), xc.T @ y_centred)
        else:
            block = self.gram[np.ix_(rows, rows)]
            centred = block - block.mean(axis=0) - block.mean(axis=1)[:, None] + block.mean()
            dual = np.linalg.solve(centred + self.alpha * np.eye(len(rows)), y_centred)
            coef = x.T @ dual - x_mean * dual.sum()
        return float(y.mean() - x_mean @ coef), coef


@register_model("ridge")
class RidgeBaseline(LabelModel):
    """Linear regression of labels on pixels with an L2 penalty.

    Parameters
    ----------
    alpha : float
        L2 penalty on the coefficients (in units of flux² summed over stars).
    n_bootstrap : int
        Bootstrap refits used for ``model_std`` (0 leaves it NaN).
    n_folds : int
        Folds of the cross-validation that measures ``predictive_std``.
    random_state : int
        Seed of the bootstrap and the fold assignment.

    Examples
    --------
    >>> import numpy as np
    >>> from labelexplorer import Spectra
    >>> rng = np.random.default_rng(0)
    >>> teff = rng.uniform(4000, 5000, 40)
    >>> flux = 1 - np.outer((teff - 4000) / 1e4, np.ones(30)) + rng.normal(0, 1e-3, (40, 30))
    >>> spec = Spectra(flux, np.linspace(15100, 15200, 30))
    >>> model = RidgeBaseline(alpha=1e-6).fit(spec, {"TEFF": teff})
    >>> bool(np.abs(model.predict(spec)["TEFF"].mean - teff).max() < 200)
    True
    """

    quick_hyperparameters = {"n_bootstrap": 3, "n_folds": 3}

    def __init__(self, alpha: float = 1.0, n_bootstrap: int = 8, n_folds: int = 5, random_state: int = 0):
        self.alpha = alpha
        self.n_bootstrap = n_bootstrap
        self.n_folds = n_folds
        self.random_state = random_state

    def _fit(self, spectra, values, names, errors):
        from ..exceptions import LabelError

        # mean over each pixel's good values; 1 (the continuum) where no spectrum has one (chip gaps)
        good = ~spectra.mask & np.isfinite(spectra.flux)
        counts = good.sum(axis=0)
        total = np.where(good, spectra.flux, 0.0).sum(axis=0, dtype=np.float64)
        self.pixel_mean_ = np.where(counts > 0, total / np.maximum(counts, 1), 1.0)
        x = _design(spectra, self.pixel_mean_)
        solver = _GramRidge(x, self.alpha)
        rng = np.random.default_rng(self.random_state)
        n_labels = values.shape[1]
        self.coef_ = np.zeros((n_labels, x.shape[1]))
        self.intercept_ = np.zeros(n_labels)
        self.cv_scatter_ = np.full(n_labels, np.nan)
        self.bootstrap_coef_ = np.zeros((max(self.n_bootstrap, 0), n_labels, x.shape[1]))
        self.label_range_ = np.zeros((n_labels, 2))
        for j in range(n_labels):
            known = np.flatnonzero(np.isfinite(values[:, j]))
            if known.size < 2:
                raise LabelError(f"label {names[j]!r}: fewer than 2 stars with a known value; cannot fit")
            y = values[known, j]
            self.label_range_[j] = y.min(), y.max()
            self.intercept_[j], self.coef_[j] = solver.fit(known, y)
            self.cv_scatter_[j] = self._cv_scatter(solver, known, y, rng)
            for b in range(self.n_bootstrap):
                pick = rng.choice(known.size, known.size)
                self.bootstrap_coef_[b, j] = solver.fit(known[pick], y[pick])[1]
        self.training_hash_ = dataset_hash(spectra.flux, values)

    def _cv_scatter(self, solver: _GramRidge, rows: np.ndarray, y: np.ndarray, rng) -> float:
        folds = rng.permutation(len(y)) % max(2, min(self.n_folds, len(y)))
        residuals = np.empty(len(y))
        for fold in np.unique(folds):
            test = folds == fold
            intercept, coef = solver.fit(rows[~test], y[~test])
            residuals[test] = y[test] - (intercept + solver.x[rows[test]] @ coef)
        return float(np.std(residuals))

    def _predict(self, spectra):
        self._check_pixels(spectra)
        x = _design(spectra, self.pixel_mean_)
        mean = self.intercept_ + x @ self.coef_.T
        n = len(spectra)
        if self.n_bootstrap > 0:
            # bootstrap intercepts are not stored: their spread is dominated by the slopes
            draws = np.einsum("np,blp->bnl", x, self.bootstrap_coef_)
            model_std = draws.std(axis=0)
        else:
            model_std = None
        span = self.label_range_[:, 1] - self.label_range_[:, 0]
        outside = ((mean < self.label_range_[:, 0] - 0.1 * span) | (mean > self.label_range_[:, 1] + 0.1 * span))
        return LabelPrediction(self.label_names_, mean, model_std, np.broadcast_to(self.cv_scatter_, (n, len(span))),
                               ids=spectra.ids, flags={"outside_training_set": outside.any(axis=1)},
                               meta={"model": self.name})

    def _check_pixels(self, spectra):
        from ..exceptions import ShapeError

        if spectra.n_pixels != self.pixel_mean_.size:
            raise ShapeError(f"spectra: expected {self.pixel_mean_.size} pixels (the training grid), "
                             f"got {spectra.n_pixels}")

    def _sensitivity(self, spectra, label):
        return self.coef_[self.label_names_.index(label)].copy()

    def _save_weights(self, directory):
        save_npz(directory / "weights.npz", {
            "pixel_mean": self.pixel_mean_, "coef": self.coef_, "intercept": self.intercept_,
            "cv_scatter": self.cv_scatter_, "bootstrap_coef": self.bootstrap_coef_,
            "label_range": self.label_range_})

    def _load_weights(self, directory):
        n_labels = len(self.label_names_)
        arrays = load_npz(directory / "weights.npz", {
            "pixel_mean": None, "coef": None, "intercept": (n_labels,), "cv_scatter": (n_labels,),
            "bootstrap_coef": None, "label_range": (n_labels, 2)})
        n_pixels = arrays["pixel_mean"].shape[0]
        from ..exceptions import ModelFileError

        if arrays["coef"].shape != (n_labels, n_pixels):
            raise ModelFileError(f"{directory}: coef has shape {arrays['coef'].shape}, expected {(n_labels, n_pixels)}")
        self.pixel_mean_ = arrays["pixel_mean"]
        self.coef_ = arrays["coef"]
        self.intercept_ = arrays["intercept"]
        self.cv_scatter_ = arrays["cv_scatter"]
        self.bootstrap_coef_ = arrays["bootstrap_coef"]
        self.label_range_ = arrays["label_range"]
