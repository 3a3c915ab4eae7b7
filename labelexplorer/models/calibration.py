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

__all__ = ["uncertainty_scale", "uncertainty_calibration", "uncertainty_scale_spread"]

_MIN_ROWS_FOR_FLOOR = 200  # two halves of 100: each pins its unknown to ~±15 % against noisy labels
_SCALE_BOUNDS = (0.05, 20.0)


def uncertainty_scale(residual, std, known_std=None, *, clip: float = 5.0,
                      bounds: tuple[float, float] = _SCALE_BOUNDS) -> float:
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
    residual2 = np.asarray(residual, float) ** 2
    std2 = np.broadcast_to(np.asarray(std, float) ** 2, residual2.shape)
    known2 = np.zeros_like(residual2) if known_std is None else np.broadcast_to(
        np.nan_to_num(np.asarray(known_std, float), nan=0.0) ** 2, residual2.shape)
    good = np.isfinite(residual2) & np.isfinite(std2) & (std2 > 0)
    if good.sum() < 10:
        return float("nan")
    residual2, std2, known2 = residual2[good], std2[good], known2[good]
    target = _clipped_unit_moment(clip)

    def excess(k: float) -> float:  # decreases with k
        return float(np.mean(np.minimum(residual2 / (k * k * std2 + known2), clip ** 2))) - target

    return _decreasing_root(excess, *bounds, xtol=1e-4)


def uncertainty_calibration(residual, std, known_std=None, *, clip: float = 5.0, iterations: int = 30
                            ) -> tuple[float, float]:
    """Scale ``k`` and floor ``f``: ``sqrt((k·std)² + f²)`` is the calibrated uncertainty.

    One factor assumes the error is proportional to the quoted uncertainty. A network
    also has an error floor that no noise level removes (its own systematics): fitted
    with one factor, the low-σ stars are then over-confident and the high-σ ones
    under-confident. With at least 200 rows, ``k`` makes the larger half of the *std*
    values unit-variance (:func:`uncertainty_scale`, with the current floor) and ``f`` the smaller half,
    alternating until both hold. The single factor fitted to all rows (and ``f = 0``) is
    kept when the smaller half needs no floor, or when the halves' medians differ by less
    than 20 % or the floor would take all the error (then scale and floor cannot be told
    apart), and for fewer rows. When that single factor reaches its upper bound (×20), the
    quoted *std* carries almost none of the error (APOGEE Net's noise draws beside its own
    error, say), or *std* is zero throughout (no spread quoted at all): then ``k = 1`` and
    ``f`` alone makes the rows unit-variance. On the mock
    universe's validation spectra (``bcnn``, 600 of them) it brought held-out stars'
    std((prediction − truth)/σ) from 1.21 to 1.05 for [O/H], 1.29 to 1.12 for [C/H] and
    1.17 to 1.05 for [Mg/H] (benchmarks/eval_bcnn_mock.py).

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> std = rng.uniform(0.02, 0.2, 40000)                      # quoted, twice too large
    >>> error = rng.normal(0, 1, 40000) * np.hypot(0.5 * std, 0.03)   # plus a 0.03 floor
    >>> k, f = uncertainty_calibration(error - rng.normal(0, 0.05, 40000), std, np.full(40000, 0.05))
    >>> round(k, 1), round(f, 2)
    (0.5, 0.03)
    """
    residual = np.asarray(residual, float)
    std = np.broadcast_to(np.asarray(std, float), residual.shape)
    known = np.zeros_like(residual) if known_std is None else np.nan_to_num(
        np.broadcast_to(np.asarray(known_std, float), residual.shape), nan=0.0)
    good = np.isfinite(residual) & np.isfinite(std) & (std >= 0)
    if good.sum() >= 10 and not (std[good] > 0).any():  # no quoted spread at all: the floor is the error
        return 1.0, _floor(residual[good], std[good], known[good], clip)
    good &= std > 0
    scale = uncertainty_scale(residual[good], std[good], known[good], clip=clip)
    if np.isfinite(scale) and scale >= _SCALE_BOUNDS[1]:  # the std explains next to nothing: a floor
        return 1.0, _floor(residual[good], std[good], known[good], clip)
    if good.sum() < _MIN_ROWS_FOR_FLOOR or not np.isfinite(scale):
        return scale, 0.0
    order = np.argsort(std[good])
    low, high = order[:order.size // 2], order[order.size // 2:]
    r, s, k = residual[good], std[good], known[good]
    if np.median(s[high]) < 1.2 * np.median(s[low]):
        return scale, 0.0  # too narrow a range of std to tell a floor from the scale
    single, floor = scale, 0.0
    for _ in range(iterations):
        with_floor = np.hypot(k[high], floor)
        scale_new = uncertainty_scale(r[high], s[high], with_floor, clip=clip)
        # the floor is the part of the small-sigma stars' excess that the scale does not explain
        floor_new = _floor(r[low], scale_new * s[low], k[low], clip)
        converged = abs(scale_new - scale) < 1e-4 * scale and abs(floor_new - floor) < 1e-4 * np.median(s)
        scale, floor = scale_new, floor_new
        if converged:
            break
    if scale <= 1.5 * _SCALE_BOUNDS[0] or floor == 0.0:
        # the floor took all (the halves cannot separate the two) or none: one factor, fitted to all rows
        return single, 0.0
    return float(scale), float(floor)


def _floor(residual, std, known, clip: float) -> float:
    """The floor ``f`` that gives ``residual / sqrt(std² + f² + known²)`` unit variance (0 if none is needed)."""
    target = _clipped_unit_moment(clip)

    def excess(f: float) -> float:  # decreases with f
        with np.errstate(divide="ignore", invalid="ignore"):  # f = 0 with no std: z = inf, clipped
            z2 = np.nan_to_num(residual ** 2 / (std ** 2 + f * f + known ** 2), nan=0.0, posinf=clip ** 2)
        return float(np.mean(np.minimum(z2, clip ** 2))) - target

    widest = 10.0 * max(float(np.median(np.hypot(std, known))), float(np.sqrt(np.mean(residual ** 2))))
    return _decreasing_root(excess, 0.0, widest, xtol=1e-6 * widest)


def _clipped_unit_moment(clip: float) -> float:
    """E[min(z², clip²)] for a standard normal z: what the clipped z² of honest errors average to."""
    from scipy.stats import norm

    return float(2 * norm.cdf(clip) - 1 - 2 * clip * norm.pdf(clip) + 2 * clip ** 2 * norm.sf(clip))


def _decreasing_root(function, low: float, high: float, xtol: float) -> float:
    """Root of a decreasing *function* in [low, high], or the bound it stays beyond."""
    from scipy.optimize import brentq

    if function(low) <= 0:
        return float(low)
    if function(high) >= 0:
        return float(high)
    return float(brentq(function, low, high, xtol=xtol))


def uncertainty_scale_spread(residual, std, known_std=None, *, n_resamples: int = 100, seed: int = 0) -> float:
    """Bootstrap standard deviation of the scale of :func:`uncertainty_calibration` (its statistical error).

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
        factors.append(uncertainty_calibration(residual[rows], std[rows], known[rows])[0])
    return float(np.std(factors)) if np.all(np.isfinite(factors)) else float("nan")
