"""Recalibration of a model's uncertainties on held-out data with noisy reference labels.

Lives with the models because they fit it at the end of training (``bcnn``'s
``calibrate_uncertainty``); :mod:`labelexplorer.analysis.metrics` re-exports it for
analyses. The factor's own statistical error matters: when the reference labels are
noisier than the model (the usual case for the best labels, e.g. [O/H] at a pipeline
error of 0.07 dex against a network error of 0.05), a few hundred validation spectra
pin the factor only to ±10–25 % (:func:`uncertainty_scale_spread`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["uncertainty_scale", "uncertainty_scale_spread"]


def uncertainty_scale(residual, std, known_std=None, *, clip: float = 5.0,
                      bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Factor ``k`` that makes ``residual / sqrt((k·std)² + known_std²)`` unit variance.

    Recalibrates a method's uncertainty on held-out data whose reference values carry
    known errors of their own (*known_std*, e.g. pipeline labels): the known part is not
    scaled, so ``k·std`` estimates the method's own error against the truth. Normalised
    residuals beyond *clip* σ are clipped (a few catastrophic outliers must not inflate
    every uncertainty); the target is the clipped second moment of a standard normal,
    so an honest Gaussian gives ``k = 1``. The result is limited to *bounds*; NaN when
    fewer than 10 finite entries remain.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> truth_error = rng.normal(0, 0.1, 50000)      # the method's real error: 0.1
    >>> label_noise = rng.normal(0, 0.05, 50000)     # the reference's known error: 0.05
    >>> k = uncertainty_scale(truth_error - label_noise, np.full(50000, 0.2), np.full(50000, 0.05))
    >>> round(k, 1)                                  # quoted 0.2, so halve it
    0.5
    """
    from scipy.optimize import brentq
    from scipy.stats import norm

    residual2 = np.asarray(residual, float) ** 2
    std2 = np.broadcast_to(np.asarray(std, float) ** 2, residual2.shape)
    known2 = np.zeros_like(residual2) if known_std is None else np.broadcast_to(
        np.nan_to_num(np.asarray(known_std, float), nan=0.0) ** 2, residual2.shape)
    good = np.isfinite(residual2) & np.isfinite(std2) & (std2 > 0)
    if good.sum() < 10:
        return float("nan")
    residual2, std2, known2 = residual2[good], std2[good], known2[good]
    target = 2 * norm.cdf(clip) - 1 - 2 * clip * norm.pdf(clip) + 2 * clip ** 2 * norm.sf(clip)

    def excess(k: float) -> float:  # decreases with k
        return float(np.mean(np.minimum(residual2 / (k * k * std2 + known2), clip ** 2))) - target

    low, high = bounds
    if excess(low) <= 0:
        return float(low)
    if excess(high) >= 0:
        return float(high)
    return float(brentq(excess, low, high, xtol=1e-4))


def uncertainty_scale_spread(residual, std, known_std=None, *, n_resamples: int = 100, seed: int = 0) -> float:
    """Bootstrap standard deviation of :func:`uncertainty_scale` (its statistical error).

    Parameters
    ----------
    residual, std, known_std : array_like
        As for :func:`uncertainty_scale`.
    n_resamples : int
        Bootstrap resamples of the rows.
    seed : int
        Seed of the resampling (the result is reproducible).

    Returns
    -------
    float
        The spread of the factor over the resamples; NaN when the factor itself is NaN.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> residual = rng.normal(0, 0.1, 300) - rng.normal(0, 0.1, 300)   # label noise as large as the error
    >>> spread = uncertainty_scale_spread(residual, np.full(300, 0.1), np.full(300, 0.1))
    >>> 0.05 < spread < 0.2                                            # ±5-20 % from 300 rows
    True
    """
    residual, std = np.asarray(residual, float), np.broadcast_to(np.asarray(std, float), np.shape(residual))
    known = np.zeros_like(residual) if known_std is None else np.broadcast_to(np.asarray(known_std, float),
                                                                              residual.shape)
    rng = np.random.default_rng(seed)
    factors = []
    for _ in range(n_resamples):
        rows = rng.integers(0, residual.size, residual.size)
        factors.append(uncertainty_scale(residual[rows], std[rows], known[rows]))
    return float(np.std(factors)) if np.all(np.isfinite(factors)) else float("nan")
