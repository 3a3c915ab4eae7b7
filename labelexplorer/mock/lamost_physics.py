"""LAMOST-like optical spectra (3700–9100 Å, R ≈ 1800) for the mock universe, and their file writer.

The model
---------
A continuum-normalised spectrum is ``exp(-tau)`` on the real LAMOST grid (log-linear,
``log10 λ = 3.5682 + 1e-4 i``, vacuum, the 3909 pixels of the DR8+ files). The optical
depth ``tau`` sums three precomputed parts, so that a batch of stars costs a few matrix
products (``strengths (n, n_lines) @ profiles (n_lines, n_pix)``):

- **atomic lines** (``labelexplorer/data/lamost_linelist.csv``: 144 real lines of Ca II
  H&K and the Ca II triplet, Mg b, Na D, Ca I 4227, Fe I/Fe II, Ti, Cr, Mn, Sr II, Ba II,
  Al, Si, K, O I 7774, Li, He I/He II, with wavelengths from NIST / Moore et al. 1966
  converted to vacuum; and 23 Balmer/Paschen lines from the Rydberg formula), plus 3000
  *pseudo-lines* drawn once from a fixed seed that stand in for the blends of unresolved
  weak lines which blanket the blue spectrum of cool stars (they are not real lines; each
  is a blend of 5 equal weak lines of one species). Each line's equivalent
  width comes from a curve of growth ``W(η, Δλ_D, a)`` (linear, flat and damping parts)
  whose strength ``η`` scales from a reference star (the Sun for most lines) with the
  abundance ``[X/H]``, the Boltzmann factor ``10^(-θ χ_exc)``, the Saha ionisation
  fraction of the line's stage and the continuous opacity (H⁻ ∝ Pe, hydrogen
  bound-free, electron scattering), using an approximate photospheric electron
  pressure ``Pe(Teff, logg, [M/H])``. Damping (and so the wings of Mg b, Na D, Ca II)
  grows with gravity. Strong lines get a Lorentzian wing whose width follows from their
  damping equivalent width; each wing is an interpolation between precomputed
  Voigt profiles of 8 widths.
- **hydrogen**: Balmer and Paschen equivalent widths follow an empirical function of
  Teff and logg peaking near 9500 K (Hβ ≈ 14 Å in an A0 V star, ≈ 3.2 Å in the Sun,
  ≈ 3.3 Å at 30,000 K), weaker at low gravity (the luminosity criterion of A stars),
  with Stark wings that carry most of the width.
- **molecular bands**: TiO (heads at 4761 … 8859 Å) and CaH in M stars (CaH only at
  dwarf gravities), MgH 5211 in cool dwarfs, the CH G band near 4300 Å and CN 3883/4216
  (stronger in giants), each a band head with an exponential tail, scaled by the
  relevant abundances and an empirical temperature dependence.

All profiles are convolved with the instrumental Gaussian of R = 1800, which is 1.02
pixels (σ) at every wavelength on a log-linear grid.

Abundance information sits in the lines: for a solar-type dwarf, ~85% (Mg b) and ~75%
(Ca triplet) of the flux response to ``ALPHA_M`` inside those windows lies within the
lines' own profiles (±(2W + 3 Å)), which cover 48% and 21% of the windows' pixels; for
``FE_H`` it is ~70% and ~45%, the rest being the Fe lines blended into the windows.

:func:`observe` turns normalised spectra into what a LAMOST file holds: a blackbody
continuum times a residual of the instrument response (low at the blue end and in the
dichroic crossover near 5700–6000 Å, where the two spectrograph arms meet), telluric
O2/H2O bands (LAMOST does not remove them), photon + sky noise scaled so that the g-band
S/N equals the requested value, sky-line residuals in the red, and the LAMOST pixel
masks (``andmask``/``ormask`` bits BADCCD, BRIGHTSKY, NODATA; ``ivar = 0`` where bad).
:func:`write_lamost_spectrum` writes one spectrum in the real DR1, DR7 or DR8+ file
layout, which :func:`labelexplorer.read` reads back.

The line strengths are tuned to look right at R ≈ 1800; they are not for abundance work.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import math
from importlib import resources
from pathlib import Path
from typing import Mapping

import numpy as np
from scipy import sparse
from scipy.ndimage import gaussian_filter1d, median_filter
from scipy.special import expit, voigt_profile

from .._files import atomic_path
from ..exceptions import LabelError, LabelExplorerError, ShapeError, SpectrumError
from ..io.lamost import LAMOST_LOG_START, LAMOST_LOG_STEP, air_to_vacuum
from ..io.lamost import lamost_wavelength as _frame_wavelength

__all__ = [
    "RESOLUTION",
    "MASK_BITS",
    "BANDS",
    "lamost_wavelength",
    "normalized_flux",
    "observe",
    "band_snr",
    "write_lamost_spectrum",
]

RESOLUTION = 1800.0
"""Resolving power λ/Δλ (FWHM) of the LAMOST low-resolution spectrographs."""

MASK_BITS = {"BADCCD": 1, "BADPROFILE": 2, "NOSKY": 4, "BRIGHTSKY": 8, "BADCENTER": 16, "NODATA": 32}
"""LAMOST pixel-mask bit values (andmask: bad in every exposure; ormask: in at least one)."""

BANDS = {"U": (3700.0, 4000.0), "G": (4000.0, 5500.0), "R": (5600.0, 6900.0), "I": (6900.0, 8400.0),
         "Z": (8400.0, 9100.0)}
"""Wavelength ranges (Å) over which the header S/N values SNRU..SNRZ are medians per pixel."""

_C_KMS = 299792.458
_SIGMA_PIX = 1.0 / (RESOLUTION * math.log(10.0) * LAMOST_LOG_STEP * 2.0 * math.sqrt(2.0 * math.log(2.0)))
_CHUNK = 256  # stars per block: bounds the (n, n_lines) temporaries
_WING_WIDTHS = 0.25 * 2.0 ** np.arange(8)  # Lorentzian half widths (Å) of the wing basis
_FOREST_SEED = 1800
_N_FOREST = 3000
_BLEND = 5  # each pseudo-line is a blend of this many equal weak lines inside one resolution element

# element: (atomic mass, first and second ionisation potentials in eV; NIST)
_ELEMENTS = {
    "H": (1.008, 13.598, 99.0), "He": (4.003, 24.587, 54.418), "Li": (6.94, 5.392, 75.64),
    "C": (12.011, 11.260, 24.383), "N": (14.007, 14.534, 29.601), "O": (15.999, 13.618, 35.121),
    "Na": (22.990, 5.139, 47.286), "Mg": (24.305, 7.646, 15.035), "Al": (26.982, 5.986, 18.829),
    "Si": (28.085, 8.152, 16.346), "K": (39.098, 4.341, 31.63), "Ca": (40.078, 6.113, 11.872),
    "Sc": (44.956, 6.561, 12.80), "Ti": (47.867, 6.828, 13.58), "V": (50.942, 6.746, 14.62),
    "Cr": (51.996, 6.767, 16.49), "Mn": (54.938, 7.434, 15.64), "Fe": (55.845, 7.902, 16.199),
    "Co": (58.933, 7.881, 17.08), "Ni": (58.693, 7.640, 18.17), "Sr": (87.62, 5.695, 11.03),
    "Ba": (137.33, 5.212, 10.00),
}
_ALPHA = ("O", "Mg", "Si", "S", "Ca", "Ti")
# species mix and excitation range of the pseudo-lines (the weak-line blanket of FGK stars)
_FOREST_SPECIES = (("Fe I", 0.50), ("Fe II", 0.07), ("Ti I", 0.07), ("Ti II", 0.05), ("Cr I", 0.06),
                   ("Ni I", 0.06), ("Ca I", 0.04), ("V I", 0.03), ("Mn I", 0.03), ("Co I", 0.03),
                   ("Sc II", 0.02), ("Mg I", 0.02), ("Si I", 0.02))
# solar blanketing (fraction of the continuum removed by weak lines) at these wavelengths
_BLANKET = ((3700.0, 0.45), (4000.0, 0.30), (4500.0, 0.15), (5000.0, 0.10), (5500.0, 0.07),
            (6500.0, 0.035), (9100.0, 0.02))

# molecular band heads: (system, air wavelength of the head, relative strength, e-folding length in Å;
# a negative length means the band is degraded to the violet). TiO/CaH/MgH/CN/CH heads after the
# classical M-dwarf and carbon-star atlases (rounded).
_BAND_HEADS = (
    ("TiO", 4761.0, 0.30, 60.0), ("TiO", 4954.0, 0.50, 80.0), ("TiO", 5167.0, 0.60, 80.0),
    ("TiO", 5448.0, 0.50, 80.0), ("TiO", 5597.0, 0.30, 60.0), ("TiO", 5847.0, 0.40, 80.0),
    ("TiO", 6159.0, 0.80, 100.0), ("TiO", 6651.0, 0.50, 80.0), ("TiO", 7054.0, 1.00, 120.0),
    ("TiO", 7589.0, 0.80, 60.0), ("TiO", 7666.0, 0.70, 100.0), ("TiO", 8432.0, 0.50, 80.0),
    ("TiO", 8859.0, 0.50, 100.0),
    ("CaH", 6382.0, 0.60, 60.0), ("CaH", 6750.0, 1.00, 120.0),
    ("MgH", 5211.0, 1.00, -60.0), ("MgH", 4780.0, 0.50, -40.0),
    ("CN", 3883.0, 1.00, -35.0), ("CN", 4216.0, 0.60, -60.0),
    ("CH", 4323.0, 1.00, -25.0),
)
# telluric absorption: (air start, air end, depth at airmass 1.2)
_TELLURIC = ((6867.0, 6920.0, 0.25), (7160.0, 7340.0, 0.06), (7594.0, 7700.0, 0.40),
             (8130.0, 8350.0, 0.06), (8950.0, 9100.0, 0.08))
# night-sky emission lines (air Å, relative strength): [O I], Hg/Na light pollution, OH Meinel bands
_SKY_LINES = ((4046.56, 0.4), (4358.34, 0.6), (5460.74, 0.6), (5577.34, 2.0), (5889.95, 0.8), (5895.92, 0.6),
              (6300.30, 1.2), (6363.78, 0.5), (6863.96, 0.6), (6923.22, 0.6), (7276.41, 0.8), (7316.28, 1.0),
              (7340.89, 1.0), (7369.25, 0.8), (7401.69, 0.8), (7750.64, 1.2), (7794.11, 1.2), (7821.50, 1.2),
              (7913.71, 1.4), (7964.65, 1.4), (7993.33, 1.4), (8344.60, 2.0), (8399.17, 2.0), (8430.17, 2.0),
              (8761.32, 1.6), (8827.10, 2.5), (8885.85, 2.5), (8919.63, 2.0), (8943.40, 2.5), (8958.10, 2.5),
              (8988.38, 2.5), (9037.97, 2.0), (9049.23, 2.0))


def lamost_wavelength() -> np.ndarray:
    """Vacuum wavelengths (Å) of the mock LAMOST grid: the 3909 log-linear pixels of DR8+ files.

    ``log10 λ = 3.5682 + 1e-4 i`` for ``i = 0..3908``, i.e. 3700–9099 Å, the frame on which
    :func:`labelexplorer.read` places every LAMOST file.

    Examples
    --------
    >>> wl = lamost_wavelength()
    >>> wl.shape, round(float(wl[0]), 1), round(float(wl[-1]), 1)
    ((3909,), 3700.0, 9099.1)
    >>> bool(np.allclose(np.diff(np.log10(wl)), 1e-4))
    True
    """
    return _frame_wavelength()


# ---------------------------------------------------------------------------- labels
def _column(labels: Mapping, key: str, n: int | None) -> np.ndarray | None:
    if key not in labels:
        return None
    values = np.atleast_1d(np.asarray(labels[key], dtype=np.float64))
    if values.ndim != 1 or (n is not None and values.size not in (1, n)):
        raise ShapeError(f"labels[{key!r}] has shape {values.shape}; expected one value per star ({n})")
    values = np.where(values <= -9000.0, np.nan, values)  # the survey missing-value marker
    return np.broadcast_to(values, (n,)).copy() if n is not None else values


def _stars(labels: Mapping) -> dict:
    """Validated stellar parameters and [X/H] for every element the model uses."""
    if not hasattr(labels, "keys"):
        raise LabelError(f"labels must be a mapping of label name to array (dict, DataFrame, Table); "
                         f"got {type(labels).__name__}")
    missing = [key for key in ("TEFF", "LOGG", "FE_H") if key not in labels]
    if missing:
        raise LabelError(f"labels lack {', '.join(missing)}; expected TEFF, LOGG, FE_H "
                         "(optional ALPHA_M and <X>_FE)")
    n = max(np.atleast_1d(np.asarray(labels[key])).size for key in ("TEFF", "LOGG", "FE_H"))
    teff, logg, feh = (_column(labels, key, n) for key in ("TEFF", "LOGG", "FE_H"))
    for key, values, low, high in (("TEFF", teff, 2000.0, 60000.0), ("LOGG", logg, -1.0, 6.0),
                                   ("FE_H", feh, -5.0, 1.5)):
        bad = ~np.isfinite(values) | (values < low) | (values > high)
        if bad.any():
            raise LabelError(f"labels[{key!r}] has {int(bad.sum())} values outside {low}..{high} or missing "
                             f"(first: star {int(np.flatnonzero(bad)[0])}); the LAMOST mock needs them for every star")
    alpha = _column(labels, "ALPHA_M", n)
    alpha = np.zeros(n) if alpha is None else np.nan_to_num(alpha)
    abundance = {}
    for element in _ELEMENTS:
        offset = _column(labels, f"{element.upper()}_FE", n)
        if offset is None:
            offset = alpha if element in _ALPHA else np.zeros(n)
        abundance[element] = feh + np.nan_to_num(offset)
    abundance["H"] = abundance["He"] = np.zeros(n)  # primordial: they do not follow [Fe/H]
    metals = feh + 0.4 * alpha  # electron donors: Fe-peak plus Mg, Si
    return dict(n=n, teff=teff, logg=logg, feh=feh, metals=metals, abundance=abundance)


# ---------------------------------------------------------------------------- atmosphere
# approximate log10 Pe (dyn cm^-2) near optical depth 2/3 of dwarf model atmospheres (rounded)
_PE_LOGT = np.log10([2500.0, 3500.0, 4000.0, 5000.0, 5777.0, 7000.0, 8500.0, 10000.0, 15000.0, 20000.0, 50000.0])
_PE_LOG = np.array([-1.2, -0.5, 0.0, 0.8, 1.3, 2.0, 2.6, 2.9, 3.1, 3.3, 3.6])


def _log_pe(teff, logg, metals):
    cool = expit((7500.0 - teff) / 600.0)  # metals supply the electrons only in cool stars
    return np.interp(np.log10(teff), _PE_LOGT, _PE_LOG) + 0.6 * (logg - 4.44) + 0.5 * metals * cool


def _saha(teff, chi, log_pe):
    """log10(N_{r+1}/N_r) from the Saha equation (partition-function ratio taken as 1/2)."""
    return 2.5 * np.log10(teff) - 5040.0 * chi / teff - 0.1762 - log_pe


def _stage_fraction(teff, log_pe, chi1, chi2, stage):
    """Fraction of an element in ionisation stage 1 (neutral) or 2 (singly ionised)."""
    r1 = 10.0 ** np.clip(_saha(teff, chi1, log_pe), -30, 30)
    r2 = 10.0 ** np.clip(_saha(teff, chi2, log_pe), -30, 30)
    neutral = 1.0 / (1.0 + r1 + r1 * r2)
    return np.where(stage == 1, neutral, r1 * neutral)


def _log_kappa(teff, log_pe):
    """log10 continuous opacity per hydrogen nucleus (arbitrary units): H-, H bound-free, electrons."""
    theta = 5040.0 / teff
    neutral_h = _stage_fraction(teff, log_pe, 13.598, 99.0, 1)
    h_minus = neutral_h * 10.0 ** (log_pe + 2.5 * np.log10(theta) + 0.754 * theta)
    h_bound_free = neutral_h * 10.0 ** (_LOG_C_BF - 12.09 * theta)
    electrons = (1.0 - neutral_h) * 10.0 ** _LOG_C_ES
    return np.log10(h_minus + h_bound_free + electrons)


def _calibrate_opacity():
    """Constants making H bound-free equal H- at 7500 K and electrons equal H b-f at 28,000 K (logg 4)."""
    teff = np.array([7500.0, 28000.0])
    log_pe = _log_pe(teff, 4.0, 0.0)
    theta = 5040.0 / teff
    log_c_bf = log_pe[0] + 2.5 * np.log10(theta[0]) + 0.754 * theta[0] + 12.09 * theta[0]
    neutral = _stage_fraction(teff[1], log_pe[1], 13.598, 99.0, 1)
    log_c_es = np.log10(neutral / (1.0 - neutral)) + log_c_bf - 12.09 * theta[1]
    return float(log_c_bf), float(log_c_es)


_LOG_C_BF, _LOG_C_ES = _calibrate_opacity()


def _microturbulence(logg):
    return np.clip(2.3 - 0.3 * logg, 0.8, 2.5)


def _doppler_width(wavelength, mass, teff, logg):
    return wavelength / _C_KMS * np.sqrt(0.016629 * teff / mass + _microturbulence(logg) ** 2)


def _curve_of_growth(eta, doppler, damping):
    """Equivalent width (Å) from line strength η: linear, flat (Doppler) and damping parts."""
    weak = math.sqrt(math.pi) * eta
    flat = 2.0 * np.sqrt(np.log1p(eta))
    core = 1.0 / np.sqrt(1.0 / np.maximum(weak, 1e-30) ** 2 + 1.0 / np.maximum(flat, 1e-30) ** 2)
    wing = 2.0 * np.sqrt(math.sqrt(math.pi) * damping * eta) * eta / (eta + 10.0)
    return doppler * core, doppler * np.sqrt(core ** 2 + wing ** 2)


def _damping(lines, teff, logg, doppler):
    """Damping parameter a: pressure broadening grows with gravity, scaled from the reference star."""
    return (lines["a_ref"] * 10.0 ** (0.6 * (logg - lines["logg_ref"])) * (teff / lines["teff_ref"]) ** 0.3
            * lines["doppler_ref"] / doppler)


def _log_strength(lines, teff, logg, metals, abundance):
    """log10 of the line-to-continuum opacity ratio up to a per-line constant.

    *teff*, *logg*, *metals* are either one column per star (n, 1) or one reference star per line.
    """
    log_pe = _log_pe(teff, logg, metals)
    if np.ndim(teff) == 2 and np.shape(teff)[1] == 1:  # per star: ionisation once per species, not per line
        species = lines["species_table"]
        fraction = _stage_fraction(teff, log_pe, species["chi1"], species["chi2"], species["stage"])
        fraction = fraction[:, lines["species_index"]]
    else:
        fraction = _stage_fraction(teff, log_pe, lines["chi1"], lines["chi2"], lines["stage"])
    return (abundance + np.log10(np.maximum(fraction, 1e-30)) - 5040.0 * lines["chi_exc"] / teff
            - _log_kappa(teff, log_pe))


# ---------------------------------------------------------------------------- line list
def _read_line_list() -> dict:
    text = resources.files("labelexplorer").joinpath("data/lamost_linelist.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    return dict(species=np.array([r["species"] for r in rows]),
                wavelength=np.array([float(r["wavelength"]) for r in rows]),
                chi_exc=np.array([float(r["chi_exc"]) for r in rows]),
                ew_ref=np.array([float(r["ew_ref_mA"]) for r in rows]) / 1000.0,
                teff_ref=np.array([float(r["teff_ref"]) for r in rows]),
                logg_ref=np.array([float(r["logg_ref"]) for r in rows]),
                strong=np.array([r["strong"] == "1" for r in rows]), multiplicity=np.ones(len(rows)))


def _pseudo_lines(wavelength: np.ndarray) -> dict:
    """The fixed weak-line blanket: positions ∝ solar blanketing, strengths summing to it."""
    rng = np.random.default_rng(_FOREST_SEED)
    knots, blanket = np.array(_BLANKET).T
    grid = np.linspace(wavelength[0] - 20.0, wavelength[-1], 20000)
    # where blanketing is weak (the red) the blend lines are both rarer and weaker: density ∝ sqrt(blanketing)
    density = np.sqrt(np.interp(grid, knots, blanket))
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    centres = np.sort(np.interp(rng.uniform(0.0, cumulative[-1], _N_FOREST), cumulative, grid))
    per_line = np.sqrt(np.interp(centres, knots, blanket)) * cumulative[-1] / _N_FOREST  # blanketing / density
    names, weights = zip(*_FOREST_SPECIES)
    species = rng.choice(np.array(names), size=_N_FOREST, p=np.array(weights) / sum(weights))
    ionised = np.char.endswith(species, " II")
    chi_exc = np.where(ionised, rng.uniform(2.0, 4.0, _N_FOREST), rng.uniform(0.0, 4.5, _N_FOREST))
    ew = per_line * rng.lognormal(-0.125, 0.5, _N_FOREST)
    return dict(species=species, wavelength=centres, chi_exc=chi_exc, ew_ref=ew,
                teff_ref=np.full(_N_FOREST, 5777.0), logg_ref=np.full(_N_FOREST, 4.44),
                strong=np.zeros(_N_FOREST, bool), multiplicity=np.full(_N_FOREST, float(_BLEND)))


def _prepare_lines(table: dict) -> dict:
    """Per-line constants: element, stage, ionisation potentials and the reference strength η_ref."""
    element = np.array([s.split()[0] for s in table["species"]])
    stage = np.array([2 if s.endswith(" II") else 1 for s in table["species"]])
    mass, chi1, chi2 = (np.array([_ELEMENTS[e][k] for e in element]) for k in range(3))
    lines = dict(table, element=element, stage=stage, mass=mass, chi1=chi1, chi2=chi2)
    names, first, index = np.unique(table["species"], return_index=True, return_inverse=True)
    lines["species_index"] = index
    lines["species_table"] = dict(chi1=chi1[first].astype(np.float32), chi2=chi2[first].astype(np.float32),
                                  stage=stage[first])
    lines["doppler_ref"] = _doppler_width(lines["wavelength"], mass, lines["teff_ref"], lines["logg_ref"])
    lines["a_ref"] = np.where(lines["strong"], 0.03, 0.005)
    lines["log_strength_ref"] = _log_strength(lines, lines["teff_ref"], lines["logg_ref"], 0.0, 0.0)
    lines["log_eta_ref"] = _invert_curve_of_growth(lines["ew_ref"] / lines["multiplicity"], lines["doppler_ref"],
                                                   lines["a_ref"])
    # float32 from here on: the per-star work is memory-bound and single precision is ample
    return {key: value.astype(np.float32) if getattr(value, "dtype", None) == np.float64 else value
            for key, value in lines.items()}


def _invert_curve_of_growth(width, doppler, damping):
    """log10 η giving equivalent width *width* (bisection, vectorised over lines)."""
    low, high = np.full(width.shape, -8.0), np.full(width.shape, 14.0)
    for _ in range(70):
        middle = 0.5 * (low + high)
        too_weak = _curve_of_growth(10.0 ** middle, doppler, damping)[1] < width
        low, high = np.where(too_weak, middle, low), np.where(too_weak, high, middle)
    return 0.5 * (low + high)


# ---------------------------------------------------------------------------- profiles
def _pixel_coordinate(wavelength):
    return (np.log10(wavelength) - LAMOST_LOG_START) / LAMOST_LOG_STEP


def _core_profiles(centres: np.ndarray, n_pix: int) -> sparse.csr_matrix:
    """Instrumental Gaussians (per Å, so that W @ P is a depth) within ±6σ, as a sparse matrix."""
    position = _pixel_coordinate(centres)
    offsets = np.arange(-7, 8)
    pixels = np.round(position)[:, None].astype(int) + offsets
    angstrom_per_pixel = centres * math.log(10.0) * LAMOST_LOG_STEP
    values = (np.exp(-0.5 * ((pixels - position[:, None]) / _SIGMA_PIX) ** 2)
              / (math.sqrt(2.0 * math.pi) * _SIGMA_PIX * angstrom_per_pixel[:, None]))
    keep = (pixels >= 0) & (pixels < n_pix)
    rows = np.broadcast_to(np.arange(centres.size)[:, None], pixels.shape)
    return sparse.csr_matrix((values[keep].astype(np.float32), (rows[keep], pixels[keep])),
                             shape=(centres.size, n_pix))


def _wing_profiles(centres: np.ndarray, wavelength: np.ndarray) -> np.ndarray:
    """(n_strong * n_widths, n_pix) Voigt profiles (per Å) of unit area for every wing width."""
    sigma = centres * math.log(10.0) * LAMOST_LOG_STEP * _SIGMA_PIX
    offset = wavelength[None, None, :] - centres[:, None, None]
    profiles = voigt_profile(offset, sigma[:, None, None], _WING_WIDTHS[None, :, None])
    return profiles.reshape(-1, wavelength.size).astype(np.float32)


def _band_profiles(wavelength: np.ndarray) -> np.ndarray:
    """(n_heads, n_pix) band-head shapes: 1 at the head, exponential tail, instrument-convolved."""
    heads = air_to_vacuum(np.array([h[1] for h in _BAND_HEADS]))
    profiles = np.zeros((len(_BAND_HEADS), wavelength.size))
    for row, ((_, _, weight, length), head) in enumerate(zip(_BAND_HEADS, heads)):
        distance = (wavelength - head) / length
        profiles[row] = weight * np.where(distance >= 0.0, np.exp(-distance), 0.0)
    return gaussian_filter1d(profiles, _SIGMA_PIX, axis=1).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _model() -> dict:
    """Everything that does not depend on the stars, computed once per process."""
    wavelength = lamost_wavelength()
    real = _read_line_list()
    table = {key: np.concatenate([real[key], value]) for key, value in _pseudo_lines(wavelength).items()}
    is_hydrogen = table["species"] == "H I"
    metals = {key: value[~is_hydrogen] for key, value in table.items()}
    lines = _prepare_lines(metals)
    strong = np.flatnonzero(lines["strong"])
    hydrogen = dict(wavelength=table["wavelength"][is_hydrogen], chi_exc=table["chi_exc"][is_hydrogen])
    hydrogen["scale"] = _hydrogen_scale(hydrogen["wavelength"], hydrogen["chi_exc"])
    wing_centres = np.concatenate([lines["wavelength"][strong], hydrogen["wavelength"]])
    return dict(
        wavelength=wavelength, lines=lines, strong=strong, hydrogen=hydrogen,
        core=sparse.vstack([_core_profiles(lines["wavelength"], wavelength.size),
                            _core_profiles(hydrogen["wavelength"], wavelength.size)]).tocsr(),
        wings=_wing_profiles(wing_centres, wavelength),
        bands=_band_profiles(wavelength),
        band_system=np.array([h[0] for h in _BAND_HEADS]),
    )


# ---------------------------------------------------------------------------- hydrogen and molecules
def _hydrogen_scale(wavelength, chi_exc):
    """Equivalent width of each H line relative to Hβ at the peak (Balmer decrement; Paschen)."""
    balmer = chi_exc < 11.0
    lower_level = np.where(balmer, 2.0, 3.0)
    upper = np.sqrt(1.0 / (1.0 / lower_level ** 2 - 911.27 / wavelength))  # Rydberg: 1/λ = R(1/l² - 1/u²)
    scale_balmer = np.interp(upper, [3, 4, 5, 6, 7, 8, 10, 12, 16],
                             [0.85, 1.0, 1.05, 1.05, 0.95, 0.85, 0.65, 0.45, 0.2])
    scale_paschen = np.interp(upper, [10, 12, 14, 16, 18], [0.20, 0.18, 0.15, 0.12, 0.10])
    return np.where(balmer, scale_balmer, scale_paschen)


def _hydrogen_width(star, hydrogen):
    """Empirical Hβ-scaled equivalent widths (Å): peak near 9500 K, weaker at low gravity."""
    log_t = np.log10(star["teff"])[:, None]
    logg = star["logg"][:, None]
    peak = np.log10(9500.0) - 0.02 * (4.0 - logg)
    paschen = hydrogen["chi_exc"] > 11.0
    cool_scale = np.where(paschen, 0.20, 0.306)
    scale = np.where(log_t < peak, cool_scale, 0.705)
    drop = (np.abs(log_t - peak) / scale) ** 1.5
    hot = expit((star["teff"][:, None] - 7000.0) / 700.0)  # cool stars: a Teff indicator only
    gravity = 10.0 ** (0.25 * np.clip(logg - 4.0, -3.0, 0.5) * hot)
    return 13.0 * gravity * 10.0 ** (-drop) * hydrogen["scale"]


def _band_strengths(star, systems):
    """(n, n_heads) optical depths at the band heads from Teff, logg and abundances."""
    teff, logg, ab = star["teff"], star["logg"], star["abundance"]
    log_tau = {
        "TiO": 0.25 - (teff - 3300.0) / 550.0 + ab["Ti"] + 0.5 * (ab["O"] - star["feh"]),
        "CaH": -0.20 - (teff - 3300.0) / 500.0 + ab["Ca"] + 0.8 * np.minimum(logg - 4.6, 0.0),
        "MgH": -0.60 - (teff - 4000.0) / 700.0 + ab["Mg"] + 0.6 * np.minimum(logg - 4.5, 0.0),
        "CN": np.log10(0.6) - ((teff - 4500.0) / 1800.0) ** 2 - 0.25 * (logg - 2.5) + 0.7 * (ab["C"] + ab["N"]),
        "CH": -0.25 - ((teff - 5000.0) / 1500.0) ** 2 + ab["C"],
    }
    tau = {name: 10.0 ** np.minimum(value, math.log10(3.0)) for name, value in log_tau.items()}  # saturate
    return np.stack([tau[system] for system in systems], axis=1)


# ---------------------------------------------------------------------------- spectra
def _metal_widths(star, lines):
    """(n, n_lines) core (Doppler) and total equivalent widths in Å."""
    teff = star["teff"][:, None].astype(np.float32)
    logg = star["logg"][:, None].astype(np.float32)
    abundance = np.stack([star["abundance"][e] for e in _ELEMENTS], axis=1).astype(np.float32)
    column = {e: i for i, e in enumerate(_ELEMENTS)}
    x_h = abundance[:, [column[e] for e in lines["element"]]]
    metals = star["metals"][:, None].astype(np.float32)
    log_eta = lines["log_eta_ref"] + _log_strength(lines, teff, logg, metals, x_h) - lines["log_strength_ref"]
    doppler = _doppler_width(lines["wavelength"], lines["mass"], teff, logg)
    damping = _damping(lines, teff, logg, doppler)
    core, total = _curve_of_growth(10.0 ** np.clip(log_eta, -12.0, 14.0), doppler, damping)
    return core * lines["multiplicity"], total * lines["multiplicity"]


def _wing_coefficients(width, gamma):
    """(n, n_strong * n_widths): split each wing's width between the two nearest basis widths."""
    n, n_strong = width.shape
    position = np.clip(np.log2(np.maximum(gamma, 1e-9) / _WING_WIDTHS[0]), 0.0, _WING_WIDTHS.size - 1 - 1e-9)
    lower = np.floor(position).astype(int)
    upper_weight = position - lower
    coefficients = np.zeros((n, n_strong, _WING_WIDTHS.size), np.float32)
    rows, cols = np.indices((n, n_strong))
    coefficients[rows, cols, lower] = width * (1.0 - upper_weight)
    coefficients[rows, cols, lower + 1] = width * upper_weight
    return coefficients.reshape(n, -1)


def _optical_depth(star, model) -> np.ndarray:
    lines, hydrogen = model["lines"], model["hydrogen"]
    core_metal, total_metal = _metal_widths(star, lines)
    strong = model["strong"]
    wing_metal = total_metal[:, strong] - core_metal[:, strong]
    core_metal[:, ~lines["strong"]] = total_metal[:, ~lines["strong"]]  # weak lines: no separate wing
    width_h = _hydrogen_width(star, hydrogen)
    core_h = np.minimum(width_h, 1.2 * hydrogen["wavelength"] / 4862.7)
    wing_h = width_h - core_h
    core = np.concatenate([core_metal, core_h], axis=1).astype(np.float32)
    # damping wings: Lorentzian half width W/4 matches the pure-damping curve of growth; Stark wings
    # of hydrogen are broader and shallower (central depth ~0.5)
    gamma = np.concatenate([wing_metal / 4.0, wing_h / (0.5 * math.pi)], axis=1)
    wing = _wing_coefficients(np.concatenate([wing_metal, wing_h], axis=1), gamma)
    tau = np.asarray((model["core"].T @ core.T).T)
    tau += wing @ model["wings"]
    tau += _band_strengths(star, model["band_system"]).astype(np.float32) @ model["bands"]
    return tau


def _subset(star: dict, rows: slice) -> dict:
    return dict(star, teff=star["teff"][rows], logg=star["logg"][rows], feh=star["feh"][rows],
                metals=star["metals"][rows], abundance={k: v[rows] for k, v in star["abundance"].items()})


def normalized_flux(labels: Mapping[str, np.ndarray]) -> np.ndarray:
    """Noiseless continuum-normalised LAMOST-like spectra for a batch of stars.

    Parameters
    ----------
    labels : mapping of label name to array (dict, pandas DataFrame, astropy Table)
        ``TEFF`` (K, 2000–60,000), ``LOGG`` (dex), ``FE_H`` (dex); optional ``ALPHA_M``
        (applied to O, Mg, Si, S, Ca, Ti) and ``<X>_FE`` (e.g. ``MG_FE``, ``C_FE``, ``N_FE``),
        which override ``ALPHA_M`` for their element. -9999 in an optional label means
        "scaled solar".

    Returns
    -------
    ndarray, shape (n, 3909), float32
        Flux divided by the true continuum, on :func:`lamost_wavelength`.

    Raises
    ------
    LabelError
        If TEFF, LOGG or FE_H is missing or out of range.

    Examples
    --------
    >>> flux = normalized_flux({"TEFF": [5777.0, 3300.0], "LOGG": [4.44, 4.8], "FE_H": [0.0, 0.0]})
    >>> flux.shape, flux.dtype.name
    ((2, 3909), 'float32')
    >>> wl = lamost_wavelength()
    >>> mg_b = np.argmin(np.abs(wl - 5185.0))
    >>> bool(0.2 < flux[0, mg_b] < 0.8)  # the Sun's Mg b line
    True
    >>> tio = (wl > 7060) & (wl < 7120)  # the TiO band of an M dwarf
    >>> bool(flux[1, tio].mean() < 0.6 < flux[0, tio].mean())
    True
    """
    star = _stars(labels)
    model = _model()
    out = np.empty((star["n"], model["wavelength"].size), np.float32)
    for start in range(0, star["n"], _CHUNK):
        rows = slice(start, start + _CHUNK)
        np.exp(-_optical_depth(_subset(star, rows), model), out=out[rows])
    return out


# ---------------------------------------------------------------------------- observation
def _response(wavelength):
    """Relative throughput of the blue (3700–5900 Å) and red (5700–9100 Å) arms behind the dichroic."""
    blue = (expit((wavelength - 3800.0) / 60.0) * expit((5800.0 - wavelength) / 35.0)
            * (0.6 + 0.4 * np.exp(-((wavelength - 4800.0) / 900.0) ** 2)))
    red = expit((wavelength - 5920.0) / 35.0) * (1.0 - 0.5 * ((wavelength - 6800.0) / 2300.0) ** 2)
    return blue + red


def _planck(wavelength, teff):
    """Blackbody B_λ up to a constant, normalised to 1 at 5500 Å."""
    x = 1.4387769e8 / (wavelength[None, :] * teff[:, None])
    x0 = 1.4387769e8 / (5500.0 * teff[:, None])
    return (5500.0 / wavelength[None, :]) ** 5 * np.expm1(x0) / np.expm1(x)


def _telluric_depth(wavelength):
    """Optical depth of the O2 and H2O bands LAMOST does not remove, at airmass ~1.2."""
    depth = np.zeros(wavelength.size)
    for start, end, band_depth in _TELLURIC:
        start, end = air_to_vacuum(np.array([start, end]))
        inside = expit((wavelength - start) / 3.0) * expit((end - wavelength) / 8.0)
        depth += band_depth * inside * np.exp(-np.maximum(wavelength - start, 0.0) / (0.3 * (end - start)))
    return -np.log1p(-np.minimum(gaussian_filter1d(depth, _SIGMA_PIX), 0.95))


def _sky(wavelength):
    """(sky continuum, sky lines) in units of a typical faint star's flux per pixel."""
    continuum = 0.05 * (wavelength / 5500.0) ** 1.5
    centres = air_to_vacuum(np.array([line[0] for line in _SKY_LINES]))
    strengths = np.array([line[1] for line in _SKY_LINES])
    sigma = centres * math.log(10.0) * LAMOST_LOG_STEP * _SIGMA_PIX
    lines = (strengths[:, None] * np.exp(-0.5 * ((wavelength[None, :] - centres[:, None]) / sigma[:, None]) ** 2))
    return continuum, lines


def _band_medians(values: np.ndarray, wavelength: np.ndarray, band: str) -> np.ndarray:
    low, high = BANDS[band]
    inside = (wavelength >= low) & (wavelength < high)
    return np.nanmedian(values[:, inside], axis=1)


def band_snr(flux: np.ndarray, ivar: np.ndarray, wavelength: np.ndarray) -> dict[str, np.ndarray]:
    """Median S/N per pixel in the u, g, r, i, z ranges, keyed like the header (SNRU..SNRZ).

    Examples
    --------
    >>> wl = lamost_wavelength()
    >>> snr = band_snr(np.full((1, wl.size), 50.0), np.full((1, wl.size), 1.0), wl)
    >>> sorted(snr), float(snr["SNRG"][0])
    (['SNRG', 'SNRI', 'SNRR', 'SNRU', 'SNRZ'], 50.0)
    """
    flux, ivar = np.atleast_2d(flux), np.atleast_2d(ivar)
    ratio = np.where(ivar > 0, flux * np.sqrt(np.maximum(ivar, 0.0)), np.nan)
    with np.errstate(all="ignore"):
        return {f"SNR{band}": np.nan_to_num(_band_medians(ratio, wavelength, band)) for band in BANDS}


def _as_snr(snr, n: int) -> np.ndarray:
    values = np.atleast_1d(np.asarray(snr, dtype=np.float64))
    if values.ndim != 1 or values.size not in (1, n):
        raise ShapeError(f"snr has shape {values.shape}; expected a number or one value per spectrum ({n})")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise SpectrumError(f"snr must be positive and finite; got {values[~(np.isfinite(values) & (values > 0))][:3]}")
    return np.broadcast_to(values, (n,)).astype(np.float64)


def _bad_pixels(rng, n: int, n_pix: int):
    """LAMOST-like andmask/ormask: bad CCD blocks, single bad pixels, missing blue ends."""
    columns = np.arange(n_pix)
    starts = np.where(rng.random(n) < 0.05, rng.integers(0, n_pix - 300, n), n_pix)
    ends = starts + rng.integers(10, 300, n)
    blue_end = np.where(rng.random(n) < 0.08, rng.integers(5, 60, n), 0)
    andmask = np.where((columns >= starts[:, None]) & (columns < ends[:, None]), MASK_BITS["BADCCD"], 0)
    andmask |= np.where(columns < blue_end[:, None], MASK_BITS["NODATA"], 0)
    ormask = andmask.copy()
    n_single = rng.poisson(0.002 * n_pix, n)
    rows = np.repeat(np.arange(n), n_single)
    ormask[rows, rng.integers(0, n_pix, rows.size)] |= MASK_BITS["BADCCD"]
    return andmask.astype(np.int32), ormask.astype(np.int32)


def observe(normalized: np.ndarray, labels: Mapping[str, np.ndarray], snr, rng: np.random.Generator) -> dict:
    """Turn noiseless normalised spectra into LAMOST-like observed spectra.

    Parameters
    ----------
    normalized : ndarray, shape (n, 3909)
        Output of :func:`normalized_flux`.
    labels : mapping
        Needs ``TEFF`` (the continuum shape); same stars as *normalized*.
    snr : float or array (n,)
        Target median S/N per pixel in the g band (4000–5500 Å), as in the header's SNRG.
    rng : numpy.random.Generator
        Source of noise, masks, sky residuals, calibration wiggles and telluric strength.

    Returns
    -------
    dict
        ``flux`` and ``ivar`` (n, 3909) float32 in relative flux units (continuum ∝ blackbody
        × a residual of the instrument response, times telluric bands, with noise and sky
        residuals); ``andmask`` and ``ormask`` (n, 3909) int32 LAMOST bits
        (:data:`MASK_BITS`; ``flux = ivar = 0`` where andmask is set, ``ivar = 0`` where
        ormask is); ``wavelength`` (3909,) vacuum Å.

    Raises
    ------
    ShapeError
        If *normalized* does not have one 3909-pixel row per star of *labels*.

    Examples
    --------
    >>> labels = {"TEFF": [4800.0], "LOGG": [2.5], "FE_H": [-0.2]}
    >>> spec = observe(normalized_flux(labels), labels, snr=50.0, rng=np.random.default_rng(1))
    >>> sorted(spec)
    ['andmask', 'flux', 'ivar', 'ormask', 'wavelength']
    >>> good = spec["ivar"][0] > 0
    >>> g = good & (spec["wavelength"] > 4000) & (spec["wavelength"] < 5500)
    >>> bool(40 < np.median(spec["flux"][0, g] * np.sqrt(spec["ivar"][0, g])) < 60)
    True
    """
    normalized = np.atleast_2d(np.asarray(normalized, dtype=np.float32))
    wavelength = lamost_wavelength()
    teff = _column(labels, "TEFF", None) if hasattr(labels, "__contains__") else None
    if teff is None:
        raise LabelError("observe: labels lack TEFF; expected the labels the spectra were made from")
    n = normalized.shape[0]
    if normalized.shape != (n, wavelength.size) or teff.size not in (1, n):
        raise ShapeError(f"observe: normalized has shape {normalized.shape} for {teff.size} stars; "
                         f"expected ({teff.size}, {wavelength.size})")
    if not np.all(np.isfinite(teff) & (teff > 0)):
        raise LabelError("observe: labels['TEFF'] must be positive and finite for every star")
    teff = np.broadcast_to(teff, (n,))
    snr = _as_snr(snr, n)
    out = dict(flux=np.empty((n, wavelength.size), np.float32), ivar=np.empty((n, wavelength.size), np.float32),
               andmask=np.empty((n, wavelength.size), np.int32), ormask=np.empty((n, wavelength.size), np.int32))
    for start in range(0, n, _CHUNK):
        rows = slice(start, start + _CHUNK)
        block = _observe_block(normalized[rows], teff[rows], snr[rows], rng, _instrument())
        for key, values in block.items():
            out[key][rows] = values
    out["wavelength"] = wavelength
    return out


@functools.lru_cache(maxsize=1)
def _instrument() -> dict:
    """Per-pixel instrument and sky vectors, computed once."""
    wavelength = lamost_wavelength()
    response = _response(wavelength)
    sky_continuum, sky_lines = _sky(wavelength)
    x = (wavelength - 6400.0) / 2700.0
    return dict(wavelength=wavelength, response=response, calibrated=response ** 0.3, gain=response ** 0.7,
                sky=(sky_continuum + sky_lines.sum(axis=0)) * response, sky_lines=sky_lines * response,
                tilt=x, curvature=1.5 * x ** 2 - 0.5, telluric=_telluric_depth(wavelength),
                g_band=(wavelength >= BANDS["G"][0]) & (wavelength < BANDS["G"][1]))


def _observe_block(normalized, teff, snr, rng, instrument) -> dict:
    n = normalized.shape[0]
    wavelength, gain = instrument["wavelength"], instrument["gain"]
    # LAMOST relative flux calibration leaves part of the response and low-order wiggles in the flux
    wiggle = (1.0 + rng.normal(0.0, 0.03, (n, 1)) * instrument["tilt"]
              + rng.normal(0.0, 0.02, (n, 1)) * instrument["curvature"])
    signal = normalized * _planck(wavelength, teff) * instrument["calibrated"] * wiggle
    signal *= np.exp(-instrument["telluric"] * rng.uniform(0.7, 1.6, (n, 1)))  # airmass and humidity vary
    signal /= np.median(signal[:, instrument["g_band"]], axis=1, keepdims=True)
    # counts ∝ flux × the part of the response the calibration removed; variance = object + sky counts
    sky_level = rng.lognormal(0.0, 0.5, (n, 1)) * np.clip(20.0 / snr, 0.2, 5.0)[:, None]
    object_counts = signal * gain
    sky_counts = sky_level * instrument["sky"]
    noise = np.sqrt(np.maximum(object_counts + sky_counts, 1e-12))
    exposure = (snr / np.median((object_counts / noise)[:, instrument["g_band"]], axis=1)) ** 2  # S/N ∝ √exposure
    sigma = noise / gain / np.sqrt(exposure)[:, None]
    # imperfect sky subtraction leaves a few per cent of each sky line, with either sign
    amplitudes = rng.normal(0.0, 0.03, (n, instrument["sky_lines"].shape[0]))
    residual = (amplitudes @ instrument["sky_lines"]) * sky_level / gain
    flux = signal + rng.standard_normal(signal.shape) * sigma + residual
    andmask, ormask = _bad_pixels(rng, n, wavelength.size)
    ormask[sky_counts > 3.0 * object_counts] |= MASK_BITS["BRIGHTSKY"]
    andmask[sky_counts > 10.0 * object_counts] |= MASK_BITS["BRIGHTSKY"]
    ormask |= andmask
    scale = 100.0 * np.sqrt(exposure)[:, None]  # relative flux units of the order of a real file's
    ivar = np.where(ormask != 0, 0.0, 1.0 / (sigma * scale) ** 2)
    flux = np.where(andmask != 0, 0.0, flux * scale)
    return dict(flux=flux, ivar=ivar, andmask=andmask, ormask=ormask)


# ---------------------------------------------------------------------------- file writer
_LAYOUTS = ("dr1", "dr7", "dr8")
# keyword: (default, comment) in the order of the real files' primary headers
_HEADER_TEMPLATE = {
    "FILENAME": ("", ""), "OBSID": (0, "Unique number ID of this spectrum"),
    "AUTHOR": ("LAMOST Pipeline", "Who compiled the information"), "DATA_V": ("LAMOST DR8", "Data release version"),
    "ORIGIN": ("NAOC-LAMOST", "Organization responsible for creating this file"),
    "TELESCOP": ("LAMOST", "GuoShouJing Telescope"), "LONGITUD": (117.58, "[deg] Longitude of site"),
    "LATITUDE": (40.39, "[deg] Latitude of site"), "LMJD": (0, "Local Modified Julian Day"),
    "MJD": (0, "Modified Julian Day"), "PLANID": ("", "Plan ID in use"),
    "RA": (0.0, "[deg] Right ascension of object"), "DEC": (0.0, "[deg] Declination of object"),
    "DESIG": ("", "Designation of LAMOST target"), "FIBERID": (0, "Fiber ID of Object"),
    "OBJNAME": ("", "Name of object"), "OBJTYPE": ("star", "Object type from input catalog"),
    "OBS_TYPE": ("OBJ", "The type of target (OBJ, FLAT, ARC or BIAS)"),
    "RADECSYS": ("FK5", "Equatorial coordinate system"), "EQUINOX": (2000.0, "Equinox in years"),
    "HELIO": (True, "Heliocentric correction"), "VACUUM": (True, "Wavelengths are in vacuum"),
    "NWORDER": (2, "Number of linear-log10 coefficients"), "WFITTYPE": ("LOG-LINEAR", "Linear-log10 dispersion"),
    "COEFF0": (LAMOST_LOG_START, "Central wavelength (log10) of first pixel"),
    "COEFF1": (LAMOST_LOG_STEP, "Log10 dispersion per pixel"),
    "CRVAL1": (LAMOST_LOG_START, "Central wavelength (log10) of first pixel"),
    "CD1_1": (LAMOST_LOG_STEP, "Log10 dispersion per pixel"), "CRPIX1": (1, "Starting pixel (1-indexed)"),
    "CTYPE1": ("LINEAR", ""), "DC-FLAG": (1, "Log-linear flag"),
    "CLASS": ("STAR", "Class of object"), "SUBCLASS": ("", "Subclass of object"),
    "Z": (0.0, "Redshift of object"), "Z_ERR": (0.0, "Redshift error of object"),
    "SNRU": (0.0, "SNR of u filter"), "SNRG": (0.0, "SNR of g filter"), "SNRR": (0.0, "SNR of r filter"),
    "SNRI": (0.0, "SNR of i filter"), "SNRZ": (0.0, "SNR of z filter"),
}
_DR1_NAMES = {"SNRU": "SN_U", "SNRG": "SN_G", "SNRR": "SN_R", "SNRI": "SN_I", "SNRZ": "SN_Z"}


def _vector(values, name: str, n_pix: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n_pix,):
        raise ShapeError(f"write_lamost_spectrum: {name} has shape {array.shape}; expected ({n_pix},) like wavelength")
    return array


def _log_linear_grid(wavelength: np.ndarray) -> tuple[float, float]:
    """(COEFF0, COEFF1) of a log-linear grid, or ShapeError."""
    if wavelength.ndim != 1 or wavelength.size < 2 or not np.all(np.isfinite(wavelength)) or np.any(wavelength <= 0):
        raise ShapeError("write_lamost_spectrum: wavelength must be a 1-D array of positive values; "
                         f"got shape {wavelength.shape}")
    log_wl = np.log10(wavelength)
    step = (log_wl[-1] - log_wl[0]) / (wavelength.size - 1)
    start = log_wl[0]
    if step <= 0 or np.max(np.abs(log_wl - (start + step * np.arange(wavelength.size)))) > 0.01 * abs(step):
        raise ShapeError("write_lamost_spectrum: wavelength is not log-linear (LAMOST files need "
                         "log10(lambda) = COEFF0 + COEFF1 * i)")
    return round(float(start), 10), round(float(step), 12)


def _primary_header(header: Mapping, layout: str, grid: tuple[float, float], path: Path):
    from astropy.io import fits

    values = {key: value for key, (value, _) in _HEADER_TEMPLATE.items()}
    values.update(FILENAME=path.name.removesuffix(".gz"), COEFF0=grid[0], COEFF1=grid[1], CRVAL1=grid[0],
                  CD1_1=grid[1])
    values["DATA_V"] = {"dr1": "LAMOST DR1", "dr7": "LAMOST DR7", "dr8": "LAMOST DR8"}[layout]
    for key, value in dict(header).items():
        key = str(key).upper()
        if key in ("COEFF0", "COEFF1", "CRVAL1", "CD1_1", "NAXIS", "NAXIS1", "NAXIS2", "BITPIX", "SIMPLE", "EXTEND"):
            continue  # the grid and the array structure come from the data
        values[key] = value.item() if isinstance(value, np.generic) else value
    result = fits.Header()
    for key, value in values.items():
        comment = _HEADER_TEMPLATE.get(key, (None, ""))[1]
        if layout == "dr1":
            key = _DR1_NAMES.get(key, key)
        if len(key) > 8 or not all(c.isalnum() or c in "-_" for c in key):
            raise LabelExplorerError(f"write_lamost_spectrum: header keyword {key!r} is not a FITS keyword "
                                     "(at most 8 letters, digits, '-' or '_')")
        try:
            result[key] = (value, comment)
        except (ValueError, TypeError) as exc:
            raise LabelExplorerError(f"write_lamost_spectrum: header[{key!r}] = {value!r} cannot be stored in a "
                                     f"FITS header ({exc}); expected a number, string or bool") from exc
    return result


def _continuum_normalised(flux: np.ndarray, good: np.ndarray) -> np.ndarray:
    """A crude pseudo-continuum-normalised flux for the DR1 'Subcontinuum' row."""
    filled = np.where(good, flux, np.nan)
    filled = np.where(np.isnan(filled), np.nanmedian(filled) if good.any() else 1.0, filled)
    continuum = median_filter(filled, size=151, mode="nearest")
    with np.errstate(all="ignore"):
        return np.where(good & (continuum > 0), flux / continuum, 0.0)


_COADD_COLUMNS = ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK", "NORMALIZATION")


@functools.lru_cache(maxsize=4)
def _coadd_header(n_pix: int) -> bytes:
    """The DR8+ ``COADD`` table header for one row of *n_pix*-pixel float32 vectors (built once by astropy)."""
    from astropy.io import fits

    columns = [fits.Column(name=name, format=f"{n_pix}E", array=np.zeros((1, n_pix), np.float32))
               for name in _COADD_COLUMNS]
    return fits.BinTableHDU.from_columns(columns, name="COADD").header.tostring().encode("ascii")


def _fits_bytes(wavelength, flux, ivar, andmask, ormask, normalized, header, layout) -> bytes:
    """The whole file. DR8+: the one-row table's data are the six vectors back to back, big-endian,
    written directly (astropy's generic table writer byte-swaps element by element, ~50 ms a file)."""
    from astropy.io import fits

    if layout == "dr8":
        header["N_EXTEN"] = (2, "The amount of extension")
        header["NORM"] = (int(np.any(normalized != -9999.0)), "1 if there exists a normalized spectrum")
        primary = fits.PrimaryHDU(header=header)
        primary.verify("exception")
        data = np.concatenate([flux, ivar, wavelength, andmask, ormask, normalized]).astype(">f4")
        blocks = [primary.header.tostring().encode("ascii"), _coadd_header(wavelength.size), data.tobytes()]
        return b"".join(block + b"\0" * (-len(block) % 2880) for block in blocks)
    third, names = ((normalized, "Flux Inverse Subcontinuum Andmask Ormask") if layout == "dr1"
                    else (wavelength, "Flux, Inverse, Wavelength, Andmask, Ormask"))
    header["EXTEN0"] = names
    header["N_EXTEN"] = (1, "The extension number")
    primary = fits.PrimaryHDU(data=np.stack([flux, ivar, third, andmask, ormask]).astype(">f4"), header=header)
    if layout == "dr7":
        primary.header["EXTNAME"] = ("Flux", "The extension name")
    buffer = io.BytesIO()
    primary.writeto(buffer, output_verify="exception")
    return buffer.getvalue()


def write_lamost_spectrum(path, wavelength, flux, ivar, andmask, header: Mapping, *, layout: str = "dr8",
                          ormask=None, normalized=None) -> Path:
    """Write one spectrum as a LAMOST low-resolution FITS file in a real release's layout.

    Parameters
    ----------
    path : str or Path
        Output file; a ``.gz`` suffix writes gzip-compressed FITS like the archive's.
    wavelength : array (n_pix,)
        Vacuum Å on a log-linear grid (COEFF0/COEFF1 are derived from it).
    flux, ivar, andmask : arrays (n_pix,)
        Flux, inverse variance and the and-mask bits (:data:`MASK_BITS`).
    header : mapping
        Primary-header keywords; the real names are used, e.g. ``OBSID``, ``DESIG``, ``RA``,
        ``DEC``, ``CLASS``, ``SUBCLASS``, ``Z``, ``SNRU``..``SNRZ`` (written as ``SN_U``..
        ``SN_Z`` in the DR1 layout, as DR1 files do); ``TELESCOP='LAMOST'``, the grid and
        the layout keywords are filled in.
    layout : {"dr8", "dr7", "dr1"}
        ``"dr8"`` (DR8 and later): empty primary HDU + one-row ``COADD`` binary table with
        FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK, NORMALIZATION. ``"dr7"`` (DR2–DR7): a
        5 × n primary array of flux, inverse variance, wavelength, andmask, ormask.
        ``"dr1"``: the same with the continuum-normalised flux as third row.
    ormask : array (n_pix,), optional
        Or-mask bits; default: *andmask*.
    normalized : array (n_pix,), optional
        Continuum-normalised flux (DR1 third row; DR8 NORMALIZATION column, else -9999
        as in the archive). For DR1 a running-median normalisation is used when omitted.

    Returns
    -------
    Path
        The written file (written to a temporary file and moved into place).

    Raises
    ------
    ShapeError
        If an array does not match *wavelength* or the grid is not log-linear.
    LabelExplorerError
        If *layout* is unknown or a header value cannot be stored in FITS.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> wl = lamost_wavelength()
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "spec-demo.fits.gz"
    >>> _ = write_lamost_spectrum(out, wl, np.ones(wl.size), np.ones(wl.size), np.zeros(wl.size),
    ...                           {"OBSID": 101001, "SNRG": 50.0, "DESIG": "LAMOST J000000.00+000000.0"})
    >>> from astropy.io import fits
    >>> with fits.open(out) as hdul:
    ...     hdul[0].header["TELESCOP"], hdul[1].name, hdul[1].columns.names[:3]
    ('LAMOST', 'COADD', ['FLUX', 'IVAR', 'WAVELENGTH'])
    """
    if layout not in _LAYOUTS:
        raise LabelExplorerError(f"write_lamost_spectrum: unknown layout {layout!r}; expected one of {_LAYOUTS}")
    if not hasattr(header, "items"):
        raise LabelExplorerError(f"write_lamost_spectrum: header must be a mapping of keyword to value; "
                                 f"got {type(header).__name__}")
    path = Path(path)
    wavelength = np.asarray(wavelength, dtype=np.float64)
    grid = _log_linear_grid(wavelength)
    n_pix = wavelength.size
    flux, ivar, andmask = (_vector(values, name, n_pix)
                           for values, name in ((flux, "flux"), (ivar, "ivar"), (andmask, "andmask")))
    ormask = andmask if ormask is None else _vector(ormask, "ormask", n_pix)
    if np.any(ivar < 0) or not np.all(np.isfinite(ivar)):
        raise SpectrumError("write_lamost_spectrum: ivar must be finite and >= 0 (0 marks a bad pixel)")
    if normalized is not None:
        normalized = _vector(normalized, "normalized", n_pix)
    elif layout == "dr1":
        normalized = _continuum_normalised(flux, (ivar > 0) & (andmask == 0))
    else:
        normalized = np.full(n_pix, -9999.0)
    payload = _fits_bytes(wavelength, flux, ivar, andmask, ormask, normalized,
                          _primary_header(header, layout, grid, path), layout)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path
