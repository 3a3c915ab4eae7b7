"""Scatter and bias metrics — one implementation used by every method, script and view.

Conventions: residuals are ``prediction − truth``; NaN entries (missing truth, labels
a method did not report) are ignored; an empty input gives NaN rather than an error,
so tables of many labels never break on one empty column.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

# re-exported: the calibration is fitted by the models (which may not import analysis)
from ..models.calibration import uncertainty_scale

__all__ = ["sigma_mad", "nmad", "rmse", "bias", "outlier_fraction", "calibration_ratio", "uncertainty_scale", "summarize"]

_MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): makes the MAD a consistent estimator of a Gaussian sigma


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def _residuals(prediction, truth) -> np.ndarray:
    if truth is None:
        return _finite(prediction)
    return _finite(np.asarray(prediction, dtype=np.float64) - np.asarray(truth, dtype=np.float64))


def sigma_mad(prediction, truth=None) -> float:
    """Robust scatter, 1.4826 × median(|r − median r|), of residuals ``prediction − truth``.

    This is the σ_MAD of Leung & Bovy (2019) and the NMAD of Wu & Boada (2019).

    Examples
    --------
    >>> round(sigma_mad([0.0, 1.0, 2.0, 3.0, 100.0]), 4)
    1.4826
    """
    r = _residuals(prediction, truth)
    if r.size == 0:
        return float("nan")
    return float(_MAD_TO_SIGMA * np.median(np.abs(r - np.median(r))))


nmad = sigma_mad
"""Alias: the normalised median absolute deviation of paper 004 is the same statistic."""


def rmse(prediction, truth=None) -> float:
    """Root-mean-square of the residuals.

    Examples
    --------
    >>> rmse([1.0, 2.0], [0.0, 0.0])
    1.5811388300841898
    """
    r = _residuals(prediction, truth)
    return float(np.sqrt(np.mean(r**2))) if r.size else float("nan")


def bias(prediction, truth=None) -> float:
    """Median residual (robust bias).

    Examples
    --------
    >>> bias([1.0, 2.0, 30.0], [0.0, 0.0, 0.0])
    2.0
    """
    r = _residuals(prediction, truth)
    return float(np.median(r)) if r.size else float("nan")


def outlier_fraction(prediction, truth=None, *, threshold: float | None = None, n_sigma: float = 3.0) -> float:
    """Fraction of residuals beyond *threshold* (default: *n_sigma* × σ_MAD from the median).

    Examples
    --------
    >>> outlier_fraction([0.0, 0.1, -0.1, 5.0], threshold=1.0)
    0.25
    """
    r = _residuals(prediction, truth)
    if r.size == 0:
        return float("nan")
    if threshold is None:
        threshold = n_sigma * sigma_mad(r)
        r = r - np.median(r)
    return float(np.mean(np.abs(r) > threshold))


def calibration_ratio(prediction, truth, std) -> float:
    """Standard deviation of ``(prediction − truth) / std``: 1 for honest uncertainties.

    Above 1 the quoted uncertainties are too small; below 1, too large.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = np.zeros(20000); std = np.full(20000, 0.1)
    >>> round(calibration_ratio(rng.normal(0, 0.1, 20000), truth, std), 1)
    1.0
    """
    z = (np.asarray(prediction, float) - np.asarray(truth, float)) / np.asarray(std, float)
    z = _finite(z)
    return float(np.std(z)) if z.size > 1 else float("nan")


def summarize(prediction: Mapping[str, np.ndarray] | np.ndarray, truth: Mapping[str, np.ndarray] | np.ndarray,
              names: Sequence[str] | None = None, std: Mapping[str, np.ndarray] | np.ndarray | None = None):
    """Table of bias, σ_MAD, RMSE, outlier fraction (and calibration when *std* is given) per label.

    Parameters
    ----------
    prediction, truth : mapping label -> array, or arrays (n, n_labels) with *names*
    names : labels to report (default: the keys of *prediction*)
    std : optional uncertainties, same layout as *prediction*

    Returns
    -------
    pandas.DataFrame indexed by label.

    Examples
    --------
    >>> table = summarize({"TEFF": np.array([5000.0, 5100.0, 4900.0])},
    ...                   {"TEFF": np.array([5000.0, 5000.0, 5000.0])})
    >>> table.loc["TEFF", "bias"], table.loc["TEFF", "n"]
    (np.float64(0.0), np.int64(3))
    """
    import pandas as pd

    def column(source, j, name):
        if isinstance(source, Mapping):
            return np.asarray(source[name], dtype=float)
        return np.asarray(source, dtype=float)[:, j]

    if names is None:
        if not isinstance(prediction, Mapping):
            raise ValueError("summarize: pass names= for array inputs")
        names = list(prediction)
    rows = {}
    for j, name in enumerate(names):
        p, t = column(prediction, j, name), column(truth, j, name)
        good = np.isfinite(p) & np.isfinite(t)
        row = {"n": int(good.sum()), "bias": bias(p[good], t[good]), "sigma_mad": sigma_mad(p[good], t[good]),
               "rmse": rmse(p[good], t[good]), "outliers": outlier_fraction(p[good], t[good])}
        if std is not None:
            s = column(std, j, name)
            row["calibration"] = calibration_ratio(p[good], t[good], s[good])
            row["mean_std"] = float(np.nanmean(s[good])) if good.any() else float("nan")
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")
