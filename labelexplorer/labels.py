"""Label names and label tables, in the column names users already know.

Canonical names follow the APOGEE allStar conventions: ``TEFF``, ``LOGG``, ``FE_H``,
``M_H``, ``ALPHA_M``, ``<X>_H`` and ``<X>_FE`` for every ASPCAP element, plus a few
labels of the other methods (``LOG_TEFF`` for APOGEE Net, ``OH_P50`` and ``LOG_MSTAR``
for galaxies). Common spellings (``Teff``, ``[Fe/H]``, ``logg``, astroNN's bare element
names meaning ``[X/H]``) are accepted and translated. The missing-value marker -9999
(and anything at or below -9000) is accepted on input and becomes NaN.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from .exceptions import LabelError, did_you_mean

__all__ = [
    "ASPCAP_ELEMENTS",
    "ASTRONN_LABELS",
    "MISSING",
    "canonical_label",
    "label_array",
    "known_labels",
]

MISSING = -9999.0
"""The survey missing-value marker ("magic number") accepted on input."""

ASPCAP_ELEMENTS = ("C", "CI", "N", "O", "Na", "Mg", "Al", "Si", "P", "S", "K", "Ca", "Ti", "TiII",
                   "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Ge", "Ce", "Rb", "Y", "Nd")
"""ASPCAP elements in the bit order of the astroNN window bitmask."""

ASTRONN_LABELS = ("TEFF", "LOGG", "C_H", "CI_H", "N_H", "O_H", "NA_H", "MG_H", "AL_H", "SI_H", "P_H",
                  "S_H", "K_H", "CA_H", "TI_H", "TIII_H", "V_H", "CR_H", "MN_H", "FE_H", "CO_H", "NI_H")
"""The 22 labels of the astroNN censored BCNN, in astroNN order (elements are [X/H])."""

_STELLAR = ("TEFF", "LOGG", "LOG_TEFF", "M_H", "ALPHA_M", "VMICRO", "VSINI")
_GALAXY = ("OH_P50", "LOG_MSTAR")
_ALIASES = {
    "T_EFF": "TEFF", "TEFF_K": "TEFF", "LOGTEFF": "LOG_TEFF", "LOG_G": "LOGG", "GRAV": "LOGG",
    "FEH": "FE_H", "MH": "M_H", "METALS": "M_H", "ALPHAM": "ALPHA_M", "ALPHA_FE": "ALPHA_M",
    "12+LOG(O/H)": "OH_P50", "OH": "OH_P50", "LOGMSTAR": "LOG_MSTAR", "LOG_MASS": "LOG_MSTAR",
}


def known_labels() -> tuple[str, ...]:
    """All canonical label names.

    Examples
    --------
    >>> "MG_FE" in known_labels() and "TEFF" in known_labels()
    True
    """
    elements = [e.upper() for e in ASPCAP_ELEMENTS]
    return _STELLAR + tuple(f"{e}_H" for e in elements) + tuple(f"{e}_FE" for e in elements if e != "FE") + _GALAXY


_ELEMENT_BY_UPPER = {e.upper(): e.upper() for e in ASPCAP_ELEMENTS}


def canonical_label(name: str) -> str:
    """Translate a user's label name into the canonical column name.

    Parameters
    ----------
    name : str
        ``"Teff"``, ``"[Fe/H]"``, ``"mg_fe"``, ``"Mg"`` (astroNN: [Mg/H]), ``"ALPHA_M"``...

    Raises
    ------
    LabelError
        If the name is not a known label; the message suggests the closest one.

    Examples
    --------
    >>> [canonical_label(n) for n in ["Teff", "[Fe/H]", "[Mg/Fe]", "Al", "log g", "TiII"]]
    ['TEFF', 'FE_H', 'MG_FE', 'AL_H', 'LOGG', 'TIII_H']
    """
    raw = str(name).strip()
    bracket = re.fullmatch(r"\[\s*([A-Za-z]+)\s*/\s*([A-Za-z]+)\s*\]", raw)
    if bracket:
        key = f"{bracket.group(1)}_{bracket.group(2)}".upper()
    else:
        key = re.sub(r"[\s\-]+", "_", raw).upper()
        if key not in known_labels():  # "O_H" is [O/H]; only unknown spellings go through the aliases
            key = _ALIASES.get(key, _ALIASES.get(key.replace("_", ""), key))
    if key in _ELEMENT_BY_UPPER:
        key = f"{key}_H"
    if key == "FE_FE":
        key = "FE_H"
    if key not in known_labels():
        raise LabelError(f"unknown label {name!r}; expected one of TEFF, LOGG, FE_H, <X>_H, <X>_FE, ..."
                         f"{did_you_mean(key, known_labels())}")
    return key


def _column_names(table) -> list[str]:
    """Column names of an astropy Table, pandas DataFrame, structured array or dict."""
    if hasattr(table, "colnames"):
        return list(table.colnames)
    if hasattr(table, "columns"):
        return [str(c) for c in table.columns]
    if getattr(getattr(table, "dtype", None), "names", None):
        return list(table.dtype.names)
    return list(table.keys())


def _column(table, name: str) -> np.ndarray | None:
    """Find column *name* in a table-like object, case-insensitively, or return None."""
    for column in _column_names(table):
        try:
            if canonical_label(column) == name:
                return np.asarray(table[column], dtype=np.float64)
        except LabelError:
            continue
    return None


def label_array(table, names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Extract labels from a table as a float array with NaN for every missing value.

    Parameters
    ----------
    table : astropy Table, pandas DataFrame, dict of arrays, structured array or ndarray
        The label table. A plain 2-D array needs *names* (one per column).
    names : sequence of str, optional
        Labels to extract, in any accepted spelling; default: every recognised column.

    Returns
    -------
    values : ndarray, shape (n, n_labels)
        Float64 labels; -9999 (anything <= -9000), NaN and masked entries are NaN.
    names : list of str
        Canonical names in column order.

    Raises
    ------
    LabelError
        If a requested label is unknown or absent from the table.

    Examples
    --------
    >>> values, names = label_array({"Teff": [4800.0, -9999.0], "[Fe/H]": [-0.3, 0.1]})
    >>> names
    ['TEFF', 'FE_H']
    >>> bool(np.isnan(values[1, 0]))
    True
    """
    if isinstance(table, np.ndarray) and table.dtype.names is None:
        if names is None:
            raise LabelError("label_array: a plain array needs names= for its columns")
        values = np.atleast_2d(np.asarray(table, dtype=np.float64))
        canonical = [canonical_label(n) for n in names]
        if values.shape[1] != len(canonical):
            raise LabelError(f"label_array: {len(canonical)} names for {values.shape[1]} columns")
        return _missing_to_nan(values), canonical
    if names is None:
        canonical = []
        for column in _column_names(table):
            try:
                canonical.append(canonical_label(column))
            except LabelError:
                continue
        if not canonical:
            raise LabelError("label_array: the table has no recognised label column")
    else:
        canonical = [canonical_label(n) for n in names]
    arrays = []
    for name in canonical:
        column = _column(table, name)
        if column is None:
            raise LabelError(f"label table has no column for {name!r}")
        if hasattr(column, "mask"):
            column = np.ma.filled(column, np.nan)
        arrays.append(column)
    return _missing_to_nan(np.column_stack(arrays)), canonical


def _missing_to_nan(values: np.ndarray) -> np.ndarray:
    values = np.array(values, dtype=np.float64)
    values[~np.isfinite(values) | (values <= -9000)] = np.nan
    return values


def missing_fraction(values: np.ndarray, names: Iterable[str]) -> dict[str, float]:
    """Fraction of missing (NaN) values per label.

    Examples
    --------
    >>> missing_fraction(np.array([[1.0, np.nan], [2.0, np.nan]]), ["TEFF", "LOGG"])
    {'TEFF': 0.0, 'LOGG': 1.0}
    """
    return {name: float(np.mean(np.isnan(values[:, i]))) for i, name in enumerate(names)}
