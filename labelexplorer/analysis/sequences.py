"""Chemical sequences: [X/Fe] against [Fe/H] from whatever a method predicts.

Methods report abundances in two conventions: the censored BCNN (astroNN) gives
``[X/H]`` (``MG_H``), catalogs and the mock's truth give ``[X/Fe]`` (``MG_FE``). The
sequences plot wants ``[X/Fe]``, so :func:`element_over_iron` uses ``X_FE`` when the
table has it and otherwise forms ``X_H − FE_H``. Its uncertainty is then
``sqrt(σ[X/H]² + σ[Fe/H]²)``: the two errors are treated as independent, which
overestimates the error when a method's [X/H] and [Fe/H] errors are positively
correlated (they often are), so the quoted value is an upper bound.

Tables are anything indexable by column name (pandas DataFrame, dict of arrays); a
*prefix* picks one source of a combined catalog (``"RIDGE__"``, ``"TRUE__"``; see
:mod:`labelexplorer.dashboard.state`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ..exceptions import LabelError
from ..labels import ASPCAP_ELEMENTS
from .metrics import bias, sigma_mad

__all__ = ["element_over_iron", "iron", "sequence_elements", "sequence_table", "binned_sequence",
           "compare_sequences"]


def _has(table, column: str) -> bool:
    return column in (table.colnames if hasattr(table, "colnames") else table)


def _get(table, column: str) -> np.ndarray:
    return np.asarray(table[column], dtype=np.float64)


def _error(table, column: str, n: int) -> np.ndarray:
    name = f"{column}_ERR"
    return _get(table, name) if _has(table, name) else np.full(n, np.nan)


def iron(table, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``[Fe/H]`` and its uncertainty (NaN when the table has no ``FE_H_ERR``).

    Raises
    ------
    LabelError
        If the table has no ``<prefix>FE_H`` column.

    Examples
    --------
    >>> feh, err = iron({"FE_H": [-0.5, 0.1], "FE_H_ERR": [0.02, 0.03]})
    >>> feh.tolist(), err.tolist()
    ([-0.5, 0.1], [0.02, 0.03])
    """
    column = f"{prefix}FE_H"
    if not _has(table, column):
        raise LabelError(f"table has no {column!r} column: [Fe/H] is needed for [X/Fe]-[Fe/H] sequences")
    values = _get(table, column)
    return values, _error(table, column, values.size)


def element_over_iron(table, element: str, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``[X/Fe]`` of *element* and its uncertainty, from ``X_FE`` or from ``X_H − FE_H``.

    Parameters
    ----------
    table : DataFrame or mapping of arrays
    element : str
        ASPCAP spelling or any case (``"Mg"``, ``"MG"``, ``"TiII"``).
    prefix : str
        Column prefix of the source (``""`` for a plain prediction table).

    Returns
    -------
    values, errors : ndarray
        NaN where the source has no value (or no uncertainty).

    Raises
    ------
    LabelError
        If the table has neither ``X_FE`` nor both ``X_H`` and ``FE_H``.

    Examples
    --------
    >>> xfe, err = element_over_iron({"MG_H": [0.1], "MG_H_ERR": [0.03], "FE_H": [-0.2], "FE_H_ERR": [0.04]}, "Mg")
    >>> round(float(xfe[0]), 3), round(float(err[0]), 3)
    (0.3, 0.05)
    >>> element_over_iron({"MG_FE": [0.25]}, "mg")[0].tolist()
    [0.25]
    """
    key = str(element).upper()
    direct = f"{prefix}{key}_FE"
    if _has(table, direct):
        values = _get(table, direct)
        return values, _error(table, direct, values.size)
    over_h = f"{prefix}{key}_H"
    if _has(table, over_h) and _has(table, f"{prefix}FE_H"):
        x_h = _get(table, over_h)
        feh, feh_err = iron(table, prefix)
        return x_h - feh, np.hypot(_error(table, over_h, x_h.size), feh_err)
    raise LabelError(f"table has neither {direct!r} nor {over_h!r} with {prefix}FE_H: cannot form [{element}/Fe]")


def sequence_elements(columns: Iterable[str], prefix: str = "") -> list[str]:
    """Elements (ASPCAP spelling, ASPCAP order) whose [X/Fe] can be formed from *columns*.

    Examples
    --------
    >>> sequence_elements(["FE_H", "MG_H", "AL_FE", "TEFF"])
    ['Mg', 'Al']
    >>> sequence_elements(["MG_H"])  # no FE_H: only direct [X/Fe] columns count
    []
    """
    columns = set(columns)
    has_iron = f"{prefix}FE_H" in columns
    found = []
    for element in ASPCAP_ELEMENTS:
        key = element.upper()
        if key == "FE":
            continue
        if f"{prefix}{key}_FE" in columns or (has_iron and f"{prefix}{key}_H" in columns):
            found.append(element)
    return found


def sequence_table(table, prefix: str = "", elements: Sequence[str] | None = None):
    """A DataFrame of ``FE_H``, ``FE_H_ERR`` and ``<X>_FE``, ``<X>_FE_ERR`` for every element.

    Examples
    --------
    >>> frame = sequence_table({"FE_H": [0.0, -1.0], "MG_H": [0.1, -0.7], "AL_FE": [0.0, 0.2]})
    >>> frame.columns.tolist()
    ['FE_H', 'FE_H_ERR', 'MG_FE', 'MG_FE_ERR', 'AL_FE', 'AL_FE_ERR']
    >>> frame["MG_FE"].round(2).tolist()
    [0.1, 0.3]
    """
    import pandas as pd

    columns = table.columns if hasattr(table, "columns") else list(table)
    if elements is None:
        elements = sequence_elements(columns, prefix)
    feh, feh_err = iron(table, prefix)
    data = {"FE_H": feh, "FE_H_ERR": feh_err}
    for element in elements:
        data[f"{element.upper()}_FE"], data[f"{element.upper()}_FE_ERR"] = element_over_iron(table, element, prefix)
    return pd.DataFrame(data)


def binned_sequence(feh, x_fe, bins=None, *, min_count: int = 5):
    """Running median and robust scatter (σ_MAD) of [X/Fe] in bins of [Fe/H].

    Parameters
    ----------
    feh, x_fe : array_like
    bins : int or array_like, optional
        Bin edges in [Fe/H] (default 0.1 dex bins over the finite range).
    min_count : int
        Bins with fewer stars are left out.

    Returns
    -------
    pandas.DataFrame
        Columns ``FE_H`` (bin centre), ``median``, ``sigma_mad``, ``n``.

    Examples
    --------
    >>> feh = np.repeat([-0.55, -0.05], 10); xfe = np.where(feh < -0.3, 0.3, 0.0)
    >>> binned_sequence(feh, xfe, bins=[-0.6, -0.3, 0.0])["median"].tolist()
    [0.3, 0.0]
    """
    import pandas as pd

    feh = np.asarray(feh, dtype=np.float64)
    x_fe = np.asarray(x_fe, dtype=np.float64)
    good = np.isfinite(feh) & np.isfinite(x_fe)
    if bins is None or np.isscalar(bins):
        if not good.any():
            return pd.DataFrame({"FE_H": [], "median": [], "sigma_mad": [], "n": []})
        lo, hi = np.floor(feh[good].min() * 10) / 10, np.ceil(feh[good].max() * 10) / 10 + 1e-9
        edges = np.arange(lo, hi + 0.1, 0.1) if bins is None else np.linspace(lo, hi, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
    which = np.digitize(feh[good], edges) - 1
    rows = []
    for k in range(edges.size - 1):
        values = x_fe[good][which == k]
        if values.size >= min_count:
            rows.append({"FE_H": 0.5 * (edges[k] + edges[k + 1]), "median": float(np.median(values)),
                         "sigma_mad": sigma_mad(values), "n": int(values.size)})
    return pd.DataFrame(rows, columns=["FE_H", "median", "sigma_mad", "n"])


def compare_sequences(table, prefix: str, reference_prefix: str, elements: Sequence[str] | None = None):
    """Per element, how a source's [X/Fe] differs from a reference's (e.g. the mock's truth).

    Returns
    -------
    pandas.DataFrame
        Indexed by element: ``n`` (stars with both), ``bias`` (median difference),
        ``sigma_mad`` (robust scatter of the difference) and ``median_error`` (the source's
        median quoted [X/Fe] uncertainty, NaN when it quotes none).

    Examples
    --------
    >>> t = {"A__FE_H": [0.0, -0.5, -1.0], "A__MG_H": [0.1, -0.2, -0.6],
    ...      "T__FE_H": [0.0, -0.5, -1.0], "T__MG_FE": [0.0, 0.3, 0.4]}
    >>> compare_sequences(t, "A__", "T__").loc["Mg", "bias"].round(3)
    np.float64(0.0)
    """
    import pandas as pd

    columns = table.columns if hasattr(table, "columns") else list(table)
    if elements is None:
        ours, theirs = sequence_elements(columns, prefix), set(sequence_elements(columns, reference_prefix))
        elements = [e for e in ours if e in theirs]
    rows = {}
    for element in elements:
        values, errors = element_over_iron(table, element, prefix)
        truth, _ = element_over_iron(table, element, reference_prefix)
        both = np.isfinite(values) & np.isfinite(truth)
        rows[element] = {"n": int(both.sum()), "bias": bias(values[both], truth[both]),
                         "sigma_mad": sigma_mad(values[both], truth[both]),
                         "median_error": float(np.nanmedian(errors[both])) if np.isfinite(errors[both]).any()
                         else float("nan")}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["n", "bias", "sigma_mad", "median_error"])
