"""The H-band line list: real lines per ASPCAP element, CO bands, Brackett and helium series.

One table serves the mock APOGEE physics (:mod:`labelexplorer.mock.apogee_physics`) and
the element windows (:mod:`labelexplorer.preprocess.windows`). It has two parts:

- lines whose wavelengths are measurements — atomic lines, OH and CN — stored in
  ``labelexplorer/data/apogee_linelist.csv`` (vacuum Angstrom; the provenance of every
  group is in ``apogee_linelist.md`` beside it);
- series whose wavelengths follow from formulas, computed here: the CO Δv = 3 bands of
  ¹²C¹⁶O and ¹³C¹⁶O from Dunham coefficients (:func:`co_lines`), the hydrogen Brackett
  series from the Rydberg formula (:func:`brackett_lines`) and He I / He II lines from
  NIST level energies and the Rydberg formula (:func:`helium_lines`).

Columns (:data:`COLUMNS`): ``element`` (ASPCAP spelling, or ``CO``/``OH``/``CN``, ``H``,
``He``), ``wavelength`` (vacuum Å), ``log_gf``, ``excitation`` (lower-level energy, eV),
``kind`` (``atomic``, ``molecular``, ``hydrogen``, ``helium``), ``abundance_element`` (whose
abundance sets the depth: C for CO, O for OH, N for CN), ``species`` (``Fe I``, ``Ti II``,
``12CO``, ``13CO``, ``OH``, ``CN``, ``H I``, ``He I``, ``He II``), ``ion`` (1 neutral,
2 singly ionised, 0 molecule), ``label`` (transition) and ``source`` (a key explained in
the provenance file).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from ..exceptions import FileFormatError, UnknownNameError, did_you_mean

__all__ = ["COLUMNS", "LINELIST_ELEMENTS", "load_linelist", "lines_for_element", "co_lines", "brackett_lines",
           "helium_lines"]

COLUMNS = ("element", "wavelength", "log_gf", "excitation", "kind", "abundance_element", "species", "ion",
           "label", "source")

LINELIST_ELEMENTS = ("C", "CI", "N", "O", "Na", "Mg", "Al", "Si", "P", "S", "K", "Ca", "Ti", "TiII", "V", "Cr",
                     "Mn", "Fe", "Co", "Ni", "Cu", "Ge", "Ce", "Rb", "Y", "Nd", "CO", "OH", "CN", "H", "He")
"""Names :func:`lines_for_element` accepts: the ASPCAP elements, the molecules, H and He."""

_CSV_NAME = "apogee_linelist.csv"
_CM_TO_EV = 1.239841984e-4  # h c in eV cm
_WAVELENGTH_RANGE = (15050.0, 17050.0)  # the APOGEE grid (15101-16999 Å) and a margin for wings

# ---------------------------------------------------------------------------------------------- CO
# Dunham coefficients Y_kl (cm^-1) of 12C16O X 1Sigma+: literature values (Y10...Y02 as in the
# laboratory analyses of the CO bands) with effective higher-order terms fitted to the 361 CO
# Delta-v = 3 line positions identified in the Arcturus atlas (see apogee_linelist.md); they
# reproduce those positions to 0.026 Å rms (0.12 Å at most, up to J = 83).
_CO_DUNHAM = {
    (1, 0): 2169.81358, (2, 0): -13.28831, (3, 0): 1.0511e-2, (4, 0): 5.74e-5,
    (0, 1): 1.93128087, (1, 1): -1.750441e-2, (2, 1): 6.584424e-7, (3, 1): 8.913235e-8,
    (0, 2): -6.12147e-6, (1, 2): 7.096888e-10, (2, 2): -3.550181e-10,
    (0, 3): 5.524218e-12, (1, 3): 3.465851e-14,
}
# Reduced masses (amu) of the isotopologues: Y_kl scales as (mu_ref / mu)^(k/2 + l).
_CO_REDUCED_MASS = {"12CO": 12.0 * 15.9949146 / (12.0 + 15.9949146),
                    "13CO": 13.0033548 * 15.9949146 / (13.0033548 + 15.9949146)}
# Absorption oscillator strength of the 3-0 band (a band strength of ~5e-22 cm/molecule,
# S = 8.85e-13 cm x f); hot bands scale as the harmonic overtone matrix elements,
# f(v -> v+3) = f30 (v+1)(v+2)(v+3)/6.
_CO_F30 = 6.0e-10
_CO_LOWER_V = {"12CO": range(0, 7), "13CO": range(0, 4)}
_CO_MAX_J = 100

# ---------------------------------------------------------------------------------------------- H, He
_RYDBERG_H = 109677.5834  # cm^-1, hydrogen (reduced mass)
_RYDBERG_HE = 109722.2753  # cm^-1, helium-4 (reduced mass), for He I Rydberg levels and He II
_HE_I_LIMIT = 198310.669  # cm^-1, He I ionisation energy (NIST)
# He I n = 3 and n = 4 levels (NIST, cm^-1; J-averaged) and the quantum defects of their
# series (singlet/triplet S, P, D, F), used to place the Rydberg members n >= 5.
_HE_I_LEVELS = {"3 1S": 184864.829, "3 3P": 185564.6, "4 3S": 190298.113, "4 1S": 190940.226,
                "4 3P": 191217.1, "4 1P": 191492.711, "4 3D": 191444.482, "4 1D": 191446.453,
                "4 3F": 191451.9, "4 1F": 191452.08}
_HE_I_DEFECT = {"1S": 0.1397, "3S": 0.2965, "1P": -0.0121, "3P": 0.0683, "1D": 0.0021, "3D": 0.0029,
                "1F": 0.0004, "3F": 0.0004, "1G": 0.0, "3G": 0.0}
_L_LETTER = "SPDFG"


@lru_cache(maxsize=1)
def _stored_lines() -> pd.DataFrame:
    """The measured lines of the package CSV (read once)."""
    path = resources.files("labelexplorer") / "data" / _CSV_NAME
    try:
        with resources.as_file(path) as csv_path:
            table = pd.read_csv(csv_path, comment="#")
    except (OSError, pd.errors.ParserError) as exc:
        raise FileFormatError(f"{_CSV_NAME}: the packaged line list is unreadable ({exc})") from exc
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise FileFormatError(f"{_CSV_NAME}: expected columns {list(COLUMNS)}; missing {missing}")
    return table[list(COLUMNS)]


@lru_cache(maxsize=1)
def _full_linelist() -> pd.DataFrame:
    table = pd.concat([_stored_lines(), co_lines(), brackett_lines(), helium_lines()], ignore_index=True)
    table = table.sort_values("wavelength", kind="stable").reset_index(drop=True)
    return table.astype({"wavelength": float, "log_gf": float, "excitation": float, "ion": int})


def load_linelist() -> pd.DataFrame:
    """The full H-band line list, sorted by vacuum wavelength.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`; a fresh copy on every call.

    Examples
    --------
    >>> lines = load_linelist()
    >>> list(lines.columns[:5])
    ['element', 'wavelength', 'log_gf', 'excitation', 'kind']
    >>> sorted(lines["kind"].unique())
    ['atomic', 'helium', 'hydrogen', 'molecular']
    >>> mg = lines[(lines["species"] == "Mg I") & lines["wavelength"].between(15765, 15775)]
    >>> [round(w, 1) for w in mg["wavelength"]]  # the strong Mg I line at 15765.8 Å (air)
    [15770.1]
    """
    return _full_linelist().copy()


def lines_for_element(element: str) -> pd.DataFrame:
    """The lines whose depth an element's abundance sets.

    Parameters
    ----------
    element : str
        ASPCAP spelling (``"Mg"``, ``"TiII"``, ``"CI"``...; case-insensitive), a molecule
        (``"CO"``, ``"OH"``, ``"CN"``), ``"H"`` or ``"He"``. ``"C"`` returns the CO lines,
        ``"N"`` the CN lines and ``"O"`` the OH lines, through ``abundance_element``.

    Raises
    ------
    UnknownNameError
        If *element* is not one of :data:`LINELIST_ELEMENTS`.

    Examples
    --------
    >>> sorted(lines_for_element("al")["species"].unique())
    ['Al I']
    >>> set(lines_for_element("C")["element"]) == {"CO"}
    True
    >>> len(lines_for_element("H")) >= 11  # Br11 ... Br21 fall on the grid, and more beyond
    True
    """
    key = {name.upper(): name for name in LINELIST_ELEMENTS}.get(str(element).strip().upper())
    if key is None:
        raise UnknownNameError(f"element: unknown line-list element {element!r}; expected one of "
                               f"{list(LINELIST_ELEMENTS)}{did_you_mean(str(element), LINELIST_ELEMENTS)}")
    lines = _full_linelist()
    chosen = (lines["element"] == key) | (lines["abundance_element"] == key)
    return lines[chosen].reset_index(drop=True)


def _table(wavelength, log_gf, excitation, *, element, kind, abundance_element, species, ion, label,
           source) -> pd.DataFrame:
    wavelength = np.asarray(wavelength, dtype=float)
    keep = (wavelength > _WAVELENGTH_RANGE[0]) & (wavelength < _WAVELENGTH_RANGE[1])
    n = int(keep.sum())

    def column(value):
        return np.asarray(value)[keep] if np.ndim(value) else [value] * n

    return pd.DataFrame({"element": column(element), "wavelength": wavelength[keep],
                         "log_gf": column(log_gf), "excitation": column(excitation), "kind": column(kind),
                         "abundance_element": column(abundance_element), "species": column(species),
                         "ion": column(ion), "label": column(label), "source": column(source)})


def _co_term(v: np.ndarray, j: np.ndarray, isotopologue: str) -> np.ndarray:
    """Rovibrational term value (cm^-1) of CO level (v, J) from the Dunham expansion."""
    ratio = _CO_REDUCED_MASS["12CO"] / _CO_REDUCED_MASS[isotopologue]
    x, k = v + 0.5, j * (j + 1.0)
    return sum(c * ratio ** (a / 2 + b) * x ** a * k ** b for (a, b), c in _CO_DUNHAM.items())


def co_lines() -> pd.DataFrame:
    """¹²CO and ¹³CO second-overtone (Δv = 3) lines from the Dunham expansion.

    P and R branches of the bands v'' -> v''+3 (v'' = 0–6 for ¹²CO, 0–3 for ¹³CO), J'' up to
    100; ``log_gf`` = log(f_band × Hönl–London factor) (R: J''+1, P: J''), ``excitation`` =
    energy of the lower level above v = 0, J = 0.

    Examples
    --------
    >>> co = co_lines()
    >>> heads = co[co["label"].str.startswith("12CO 3-0 R")]["wavelength"]
    >>> round(float(heads.min()), 1)  # the 3-0 band head (15577.4 Å in air)
    15581.6
    >>> sorted(co["species"].unique())
    ['12CO', '13CO']
    """
    tables = []
    j_lower = np.arange(_CO_MAX_J + 1, dtype=float)
    for isotopologue, lower_v in _CO_LOWER_V.items():
        ground = _co_term(np.array(0.0), np.array(0.0), isotopologue)
        for v in lower_v:
            f_band = _CO_F30 * (v + 1) * (v + 2) * (v + 3) / 6.0
            lower = _co_term(np.full_like(j_lower, v), j_lower, isotopologue)
            for branch, j_upper, honl_london in (("R", j_lower + 1, j_lower + 1), ("P", j_lower - 1, j_lower)):
                valid = j_upper >= 0
                upper = _co_term(np.full_like(j_lower, v + 3), j_upper, isotopologue)
                labels = [f"{isotopologue} {v + 3}-{v} {branch}{int(j)}" for j in j_lower[valid]]
                with np.errstate(divide="ignore"):
                    log_gf = np.log10(f_band * honl_london[valid])
                tables.append(_table(1e8 / (upper - lower)[valid], log_gf, (lower - ground)[valid] * _CM_TO_EV,
                                     element="CO", kind="molecular", abundance_element="C",
                                     species=isotopologue, ion=0, label=labels, source="dunham-co"))
    table = pd.concat(tables, ignore_index=True)
    return table[np.isfinite(table["log_gf"])].reset_index(drop=True)


def _hydrogenic_f(n_lower: int, n_upper: np.ndarray) -> np.ndarray:
    """Absorption oscillator strength n_lower -> n_upper of a hydrogenic ion.

    Kramers' semi-classical value times a bound-bound Gaunt factor 0.945 - 0.48/n_upper, which
    matches the exact Brackett values (e.g. Br-gamma 0.0655, Br11 0.0082) to about 1 %.
    """
    n_upper = np.asarray(n_upper, dtype=float)
    kramers = (32.0 / (3.0 * np.pi * np.sqrt(3.0)) / (n_lower ** 5 * n_upper ** 3)
               / (1.0 / n_lower ** 2 - 1.0 / n_upper ** 2) ** 3)
    return kramers * (0.945 - 0.48 / n_upper)


def _hydrogenic_level(n: np.ndarray, charge: int, rydberg: float) -> np.ndarray:
    """Binding energy (cm^-1) of level n of a hydrogenic ion: Bohr term with the Dirac fine-structure
    shift averaged over the level's 2n² states, (α Z / n)² ((2n − 1)/n − 3/4)."""
    n = np.asarray(n, dtype=float)
    alpha_z = 7.2973525693e-3 * charge
    return charge ** 2 * rydberg / n ** 2 * (1.0 + (alpha_z / n) ** 2 * ((2.0 * n - 1.0) / n - 0.75))


def brackett_lines(n_upper=range(11, 31)) -> pd.DataFrame:
    """Hydrogen Brackett lines (n = 4 -> n_upper) at their vacuum wavelengths (Rydberg formula with
    the fine-structure centroid shift; Br11 at 16811.12 Å as in the APOGEE line list).

    Br11 … Br21 fall on the APOGEE grid; higher members (up to the series limit at
    14584 Å) are kept when their wavelength is above 15050 Å so that their wings reach it.

    Examples
    --------
    >>> br = brackett_lines()
    >>> [round(w, 1) for w in br["wavelength"][:3]]  # Br11, Br12, Br13
    [16811.1, 16411.7, 16113.7]
    """
    n = np.asarray(list(n_upper), dtype=float)
    wavelength = 1e8 / (_hydrogenic_level(4, 1, _RYDBERG_H) - _hydrogenic_level(n, 1, _RYDBERG_H))
    log_gf = np.log10(2.0 * 16.0 * _hydrogenic_f(4, n))
    excitation = 13.598434 * (1.0 - 1.0 / 16.0)
    labels = [f"Br{int(k)}" for k in n]
    return _table(wavelength, log_gf, excitation, element="H", kind="hydrogen", abundance_element="H",
                  species="H I", ion=1, label=labels, source="rydberg-h")


def _he_i_level(n: np.ndarray, term: str) -> np.ndarray:
    """Energy (cm^-1) of the He I level n ^{2S+1}L from its quantum defect."""
    return _HE_I_LIMIT - _RYDBERG_HE / (n - _HE_I_DEFECT[term]) ** 2


def helium_lines() -> pd.DataFrame:
    """He I and He II lines of hot stars near and on the H band.

    He I: the two bright near-infrared lines 4¹P–3¹S (15088 Å vacuum, "15084 Å" in air)
    and 4³D–3³P (17007 Å vacuum), both just off the APOGEE grid, and the Rydberg
    series 4L -> n(L+1) (n = 9–25) whose members fall on it; He II: n = 7 -> 12 (16923 Å)
    and 7 -> 13 (15723 Å). Oscillator strengths are hydrogenic (:func:`_hydrogenic_f`).

    Examples
    --------
    >>> he = helium_lines()
    >>> heii = he[he["species"] == "He II"]
    >>> [round(w, 1) for w in heii["wavelength"]]
    [15723.3, 16923.0]
    """
    tables = []
    ev = _CM_TO_EV
    # the two bright n = 4 -> 3 lines (wavelength from NIST levels; f from the hydrogenic 3 -> 4 value)
    for upper, lower, g_lower in (("4 1P", "3 1S", 1.0), ("4 3D", "3 3P", 9.0)):
        nu = _HE_I_LEVELS[upper] - _HE_I_LEVELS[lower]
        f = float(_hydrogenic_f(3, np.array([4.0]))[0])
        tables.append(_table([1e8 / nu], [np.log10(g_lower * f)], _HE_I_LEVELS[lower] * ev, element="He",
                             kind="helium", abundance_element="He", species="He I", ion=1,
                             label=[f"He I {lower}-{upper}"], source="nist-he"))
    n = np.arange(9, 26, dtype=float)
    for lower in ("4 3S", "4 1S", "4 3P", "4 1P", "4 3D", "4 1D", "4 3F", "4 1F"):
        spin, letter = lower.split()[1][0], lower.split()[1][1]
        g_lower = (2 * _L_LETTER.index(letter) + 1) * int(spin)
        # l -> l+1 carries most of a hydrogenic n = 4 -> n oscillator strength; l -> l-1 is left out
        term = f"{spin}{_L_LETTER[_L_LETTER.index(letter) + 1]}"
        nu = _he_i_level(n, term) - _HE_I_LEVELS[lower]
        log_gf = np.log10(g_lower * _hydrogenic_f(4, n))
        labels = [f"He I {lower}-{int(k)} {term}" for k in n]
        tables.append(_table(1e8 / nu, log_gf, _HE_I_LEVELS[lower] * ev, element="He", kind="helium",
                             abundance_element="He", species="He I", ion=1, label=labels, source="nist-he"))
    # He II (hydrogenic, Z = 2): n = 7 -> n_upper; excitation above the He II ground state
    n = np.array([12.0, 13.0])
    wavelength = 1e8 / (_hydrogenic_level(7, 2, _RYDBERG_HE) - _hydrogenic_level(n, 2, _RYDBERG_HE))
    tables.append(_table(wavelength, np.log10(2.0 * 49.0 * _hydrogenic_f(7, n)), 54.417760 * (1 - 1 / 49.0),
                         element="He", kind="helium", abundance_element="He", species="He II", ion=2,
                         label=[f"He II 7-{int(k)}" for k in n], source="rydberg-he"))
    return pd.concat(tables, ignore_index=True).sort_values("wavelength").reset_index(drop=True)
