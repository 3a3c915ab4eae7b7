"""The mock star population: true labels, pipeline-like labels, photometry and targeting.

A population is generated in blocks of :data:`BLOCK_SIZE` stars, each from its own
random stream ``numpy.random.default_rng([seed, POPULATION_STREAM, block])``, so star
*i* of a seed is the same star in a universe of any size: ``population(300)`` equals
the first 300 rows of ``population(100_000)`` (only the spectrum selection, which
ranks the whole population, depends on the size).

What is in it (numbers read from the real catalogs in ``shared/data/catalogs``: the
DR12 label table, the allStar rows, OCCAM DR16 and the globular-cluster giants of
Mészáros et al.):

- classes ``red_giant``, ``red_clump``, ``dwarf`` (FGK main sequence and subgiants),
  ``m_dwarf``, ``yso`` (pre-main-sequence stars of a young embedded region, 3000–5000 K
  with logg 3–4.3, inside the APOGEE Net YSO polygon) and ``hot`` (A/B/O stars,
  7000–50,000 K); giants dominate, as in APOGEE;
- field chemistry from three components: a low-α thin disc (``[α/Fe] ≈ -0.12 [Fe/H]``),
  a high-α thick disc with a plateau ``[α/Fe] = 0.28`` below the knee at
  ``[Fe/H] = -0.6`` and a decline above it, and a small halo, 70 % of it accreted
  (Gaia-Enceladus-like: ``[α/Fe] ≈ 0.15``, ``[Al/Fe] ≈ -0.25``) and the rest α-rich
  like the thick disc; about 3 % of the metal-poor field giants are globular-cluster
  escapees with the second-generation pattern (N- and Al-rich, Mg- and O-poor; Schiavon
  et al. 2017). These come from their own random stream (``SUBSTRUCTURE_STREAM``). The
  real DR12 labels of stars below ``[Fe/H] = -1`` have ``[Al/Fe]`` percentiles 2/16/50/84/98
  of -0.39/-0.25/-0.13/+0.12/+0.64 and little Al–Mg correlation (r = 0.19); the mock's
  metal-poor field giants give -0.46/-0.31/-0.13/+0.27/+0.58 and r = 0.03 (a network
  trained on the disc's Al–Mg correlation alone would never see such stars);
- ``[X/Fe]`` for every ASPCAP element from ``offset + a_X [α/Fe] + b_X [Fe/H]`` plus an
  intrinsic scatter (:data:`ELEMENT_TRENDS`: α elements follow α, Mn and Cu rise with
  Fe, s-process elements anti-correlate with α), and the first dredge-up on the giant
  branch (C down, N up, more for more massive giants);
- ``[M/H] = [Fe/H] + log10(0.638·10^[α/Fe] + 0.362)`` (Salaris et al. 1993) and
  ``[α/M] = [α/Fe] - ([M/H] - [Fe/H])``;
- clusters: M67-like (``[Fe/H] = 0.00``, 0.86 kpc) and NGC 6819-like (``+0.09``,
  2.4 kpc) open clusters with members along an isochrone-like sequence (dwarfs,
  turn-off, subgiants, giants, clump) and an intrinsic spread of 0.01 dex in every
  element (birth composition; the dredge-up shift is the same for all giants of a
  cluster, whose masses are equal); an M13-like globular cluster (``[Fe/H] = -1.55``,
  7.1 kpc, giants only) with a second-generation fraction ``p`` that drives the Mg–Al
  anticorrelation (Al spread ≈ 0.5 dex), N–C and Na–O;
- photometry from ``L = M (Teff/5772)^4 / 10^(logg - 4.438)``, bolometric corrections
  and colours interpolated in Teff along the dwarf sequence (values after Pecaut &
  Mamajek 2013, with a small J-H/H-K reddening for cool giants), ``G - V`` from the
  Gaia EDR3 polynomial of Riello et al. (2021), extinction ``A_λ/A_K`` = J 2.5, H 1.55,
  K 1, G 7.4, BP 9.5, RP 5.5; distances follow from a drawn apparent H magnitude
  (APOGEE selects 7 < H < 13.8); parallaxes with Gaia-like errors growing with G;
- heliocentric radial velocities ``VHELIO_AVG`` (own stream ``KINEMATICS_STREAM``): field
  stars see the reflex of the Sun's motion relative to their component (thin disc, thick
  disc lagging 40 km/s, a non-rotating halo) plus its dispersion (30/60/120 km/s); cluster
  members their cluster's systemic velocity (M67 +33.6, NGC 6819 +2.5, M13 -244.5 km/s)
  and internal dispersion. The spectra are in the rest frame, so M13's sky lines fall
  elsewhere than the field's (one of them on its Al I 16768 Å line, as in the paper's M13);
- SNR ``∝ 10^(-0.2 (H - 11.5)) · sqrt(NVISITS)`` with a log-normal scatter (median
  ~100, long tail to >1000); 1–3 visits for most stars;
- pipeline-like labels: truth plus Gaussian errors ``σ = floor + slope · 100/SNR``,
  larger for dwarfs, YSOs and hot stars, and the missing-value marker -9999 where the
  real pipeline fails (abundances of hot stars, Teff/logg above 20,000 K, logg of some
  M dwarfs, weak-line elements in metal-poor or cool stars, everything at SNR < 15).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..exceptions import LabelExplorerError
from ..labels import ASPCAP_ELEMENTS, MISSING

__all__ = [
    "BLOCK_SIZE",
    "CLUSTERS",
    "ELEMENT_TRENDS",
    "STAR_CLASSES",
    "X_FE_LABELS",
    "population",
    "LABEL_NAMES",
    "physics_labels",
    "true_label_table",
]

BLOCK_SIZE = 1000
"""Stars per independently seeded block of the population."""

POPULATION_STREAM = 1
"""Second entry of every population block's seed sequence (spectra use ``[seed, index]``)."""

SUBSTRUCTURE_STREAM = 2
"""Second entry of the seed sequence of a block's halo substructure (accreted stars, escapees)."""

KINEMATICS_STREAM = 3
"""Second entry of the seed sequence of a block's heliocentric radial velocities."""

# Line-of-sight velocities of the field: the Sun's motion relative to each component's mean
# (peculiar motion U, V, W of Schönrich et al. 2010 plus the component's rotation lag behind the
# Sun's circular velocity of ~233 km/s) and the component's velocity dispersion (km/s)
_SOLAR_MOTION = np.array([11.1, 12.24, 7.25])
_ROTATION_LAG = {"thin_disc": 0.0, "thick_disc": 40.0, "halo": 233.0, "accreted_halo": 233.0}
_VELOCITY_DISPERSION = {"thin_disc": 30.0, "thick_disc": 60.0, "halo": 120.0, "accreted_halo": 150.0}

ACCRETED_FRACTION = 0.7
"""Fraction of the field halo that was accreted (Gaia-Enceladus-like chemistry)."""

ESCAPEE_FRACTION = 0.03
"""Fraction of metal-poor ([Fe/H] < -0.8) field giants born in globular clusters (second generation)."""

STAR_CLASSES = ("red_giant", "red_clump", "dwarf", "m_dwarf", "yso", "hot")

X_FE_ELEMENTS = tuple(e for e in ASPCAP_ELEMENTS if e != "Fe")
X_FE_LABELS = tuple(f"{e.upper()}_FE" for e in X_FE_ELEMENTS)
"""The 25 ``[X/Fe]`` columns (Fe itself is ``FE_H``)."""

LABEL_NAMES = ("TEFF", "LOGG", "FE_H", "M_H", "ALPHA_M", *X_FE_LABELS)
"""The label columns of a population (pipeline-like; ``TRUE_<name>`` holds the truth)."""

#: element -> (offset, coefficient of [α/Fe], coefficient of [Fe/H], intrinsic scatter)
ELEMENT_TRENDS = {
    "C": (0.00, 0.30, 0.00, 0.04), "CI": (0.02, 0.30, 0.00, 0.05), "N": (0.00, 0.00, 0.00, 0.05),
    "O": (0.00, 0.90, 0.00, 0.03), "Na": (0.02, 0.20, 0.05, 0.06), "Mg": (0.00, 1.00, 0.00, 0.02),
    "Al": (0.03, 0.70, 0.00, 0.07), "Si": (0.00, 0.75, 0.00, 0.02), "P": (0.05, 0.60, 0.00, 0.08),
    "S": (0.00, 0.85, 0.00, 0.04), "K": (0.00, 0.50, 0.00, 0.04), "Ca": (0.00, 0.65, 0.00, 0.02),
    "Ti": (0.00, 0.80, 0.00, 0.03), "TiII": (0.03, 0.70, 0.00, 0.05), "V": (0.00, 0.30, 0.00, 0.05),
    "Cr": (0.00, 0.00, 0.00, 0.02), "Mn": (0.00, -0.40, 0.20, 0.03), "Co": (0.00, 0.30, 0.00, 0.04),
    "Ni": (0.00, 0.15, 0.05, 0.02), "Cu": (0.00, 0.20, 0.25, 0.06), "Ge": (0.00, 0.00, 0.00, 0.08),
    "Ce": (0.02, -0.30, -0.10, 0.07), "Rb": (0.00, 0.00, 0.00, 0.08), "Y": (0.00, -0.30, -0.10, 0.07),
    "Nd": (0.05, 0.30, 0.00, 0.07),
}

#: element -> (error floor, error slope at SNR 100) of the pipeline-like [X/Fe]
_ELEMENT_ERRORS = {
    "C": (0.03, 0.03), "CI": (0.05, 0.05), "N": (0.04, 0.05), "O": (0.03, 0.03), "Na": (0.08, 0.10),
    "Mg": (0.02, 0.02), "Al": (0.03, 0.03), "Si": (0.02, 0.02), "P": (0.10, 0.12), "S": (0.05, 0.05),
    "K": (0.04, 0.05), "Ca": (0.02, 0.03), "Ti": (0.03, 0.04), "TiII": (0.07, 0.08), "V": (0.06, 0.07),
    "Cr": (0.04, 0.04), "Mn": (0.03, 0.03), "Co": (0.06, 0.07), "Ni": (0.02, 0.03), "Cu": (0.08, 0.10),
    "Ge": (0.10, 0.12), "Ce": (0.08, 0.10), "Rb": (0.10, 0.12), "Y": (0.10, 0.12), "Nd": (0.10, 0.12),
}
_WEAK_LINE_ELEMENTS = ("CI", "P", "S", "TiII", "V", "Co", "Cu", "Ge", "Ce", "Rb", "Y", "Nd")
_NEUTRON_CAPTURE = ("Ge", "Rb", "Y", "Nd")

# Field class fractions; the rest of each block is cluster members (see CLUSTERS).
_FIELD_FRACTIONS = {"red_giant": 0.42, "red_clump": 0.14, "dwarf": 0.20, "m_dwarf": 0.06,
                    "yso": 0.04, "hot": 0.04}

#: name -> cluster facts used by the generator
CLUSTERS = {
    "M67": dict(fraction=0.04, fe_h=0.00, alpha=0.0, distance_pc=860.0, ak=0.013, mass=1.35,
                ra=132.846, dec=11.814, radius_deg=0.5, kind="open", vhelio=33.6, sigma_v=0.8,
                # (Teff, logg, relative number density) along an isochrone-like sequence, MS to RGB tip
                track=((4900, 4.60, 1.0), (5400, 4.50, 1.0), (5800, 4.35, 1.0), (6250, 4.05, 0.6),
                       (5900, 3.85, 0.3), (5100, 3.65, 0.3), (4900, 3.30, 0.4), (4600, 2.60, 0.4),
                       (4300, 1.80, 0.2), (4050, 1.20, 0.1)),
                clump=(4750.0, 2.45, 0.12)),
    "NGC6819": dict(fraction=0.03, fe_h=0.09, alpha=0.0, distance_pc=2400.0, ak=0.055, mass=1.60,
                    ra=295.327, dec=40.190, radius_deg=0.2, kind="open", vhelio=2.5, sigma_v=1.0,
                    track=((6000, 4.30, 0.3), (6400, 4.00, 0.4), (6100, 3.75, 0.3),
                           (5200, 3.55, 0.3), (4950, 3.20, 0.5), (4650, 2.60, 0.6), (4350, 1.90, 0.3),
                           (4050, 1.30, 0.1)),
                    clump=(4800.0, 2.50, 0.25)),
    "M13": dict(fraction=0.03, fe_h=-1.55, alpha=0.30, distance_pc=7100.0, ak=0.007, mass=0.80,
                ra=250.423, dec=36.461, radius_deg=0.25, kind="globular", vhelio=-244.5, sigma_v=7.1,
                track=((5000, 2.80, 0.6), (4750, 2.20, 1.0), (4500, 1.60, 1.0), (4300, 1.10, 0.6),
                       (4100, 0.70, 0.3)),
                clump=None),
}
_YOUNG_REGION = dict(name="IC348", ra=56.13, dec=32.16, radius_deg=0.3, distance_pc=320.0, vhelio=15.5, sigma_v=0.7)
_SPECIAL_FIELDS = {"M67": "M67", "NGC6819": "N6819", "M13": "M13", "yso": "IC348"}

# Dwarf-sequence colours and bolometric corrections against Teff (after Pecaut & Mamajek 2013):
# Teff, BC_V, BP-RP, V-Ks, J-H, H-Ks
_COLOUR_TABLE = np.array([
    (2600, -4.30, 4.40, 7.40, 0.65, 0.38), (2850, -3.30, 3.80, 6.50, 0.60, 0.33),
    (3210, -2.29, 2.85, 5.00, 0.57, 0.27), (3560, -1.63, 2.25, 4.20, 0.60, 0.21),
    (3850, -1.19, 1.84, 3.65, 0.62, 0.18), (4140, -0.84, 1.58, 3.23, 0.60, 0.15),
    (4600, -0.45, 1.28, 2.60, 0.54, 0.11), (5280, -0.19, 0.98, 1.89, 0.42, 0.08),
    (5770, -0.09, 0.82, 1.52, 0.33, 0.06), (5930, -0.07, 0.76, 1.41, 0.30, 0.05),
    (6510, -0.02, 0.59, 1.10, 0.22, 0.04), (7220, 0.01, 0.40, 0.72, 0.14, 0.03),
    (7800, 0.00, 0.30, 0.55, 0.10, 0.03), (8600, -0.03, 0.13, 0.26, 0.05, 0.02),
    (9700, -0.17, 0.00, 0.00, 0.00, 0.00), (12500, -0.75, -0.11, -0.28, -0.04, -0.01),
    (15700, -1.24, -0.18, -0.43, -0.06, -0.02), (20600, -1.96, -0.26, -0.60, -0.08, -0.03),
    (31400, -3.00, -0.37, -0.86, -0.12, -0.05), (41400, -3.85, -0.43, -0.96, -0.14, -0.06),
    (50000, -4.40, -0.45, -1.00, -0.15, -0.07),
])
# A_lambda / A_K (Cardelli et al. 1989 with R_V = 3.1; Gaia bands from Casagrande & VandenBerg 2018)
_EXTINCTION = {"J": 2.50, "H": 1.55, "K": 1.00, "G": 7.40, "BP": 9.50, "RP": 5.50}
_H_LIMITS = (7.0, 13.8)
_DISTANCE_LIMITS_PC = (10.0, 25000.0)


# ---------------------------------------------------------------------------------- public API
def population(n_stars: int, seed: int = 0, *, n_spectra: int = 0, n_lamost: int = 0) -> pd.DataFrame:
    """A deterministic mock star population with true and pipeline-like labels.

    Parameters
    ----------
    n_stars : int
        Number of stars (rows).
    seed : int
        Seed of the universe; row *i* depends only on ``(seed, i)``.
    n_spectra : int
        How many stars get APOGEE spectra (column ``HAS_SPECTRUM``); cluster members and
        young stars are targeted preferentially, as in the real survey.
    n_lamost : int
        How many stars get LAMOST spectra (``HAS_LAMOST``): stars with 3800–8000 K,
        preferring those that also have APOGEE spectra, so the two surveys overlap.

    Returns
    -------
    pandas.DataFrame
        One row per star: ``MOCK_INDEX``, ``APOGEE_ID``, position and field, ``STAR_CLASS``,
        ``CLUSTER``, photometry and parallax (allStar DR17 column names), ``SNR``,
        ``NVISITS``, pipeline-like labels with ``*_ERR`` (``-9999`` where missing),
        flags, the true labels as ``TRUE_<label>`` and the selection columns.

    Raises
    ------
    LabelExplorerError
        If a count is negative or larger than the population allows.

    Examples
    --------
    >>> stars = population(200, seed=1, n_spectra=20)
    >>> len(stars), int(stars["HAS_SPECTRUM"].sum())
    (200, 20)
    >>> bool(stars["APOGEE_ID"].is_unique), bool(stars["APOGEE_ID"].str.match(r"2M\\d{8}[+-]\\d{7}$").all())
    (True, True)
    >>> population(200, seed=1)["TRUE_TEFF"].equals(population(1200, seed=1)["TRUE_TEFF"][:200])
    True
    """
    n_stars, n_spectra, n_lamost = _check_counts(n_stars, n_spectra, n_lamost)
    n_blocks = -(-n_stars // BLOCK_SIZE)
    blocks = [_block(seed, block) for block in range(n_blocks)]
    table = pd.concat(blocks, ignore_index=True).iloc[:n_stars].reset_index(drop=True)
    table["APOGEE_ID"] = _unique_ids(table["APOGEE_ID"].to_numpy())
    table["HAS_SPECTRUM"] = _select(table["_PRIORITY_APOGEE"].to_numpy(), n_spectra)
    lamost_priority = np.where(table["HAS_SPECTRUM"], 0.5, 1.0) * table["_PRIORITY_LAMOST"].to_numpy()
    eligible = (table["TRUE_TEFF"].between(3800.0, 8000.0) & table["LAMOST_SNRG"].notna()).to_numpy()
    if n_lamost > eligible.sum():
        raise LabelExplorerError(f"n_lamost: only {int(eligible.sum())} of {n_stars} stars have 3800-8000 K "
                                 f"for LAMOST spectra, {n_lamost} requested")
    table["HAS_LAMOST"] = _select(np.where(eligible, lamost_priority, np.inf), n_lamost)
    return table.drop(columns=["_PRIORITY_APOGEE", "_PRIORITY_LAMOST"])


def true_label_table(stars: pd.DataFrame) -> pd.DataFrame:
    """The true labels of *stars* under their canonical names (``TRUE_TEFF`` -> ``TEFF``).

    Examples
    --------
    >>> truth = true_label_table(population(5, seed=0))
    >>> list(truth.columns[:5])
    ['TEFF', 'LOGG', 'FE_H', 'M_H', 'ALPHA_M']
    """
    columns = [c for c in stars.columns if c.startswith("TRUE_") and c != "TRUE_AK"]
    truth = stars[columns].rename(columns=lambda c: c[len("TRUE_"):])
    truth.index = stars["APOGEE_ID"].to_numpy()
    return truth


def physics_labels(stars: pd.DataFrame) -> dict[str, np.ndarray]:
    """The dict of true label arrays the spectral physics modules take.

    Keys: ``TEFF, LOGG, FE_H, ALPHA_M, VMICRO, VSINI`` and every ``<X>_FE``; ALPHA_M lets
    the model atmosphere follow [α/M] as in ASPCAP, the ``<X>_FE`` set each element's lines.

    Examples
    --------
    >>> labels = physics_labels(population(3, seed=0))
    >>> sorted(labels)[:4], labels["TEFF"].shape
    (['ALPHA_M', 'AL_FE', 'CA_FE', 'CE_FE'], (3,))
    """
    names = ("TEFF", "LOGG", "FE_H", "ALPHA_M", "VMICRO", "VSINI", *X_FE_LABELS)
    return {name: stars[f"TRUE_{name}"].to_numpy(dtype=np.float64) for name in names}


# ---------------------------------------------------------------------------------- checks and selection
def _check_counts(n_stars, n_spectra, n_lamost) -> tuple[int, int, int]:
    values = {"n_stars": n_stars, "n_spectra": n_spectra, "n_lamost": n_lamost}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise LabelExplorerError(f"{name}: expected a non-negative integer, got {value!r}")
    if n_stars < 1:
        raise LabelExplorerError(f"n_stars: expected at least 1 star, got {n_stars}")
    if n_spectra > n_stars:
        raise LabelExplorerError(f"n_spectra: {n_spectra} spectra requested for only {n_stars} stars")
    return int(n_stars), int(n_spectra), int(n_lamost)


def _select(priority: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the *count* stars with the smallest priority (stable, deterministic)."""
    chosen = np.zeros(priority.size, dtype=bool)
    chosen[np.argsort(priority, kind="stable")[:count]] = True
    return chosen


# ---------------------------------------------------------------------------------- one block
def _block(seed: int, block: int) -> pd.DataFrame:
    """The BLOCK_SIZE stars of one block, generated from their own random stream."""
    rng = np.random.default_rng([int(seed), POPULATION_STREAM, block])
    n = BLOCK_SIZE
    kinds = np.array([*_FIELD_FRACTIONS, *CLUSTERS])
    weights = np.array([*_FIELD_FRACTIONS.values(), *(c["fraction"] for c in CLUSTERS.values())])
    kind = rng.choice(kinds, size=n, p=weights / weights.sum())
    cluster = np.where(np.isin(kind, list(CLUSTERS)), kind, "")
    star_class = kind.astype(object)
    stars = {"MOCK_INDEX": block * n + np.arange(n), "CLUSTER": cluster.astype(object)}

    feh, alpha, component = _field_chemistry(rng, n)
    teff, logg, mass = np.zeros(n), np.zeros(n), np.zeros(n)
    _field_parameters(rng, kind, feh, alpha, component, teff, logg, mass, star_class)
    for name, facts in CLUSTERS.items():
        members = kind == name
        _cluster_members(rng, facts, members, feh, alpha, teff, logg, mass, star_class)
        component[members] = facts["kind"] + "_cluster"
    component[kind == "yso"] = "young"
    substructure = np.random.default_rng([int(seed), SUBSTRUCTURE_STREAM, block])
    accreted = _accrete(substructure, component, alpha)
    stars.update(STAR_CLASS=star_class, POPULATION=component, MASS=mass)

    abundances = _abundances(rng, feh, alpha, logg, mass, star_class, cluster)
    _second_generation(rng, cluster == "M13", abundances)
    _halo_abundances(substructure, accreted, _escapees(substructure, component, star_class, feh), abundances)
    m_h = feh + np.log10(0.638 * 10.0 ** alpha + 0.362)
    truth = {"TEFF": teff, "LOGG": logg, "FE_H": feh, "M_H": m_h, "ALPHA_M": alpha - (m_h - feh),
             "VMICRO": _vmicro(logg, teff), "VSINI": _vsini(rng, star_class, teff)}
    truth.update(abundances)

    position = _positions(rng, kind)
    stars.update(position)
    kinematics = np.random.default_rng([int(seed), KINEMATICS_STREAM, block])
    stars["VHELIO_AVG"] = _radial_velocities(kinematics, kind, component, position["GLON"], position["GLAT"])
    photometry = _photometry(rng, kind, teff, logg, mass)
    true_ak = photometry.pop("_AK")
    stars.update(photometry)
    stars["NVISITS"] = rng.choice([1, 2, 3], size=n, p=[0.65, 0.25, 0.10])
    stars["SNR"] = _snr(rng, photometry["H"], stars["NVISITS"])
    pipeline = _pipeline_labels(rng, truth, star_class, stars["SNR"])
    stars.update(pipeline)
    stars.update(_flags(pipeline, truth, stars["SNR"]))
    stars.update({f"TRUE_{name}": value for name, value in truth.items()})
    stars["TRUE_AK"] = true_ak
    targeting = np.select([cluster != "", kind == "yso"], [0.2, 0.5], 1.0)
    stars["_PRIORITY_APOGEE"] = rng.random(n) * targeting
    stars["_PRIORITY_LAMOST"] = rng.random(n)
    stars["LAMOST_SNRG"] = _lamost_snr(rng, photometry["GAIAEDR3_PHOT_G_MEAN_MAG"])
    return pd.DataFrame(stars)


# ---------------------------------------------------------------------------------- chemistry
def _field_chemistry(rng, n):
    """[Fe/H], [α/Fe] and the component name of field stars (thin disc, thick disc, halo)."""
    component = rng.choice(np.array(["thin_disc", "thick_disc", "halo"], dtype=object), size=n,
                           p=[0.72, 0.25, 0.03])
    feh = np.select([component == "thin_disc", component == "thick_disc"],
                    [np.clip(rng.normal(-0.10, 0.22, n), -1.0, 0.5),
                     np.clip(rng.normal(-0.50, 0.25, n), -1.3, 0.3)],
                    np.clip(rng.normal(-1.40, 0.45, n), -2.5, -0.6))
    low_alpha = np.clip(-0.12 * feh, -0.05, 0.12) + rng.normal(0, 0.025, n)
    high_alpha = np.where(feh < -0.6, 0.28, 0.28 - 0.30 * (feh + 0.6)) + rng.normal(0, 0.03, n)
    halo_alpha = 0.30 + rng.normal(0, 0.05, n)
    alpha = np.select([component == "thin_disc", component == "thick_disc"], [low_alpha, high_alpha], halo_alpha)
    return feh, alpha, component


def _abundances(rng, feh, alpha, logg, mass, star_class, cluster) -> dict[str, np.ndarray]:
    """[X/Fe] of every element: Galactic trends, intrinsic scatter, dredge-up on the giant branch."""
    n = feh.size
    in_open_cluster = np.isin(cluster, [k for k, c in CLUSTERS.items() if c["kind"] == "open"])
    in_globular = np.isin(cluster, [k for k, c in CLUSTERS.items() if c["kind"] == "globular"])
    out = {}
    for element in X_FE_ELEMENTS:
        offset, a_alpha, b_feh, scatter = ELEMENT_TRENDS[element]
        # Clusters are born homogeneous: their stars share the trend value up to 0.01 dex.
        sigma = np.where(in_open_cluster | in_globular, 0.01, scatter)
        out[f"{element.upper()}_FE"] = offset + a_alpha * alpha + b_feh * feh + rng.normal(0, 1, n) * sigma
    giant = np.isin(star_class, ["red_giant", "red_clump"]) & (logg < 3.4)
    # First dredge-up: more C burnt into N for more massive (younger) giants; more in the clump.
    extra_mass = np.clip(mass - 0.8, 0.0, 2.0)
    clump = star_class == "red_clump"
    delta_c = -(0.08 + 0.12 * extra_mass + 0.05 * clump)
    delta_n = 0.15 + 0.25 * extra_mass + 0.05 * clump
    # Extra mixing high on the metal-poor giant branch (thermohaline).
    extra = np.clip((2.0 - logg) / 2.0, 0.0, 1.0) * (feh < -0.8)
    for name, shift in (("C_FE", delta_c - 0.2 * extra), ("CI_FE", delta_c - 0.2 * extra),
                        ("N_FE", delta_n + 0.3 * extra)):
        out[name] = out[name] + np.where(giant, shift, 0.0)
    return out


def _accrete(rng, component, alpha) -> np.ndarray:
    """Mark ``ACCRETED_FRACTION`` of the halo as accreted (in place) and lower its α; returns the mask.

    Gaia-Enceladus stars sit ~0.15 dex below the in-situ α plateau at [Fe/H] ≈ -1.4
    (Hayes et al. 2018; Helmi et al. 2018).
    """
    n = component.size
    accreted = (component == "halo") & (rng.random(n) < ACCRETED_FRACTION)
    alpha[accreted] = (0.15 + rng.normal(0, 0.05, n))[accreted]
    component[accreted] = "accreted_halo"
    return accreted


def _escapees(rng, component, star_class, feh) -> np.ndarray:
    """Metal-poor field giants that escaped from globular clusters (``ESCAPEE_FRACTION`` of them)."""
    metal_poor_giant = (np.isin(component, ["halo", "accreted_halo", "thick_disc"])
                        & np.isin(star_class, ["red_giant", "red_clump"]) & (feh < -0.8))
    return metal_poor_giant & (rng.random(component.size) < ESCAPEE_FRACTION)


def _halo_abundances(rng, accreted, escapees, abundances) -> None:
    """Low, uncorrelated Al in accreted stars; the second-generation pattern in escapees (in place)."""
    low_al = -0.25 + rng.normal(0, 0.10, accreted.size)
    abundances["AL_FE"][accreted] = low_al[accreted]
    _second_generation(rng, escapees, abundances, first_fraction=0.0)


def _second_generation(rng, members, abundances, first_fraction: float = 0.3) -> None:
    """Globular-cluster multiple populations: Mg–Al and Na–O anticorrelations, N–C.

    A fraction *first_fraction* of *members* keeps nearly the birth pattern (``p`` < 0.12);
    the rest is second generation (``p`` from 0.3 to 1).
    """
    n = int(members.sum())
    if not n:
        return
    first = rng.random(n) < first_fraction
    p = np.where(first, rng.uniform(0.0, 0.12, n), rng.uniform(0.3, 1.0, n))
    shifts = {"AL_FE": -0.30 + 1.45 * p, "MG_FE": -0.05 - 0.50 * p ** 2, "N_FE": 0.60 * p,
              "C_FE": -0.35 * p, "CI_FE": -0.35 * p, "O_FE": -0.50 * p, "NA_FE": 0.55 * p,
              "SI_FE": 0.15 * p}
    for name, shift in shifts.items():
        abundances[name][members] += shift + rng.normal(0, 0.04, n)


# ---------------------------------------------------------------------------------- stellar parameters
def _giant_teff(logg, feh):
    """Red giant branch Teff(logg, [Fe/H]): cooler up the branch, hotter when metal-poor."""
    return 4550.0 + 320.0 * (logg - 2.4) - 280.0 * feh


def _dwarf_logg(teff):
    """Main-sequence logg(Teff): 4.7 at 4000 K, 4.45 for the Sun, ~4.25 for F stars."""
    return 4.7 - 0.3 * np.clip((teff - 4000.0) / 2000.0, 0.0, None) ** 1.5


def _dwarf_mass(teff):
    return np.clip((teff / 5772.0) ** 1.7, 0.08, 80.0)


def _yso_upper_logg(teff):
    """Upper edge of the APOGEE Net YSO polygon, from (2200, 4.4) to (4500, 3.9)."""
    return 4.4 - 0.5 * (teff - 2200.0) / 2300.0


def _field_parameters(rng, kind, feh, alpha, component, teff, logg, mass, star_class) -> None:
    """Teff, logg and mass of field stars by class (arrays filled in place)."""
    n = kind.size
    old = component != "thin_disc"
    giant_mass = np.where(old, rng.normal(0.95, 0.08, n), np.clip(0.9 + rng.exponential(0.5, n), 0.9, 3.0))

    rgb = kind == "red_giant"
    logg[rgb] = 0.3 + 3.3 * rng.beta(2.5, 1.3, rgb.sum())
    teff[rgb] = _giant_teff(logg[rgb], feh[rgb]) + rng.normal(0, 70, rgb.sum())
    mass[rgb] = giant_mass[rgb]

    clump = kind == "red_clump"
    feh[clump] = np.maximum(feh[clump], -1.0)  # the metal-poor clump is the horizontal branch
    logg[clump] = rng.normal(2.45, 0.08, clump.sum())
    teff[clump] = 4720.0 - 350.0 * feh[clump] + rng.normal(0, 60, clump.sum())
    mass[clump] = giant_mass[clump]

    dwarf = kind == "dwarf"
    teff[dwarf] = 4000.0 + 2800.0 * rng.beta(2.2, 1.8, dwarf.sum())
    evolved = rng.random(dwarf.sum()) < 0.15
    main_sequence_logg = _dwarf_logg(teff[dwarf]) - np.abs(rng.normal(0, 0.08, dwarf.sum()))
    subgiant_teff = rng.uniform(5000.0, 6200.0, dwarf.sum())
    teff[dwarf] = np.where(evolved, subgiant_teff, teff[dwarf])
    logg[dwarf] = np.where(evolved, rng.uniform(3.5, 4.0, dwarf.sum()), main_sequence_logg)
    mass[dwarf] = np.where(evolved, rng.uniform(1.0, 1.4, dwarf.sum()), _dwarf_mass(teff[dwarf]))

    cool = kind == "m_dwarf"
    teff[cool] = rng.uniform(2800.0, 4000.0, cool.sum())
    logg[cool] = 4.7 + 0.4 * (4000.0 - teff[cool]) / 1200.0 + rng.normal(0, 0.06, cool.sum())
    mass[cool] = np.clip(0.6 - 0.5 * (4000.0 - teff[cool]) / 1200.0, 0.08, 0.6)

    young = kind == "yso"
    n_young = young.sum()
    teff[young] = np.where(rng.random(n_young) < 0.9, 3000.0 + 1600.0 * rng.beta(1.5, 2.5, n_young),
                           rng.uniform(4500.0, 5000.0, n_young))
    logg[young] = np.clip(_yso_upper_logg(teff[young]) - 0.05 - rng.exponential(0.35, n_young), 3.0, 4.3)
    mass[young] = np.clip(0.2 + 1.3 * (teff[young] - 3000.0) / 2000.0, 0.1, 2.0)
    feh[young] = rng.normal(-0.05, 0.05, n_young)
    alpha[young] = rng.normal(0.0, 0.02, n_young)

    hot = kind == "hot"
    fraction = rng.beta(1.0, 2.5, hot.sum())
    teff[hot] = 10.0 ** (np.log10(7000.0) + fraction * np.log10(50000.0 / 7000.0))
    logg[hot] = np.clip(4.3 - 0.6 * fraction + rng.normal(0, 0.1, hot.sum()), 3.4, 4.5)
    mass[hot] = _dwarf_mass(teff[hot]) ** 1.1
    feh[hot] = np.clip(feh[hot], -0.6, 0.5)


def _cluster_members(rng, facts, members, feh, alpha, teff, logg, mass, star_class) -> None:
    """Members of one cluster along its isochrone-like track (arrays filled in place)."""
    n = int(members.sum())
    if not n:
        return
    track = np.array(facts["track"], dtype=float)
    segment_weight = 0.5 * (track[:-1, 2] + track[1:, 2])
    segment = rng.choice(segment_weight.size, size=n, p=segment_weight / segment_weight.sum())
    where = rng.random(n)
    t = track[segment, 0] + where * (track[segment + 1, 0] - track[segment, 0]) + rng.normal(0, 40, n)
    g = track[segment, 1] + where * (track[segment + 1, 1] - track[segment, 1]) + rng.normal(0, 0.05, n)
    classes = np.where(g < 3.4, "red_giant", "dwarf").astype(object)
    if facts["clump"] is not None:
        clump_teff, clump_logg, clump_fraction = facts["clump"]
        in_clump = rng.random(n) < clump_fraction
        t = np.where(in_clump, clump_teff + rng.normal(0, 40, n), t)
        g = np.where(in_clump, clump_logg + rng.normal(0, 0.05, n), g)
        classes[in_clump] = "red_clump"
    teff[members], logg[members] = t, g
    giants = classes != "dwarf"
    mass[members] = np.where(giants, facts["mass"], _dwarf_mass(t))
    feh[members] = facts["fe_h"] + rng.normal(0, 0.01, n)
    alpha[members] = facts["alpha"] + rng.normal(0, 0.01, n)
    star_class[members] = classes


def _vmicro(logg, teff):
    """Microturbulence (km/s): the DR12-style logg calibration for giants, ~1 km/s for dwarfs."""
    giant_like = 2.478 - 0.325 * logg
    return np.clip(np.where(teff > 7000, 2.0, giant_like), 0.5, 3.0)


def _vsini(rng, star_class, teff):
    """Projected rotation (km/s): slow giants, some fast dwarfs, young and hot stars spin fast."""
    n = teff.size
    dwarf_like = rng.lognormal(np.log(3.0), 0.6, n)
    values = np.select([star_class == "yso", star_class == "hot", np.isin(star_class, ["red_giant", "red_clump"])],
                       [rng.lognormal(np.log(15.0), 0.6, n), rng.uniform(40.0, 250.0, n),
                        np.abs(rng.normal(0, 1.5, n))], dwarf_like)
    return np.clip(values, 0.0, 300.0)


# ---------------------------------------------------------------------------------- sky, photometry
def _field_centres(rng, n_fields: int = 8):
    """Field centres of a block (Galactic l, b), concentrated to low latitudes like APOGEE."""
    glon = rng.uniform(0.0, 360.0, n_fields)
    glat = np.clip(rng.exponential(12.0, n_fields), 0.5, 80.0) * rng.choice([-1.0, 1.0], n_fields)
    return glon, glat


# Rotation from ICRS to Galactic unit vectors (Hipparcos definition, ESA 1997, vol. 1 sect. 1.5.3).
_ICRS_TO_GALACTIC = np.array([[-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
                              [0.4941094278755837, -0.4448296299600112, 0.7469822444972189],
                              [-0.8676661490190047, -0.1980763734312015, 0.4559837761750669]])


def _rotate(lon, lat, matrix):
    """Spherical coordinates (degrees) rotated by *matrix*."""
    lon, lat = np.radians(lon), np.radians(lat)
    vectors = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    x, y, z = matrix @ vectors
    return np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))


def _positions(rng, kind):
    """RA, Dec, l, b, field, telescope and a 2MASS-style APOGEE_ID for every star."""
    n = kind.size
    glon_c, glat_c = _field_centres(rng)
    field_index = rng.integers(0, glon_c.size, n)
    radius, angle = 1.5 * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
    glat = np.clip(glat_c[field_index] + radius * np.sin(angle), -89.9, 89.9)
    glon = (glon_c[field_index] + radius * np.cos(angle) / np.cos(np.radians(glat))) % 360.0
    field = np.array([f"{int(l):03d}{int(round(b)):+03d}" for l, b in zip(glon_c, glat_c)], dtype=object)[field_index]
    ra, dec = _rotate(glon, glat, _ICRS_TO_GALACTIC.T)
    specials = {name: (facts["ra"], facts["dec"], facts["radius_deg"]) for name, facts in CLUSTERS.items()}
    specials["yso"] = (_YOUNG_REGION["ra"], _YOUNG_REGION["dec"], _YOUNG_REGION["radius_deg"])
    for name, (ra0, dec0, size) in specials.items():
        chosen = kind == name
        m = int(chosen.sum())
        r, a = size * np.sqrt(rng.random(m)), rng.uniform(0, 2 * np.pi, m)
        dec[chosen] = dec0 + r * np.sin(a)
        ra[chosen] = (ra0 + r * np.cos(a) / np.cos(np.radians(dec0))) % 360.0
        field[chosen] = _SPECIAL_FIELDS[name]
    special = np.isin(kind, list(specials))
    glon[special], glat[special] = _rotate(ra[special], dec[special], _ICRS_TO_GALACTIC)
    telescope = np.where(dec < -15.0, "lco25m", "apo25m").astype(object)
    return {"APOGEE_ID": _apogee_ids(ra, dec), "TELESCOPE": telescope, "FIELD": field,
            "RA": ra, "DEC": dec, "GLON": glon, "GLAT": glat}


def _radial_velocities(rng, kind, component, glon, glat) -> np.ndarray:
    """Heliocentric radial velocities (km/s): cluster members at their cluster's systemic velocity
    plus its internal dispersion, field stars at the reflex of the Sun's motion relative to their
    component, projected on the line of sight, plus the component's dispersion."""
    l, b = np.radians(glon), np.radians(glat)
    direction = np.stack([np.cos(b) * np.cos(l), np.cos(b) * np.sin(l), np.sin(b)], axis=1)
    lag = np.array([_ROTATION_LAG.get(c, 0.0) for c in component])
    relative = _SOLAR_MOTION + lag[:, None] * np.array([0.0, 1.0, 0.0])
    dispersion = np.array([_VELOCITY_DISPERSION.get(c, 30.0) for c in component])
    velocity = -(relative * direction).sum(axis=1) + dispersion * rng.standard_normal(kind.size)
    for name, facts in {**CLUSTERS, "yso": _YOUNG_REGION}.items():
        members = kind == name
        velocity[members] = facts["vhelio"] + facts["sigma_v"] * rng.standard_normal(int(members.sum()))
    return velocity


def _apogee_ids(ra, dec) -> np.ndarray:
    """2MASS-style designations ``2MHHMMSSss±DDMMSSs`` from RA/Dec (degrees)."""
    ra_cs = np.floor(ra / 15.0 * 3600.0 * 100.0).astype(np.int64) % (24 * 3600 * 100)
    dec_ds = np.floor(np.abs(dec) * 3600.0 * 10.0).astype(np.int64)
    sign = np.where(dec < 0, "-", "+")
    ids = [f"2M{r // 360000:02d}{r // 6000 % 60:02d}{r % 6000:04d}{s}{d // 36000:02d}{d // 600 % 60:02d}{d % 600:03d}"
           for r, s, d in zip(ra_cs, sign, dec_ds)]
    return np.array(ids, dtype=object)


def _unique_ids(ids: np.ndarray) -> np.ndarray:
    """Make designations unique in row order: a repeat gets its RA nudged by 0.01 s."""
    seen: set[str] = set()
    out = ids.copy()
    for i, name in enumerate(ids):
        while name in seen:
            ra_cs = (int(name[2:10]) + 1) % 100_000_000
            name = f"2M{ra_cs:08d}{name[10:]}"
        seen.add(name)
        out[i] = name
    return out


def _colours(teff, logg):
    """BC_V, BP-RP, V-Ks, J-H, H-Ks at *teff*; cool giants are a little redder in J-H, H-Ks."""
    columns = [np.interp(teff, _COLOUR_TABLE[:, 0], _COLOUR_TABLE[:, i]) for i in range(1, 6)]
    cool_giant = np.clip((4600.0 - teff) / 800.0, 0.0, 1.0) * (logg < 3.5)
    columns[3] = columns[3] + 0.15 * cool_giant
    columns[4] = columns[4] + 0.05 * cool_giant
    return columns


def _photometry(rng, kind, teff, logg, mass):
    """Apparent 2MASS and Gaia magnitudes, extinction, distance and parallax."""
    n = teff.size
    luminosity = mass * (teff / 5772.0) ** 4 / 10.0 ** (logg - 4.438)
    bc_v, bp_rp, v_ks, j_h, h_ks = _colours(teff, logg)
    abs_v = 4.74 - 2.5 * np.log10(luminosity) - bc_v
    abs_k = abs_v - v_ks
    absolute = {"K": abs_k, "H": abs_k + h_ks, "J": abs_k + h_ks + j_h}
    abs_g = abs_v - 0.02704 + 0.01424 * bp_rp - 0.2156 * bp_rp ** 2 + 0.01426 * bp_rp ** 3
    bp_g = 0.40 * bp_rp + 0.05 * bp_rp ** 2
    absolute.update(G=abs_g, BP=abs_g + bp_g, RP=abs_g + bp_g - bp_rp)

    giant_like = np.isin(kind, ["red_giant", "red_clump", "hot"])
    ak = np.where(giant_like, rng.lognormal(np.log(0.10), 0.9, n), rng.lognormal(np.log(0.02), 0.9, n))
    ak = np.where(kind == "yso", rng.lognormal(np.log(0.5), 0.5, n), ak)
    for name, facts in CLUSTERS.items():
        ak = np.where(kind == name, facts["ak"], ak)
    ak = np.clip(ak, 0.0, 3.0)

    apparent_h = _H_LIMITS[0] + (_H_LIMITS[1] - _H_LIMITS[0]) * rng.beta(3.0, 1.6, n)
    distance = 10.0 ** ((apparent_h - absolute["H"] - _EXTINCTION["H"] * ak) / 5.0 + 1.0)
    distance = np.clip(distance, *_DISTANCE_LIMITS_PC)
    for name, facts in CLUSTERS.items():
        distance = np.where(kind == name, facts["distance_pc"] * (1 + rng.normal(0, 0.01, n)), distance)
    distance = np.where(kind == "yso", _YOUNG_REGION["distance_pc"] * (1 + rng.normal(0, 0.03, n)), distance)

    modulus = 5.0 * np.log10(distance) - 5.0
    mags = {band: absolute[band] + modulus + _EXTINCTION[band] * ak for band in absolute}
    out = {}
    for band in ("J", "H", "K"):
        error = 0.02 + 0.02 * np.clip(mags[band] - 12.0, 0.0, None)
        out[band] = mags[band] + rng.normal(0, 1, n) * error
        out[f"{band}_ERR"] = error
    # Gaia sees nothing fainter than G = 21 (BP, RP: 22); those entries are NaN as in a cross-match.
    detected = mags["G"] < 21.0
    for band in ("G", "BP", "RP"):
        limit = 21.0 if band == "G" else 22.0
        seen = detected & (mags[band] < limit)
        out[f"GAIAEDR3_PHOT_{band}_MEAN_MAG"] = np.where(seen, mags[band] + rng.normal(0, 0.003, n), np.nan)
    parallax_error = 0.02 * 10.0 ** (0.27 * np.clip(mags["G"] - 15.0, 0.0, None))
    parallax = 1000.0 / distance + rng.normal(0, 1, n) * parallax_error
    out["GAIAEDR3_PARALLAX"] = np.where(detected, parallax, np.nan)
    out["GAIAEDR3_PARALLAX_ERROR"] = np.where(detected, parallax_error, np.nan)
    out["DISTANCE"] = distance
    out["AK_TARG"] = np.clip(ak + rng.normal(0, 0.02, n), 0.0, None)
    out["_AK"] = ak
    return out


def _snr(rng, h_mag, nvisits):
    """Combined S/N: brighter and more often visited stars are better measured."""
    snr = 100.0 * 10.0 ** (-0.2 * (h_mag - 11.5)) * np.sqrt(nvisits) * rng.lognormal(0.0, 0.3, h_mag.size)
    return np.clip(snr, 5.0, 2000.0)


def _lamost_snr(rng, g_mag):
    """LAMOST g-band S/N: ~50 at G = 14, fainter stars noisier (NaN without Gaia photometry)."""
    snr = 50.0 * 10.0 ** (-0.3 * (g_mag - 14.0)) * rng.lognormal(0.0, 0.3, g_mag.size)
    return np.clip(snr, 3.0, 800.0)


# ---------------------------------------------------------------------------------- pipeline-like labels
def _pipeline_labels(rng, truth, star_class, snr) -> dict[str, np.ndarray]:
    """Labels as a pipeline would report them: truth + errors, -9999 where it fails."""
    n = snr.size
    inverse_snr = 100.0 / snr
    scale = np.select([star_class == "hot", star_class == "yso", np.isin(star_class, ["dwarf", "m_dwarf"])],
                      [3.0, 2.0, 1.5], 1.0)
    teff = truth["TEFF"]
    errors = {"TEFF": (30.0 + 60.0 * inverse_snr) * scale + np.where(star_class == "hot", 0.02 * teff, 0.0),
              "LOGG": (0.04 + 0.06 * inverse_snr) * scale,
              "M_H": (0.01 + 0.03 * inverse_snr) * scale, "ALPHA_M": (0.015 + 0.03 * inverse_snr) * scale,
              "FE_H": (0.01 + 0.03 * inverse_snr) * scale}
    for element in X_FE_ELEMENTS:
        floor, slope = _ELEMENT_ERRORS[element]
        errors[f"{element.upper()}_FE"] = (floor + slope * inverse_snr) * scale
    out = {}
    for name, sigma in errors.items():
        out[name] = truth[name] + rng.normal(0, 1, n) * sigma
        out[f"{name}_ERR"] = sigma
    out["VMICRO"] = truth["VMICRO"] + rng.normal(0, 0.1, n)
    out["VSINI"] = np.where(np.isin(star_class, ["red_giant", "red_clump"]), MISSING,
                            np.abs(truth["VSINI"] + rng.normal(0, 2.0, n)))
    for name, fails in _failures(rng, truth, star_class, snr).items():
        out[name] = np.where(fails, MISSING, out[name])
        if f"{name}_ERR" in out:
            out[f"{name}_ERR"] = np.where(fails, MISSING, out[f"{name}_ERR"])
    return out


def _failures(rng, truth, star_class, snr) -> dict[str, np.ndarray]:
    """Where a real pipeline reports -9999, per label."""
    n = snr.size
    teff, feh = truth["TEFF"], truth["FE_H"]
    outside_grid = (teff > 20000.0) | (teff < 3000.0)
    hot = teff > 7000.0
    no_abundances = hot | outside_grid | (snr < 15.0)
    fails = {"TEFF": outside_grid, "LOGG": outside_grid | ((star_class == "m_dwarf") & (rng.random(n) < 0.3)),
             "M_H": outside_grid | (teff > 8000.0), "ALPHA_M": no_abundances, "FE_H": no_abundances,
             "VMICRO": outside_grid}
    cool = teff < 3500.0
    for element in X_FE_ELEMENTS:
        label = f"{element.upper()}_FE"
        failed = no_abundances | (rng.random(n) < 0.01)
        if element in _WEAK_LINE_ELEMENTS:
            failed |= (feh < -1.0) | cool | (snr < 30.0)
        if element in _NEUTRON_CAPTURE:
            failed |= ~((teff < 4800.0) & (feh > -0.8) & (snr > 70.0) & np.isin(star_class, ["red_giant", "red_clump"]))
        if element == "N":
            failed |= np.isin(star_class, ["dwarf", "yso"]) & (teff > 5500.0)
        fails[label] = failed
    return fails


def _flags(pipeline, truth, snr) -> dict[str, np.ndarray]:
    """ASPCAPFLAG and STARFLAG bits (DR17 bit numbers) implied by the labels and S/N."""
    aspcap = np.zeros(snr.size, dtype=np.int64)
    aspcap |= np.where(snr < 70.0, 1 << 11, 0)  # SN_WARN
    aspcap |= np.where(snr < 30.0, 1 << 27, 0)  # SN_BAD
    aspcap |= np.where(truth["VSINI"] > 10.0, 1 << 10, 0)  # ROTATION_WARN
    star_bad = (pipeline["TEFF"] == MISSING) | (pipeline["LOGG"] == MISSING) | (snr < 15.0)
    aspcap |= np.where(star_bad, 1 << 23, 0)  # STAR_BAD
    aspcap |= np.where(pipeline["TEFF"] == MISSING, 1 << 31, 0)  # NO_ASPCAP_RESULT
    star = np.zeros(snr.size, dtype=np.int32)
    star |= np.where(snr < 10.0, 1 << 4, 0).astype(np.int32)  # LOW_SNR
    star |= np.where(truth["VSINI"] > 30.0, 1 << 17, 0).astype(np.int32)  # SUSPECT_BROAD_LINES
    return {"ASPCAPFLAG": aspcap, "STARFLAG": star}
