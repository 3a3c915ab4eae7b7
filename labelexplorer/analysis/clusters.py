"""Cluster homogeneity: is the abundance spread of cluster members what the uncertainties say?

Stars of an open cluster were born with one composition (intrinsic spread ≲ 0.01–0.02
dex), so the spread of a method's abundances among members measures its precision.
Leung & Bovy (2019, paper 000, Figs. 12–13) compare, element by element, the members'
spread with the mean quoted uncertainty: a spread near the mean uncertainty means honest
errors; a spread far below it means inflated errors; far above, errors too small (or a
real spread, as Al in a globular cluster). In the globular cluster (M13 in the mock) the
Mg–Al anticorrelation of multiple populations is real: :func:`mg_al` measures its
slope, correlation and Al spread, which a censored network should keep and an
uncensored one tends to wash out towards the training set's correlation.

Tables are pandas DataFrames (or dicts of arrays); *prefix* picks a source of a combined
catalog (``"RIDGE__"``, ``"TRUE__"``; see :mod:`labelexplorer.dashboard.state`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..exceptions import LabelError
from .metrics import sigma_mad
from .sequences import element_over_iron

__all__ = ["members", "cluster_homogeneity", "homogeneity_report", "mg_al", "MgAl"]

_HOMOGENEITY_COLUMNS = ["n", "mean", "spread", "robust_spread", "mean_error", "ratio"]


def members(table, cluster: str, column: str = "CLUSTER") -> np.ndarray:
    """Boolean mask of the members of *cluster* (exact name in the *column* of *table*).

    Raises
    ------
    LabelError
        If the table has no *column*, or no star belongs to *cluster*.

    Examples
    --------
    >>> members({"CLUSTER": ["M67", "", "M67"]}, "M67").tolist()
    [True, False, True]
    """
    if column not in table:
        raise LabelError(f"table has no {column!r} column naming each star's cluster")
    names = np.asarray(table[column]).astype(str)
    mask = names == str(cluster)
    if not mask.any():
        known = sorted(str(name) for name in set(names) - {""})
        raise LabelError(f"no member of cluster {cluster!r} in column {column!r}; clusters present: {known}")
    return mask


def _spread_row(values: np.ndarray, errors: np.ndarray) -> dict:
    good = np.isfinite(values)
    n = int(good.sum())
    if n < 2:
        return dict(n=n, mean=float(np.nanmean(values)) if n else np.nan, spread=np.nan, robust_spread=np.nan,
                    mean_error=np.nan, ratio=np.nan)
    known_errors = errors[good & np.isfinite(errors)]
    mean_error = float(known_errors.mean()) if known_errors.size else np.nan
    spread = float(np.std(values[good], ddof=1))
    return dict(n=n, mean=float(values[good].mean()), spread=spread, robust_spread=sigma_mad(values[good]),
                mean_error=mean_error, ratio=spread / mean_error if mean_error > 0 else np.nan)


def cluster_homogeneity(table, member_mask, labels: Sequence[str], *, prefix: str = ""):
    """Spread of each label among cluster members against their mean quoted uncertainty.

    Parameters
    ----------
    table : DataFrame or mapping of arrays
        Values in ``<prefix><label>`` and uncertainties in ``<prefix><label>_ERR``.
        Element labels ``<X>_FE`` are formed from ``<X>_H − FE_H`` when needed
        (:func:`~labelexplorer.analysis.sequences.element_over_iron`).
    member_mask : array of bool
        The cluster's members (e.g. from :func:`members`).
    labels : sequence of str
        Canonical label names (``FE_H``, ``MG_FE``, ``AL_H``...).
    prefix : str
        Column prefix of the source.

    Returns
    -------
    pandas.DataFrame
        Indexed by label: ``n`` members with a value, ``mean``, ``spread`` (standard
        deviation, ddof=1), ``robust_spread`` (σ_MAD), ``mean_error`` and ``ratio`` =
        spread / mean error (≈ 1 for honest uncertainties of a homogeneous cluster).
        Labels the source lacks are left out.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> table = {"MG_FE": rng.normal(0.1, 0.05, 400), "MG_FE_ERR": np.full(400, 0.05)}
    >>> row = cluster_homogeneity(table, np.ones(400, bool), ["MG_FE"]).loc["MG_FE"]
    >>> int(row["n"]), bool(abs(row["ratio"] - 1) < 0.1)
    (400, True)
    """
    import pandas as pd

    mask = np.asarray(member_mask, dtype=bool)
    rows = {}
    for label in labels:
        values, errors = _label_values(table, label, prefix)
        if values is not None:
            rows[label] = _spread_row(values[mask], errors[mask])
    return pd.DataFrame.from_dict(rows, orient="index", columns=_HOMOGENEITY_COLUMNS)


def _label_values(table, label: str, prefix: str):
    """Values and errors of *label*, or (None, None) when the source does not have it."""
    column = f"{prefix}{label}"
    if column in table:
        values = np.asarray(table[column], dtype=np.float64)
        error_column = f"{column}_ERR"
        errors = (np.asarray(table[error_column], dtype=np.float64) if error_column in table
                  else np.full(values.size, np.nan))
        return values, errors
    if label.endswith("_FE"):
        try:
            return element_over_iron(table, label[:-3], prefix)
        except LabelError:
            return None, None
    return None, None


def homogeneity_report(table, sources: Mapping[str, str], labels: Sequence[str], *,
                       clusters: Sequence[str] | None = None, column: str = "CLUSTER"):
    """:func:`cluster_homogeneity` for every cluster and source, in one long table.

    Parameters
    ----------
    sources : mapping of display name -> column prefix
        E.g. ``{"ridge": "RIDGE__", "truth": "TRUE__"}``.
    clusters : sequence of str, optional
        Default: every non-empty name in *column*.

    Returns
    -------
    pandas.DataFrame
        Columns ``cluster``, ``source``, ``label`` and those of :func:`cluster_homogeneity`.

    Examples
    --------
    >>> t = {"CLUSTER": ["A", "A", "A", ""], "X__FE_H": [0.0, 0.1, -0.1, 2.0], "X__FE_H_ERR": [0.1] * 4}
    >>> report = homogeneity_report(t, {"x": "X__"}, ["FE_H"])
    >>> report[["cluster", "source", "label", "n"]].values.tolist()
    [['A', 'x', 'FE_H', 3]]
    >>> round(float(report["ratio"][0]), 6)
    1.0
    """
    import pandas as pd

    if clusters is None:
        if column not in table:
            raise LabelError(f"table has no {column!r} column naming each star's cluster")
        clusters = sorted(str(name) for name in set(np.asarray(table[column]).astype(str)) - {""})
    frames = []
    for cluster in clusters:
        mask = members(table, cluster, column)
        for name, prefix in sources.items():
            part = cluster_homogeneity(table, mask, labels, prefix=prefix)
            frames.append(part.rename_axis("label").reset_index().assign(cluster=cluster, source=name))
    if not frames:
        return pd.DataFrame(columns=["cluster", "source", "label", *_HOMOGENEITY_COLUMNS])
    report = pd.concat(frames, ignore_index=True)
    return report[["cluster", "source", "label", *_HOMOGENEITY_COLUMNS]]


class MgAl(dict):
    """Result of :func:`mg_al`: a dict with attribute access (``mg``, ``al``, ``slope``...)."""

    __getattr__ = dict.__getitem__


def mg_al(table, member_mask, prefix: str = "") -> MgAl:
    """The Mg–Al anticorrelation of a globular cluster's members.

    Returns
    -------
    MgAl
        ``mg``, ``al`` ([Mg/Fe], [Al/Fe] of members with both), ``n``, ``pearson_r``,
        ``slope`` (d[Al/Fe]/d[Mg/Fe], least squares), ``al_spread`` (standard deviation
        of [Al/Fe]) and ``al_range`` (95th − 5th percentile of [Al/Fe]).

    Raises
    ------
    LabelError
        If the source has no Mg or Al abundance.

    Examples
    --------
    >>> p = np.linspace(0, 1, 50)
    >>> result = mg_al({"MG_FE": 0.35 - 0.25 * p, "AL_FE": -0.1 + 1.0 * p}, np.ones(50, bool))
    >>> round(result.pearson_r, 3), round(result.slope, 2), result.n
    (-1.0, -4.0, 50)
    """
    mask = np.asarray(member_mask, dtype=bool)
    mg, _ = element_over_iron(table, "Mg", prefix)
    al, _ = element_over_iron(table, "Al", prefix)
    mg, al = mg[mask], al[mask]
    both = np.isfinite(mg) & np.isfinite(al)
    mg, al = mg[both], al[both]
    result = MgAl(mg=mg, al=al, n=int(both.sum()), pearson_r=np.nan, slope=np.nan, al_spread=np.nan, al_range=np.nan)
    if result.n >= 3 and np.std(mg) > 0 and np.std(al) > 0:
        result.update(pearson_r=float(np.corrcoef(mg, al)[0, 1]), slope=float(np.polyfit(mg, al, 1)[0]))
    if result.n >= 2:
        result.update(al_spread=float(np.std(al, ddof=1)),
                      al_range=float(np.percentile(al, 95) - np.percentile(al, 5)))
    return result
