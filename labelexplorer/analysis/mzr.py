"""The mass–metallicity relation (MZR): Tremonti et al. (2004) and binned scatter of predictions.

Wu & Boada (2019, §5) judge predicted metallicities by the MZR they produce: plotted
against the (independently measured) stellar mass, the running median and scatter of
``Z_pred`` in mass bins are compared with those of ``Z_true`` and with the Tremonti
relation ``Z = -1.492 + 1.847 log M - 0.08026 (log M)²``, whose observed scatter is
≈ 0.10 dex over 8.5 < log M < 11.5. A predictor whose errors were random would widen the
MZR; one that tracks a hidden third parameter would not.

The polynomial has one implementation, :func:`tremonti_mzr` here; the mock universe
draws its galaxy metallicities from it (this module is a leaf: numpy, pandas, metrics).
Scatter statistics come from :mod:`labelexplorer.analysis.metrics`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..exceptions import ShapeError
from .metrics import nmad, rmse

__all__ = ["tremonti_mzr", "TREMONTI_SCATTER", "DEFAULT_MASS_BINS", "mzr_offsets", "binned_mzr", "mzr_scatter",
           "compare_mzr"]

def tremonti_mzr(log_mstar) -> np.ndarray:
    """The Tremonti et al. (2004) mass–metallicity relation, 12 + log(O/H) of log M*/M☉.

    Examples
    --------
    >>> [round(float(z), 3) for z in tremonti_mzr([9.0, 10.0, 11.0])]
    [8.63, 8.952, 9.114]
    """
    x = np.asarray(log_mstar, dtype=np.float64)
    return -1.492 + 1.847 * x - 0.08026 * x ** 2


TREMONTI_SCATTER = 0.10
"""Observed 1σ scatter of 12 + log(O/H) about the Tremonti et al. (2004) relation (dex)."""

DEFAULT_MASS_BINS = np.round(np.arange(8.5, 11.5 + 1e-9, 0.2), 2)
"""0.2 dex bins of log M*/M☉ from 8.5 to 11.5 (paper 004, Fig. 6)."""


def _pair(log_mstar, metallicity) -> tuple[np.ndarray, np.ndarray]:
    mass = np.asarray(log_mstar, dtype=np.float64).ravel()
    z = np.asarray(metallicity, dtype=np.float64).ravel()
    if mass.shape != z.shape:
        raise ShapeError(f"metallicity: expected one value per stellar mass ({mass.size}), got {z.size}")
    good = np.isfinite(mass) & np.isfinite(z)
    return mass[good], z[good]


def mzr_offsets(log_mstar, metallicity) -> np.ndarray:
    """Metallicity minus the Tremonti relation at each galaxy's mass (dex).

    Examples
    --------
    >>> mzr_offsets([10.0, 9.0], [9.0, 8.63]).round(3).tolist()
    [0.048, 0.0]
    """
    mass = np.asarray(log_mstar, dtype=np.float64)
    return np.asarray(metallicity, dtype=np.float64) - tremonti_mzr(mass)


def binned_mzr(log_mstar, metallicity, bins=None, *, min_count: int = 5) -> pd.DataFrame:
    """Median and scatter of metallicity in bins of stellar mass.

    Parameters
    ----------
    log_mstar, metallicity : array_like
        log M*/M☉ and 12 + log(O/H) of the same galaxies (NaN pairs are dropped).
    bins : array_like, optional
        Bin edges in log M (default :data:`DEFAULT_MASS_BINS`).
    min_count : int
        Bins with fewer galaxies are left out.

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``mass`` (centre), ``mass_low``, ``mass_high``, ``n``, ``median``,
        ``p16``, ``p84``, ``std`` (about the bin mean), ``nmad`` (about the bin median),
        ``rmse_tremonti`` (root-mean-square offset from the Tremonti curve) and
        ``tremonti`` (the curve at the bin centre).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> mass = rng.uniform(9.9, 10.3, 20000)
    >>> z = tremonti_mzr(mass) + rng.normal(0, 0.1, mass.size)
    >>> table = binned_mzr(mass, z, bins=[9.9, 10.1, 10.3])
    >>> table[["mass", "std", "nmad"]].round(2).values.tolist()
    [[10.0, 0.1, 0.1], [10.2, 0.1, 0.1]]
    """
    mass, z = _pair(log_mstar, metallicity)
    edges = np.asarray(DEFAULT_MASS_BINS if bins is None else bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ShapeError(f"bins: expected increasing bin edges (at least 2), got {edges!r}")
    which = np.digitize(mass, edges) - 1
    rows = []
    for k in range(edges.size - 1):
        zk, mk = z[which == k], mass[which == k]
        if zk.size < max(min_count, 1):
            continue
        centre = 0.5 * (edges[k] + edges[k + 1])
        rows.append({"mass": centre, "mass_low": edges[k], "mass_high": edges[k + 1], "n": zk.size,
                     "median": float(np.median(zk)), "p16": float(np.percentile(zk, 16)),
                     "p84": float(np.percentile(zk, 84)), "std": float(np.std(zk)), "nmad": nmad(zk),
                     "rmse_tremonti": rmse(zk, tremonti_mzr(mk)), "tremonti": float(tremonti_mzr(centre))})
    columns = ["mass", "mass_low", "mass_high", "n", "median", "p16", "p84", "std", "nmad", "rmse_tremonti",
               "tremonti"]
    return pd.DataFrame(rows, columns=columns)


def mzr_scatter(log_mstar, metallicity, bins=None) -> dict[str, float]:
    """Global scatter of an MZR: about the Tremonti curve and about its own running median.

    Returns
    -------
    dict
        ``rmse_tremonti`` and ``nmad_tremonti`` of the offsets from the Tremonti
        relation, ``median_offset`` (their median), ``std_running_median`` and
        ``nmad_running_median`` about the binned median interpolated in mass (which
        removes any difference in shape from the Tremonti curve), and ``n``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> mass = rng.uniform(9.0, 11.0, 5000)
    >>> stats = mzr_scatter(mass, tremonti_mzr(mass) + 0.05 + rng.normal(0, 0.1, mass.size))
    >>> round(stats["median_offset"], 2), round(stats["std_running_median"], 2)
    (0.05, 0.1)
    """
    mass, z = _pair(log_mstar, metallicity)
    offsets = z - tremonti_mzr(mass)
    table = binned_mzr(mass, z, bins)
    if len(table) >= 2:
        about_median = z - np.interp(mass, table["mass"], table["median"])
    else:
        about_median = z - np.median(z) if z.size else z
    return {"n": int(z.size), "rmse_tremonti": rmse(offsets), "nmad_tremonti": nmad(offsets),
            "median_offset": float(np.median(offsets)) if z.size else float("nan"),
            "std_running_median": float(np.std(about_median)) if z.size else float("nan"),
            "nmad_running_median": nmad(about_median)}


def compare_mzr(log_mstar, predicted, true, bins=None, *, min_count: int = 5) -> pd.DataFrame:
    """The MZR of predicted and of true metallicities side by side, per mass bin.

    Returns
    -------
    pandas.DataFrame
        Per bin: ``mass``, ``n``, ``median_pred``, ``median_true``, ``std_pred``,
        ``std_true``, ``nmad_pred``, ``nmad_true`` (scatter of each MZR), ``tremonti``,
        and ``rmse_residual`` / ``nmad_residual`` of ``predicted − true`` in the bin.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> mass = rng.uniform(9.95, 10.05, 4000)
    >>> true = tremonti_mzr(mass) + rng.normal(0, 0.1, mass.size)
    >>> shrunk = tremonti_mzr(mass) + 0.5 * (true - tremonti_mzr(mass))   # a predictor that regresses to the mean
    >>> table = compare_mzr(mass, shrunk, true, bins=[9.95, 10.05])
    >>> table[["std_pred", "std_true"]].round(2).values.tolist()
    [[0.05, 0.1]]
    """
    mass = np.asarray(log_mstar, dtype=np.float64).ravel()
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    true = np.asarray(true, dtype=np.float64).ravel()
    if not mass.shape == predicted.shape == true.shape:
        raise ShapeError(f"compare_mzr: log_mstar, predicted and true need the same length, got "
                         f"{mass.size}, {predicted.size}, {true.size}")
    good = np.isfinite(mass) & np.isfinite(predicted) & np.isfinite(true)
    mass, predicted, true = mass[good], predicted[good], true[good]
    pred_table = binned_mzr(mass, predicted, bins, min_count=min_count).set_index("mass")
    true_table = binned_mzr(mass, true, bins, min_count=min_count).set_index("mass")
    residual = binned_mzr(mass, predicted - true, bins, min_count=min_count).set_index("mass")
    edges = np.asarray(DEFAULT_MASS_BINS if bins is None else bins, dtype=np.float64)
    which = np.digitize(mass, edges) - 1
    residual_rmse = {0.5 * (edges[k] + edges[k + 1]): rmse(predicted[which == k], true[which == k])
                     for k in range(edges.size - 1)}
    table = pd.DataFrame({
        "n": pred_table["n"], "median_pred": pred_table["median"], "median_true": true_table["median"],
        "std_pred": pred_table["std"], "std_true": true_table["std"], "nmad_pred": pred_table["nmad"],
        "nmad_true": true_table["nmad"], "tremonti": pred_table["tremonti"],
        "rmse_residual": [residual_rmse[m] for m in pred_table.index], "nmad_residual": residual["nmad"]})
    return table.reset_index()
