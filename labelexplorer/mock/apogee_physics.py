"""Fast, physically motivated H-band spectra on the real APOGEE grid (the mock universe's stars).

The model
---------
A continuum-normalised spectrum is built from the line list of
:mod:`labelexplorer.preprocess.linelist` (real H-band lines of every ASPCAP element, OH,
CN and computed CO bands, Brackett and helium series) in four vectorised steps:

1. **One photospheric point per star.** At the layer where the H-band continuum forms
   (T = Teff, τ = 2/3 of a grey atmosphere), the gas and electron pressures solve
   hydrostatic equilibrium ``P_g = (2/3) g / κ`` together with the Saha ionisation of H,
   He and the electron donors (C, Na, Mg, Al, Si, K, Ca, Fe) of a model atmosphere with
   ASPCAP's two composition dimensions, ``[Fe/H]`` and ``[α/M]`` (label ``ALPHA_M``). The
   continuous opacity at 1.5–1.7 µm is H⁻ bound-free (vanishing at its 1.64 µm threshold)
   and free-free, hydrogen bound-free/free-free and electron scattering (formulas of Gray,
   *The Observation and Analysis of Stellar Photospheres*). C, N and O are shared between
   free atoms, CO, CN, OH and N₂ by dissociation equilibrium, with partition functions from
   the molecular constants.
2. **Line strengths.** For each star and line, the ratio of line to continuous opacity at
   the line centre ``η0 = σ(gf) n_lower / κ_c`` follows from the star's abundance of the
   line's element (Asplund et al. 2009 solar values + ``[Fe/H]`` + ``[X/Fe]``), the Saha
   fraction of the line's ionisation stage, the Boltzmann factor ``10^(-θ χ)``, the
   partition function and the Doppler width ``b = sqrt(2kT/m + ξ²)`` (ξ = ``VMICRO``).
   Molecular lines use the molecule's number density and partition function. Damping
   (radiative + van der Waals on neutral H, which grows with gravity) gives atomic lines
   Lorentzian wings.
3. **Curve of growth at instrumental resolution.** A line of peak opacity ratio ``η0``
   and Doppler width ``Δλ_D`` has the equivalent width ``W = D Δλ_D √π h(η0)`` (``h``
   linear, then flat: the Doppler curve of growth; the wings add the damping part), where
   ``D = 1 − B_λ(0.75 Teff) / B_λ(Teff)`` is how dark an opaque core gets and weak lines
   reach ``D_grey η0`` with the grey-atmosphere ``D_grey`` (surface at 0.84 Teff). Each
   line is drawn as a Gaussian of the instrumental width (R = 22,500) holding ``W``, and
   blends add their opacities: ``flux = 1 − D (1 − exp(−Σ_lines amplitude × profile))``.
   The profiles are precomputed sparse matrices (a few tens of pixels per line), so a batch
   of stars costs a few sparse products ``amplitudes (n, n_lines) @ profiles (n_lines, 8575)``.
   Hydrogenic lines (H I Brackett, He II) are Stark broadened: Holtsmark-like profiles with
   wings ∝ Δλ^-5/2 and widths ∝ n_e^(2/3), interpolated between profiles precomputed on a
   grid of electron densities, so they widen and strengthen with gravity.
4. **Broadening.** Rotation (``VSINI``, limb-darkened kernel) and macroturbulence
   (``VMACRO``) are a per-star convolution in velocity, i.e. in pixels on the log-linear grid.

:func:`continuum_shape` gives the flux-calibrated continuum (emergent ``B_λ`` at the
depth the H⁻ opacity minimum lets one see, 2MASS H zero point, A_K extinction, a
response per chip with the roll-off at the chip edges), and :func:`observe` the noise,
sky lines, chip gaps, bad pixels, cosmic rays and persistence of an apStar file.

The model is a mock for training and testing label pipelines: it has the physics that
make labels identifiable (temperature, gravity, abundance and broadening dependences
of real lines) but no radiative transfer through a model atmosphere; water and FeH
in M dwarfs, telluric absorption and the diffuse interstellar band are not included.
``benchmarks/bench_mock_realism.py`` measures how close it comes to real spectra.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
from scipy import fft, sparse
from scipy.special import erf

from ..exceptions import LabelError, ShapeError, SpectrumError
from ..preprocess.bitmask import APOGEE_PIXMASK_BITS, DEFAULT_BAD_BITS
from ..preprocess.grid import APOGEE_LOG_STEP, APOGEE_N_PIXELS, CHIP_RANGES, apogee_wavelength
from ..preprocess.linelist import load_linelist

__all__ = ["APOGEE_RESOLUTION", "SKY_LINES", "normalized_flux", "continuum_shape", "observe"]

APOGEE_RESOLUTION = 22500.0
"""Resolving power of the instrumental (Gaussian) line-spread function."""

# ---------------------------------------------------------------------------------------------- constants
_K_EV = 8.617333262e-5  # eV / K
_K_B = 1.380649e-16  # erg / K
_HC_OVER_K = 1.438777e8  # Å K
_C_KMS = 299792.458
_C_CMS = 2.99792458e10
_AMU = 1.66053907e-24  # g
_M_H = 1.6735575e-24  # g
_PI_E2_MC = 0.026540  # π e² / (m_e c), cm² s⁻¹
_SIGMA_THOMSON = 6.6524587e-25  # cm²
_PIXEL_KMS = _C_KMS * np.log(10.0) * APOGEE_LOG_STEP  # 4.14 km/s per pixel
_SIGMA_LSF_KMS = _C_KMS / APOGEE_RESOLUTION / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_SIGMA_INTRINSIC_KMS = 1.5  # typical thermal + microturbulent core folded into the base profile
_SIGMA_BASE_PX = np.hypot(_SIGMA_LSF_KMS, _SIGMA_INTRINSIC_KMS) / _PIXEL_KMS
_SURFACE_TEMPERATURE = 0.75  # T where an opaque line core forms / Teff
_GREY_SURFACE_TEMPERATURE = 0.84  # (1/2)^(1/4): the top of a grey atmosphere, which sets weak-line depths
_F_H_ZERO = 1.133e7  # 2MASS H zero point (Cohen et al. 2003) in apStar units of 1e-17 erg/s/cm²/Å
_H_REFERENCE_WAVELENGTH = 16500.0
_EXTINCTION_SLOPE = 1.68  # A_λ ∝ λ^-1.68, i.e. A_H / A_K = 1.55 (Indebetouw et al. 2005)
_LOG_GAMMA6 = -7.3  # van der Waals broadening per H atom at 10^4 K (typical of H-band lines), log10 rad s⁻¹ cm³
_LOG_GAMMA4_HE = -4.7  # quadratic Stark broadening of the diffuse He I lines, log10 rad s⁻¹ cm³
_WING_CORE_PX = 2.0  # core radius of the Lorentzian wing profile
_WING_REACH_PX = 120  # wings are tapered to zero this far from the centre
_KAPPA_NODES = np.array([15000.0, 15500.0, 16000.0, 16250.0, 16420.0, 16700.0, 17100.0])

# Elements: solar abundance A(X) (Asplund et al. 2009), mass (amu), first and second ionisation
# energies (eV) and partition functions of the neutral, singly and doubly ionised atom near 5000 K
# with a power-law temperature slope for the rich transition-metal spectra.
_ELEMENTS = {
    #        A      mass    chi1    chi2    U0     U1     U2   slope
    "H": (12.00, 1.008, 13.598, 99.0, 2.0, 1.0, 1.0, 0.0),
    "He": (10.93, 4.003, 24.587, 54.418, 1.0, 2.0, 1.0, 0.0),
    "C": (8.43, 12.011, 11.260, 24.383, 9.3, 5.9, 1.0, 0.0),
    "N": (7.83, 14.007, 14.534, 29.601, 4.0, 9.0, 6.0, 0.0),
    "O": (8.69, 15.999, 13.618, 35.121, 8.9, 4.0, 9.0, 0.0),
    "Na": (6.24, 22.990, 5.139, 47.286, 2.0, 1.0, 6.0, 0.0),
    "Mg": (7.60, 24.305, 7.646, 15.035, 1.0, 2.0, 1.0, 0.0),
    "Al": (6.45, 26.982, 5.986, 18.828, 5.8, 1.0, 2.0, 0.0),
    "Si": (7.51, 28.086, 8.152, 16.346, 9.4, 5.7, 1.0, 0.0),
    "P": (5.41, 30.974, 10.487, 19.769, 5.0, 9.0, 6.0, 0.0),
    "S": (7.12, 32.06, 10.360, 23.338, 8.5, 4.0, 9.0, 0.0),
    "K": (5.03, 39.098, 4.341, 31.625, 2.1, 1.0, 6.0, 0.0),
    "Ca": (6.34, 40.078, 6.113, 11.872, 1.1, 2.1, 1.0, 0.0),
    "Ti": (4.95, 47.867, 6.828, 13.576, 30.0, 55.0, 25.0, 0.7),
    "V": (3.93, 50.942, 6.746, 14.618, 40.0, 35.0, 28.0, 0.7),
    "Cr": (5.64, 51.996, 6.767, 16.486, 9.5, 6.8, 19.0, 0.4),
    "Mn": (5.43, 54.938, 7.434, 15.640, 6.5, 7.5, 6.0, 0.3),
    "Fe": (7.50, 55.845, 7.902, 16.199, 27.0, 42.0, 25.0, 0.8),
    "Co": (4.99, 58.933, 7.881, 17.084, 32.0, 28.0, 23.0, 0.6),
    "Ni": (6.22, 58.693, 7.640, 18.169, 29.0, 10.0, 22.0, 0.3),
    "Cu": (4.19, 63.546, 7.726, 20.292, 2.2, 1.0, 7.0, 0.0),
    "Ge": (3.65, 72.630, 7.900, 15.934, 6.5, 3.0, 1.0, 0.0),
    "Rb": (2.52, 85.468, 4.177, 27.290, 2.2, 1.0, 6.0, 0.0),
    "Y": (2.21, 88.906, 6.217, 12.224, 15.0, 15.0, 10.0, 0.4),
    "Ce": (1.58, 140.116, 5.539, 10.850, 100.0, 190.0, 60.0, 0.5),
    "Nd": (1.42, 144.242, 5.525, 10.730, 80.0, 200.0, 60.0, 0.5),
}
_DONORS = ("H", "He", "C", "Na", "Mg", "Al", "Si", "K", "Ca", "Fe")
# ASPCAP name -> element symbol; the label that sets the abundance of lines attributed to it
_ASPCAP_SYMBOL = {"CI": "C", "TiII": "Ti"}
# Molecules: dissociation energy D0 (eV), vibrational and rotational constants (cm⁻¹), electronic
# statistical weight and symmetry number of the ground state, the two atoms.
_MOLECULES = {
    "12CO": (11.092, 2169.8, 1.9313, 1.0, 1.0, ("C", "O")),
    "OH": (4.392, 3737.8, 18.910, 4.0, 1.0, ("O", "H")),
    "CN": (7.72, 2068.6, 1.8997, 2.0, 1.0, ("C", "N")),
    "N2": (9.759, 2358.6, 1.9982, 1.0, 2.0, ("N", "N")),
}
_MOLECULE_MASS = {"12CO": 28.0, "13CO": 29.0, "OH": 17.0, "CN": 26.0}
_ATOM_PARTITION = {"C": 9.0, "N": 4.0, "O": 9.0, "H": 2.0}

# Real airglow (OH Meinel) sky lines on the APOGEE grid, vacuum Å: the line lists used by the APOGEE
# wavelength calibration (sdss/apogee data/skylines/airglow.vac.txt and airglow.vac.apogee, BSD-3).
SKY_LINES = np.array([
    15187.140, 15240.954, 15287.789, 15332.402, 15395.334, 15430.163, 15432.156, 15462.125, 15474.212,
    15500.864, 15509.769, 15517.872, 15539.711, 15540.945, 15546.141, 15570.159, 15597.631, 15631.443,
    15654.953, 15656.178, 15657.749, 15702.539, 15759.826, 15760.830, 15781.163, 15783.090, 15830.335,
    15833.272, 15842.503, 15848.061, 15862.489, 15869.307, 15890.033, 15897.211, 15932.210, 15972.596,
    16030.831, 16079.753, 16128.608, 16194.615, 16234.838, 16235.376, 16270.318, 16279.727, 16302.278,
    16317.161, 16341.755, 16350.650, 16351.954, 16360.385, 16388.492, 16414.737, 16442.155, 16447.616,
    16475.648, 16477.318, 16479.061, 16502.365, 16553.814, 16586.322, 16609.994, 16612.053, 16689.201,
    16692.380, 16702.639, 16708.645, 16708.852, 16709.411, 16724.044, 16724.739, 16725.539, 16731.789,
    16732.479, 16733.659, 16755.155, 16763.572, 16802.368, 16840.481, 16903.679, 16955.078])
"""Vacuum wavelengths (Å) of the OH airglow lines flagged as ``SIG_SKYLINE``."""

_MAX_BATCH = 512  # stars per block: bounds memory at ~100 MB whatever the batch size


# ============================================================================================= labels
def _label(labels: Mapping, name: str, n: int | None, default: float | None = None,
           bounds: tuple[float, float] | None = None) -> np.ndarray:
    """One label column as a float array of length n (missing -> default; checked)."""
    value = labels.get(name)
    if value is None:
        if default is None:
            raise LabelError(f"labels: missing required label {name!r} (expected TEFF, LOGG and FE_H arrays)")
        return np.full(n, float(default))
    try:
        array = np.atleast_1d(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise LabelError(f"labels[{name!r}]: expected numbers, got {type(value).__name__}") from exc
    if array.ndim != 1 or (n is not None and array.size != n):
        raise LabelError(f"labels[{name!r}]: expected a 1-D array of length {n}, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise LabelError(f"labels[{name!r}]: contains NaN or infinite values (the mock needs true labels)")
    if bounds is not None and (array.min() < bounds[0] or array.max() > bounds[1]):
        raise LabelError(f"labels[{name!r}]: values must lie in [{bounds[0]}, {bounds[1]}], "
                         f"got {array.min():g} .. {array.max():g}")
    return array


_ALPHA_DONORS = ("Mg", "Si", "Ca")


@dataclass
class _Stars:
    """Labels of a batch of stars, checked and with defaults filled in."""

    teff: np.ndarray
    logg: np.ndarray
    vmicro: np.ndarray
    vsini: np.ndarray
    vmacro: np.ndarray
    log_eps: dict  # element symbol -> log10 N(X)/N(H) of the star, per star (sets its lines)
    atmosphere_log_eps: dict  # the same for the model atmosphere: [Fe/H] and [α/M] only
    line_abundance: dict  # ASPCAP line-list element -> [X/H] that sets its lines
    carbon_isotope_ratio: np.ndarray

    @property
    def n(self) -> int:
        return self.teff.size

    def subset(self, rows: slice) -> "_Stars":
        values = {}
        for field in fields(self):
            value = getattr(self, field.name)
            values[field.name] = {k: v[rows] for k, v in value.items()} if isinstance(value, dict) else value[rows]
        return _Stars(**values)


def _stars(labels: Mapping) -> _Stars:
    if not isinstance(labels, Mapping):
        raise LabelError(f"labels: expected a mapping of label name -> array, got {type(labels).__name__}")
    teff = _label(labels, "TEFF", None, bounds=(2000.0, 60000.0))
    n = teff.size
    logg = _label(labels, "LOGG", n, bounds=(-1.0, 6.0))
    feh = _label(labels, "FE_H", n, bounds=(-5.0, 1.5))
    # defaults: APOGEE-like microturbulence (~1 km/s in dwarfs, ~2 km/s at the RGB tip) and
    # macroturbulence (~3 km/s in dwarfs, ~5 km/s in giants); 12C/13C ~20 in dredged-up giants, 89 in dwarfs
    vmicro = _label(labels, "VMICRO", n, default=0.0, bounds=(0.0, 20.0))
    if "VMICRO" not in labels:
        vmicro = np.clip(2.48 - 0.325 * logg, 0.6, 3.0)
    vmacro = _label(labels, "VMACRO", n, default=0.0, bounds=(0.0, 50.0))
    if "VMACRO" not in labels:
        vmacro = 3.0 + 2.0 * np.clip((4.4 - logg) / 3.0, 0.0, 1.0)
    vsini = _label(labels, "VSINI", n, default=0.0, bounds=(0.0, 600.0))
    ratio = _label(labels, "C12_C13", n, default=1.0, bounds=(1.0, 1e4))
    if "C12_C13" not in labels:
        ratio = 20.0 + 69.0 * np.clip(logg - 3.0, 0.0, 1.0)
    x_fe = {aspcap: _label(labels, f"{aspcap.upper()}_FE", n, default=0.0, bounds=(-3.0, 3.0))
            for aspcap in ("C", "CI", "N", "O", "Na", "Mg", "Al", "Si", "P", "S", "K", "Ca", "Ti", "TiII", "V",
                           "Cr", "Mn", "Co", "Ni", "Cu", "Ge", "Ce", "Rb", "Y", "Nd")}
    line_abundance = {aspcap: feh + value for aspcap, value in x_fe.items()}
    line_abundance["Fe"] = feh
    # the model atmosphere, as in ASPCAP's grids, knows only [M/H] and [α/M]: an element's own
    # abundance changes its lines (and molecules), not the electron pressure of the continuum
    alpha = _label(labels, "ALPHA_M", n, default=0.0, bounds=(-1.0, 1.5))
    log_eps, atmosphere = {}, {}
    zero = np.zeros(n)
    for symbol, (solar, *_rest) in _ELEMENTS.items():
        metal = symbol not in ("H", "He")
        log_eps[symbol] = solar - 12.0 + line_abundance.get(symbol, feh if metal else zero)
        atmosphere[symbol] = solar - 12.0 + (feh + (alpha if symbol in _ALPHA_DONORS else 0.0) if metal else zero)
    return _Stars(teff, logg, vmicro, vsini, vmacro, log_eps, atmosphere, line_abundance, ratio)


# ============================================================================================= photosphere
def _partition(symbol: str, stage: int, temperature: np.ndarray) -> np.ndarray:
    """Approximate partition function of *symbol* in ionisation *stage* (0, 1, 2)."""
    values = _ELEMENTS[symbol]
    slope = values[7] if stage < 2 else 0.0
    return values[4 + stage] * (np.clip(temperature, 2500.0, 12000.0) / 5000.0) ** slope


def _saha(symbol: str, stage: int, temperature: np.ndarray) -> np.ndarray:
    """Φ (dyn cm⁻²) of N(stage+1) P_e / N(stage) = Φ for the ionisation stage -> stage+1."""
    chi = _ELEMENTS[symbol][2 + stage]
    ratio = _partition(symbol, stage + 1, temperature) / _partition(symbol, stage, temperature)
    return 0.6665 * ratio * temperature ** 2.5 * 10.0 ** (-5040.0 * chi / temperature)


def _stage_fractions(symbol: str, temperature: np.ndarray, p_e: np.ndarray) -> np.ndarray:
    """Fractions (3, n) of the neutral, singly and doubly ionised atom."""
    phi1 = _saha(symbol, 0, temperature) / p_e
    phi2 = _saha(symbol, 1, temperature) / p_e
    neutral = 1.0 / (1.0 + phi1 + phi1 * phi2)
    return np.stack([neutral, neutral * phi1, neutral * phi1 * phi2])


def _donor_constants(stars: _Stars, temperature: np.ndarray) -> tuple:
    """Abundances and Saha constants (n_donors, n) of the electron donors: ε, Φ1, Φ2."""
    eps = np.array([10.0 ** stars.atmosphere_log_eps[s] for s in _DONORS])
    phi1 = np.array([_saha(s, 0, temperature) for s in _DONORS])
    phi2 = np.array([_saha(s, 1, temperature) for s in _DONORS])
    return eps, phi1, phi2


def _electrons_per_hydrogen(donors: tuple, p_e: np.ndarray) -> np.ndarray:
    """Free electrons per H nucleus at electron pressure p_e (singly and doubly ionised donors)."""
    eps, phi1, phi2 = donors
    y1 = phi1 / p_e
    y2 = phi2 / p_e
    return np.sum(eps * y1 * (1.0 + 2.0 * y2) / (1.0 + y1 + y1 * y2), axis=0)


def _hminus_bound_free(wavelength: np.ndarray) -> np.ndarray:
    """H⁻ photo-detachment cross-section (cm²), Gray's polynomial; zero beyond the 1.64 µm threshold."""
    coefficients = (1.99654, -1.18267e-5, 2.64243e-6, -4.40524e-10, 3.23992e-14, -1.39568e-18, 2.78701e-23)
    value = sum(c * wavelength ** k for k, c in enumerate(coefficients))
    return np.clip(value, 0.0, None) * 1e-18


def _opacity_coefficients(wavelength: np.ndarray, temperature: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Continuous opacity per neutral H atom (cm²), split as ``per_pe * P_e + hydrogen``; (n, n_wavelengths).

    ``per_pe``: H⁻ bound-free and free-free per unit electron pressure; ``hydrogen``: H I
    bound-free (n >= 5 at these wavelengths) and free-free, with stimulated emission.
    """
    wavelength = np.asarray(wavelength, dtype=float)[None, :]
    theta = 5040.0 / temperature[:, None]
    stimulated = 1.0 - 10.0 ** (-theta * 12398.4 / wavelength)
    h_bf = 4.158e-10 * _hminus_bound_free(wavelength) * theta ** 2.5 * 10.0 ** (0.754 * theta) * stimulated
    log_l = np.log10(wavelength)
    log_t = np.log10(np.clip(theta, 0.5, 3.6))
    f0 = -2.2763 - 1.6850 * log_l + 0.76661 * log_l ** 2 - 0.053346 * log_l ** 3
    f1 = 15.2827 - 9.2846 * log_l + 1.99381 * log_l ** 2 - 0.142631 * log_l ** 3
    f2 = -197.789 + 190.266 * log_l - 67.9775 * log_l ** 2 + 10.6913 * log_l ** 3 - 0.625151 * log_l ** 4
    h_ff = 1e-26 * 10.0 ** (f0 + f1 * log_t + f2 * log_t ** 2)
    ionisation = 13.598
    bound = sum(10.0 ** (-theta * ionisation * (1 - 1 / n ** 2)) / n ** 3 for n in (5, 6, 7))
    upper = np.log10(np.e) / (2 * theta * ionisation) * (10.0 ** (-theta * ionisation * (1 - 1 / 64.0)))
    hydrogen = 1.0449e-26 * wavelength ** 3 * (bound + upper) * stimulated
    return h_bf + h_ff, hydrogen


def _continuum_opacity(coefficients: tuple, p_e: np.ndarray, neutral_h: np.ndarray,
                       electrons: np.ndarray) -> np.ndarray:
    """Continuous opacity per H nucleus (cm²): H⁻ and H I on neutral H plus Thomson scattering."""
    per_pe, hydrogen = coefficients
    return neutral_h[:, None] * (per_pe * p_e[:, None] + hydrogen) + _SIGMA_THOMSON * electrons[:, None]


@dataclass
class _Photosphere:
    temperature: np.ndarray
    p_e: np.ndarray
    p_gas: np.ndarray
    neutral_h: np.ndarray
    log_kappa_nodes: np.ndarray  # (n, len(_KAPPA_NODES)) log10 continuous opacity per H nucleus
    electron_density: np.ndarray
    hydrogen_density: np.ndarray  # neutral H atoms per cm³
    electrons: np.ndarray  # free electrons per H nucleus


def _photosphere(stars: _Stars) -> _Photosphere:
    """Solve P_g = (2/3) g / κ with Saha ionisation at the continuum-forming layer (vectorised)."""
    temperature = stars.teff
    gravity = 10.0 ** stars.logg
    helium = 10.0 ** stars.atmosphere_log_eps["He"]
    mass_per_h = _M_H * (1.0 + 3.97 * helium) + sum(
        10.0 ** stars.atmosphere_log_eps[s] * _ELEMENTS[s][1] * _AMU for s in _ELEMENTS if s not in ("H", "He"))
    donors = _donor_constants(stars, temperature)
    phi_h = _saha("H", 0, temperature)
    reference = _opacity_coefficients(np.array([16000.0]), temperature)
    log_pg = np.log10(gravity) + 3.0
    p_e = 10.0 ** (log_pg - 4.0)
    for outer in range(30):
        p_gas = 10.0 ** log_pg
        for inner in range(12 if outer == 0 else 3):
            target = (p_gas - p_e) / (1.0 + helium) * _electrons_per_hydrogen(donors, p_e)
            p_e = np.sqrt(p_e * np.clip(target, 1e-12 * p_gas, 0.99 * p_gas))
        neutral_h = p_e / (p_e + phi_h)
        kappa = _continuum_opacity(reference, p_e, neutral_h, _electrons_per_hydrogen(donors, p_e))[:, 0]
        log_pg = 0.5 * log_pg + 0.5 * np.log10((2.0 / 3.0) * gravity * mass_per_h / kappa)
    p_gas = 10.0 ** log_pg
    neutral_h = p_e / (p_e + phi_h)
    electrons = _electrons_per_hydrogen(donors, p_e)
    kappa_nodes = _continuum_opacity(_opacity_coefficients(_KAPPA_NODES, temperature), p_e, neutral_h, electrons)
    n_h_total = (p_gas - p_e) / ((1.0 + helium) * _K_B * temperature)
    return _Photosphere(temperature, p_e, p_gas, neutral_h, np.log10(kappa_nodes), p_e / (_K_B * temperature),
                        neutral_h * n_h_total, electrons)


def _dissociation_constant(name: str, temperature: np.ndarray) -> np.ndarray:
    """K_p = P_A P_B / P_AB (dyn cm⁻²) from the molecule's partition function."""
    d0, omega, b_rot, g_el, symmetry, (a, b) = _MOLECULES[name]
    mass_a, mass_b = _ELEMENTS[a][1], _ELEMENTS[b][1]
    mu = mass_a * mass_b / (mass_a + mass_b) * _AMU
    kt = _K_B * temperature
    translational = (2.0 * np.pi * mu * kt / 6.62607015e-27 ** 2) ** 1.5
    q_molecule = _molecule_partition(name, temperature)
    atoms = _ATOM_PARTITION[a] * _ATOM_PARTITION[b]
    return kt * translational * atoms / q_molecule * np.exp(-d0 / (_K_EV * temperature))


def _molecule_partition(name: str, temperature: np.ndarray) -> np.ndarray:
    d0, omega, b_rot, g_el, symmetry, _atoms = _MOLECULES["12CO" if name == "13CO" else name]
    rotational = temperature / (1.438777 * b_rot * symmetry)
    vibrational = 1.0 / (1.0 - np.exp(-1.438777 * omega / temperature))
    return g_el * rotational * vibrational


def _molecules(stars: _Stars, photosphere: _Photosphere) -> dict:
    """log10 number of CO, 13CO, OH and CN molecules per H nucleus (dissociation equilibrium)."""
    t = photosphere.temperature
    p_h_total = photosphere.p_gas / (1.0 + 10.0 ** stars.log_eps["He"])
    p_h = photosphere.neutral_h * p_h_total
    totals = {s: 10.0 ** stars.log_eps[s] * p_h_total for s in ("C", "N", "O")}
    k = {name: _dissociation_constant(name, t) for name in ("12CO", "OH", "CN", "N2")}
    p_c, p_n = totals["C"], totals["N"]
    for _ in range(12):
        # CO from the quadratic (P_C - x)(P_O - x) = K a_C a_O x, with the other sinks of C and O in a_C, a_O
        a_c = 1.0 + p_n / k["CN"]
        a_o = 1.0 + p_h / k["OH"]
        s = totals["C"] + totals["O"] + k["12CO"] * a_c * a_o
        co = 2.0 * totals["C"] * totals["O"] / (s + np.sqrt(np.clip(s * s - 4.0 * totals["C"] * totals["O"], 0, None)))
        tiny = 1e-30 * p_h_total  # keeps the minority atom positive when C or O is all in CO
        p_c = np.maximum((totals["C"] - co) / a_c, tiny)
        p_o = np.maximum((totals["O"] - co) / a_o, tiny)
        # N from (2 / K_N2) p² + (1 + p_C / K_CN) p − P_N = 0 (its stable positive root)
        b = 1.0 + p_c / k["CN"]
        p_n = 2.0 * totals["N"] / (b + np.sqrt(b * b + 8.0 * totals["N"] / k["N2"]))
    thirteen = 1.0 / (1.0 + stars.carbon_isotope_ratio)
    return {"12CO": np.log10(co * (1 - thirteen) / p_h_total), "13CO": np.log10(co * thirteen / p_h_total),
            "OH": np.log10(p_o * p_h / k["OH"] / p_h_total), "CN": np.log10(p_c * p_n / k["CN"] / p_h_total)}


# ============================================================================================= line model
@lru_cache(maxsize=1)
def _curve_of_growth_table() -> tuple[np.ndarray, np.ndarray]:
    """log10 x and log10 h(x), h(x) = π^-1/2 ∫ (1 − exp(−x e^{−u²})) du: the Doppler curve of growth."""
    x = np.logspace(-6.0, 14.0, 500)
    u = np.linspace(0.0, 8.0, 4001)[None, :]
    integrand = -np.expm1(-x[:, None] * np.exp(-u * u))
    h = 2.0 / np.sqrt(np.pi) * np.trapezoid(integrand, u[0], axis=1)
    return np.log10(x), np.log10(h)


def _growth(log_eta: np.ndarray) -> np.ndarray:
    """log10 h(η) for log10 η (linear interpolation on the uniform table; h ≈ η below it)."""
    log_x, log_h = _curve_of_growth_table()
    step = log_x[1] - log_x[0]
    position = np.clip((log_eta - log_x[0]) / step, 0.0, log_x.size - 1.001)
    index = position.astype(np.int32)
    fraction = position - index
    value = log_h[index] * (1.0 - fraction) + log_h[index + 1] * fraction
    return np.where(log_eta < log_x[0], log_eta, value)


def _pixel_position(wavelength: np.ndarray) -> np.ndarray:
    return (np.log10(wavelength) - np.log10(apogee_wavelength()[0])) / APOGEE_LOG_STEP


def _sparse_profiles(centres: np.ndarray, half_width: int, shape_function) -> sparse.csr_matrix:
    """(n_lines, 8575) sparse matrix with shape_function(offset in pixels) around each centre."""
    offsets = np.arange(-half_width, half_width + 1)
    columns = np.rint(centres)[:, None].astype(int) + offsets[None, :]
    values = shape_function(columns - centres[:, None])
    rows = np.broadcast_to(np.arange(centres.size)[:, None], columns.shape)
    keep = (columns >= 0) & (columns < APOGEE_N_PIXELS) & (values != 0)
    matrix = sparse.csr_matrix((values[keep], (rows[keep], columns[keep])), shape=(centres.size, APOGEE_N_PIXELS))
    return matrix.astype(np.float32)


def _gaussian_pixels(offset: np.ndarray) -> np.ndarray:
    """A unit-peak Gaussian of the base width, integrated over each pixel."""
    sigma = _SIGMA_BASE_PX
    scale = np.sqrt(2.0) * sigma
    integral = 0.5 * (erf((offset + 0.5) / scale) - erf((offset - 0.5) / scale))
    return integral * np.sqrt(2.0 * np.pi) * sigma


def _wing_shape(offset: np.ndarray) -> np.ndarray:
    """Lorentzian far wing w²/(x² + w²) with its core removed and tapered to 0 at the reach."""
    w = _WING_CORE_PX
    x2 = offset ** 2
    taper = np.clip(1.0 - x2 / _WING_REACH_PX ** 2, 0.0, None) ** 2
    return w * w / (x2 + w * w) * (-np.expm1(-x2 / (w * w))) * taper


# Holtsmark-like Stark profile (1 + β²)^-5/4 / 2.3963: unit area, far wings ∝ β^-5/2
_STARK_NORM = 2.39628
_LOG_NE_NODES = np.linspace(9.0, 17.0, 33)  # log10 n_e (cm⁻³) where the hydrogenic profiles are precomputed
_HYDROGENIC_DOPPLER_KMS = 13.0  # thermal width of H at 10^4 K (and He at 4x10^4 K), a floor to the Stark width


def _stark_matrix(centres_px: np.ndarray, widths: np.ndarray) -> sparse.csr_matrix:
    """Stark profiles (per Å) with one width (Å) per line, (n_lines, 8575)."""
    wavelength = apogee_wavelength()
    pixel_angstrom = wavelength[0] * np.log(10.0) * APOGEE_LOG_STEP
    rows, columns, values = [], [], []
    for row, (centre, width) in enumerate(zip(centres_px, widths)):
        half = int(min(APOGEE_N_PIXELS, np.ceil(80.0 * width / pixel_angstrom) + 10))
        column = np.arange(max(int(centre) - half, 0), min(int(centre) + half + 1, APOGEE_N_PIXELS))
        if column.size == 0:
            continue
        centre_wavelength = 10.0 ** (np.log10(wavelength[0]) + APOGEE_LOG_STEP * centre)
        beta = (wavelength[column] - centre_wavelength) / width
        value = (1.0 + beta * beta) ** -1.25 / (_STARK_NORM * width)
        keep = value > 1e-7 / width
        rows.append(np.full(int(keep.sum()), row))
        columns.append(column[keep])
        values.append(value[keep])
    matrix = sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
                               shape=(centres_px.size, APOGEE_N_PIXELS))
    return matrix.astype(np.float32)


@dataclass(frozen=True)
class _LineModel:
    wavelength: np.ndarray
    species: tuple  # species names, indexed by species_index
    species_index: np.ndarray
    log_prefactor: np.ndarray  # log10(π e²/mc · gf · λ / √π), λ in cm
    excitation: np.ndarray
    kappa_weights: np.ndarray  # (n_lines, n_nodes) linear interpolation of log κ_c
    cores: sparse.csr_matrix  # (n_lines, 8575)
    wing_rows: np.ndarray  # lines with damping wings (atoms and helium)
    wings: sparse.csr_matrix  # (len(wing_rows), 8575)
    h_wavelength: np.ndarray  # hydrogenic lines: H I Brackett and He II
    h_helium: np.ndarray  # True for He II
    h_log_strength: np.ndarray  # log10(π e²/mc · f · λ²/c in Å · g_lower / U)
    h_excitation: np.ndarray
    h_kappa_weights: np.ndarray
    h_stark_factor: np.ndarray  # Stark width / n_e^(2/3), Å
    h_basis: tuple  # one sparse matrix per entry of _LOG_NE_NODES


def _interpolation_weights(x: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    index = np.clip(np.searchsorted(nodes, x) - 1, 0, nodes.size - 2)
    t = np.clip((x - nodes[index]) / (nodes[index + 1] - nodes[index]), 0.0, 1.0)
    weights = np.zeros((x.size, nodes.size))
    weights[np.arange(x.size), index] = 1.0 - t
    weights[np.arange(x.size), index + 1] += t
    return weights


def _species_name(row) -> str:
    if row.kind == "molecular":
        return row.species
    symbol = _ASPCAP_SYMBOL.get(row.element, row.element)
    return f"{symbol}:{int(row.ion) - 1}"


@lru_cache(maxsize=1)
def _line_model() -> _LineModel:
    lines = load_linelist()
    hydrogenic = _hydrogenic_rows(lines)
    metals = lines[~hydrogenic].reset_index(drop=True)
    species_names = [_species_name(row) for row in metals.itertuples(index=False)]
    species = tuple(sorted(set(species_names)))
    index = np.array([species.index(name) for name in species_names])
    wavelength = metals["wavelength"].to_numpy(float)
    log_prefactor = (np.log10(_PI_E2_MC / np.sqrt(np.pi)) + metals["log_gf"].to_numpy(float)
                     + np.log10(wavelength * 1e-8))
    centres = _pixel_position(wavelength)
    cores = _sparse_profiles(centres, int(np.ceil(5 * _SIGMA_BASE_PX)) + 1, _gaussian_pixels)
    wing_rows = np.flatnonzero(metals["kind"].isin(["atomic", "helium"]).to_numpy())
    wings = _sparse_profiles(centres[wing_rows], _WING_REACH_PX, _wing_shape)
    h_lines = lines[hydrogenic]
    h_wavelength = h_lines["wavelength"].to_numpy(float)
    helium = (h_lines["species"] == "He II").to_numpy()
    n_lower, n_upper = np.array([_principal_numbers(label) for label in h_lines["label"]]).T
    charge = np.where(helium, 2.0, 1.0)
    # gf / U with U = 2 for H I and He II: the lower level's population per ion is g e^(-χ/kT) / U
    h_log_strength = (np.log10(_PI_E2_MC) + h_lines["log_gf"].to_numpy(float) - np.log10(2.0)
                      + np.log10((h_wavelength * 1e-8) ** 2 / _C_CMS * 1e8))
    # linear Stark effect of a hydrogenic ion at the normal field F0 = 2.61 e n_e^(2/3):
    # Δλ = (3 e a0 / 2h) (λ²/c) (n_u² − n_l²) F0 / Z, the width of the (1 + β²)^-5/4 profile. With it an
    # A0 V star (n_e ~ 1e14 cm⁻³) has Br11 ~ 25 Å wide and Br lines merge near n ~ 20 (Inglis–Teller)
    h_stark_factor = 6.15e-11 * (h_wavelength / 16000.0) ** 2 * (n_upper ** 2 - n_lower ** 2) / charge
    floor = h_wavelength * np.hypot(1.2 * _HYDROGENIC_DOPPLER_KMS / _C_KMS, 0.4 / APOGEE_RESOLUTION)
    h_centres = _pixel_position(h_wavelength)
    h_basis = tuple(_stark_matrix(h_centres, np.hypot(h_stark_factor * 10.0 ** (2.0 / 3.0 * log_ne), floor))
                    for log_ne in _LOG_NE_NODES)
    return _LineModel(wavelength, species, index, log_prefactor, metals["excitation"].to_numpy(float),
                      _interpolation_weights(wavelength, _KAPPA_NODES), cores, wing_rows, wings, h_wavelength, helium,
                      h_log_strength, h_lines["excitation"].to_numpy(float),
                      _interpolation_weights(h_wavelength, _KAPPA_NODES), h_stark_factor, h_basis)


def _hydrogenic_rows(lines) -> np.ndarray:
    """Lines drawn with Stark profiles: the H I Brackett series and He II."""
    return ((lines["kind"] == "hydrogen") | (lines["species"] == "He II")).to_numpy()


def _principal_numbers(label: str) -> tuple[int, int]:
    """(n_lower, n_upper) from a label ``Br11`` or ``He II 7-12``."""
    if label.startswith("Br"):
        return 4, int(label[2:])
    lower, upper = label.split()[-1].split("-")
    return int(lower), int(upper)


def _species_columns(stars: _Stars, photosphere: _Photosphere, species: tuple) -> dict:
    """Per-species arrays (n, n_species): log10 absorbers per H nucleus, log10 U, mass, damping rate."""
    t = photosphere.temperature
    molecules = _molecules(stars, photosphere)
    n = stars.n
    log_number = np.empty((n, len(species)))
    log_partition = np.empty((n, len(species)))
    mass = np.empty(len(species))
    gamma = np.empty((n, len(species)))
    van_der_waals = 10.0 ** _LOG_GAMMA6 * photosphere.hydrogen_density * (t / 1e4) ** 0.4
    for column, name in enumerate(species):
        if name in molecules:
            log_number[:, column] = molecules[name]
            log_partition[:, column] = np.log10(_molecule_partition(name, t))
            mass[column] = _MOLECULE_MASS[name]
            gamma[:, column] = 1e8
            continue
        symbol, stage = name.split(":")
        stage = int(stage)
        fractions = _stage_fractions(symbol, t, photosphere.p_e)
        log_number[:, column] = stars.log_eps[symbol] + np.log10(np.clip(fractions[stage], 1e-300, None))
        log_partition[:, column] = np.log10(_partition(symbol, stage, t))
        mass[column] = _ELEMENTS[symbol][1]
        gamma[:, column] = 1e8 + van_der_waals
        if symbol == "He":
            gamma[:, column] += 10.0 ** _LOG_GAMMA4_HE * photosphere.electron_density
    return dict(log_number=log_number, log_partition=log_partition, mass=mass, gamma=gamma)


def _saturation_depth(teff: np.ndarray, wavelength: np.ndarray, surface: float = _SURFACE_TEMPERATURE) -> np.ndarray:
    """D = 1 − B_λ(0.75 Teff) / B_λ(Teff): the depth of an opaque line core, (n, n_wavelengths)."""
    x = _HC_OVER_K / (wavelength[None, :] * teff[:, None])
    return 1.0 - np.expm1(x) / np.expm1(x / surface)


def _log_weak_line_efficiency(teff: np.ndarray) -> np.ndarray:
    """log10 of (weak-line depth per unit η) / D, shape (n,).

    In a Milne–Eddington atmosphere a weak line is as deep as η times the depth of an opaque
    core; weak lines form near the continuum, where the temperature gradient is the grey one
    (surface at 0.84 Teff), while strong cores reach the cooler, line-blanketed top (0.75 Teff).
    """
    wavelength = np.array([16000.0])
    grey = _saturation_depth(teff, wavelength, _GREY_SURFACE_TEMPERATURE)[:, 0]
    return np.log10(grey / _saturation_depth(teff, wavelength)[:, 0])


def _metal_amplitudes(stars: _Stars, photosphere: _Photosphere, model: _LineModel):
    """Core and wing amplitudes (n, n_lines), (n, n_wing_lines) in units of the opacity ratio (float32)."""
    columns = _species_columns(stars, photosphere, model.species)
    t = photosphere.temperature[:, None]
    b_kms = np.sqrt(2.0 * _K_B * t / (columns["mass"][None, :] * _AMU) / 1e10 + stars.vmicro[:, None] ** 2)
    stimulated = np.log10(-np.expm1(-_HC_OVER_K / (16000.0 * photosphere.temperature)))
    # everything that depends on the star and the species, gathered once per line
    per_species = (columns["log_number"] - columns["log_partition"] - np.log10(b_kms * 1e5)
                   + (stimulated + _log_weak_line_efficiency(stars.teff))[:, None])
    index = model.species_index
    log_eta = per_species.astype(np.float32)[:, index]
    log_eta += model.log_prefactor.astype(np.float32)[None, :]
    log_eta -= np.outer(5040.0 / photosphere.temperature, model.excitation).astype(np.float32)
    log_eta -= (photosphere.log_kappa_nodes @ model.kappa_weights.T).astype(np.float32)
    _apply_line_labels(stars, log_eta)
    # the equivalent width of the intrinsic line, W = D Δλ_D √π h(η0), drawn as a Gaussian of the
    # instrumental width: its peak opacity ratio is W / (D σ √(2π)) = Δλ_D h(η0) / (σ √2)
    doppler_ratio = (b_kms / (np.sqrt(2.0) * _SIGMA_BASE_PX * _PIXEL_KMS)).astype(np.float32)
    cores = doppler_ratio[:, index] * 10.0 ** _growth(log_eta)
    # far damping wing of the Voigt profile, η0 (a/√π) (Δλ_D/Δλ)², on the wing profile of core radius w
    damping = columns["gamma"] * (16000e-8) / (4.0 * np.pi * b_kms * 1e5)
    wing_scale = (damping / np.sqrt(np.pi) * (b_kms / (_WING_CORE_PX * _PIXEL_KMS)) ** 2).astype(np.float32)
    wings = 10.0 ** log_eta[:, model.wing_rows] * wing_scale[:, index[model.wing_rows]]
    return cores, wings


@lru_cache(maxsize=1)
def _label_groups() -> tuple:
    """(ASPCAP element, line indices) for lines whose abundance label is not their element's (C I, Ti II)."""
    lines = load_linelist()
    metals = lines[~_hydrogenic_rows(lines)].reset_index(drop=True)
    return tuple((element, np.flatnonzero(metals["element"].to_numpy() == element)) for element in _ASPCAP_SYMBOL)


def _apply_line_labels(stars: _Stars, log_eta: np.ndarray) -> None:
    """C I lines follow CI_FE and Ti II lines TIII_FE (ASPCAP fits them apart from C and Ti); in place."""
    for element, rows in _label_groups():
        symbol = _ASPCAP_SYMBOL[element]
        log_eta[:, rows] += (stars.line_abundance[element] - stars.line_abundance[symbol]).astype(np.float32)[:, None]


def _hydrogen_opacity(stars: _Stars, photosphere: _Photosphere, model: _LineModel) -> np.ndarray:
    """Opacity ratio (n, 8575) of the Stark-broadened hydrogenic lines (H I Brackett, He II).

    The profiles depend on the star through n_e only: each star interpolates linearly in
    log n_e between two of the precomputed profile sets.
    """
    t = photosphere.temperature
    theta = 5040.0 / t
    he_ii = np.log10(np.clip(_stage_fractions("He", t, photosphere.p_e)[1], 1e-300, None)) + stars.log_eps["He"]
    ion = np.where(model.h_helium[None, :], he_ii[:, None], np.log10(photosphere.neutral_h)[:, None])
    stimulated = np.log10(-np.expm1(-_HC_OVER_K / (16000.0 * t)))
    log_kappa = photosphere.log_kappa_nodes @ model.h_kappa_weights.T
    log_strength = (ion - theta[:, None] * model.h_excitation[None, :] + model.h_log_strength[None, :] - log_kappa
                    + (stimulated + _log_weak_line_efficiency(stars.teff))[:, None])  # Å
    strength = 10.0 ** log_strength
    log_ne = np.log10(photosphere.electron_density)
    position = np.interp(log_ne, _LOG_NE_NODES, np.arange(_LOG_NE_NODES.size))
    lower = np.clip(np.floor(position).astype(int), 0, _LOG_NE_NODES.size - 2)
    fraction = np.clip(position - lower, 0.0, 1.0)[:, None]
    width = model.h_stark_factor[None, :] * photosphere.electron_density[:, None] ** (2.0 / 3.0) + 1.0
    visible = (strength / width).max(axis=1) > 1e-4  # stars whose strongest line is worth drawing
    eta = np.zeros((stars.n, APOGEE_N_PIXELS), dtype=np.float32)
    for node, basis in enumerate(model.h_basis):
        rows = np.flatnonzero(visible & ((lower == node) | (lower + 1 == node)))
        if rows.size == 0:
            continue
        weight = np.where((lower[rows] == node)[:, None], 1.0 - fraction[rows], fraction[rows])
        coefficients = (strength[rows] * weight).astype(np.float32)
        eta[rows] += (basis.T @ coefficients.T).T
    return eta


def _broadening_kernels(vsini: np.ndarray, vmacro: np.ndarray, half: int) -> np.ndarray:
    """Per-star rotation (limb darkening ε = 0.6) ⊗ Gaussian macroturbulence kernels in pixels."""
    oversample = 8
    x = (np.arange(-half * oversample, half * oversample + 1) / oversample)[None, :] * _PIXEL_KMS
    epsilon = 0.6
    v_l = np.maximum(vsini, 1e-3)[:, None]
    y = np.clip(1.0 - (x / v_l) ** 2, 0.0, None)
    rotation = 2.0 * (1.0 - epsilon) * np.sqrt(y) + 0.5 * np.pi * epsilon * y
    sigma = np.maximum(vmacro / 2.3548, 0.3)[:, None]
    narrow = (vsini < 0.5 * _PIXEL_KMS / oversample)[:, None]
    rotation = np.where(narrow, (np.abs(x) < 0.5 * _PIXEL_KMS / oversample).astype(float), rotation)
    rotation /= rotation.sum(axis=1, keepdims=True)
    gauss = np.exp(-0.5 * (x / sigma) ** 2)
    gauss /= gauss.sum(axis=1, keepdims=True)
    size = x.shape[1]
    n_fft = 1 << int(np.ceil(np.log2(2 * size)))
    fine = np.fft.irfft(np.fft.rfft(rotation, n_fft) * np.fft.rfft(gauss, n_fft), n_fft)[:, :2 * size - 1]
    centre = size - 1
    fine = fine[:, centre - half * oversample - oversample // 2: centre + half * oversample + oversample // 2]
    kernel = fine.reshape(fine.shape[0], 2 * half + 1, oversample).sum(axis=2)
    return kernel / kernel.sum(axis=1, keepdims=True)


def _broaden(flux: np.ndarray, stars: _Stars) -> np.ndarray:
    """Convolve each spectrum with its rotation and macroturbulence kernel (pixel = velocity step).

    Stars are grouped by kernel reach: narrow kernels (slow rotators, most stars) are applied as
    a short sum of shifted spectra, wide ones (fast rotators) by FFT.
    """
    reach = np.ceil((stars.vsini + 4.0 * stars.vmacro / 2.3548) / _PIXEL_KMS).astype(int) + 1
    reach = np.where(reach > 12, np.maximum(reach, 13), reach)
    out = np.empty_like(flux)
    for half in np.unique(np.minimum(reach, 13)):
        rows = np.flatnonzero(np.minimum(reach, 13) == half)
        half = int(reach[rows].max())
        kernels = _broadening_kernels(stars.vsini[rows], stars.vmacro[rows], half).astype(flux.dtype)
        padded = np.ones((rows.size, APOGEE_N_PIXELS + 2 * half), dtype=flux.dtype)
        padded[:, half:half + APOGEE_N_PIXELS] = flux[rows]
        if half <= 12:
            result = np.zeros((rows.size, APOGEE_N_PIXELS), dtype=flux.dtype)
            term = np.empty_like(result)
            for k in range(2 * half + 1):  # kernel[k] weights the pixel at offset half - k
                np.multiply(kernels[:, k:k + 1], padded[:, 2 * half - k:2 * half - k + APOGEE_N_PIXELS], out=term)
                result += term
        else:
            n_fft = fft.next_fast_len(padded.shape[1] + 2 * half, real=True)
            spectrum = fft.rfft(padded, n_fft, axis=1) * fft.rfft(kernels, n_fft, axis=1)
            result = fft.irfft(spectrum, n_fft, axis=1)[:, 2 * half:2 * half + APOGEE_N_PIXELS]
        out[rows] = result
    return out


def _normalized_block(stars: _Stars, model: _LineModel) -> np.ndarray:
    photosphere = _photosphere(stars)
    cores, wings = _metal_amplitudes(stars, photosphere, model)
    eta = np.asarray((model.cores.T @ cores.T.astype(np.float32)).T)
    eta += np.asarray((model.wings.T @ wings.T.astype(np.float32)).T)
    eta += _hydrogen_opacity(stars, photosphere, model)
    flux = 1.0 - _saturation_map(stars.teff) * -np.expm1(-eta)
    return _broaden(flux, stars)


_SATURATION_NODES = np.array([15100.0, 16050.0, 17000.0])


@lru_cache(maxsize=1)
def _saturation_basis() -> np.ndarray:
    """Quadratic interpolation matrix from the 3 saturation-depth nodes to the 8575 pixels."""
    wavelength = apogee_wavelength()
    basis = np.empty((3, wavelength.size))
    for k, node in enumerate(_SATURATION_NODES):
        others = [other for other in _SATURATION_NODES if other != node]
        basis[k] = np.prod([(wavelength - o) / (node - o) for o in others], axis=0)
    return basis


def _saturation_map(teff: np.ndarray) -> np.ndarray:
    """The opaque-core depth D on every pixel, (n, 8575) float32 (it varies slowly with λ)."""
    return (_saturation_depth(teff, _SATURATION_NODES) @ _saturation_basis()).astype(np.float32)


def normalized_flux(labels: Mapping[str, np.ndarray]) -> np.ndarray:
    """Continuum-normalised, noiseless H-band spectra at APOGEE resolution.

    Parameters
    ----------
    labels : mapping of str to array_like
        Arrays of length n: ``TEFF`` (K, 2000–60,000), ``LOGG`` (dex), ``FE_H``; optional
        ``VMICRO`` (km/s; default an APOGEE-like function of logg), ``VSINI`` (km/s; default 0),
        ``VMACRO`` (km/s; default 3–5 with lower gravity), ``C12_C13`` (default 20 in giants,
        89 in dwarfs), ``ALPHA_M`` (the model atmosphere's [α/M]; default 0) and ``<X>_FE``
        for the ASPCAP elements (``MG_FE``, ``C_FE``, ``N_FE``, ``O_FE``, ``CI_FE`` for the
        C I lines, ``TIII_FE`` for the Ti II lines, ...; a missing key means the solar ratio, 0).
        An ``<X>_FE`` changes the lines of X (and CO, CN, OH for C, N, O) only, as in ASPCAP.
        Other keys are ignored.

    Returns
    -------
    numpy.ndarray
        float32, shape (n, 8575), on :func:`labelexplorer.preprocess.grid.apogee_wavelength`.
        Deterministic: the same labels always give the same spectra.

    Raises
    ------
    LabelError
        If a required label is missing, an array has the wrong length, or values are not
        finite or out of range.

    Examples
    --------
    >>> flux = normalized_flux({"TEFF": [4800.0, 9500.0], "LOGG": [2.5, 4.0], "FE_H": [0.0, 0.0]})
    >>> flux.shape, flux.dtype
    ((2, 8575), dtype('float32'))
    >>> bool(flux[0].min() < 0.75 and 0.95 < np.median(flux[0]) <= 1.0)  # a giant: deep lines, clear continuum
    True
    >>> bool(np.median(flux[1]) < np.median(flux[0]))  # an A star: broad Brackett lines everywhere
    True
    """
    stars = _stars(labels)
    model = _line_model()
    out = np.empty((stars.n, APOGEE_N_PIXELS), dtype=np.float32)
    for start in range(0, stars.n, _MAX_BATCH):
        rows = slice(start, min(start + _MAX_BATCH, stars.n))
        out[rows] = _normalized_block(stars.subset(rows), model)
    return out


# ============================================================================================= continuum
@lru_cache(maxsize=1)
def _chip_response() -> np.ndarray:
    """Residual instrument response of the apStar flux calibration: per-chip level and tilt, edge roll-off."""
    response = np.zeros(APOGEE_N_PIXELS, dtype=np.float32)
    levels = ((1.00, -0.02), (1.02, 0.01), (0.98, 0.02))  # (level, tilt across the chip)
    for (start, end), (level, tilt) in zip(CHIP_RANGES["dr13"], levels):
        index = np.arange(start, end)
        x = (index - start) / (end - start - 1) - 0.5
        edge = np.minimum(index - start, end - 1 - index)
        response[start:end] = level * (1.0 + tilt * x) * (1.0 - 0.35 * np.exp(-edge / 2.0))
    return response


def _escape_temperature(teff: np.ndarray, photosphere: _Photosphere, wavelength: np.ndarray) -> np.ndarray:
    """Temperature of the layer from which each wavelength escapes, (n, n_wavelengths).

    τ_λ = 2/3 lies deeper where the continuum is more transparent: on a grey law
    T⁴ = ¾ Teff⁴ (τ + ⅔) with τ = ⅔ (κ_H / κ_λ)^(1/3), κ_H the mean over the H band. Near the
    1.64 µm H⁻ threshold one sees deeper, hotter gas, which flattens the H band of cool stars.
    The cube root softens the H⁻ contrast for the line and molecular blanketing that fills the
    window in real stars; with it, cool giants are flat across the band as in real apStar files.
    """
    kappa = _continuum_opacity(_opacity_coefficients(wavelength, photosphere.temperature), photosphere.p_e,
                               photosphere.neutral_h, photosphere.electrons)
    tau = (2.0 / 3.0) * (kappa.mean(axis=1, keepdims=True) / kappa) ** (1.0 / 3.0)
    return teff[:, None] * (0.75 * (tau + 2.0 / 3.0)) ** 0.25


def continuum_shape(labels: Mapping[str, np.ndarray], ak=None) -> np.ndarray:
    """Flux-calibrated continuum in apStar units (1e-17 erg s⁻¹ cm⁻² Å⁻¹), zero in the chip gaps.

    The stellar shape is the Planck function at the temperature of the depth from which
    each wavelength escapes (deeper near the 1.64 µm H⁻ opacity minimum, which flattens
    the H band of cool stars as in real apStar files), scaled to the star's apparent 2MASS
    H magnitude, reddened by A_K and multiplied by a response per detector chip.

    Parameters
    ----------
    labels : mapping of str to array_like
        As for :func:`normalized_flux` (``TEFF``, ``LOGG``, ``FE_H``...), plus optional
        ``H`` (apparent 2MASS H magnitude, extinction included; default 11).
    ak : array_like or float, optional
        K-band extinction A_K (mag) per star; default 0.

    Returns
    -------
    numpy.ndarray
        float32, shape (n, 8575).

    Examples
    --------
    >>> continuum = continuum_shape({"TEFF": [4800.0], "LOGG": [2.5], "FE_H": [0.0], "H": [9.7]})
    >>> bool(1000 < np.median(continuum[0, 246:3274]) < 2500)  # like the H = 9.7 real apStar giant
    True
    >>> float(continuum[0, 100])  # a chip gap
    0.0
    """
    stars = _stars(labels)
    n = stars.n
    h_mag = _label(labels, "H", n, default=11.0, bounds=(-5.0, 25.0))
    extinction = np.zeros(n) if ak is None else _label({"AK": ak}, "AK", n, bounds=(0.0, 20.0))
    wavelength = apogee_wavelength()
    photosphere = _photosphere(stars)
    nodes = np.linspace(15000.0, 17100.0, 22)
    temperature_nodes = _escape_temperature(stars.teff, photosphere, nodes)
    log_flux_nodes = -np.log(np.expm1(_HC_OVER_K / (nodes[None, :] * temperature_nodes))) - 5.0 * np.log(nodes)
    reference = (log_flux_nodes @ _interpolation_weights(np.array([_H_REFERENCE_WAVELENGTH]), nodes).T)[:, 0]
    reddening = (nodes / 21590.0) ** -_EXTINCTION_SLOPE - (_H_REFERENCE_WAVELENGTH / 21590.0) ** -_EXTINCTION_SLOPE
    log_scale = np.log(_F_H_ZERO) - 0.4 * np.log(10.0) * h_mag - reference
    log_nodes = log_flux_nodes + log_scale[:, None] - 0.4 * np.log(10.0) * extinction[:, None] * reddening[None, :]
    flux = np.exp((log_nodes @ _interpolation_weights(wavelength, nodes).T).astype(np.float32))
    return flux * _chip_response()[None, :]


# ============================================================================================= observing
_BIT = {name: 1 << bit for name, bit in APOGEE_PIXMASK_BITS.items()}
_BAD_VALUE = sum(1 << bit for bit in DEFAULT_BAD_BITS)
_GAP_ERROR = 1e10


@lru_cache(maxsize=1)
def _instrument() -> dict:
    """Fixed features of the instrument: on-chip pixels, edge distance, bad detector columns, and the
    relative brightness of the sky lines (placed per visit by :func:`_sky_profile`)."""
    on_chip = np.zeros(APOGEE_N_PIXELS, dtype=bool)
    edge = np.full(APOGEE_N_PIXELS, 10_000)
    for start, end in CHIP_RANGES["dr13"]:
        on_chip[start:end] = True
        index = np.arange(start, end)
        edge[start:end] = np.minimum(index - start, end - 1 - index)
    # bad detector columns: a fixed pattern (it belongs to the detector, not to a star), ~0.7 % of pixels
    pattern = np.random.default_rng(20110901)
    chip_pixels = np.flatnonzero(on_chip)
    starts = pattern.choice(chip_pixels, size=30, replace=False)
    widths = pattern.integers(1, 4, size=starts.size)
    bad = np.unique(np.concatenate([s + np.arange(w) for s, w in zip(starts, widths)]))
    # relative brightness of each airglow line: not measured here, a fixed spread of a factor ~10
    brightness = 10.0 ** pattern.uniform(-0.8, 0.3, size=SKY_LINES.size)
    return dict(on_chip=on_chip, chip_pixels=chip_pixels, edge_factor=1.0 + 300.0 * np.exp(-edge / 1.5),
                bad_columns=bad[bad < APOGEE_N_PIXELS], sky_brightness=brightness)


def _rest_frame_shift(velocity: float) -> float:
    """Pixels by which the observed frame moves in the star's rest frame for a Doppler shift
    *velocity* (km/s): ``λ_rest = λ_obs / (1 + v/c)``, so approaching stars (v < 0) see the
    sky lines and detector columns at larger rest-frame wavelengths (M13's -245 km/s: +59 px)."""
    return -np.log10(1.0 + velocity / _C_KMS) / APOGEE_LOG_STEP


def _sky_profile(instrument: dict, velocity: float) -> np.ndarray:
    """Relative airglow flux on the rest-frame grid of a star observed with Doppler shift *velocity*."""
    centres = _pixel_position(SKY_LINES) + _rest_frame_shift(velocity)
    # 17 pixels around each line, all lines at once (it runs for every visit of every star)
    pixels = np.trunc(centres).astype(int)[:, None] + np.arange(-8, 9)
    on_grid = (pixels >= 0) & (pixels < APOGEE_N_PIXELS)
    values = instrument["sky_brightness"][:, None] * np.exp(
        -0.5 * ((pixels - centres[:, None]) / _SIGMA_LSF_KMS * _PIXEL_KMS) ** 2)
    profile = np.zeros(APOGEE_N_PIXELS)
    np.add.at(profile, pixels[on_grid], values[on_grid])  # line after line, as blends add up
    return profile


def _generators(rng, n: int) -> list:
    if isinstance(rng, np.random.Generator):
        return [rng] * n
    if isinstance(rng, Sequence) and len(rng) == n and all(isinstance(r, np.random.Generator) for r in rng):
        return list(rng)
    raise SpectrumError(f"rng: expected a numpy Generator or a sequence of {n} Generators (one per spectrum)")


def _visit_errors(model_flux, level, sky, instrument, snr_visit):
    """Noise of one visit before the final scaling: photon noise of star and sky (*level* is the
    star's median flux), sky-subtraction residuals (2 % of the sky), read noise, and the steep
    rise at the chip edges."""
    variance = (model_flux + sky) * (level / snr_visit ** 2) + (0.02 * sky) ** 2 + (0.15 * level / snr_visit) ** 2
    return np.sqrt(variance) * instrument["edge_factor"]


def _visit_artefacts(rng, instrument, n_pix: int, velocity: float):
    """Bitmask and (excess flux fraction, error factor) of one visit's detector artefacts."""
    bitmask = np.zeros(n_pix, dtype=np.int64)
    excess = np.zeros(n_pix)
    factor = np.ones(n_pix)
    on_chip = instrument["on_chip"]
    # bad detector columns land on the rest-frame pixels the visit's Doppler shift maps them to
    bad = np.clip(instrument["bad_columns"] + int(round(_rest_frame_shift(velocity))), 0, n_pix - 1)
    bad = bad[on_chip[bad]]
    bitmask[bad] |= _BIT["BADPIX"] | _BIT["BADDARK"] | _BIT["BADFLAT"] | _BIT["NOT_ENOUGH_PSF"]
    factor[bad] *= 1.2
    cosmic = instrument["chip_pixels"][rng.integers(0, instrument["chip_pixels"].size, size=rng.poisson(4.0))]
    bitmask[cosmic] |= _BIT["CRPIX"]
    factor[cosmic] *= 1.1
    if rng.random() < 0.3:  # persistence on the green chip, strongest at its red end
        green_start, green_end = CHIP_RANGES["dr13"][1]
        for name, start, end, amount, inflation in (("PERSIST_LOW", green_start, 4800, 0.005, 1.4),
                                                    ("PERSIST_MED", 4800, 5864, 0.015, 2.3),
                                                    ("PERSIST_HIGH", 5864, green_end, 0.03, 2.6)):
            bitmask[start:end] |= _BIT[name]
            excess[start:end] += amount * rng.uniform(0.5, 1.5)
            factor[start:end] *= inflation
    if rng.random() < 0.2:
        bitmask[4371:4504] |= _BIT["LITTROW_GHOST"]
    return bitmask, excess, factor


def _visit_velocities(velocity, n: int, n_visits: int) -> np.ndarray:
    """*velocity* as an (n, n_visits) array of finite km/s (one number, one per star, or one per visit)."""
    values = np.asarray(velocity, dtype=float)
    if values.ndim == 1 and values.shape == (n,):
        values = values[:, None]
    try:
        values = np.broadcast_to(values, (n, n_visits))
    except ValueError:
        values = None
    if values is None or not np.all(np.isfinite(values)) or np.any(np.abs(values) > 0.1 * _C_KMS):
        raise SpectrumError(f"velocity: expected finite Doppler shifts in km/s (|v| < {0.1 * _C_KMS:.0f}), one "
                            f"number, {n} (per star) or {n} x {n_visits} (per visit), got shape {np.shape(velocity)}")
    return values


def _observe_star(model_flux, snr, rng, instrument, velocities):
    """apStar rows (flux, error, bitmask) and visit S/N of one star, one visit per Doppler shift in
    *velocities*; errors scaled to the requested S/N."""
    n_pix, n_visits = model_flux.size, len(velocities)
    on_chip = instrument["on_chip"]
    level = float(np.mean(model_flux[on_chip]))
    sky_scale = _F_H_ZERO * 10.0 ** (-0.4 * 12.0) * rng.lognormal(0.0, 0.4, size=n_visits)
    visit_snr = snr / np.sqrt(n_visits) * rng.lognormal(0.0, 0.15, size=n_visits)
    errors = np.empty((n_visits, n_pix))
    excess = np.empty((n_visits, n_pix))
    bitmasks = np.empty((n_visits, n_pix), dtype=np.int64)
    for visit in range(n_visits):
        sky = sky_scale[visit] * _sky_profile(instrument, velocities[visit])
        bitmasks[visit], excess[visit], factor = _visit_artefacts(rng, instrument, n_pix, velocities[visit])
        bitmasks[visit, on_chip & (sky > 0.2 * model_flux)] |= _BIT["SIG_SKYLINE"]
        errors[visit] = _visit_errors(model_flux, level, sky, instrument, visit_snr[visit]) * factor
    either = np.bitwise_or.reduce(bitmasks, axis=0)
    good = on_chip & ((either & _BAD_VALUE) == 0)
    weights = 1.0 / errors ** 2
    combined_error = 1.0 / np.sqrt(weights.sum(axis=0))
    scale = np.median(model_flux[good] / combined_error[good]) / snr
    errors *= scale
    weights /= scale ** 2
    if n_visits == 1:
        visit_snr = np.array([snr])
    else:  # every third good pixel is plenty for the header value
        visit_snr = np.median(model_flux[good][::3] / errors[:, good][:, ::3], axis=1)
    fluxes = model_flux + excess * level + errors * rng.standard_normal((n_visits, n_pix), dtype=np.float32)
    if n_visits == 1:
        flux_rows, error_rows, mask_rows = fluxes, errors, bitmasks
    else:
        total = weights.sum(axis=0)
        global_weights = 1.0 / np.mean(errors[:, good] ** 2, axis=1)[:, None]
        global_flux = (global_weights * fluxes).sum(axis=0) / global_weights.sum()
        global_error = np.sqrt((global_weights ** 2 * errors ** 2).sum(axis=0)) / global_weights.sum()
        flux_rows = np.vstack([(weights * fluxes).sum(axis=0) / total, global_flux, fluxes])
        error_rows = np.vstack([1.0 / np.sqrt(total), global_error, errors])
        mask_rows = np.vstack([either, np.bitwise_and.reduce(bitmasks, axis=0), bitmasks])
    gap = ~on_chip
    flux_rows[:, gap] = 0.0
    error_rows[:, gap] = _GAP_ERROR
    mask_rows[:, gap] = _BIT["BADPIX"]
    return flux_rows, error_rows, mask_rows, visit_snr


def observe(normalized: np.ndarray, continuum: np.ndarray, snr, rng, *, visits: int | None = None,
            velocity=0.0) -> dict:
    """Noisy apStar-like spectra: flux, error and APOGEE_PIXMASK bitmask.

    Parameters
    ----------
    normalized : array_like, shape (n, 8575)
        Output of :func:`normalized_flux`.
    continuum : array_like, shape (n, 8575)
        Output of :func:`continuum_shape` (apStar flux units; zero in the gaps).
    snr : float or array_like of shape (n,)
        Median S/N over good pixels of each combined spectrum; the errors are scaled so
        that ``median(model / error)`` over on-chip pixels without a bad bit equals it.
    rng : numpy.random.Generator or sequence of n Generators
        Source of every random draw; pass one generator per spectrum (seeded from the
        star) so that any star can be regenerated alone.
    visits : int, optional
        Number of visits per star. ``None``: one spectrum per star, arrays of shape
        (n, 8575). Otherwise the apStar rows of each star, shape (n, rows, 8575): a single
        visit is one row; k > 1 visits give k + 2 rows (pixel-weighted and global-weighted
        combinations, then the visits; bitmask row 0 is the OR and row 1 the AND of the
        visits). Each visit has its own sky, bad-pixel shift, cosmic rays and persistence.
    velocity : float or array_like of shape (n,) or (n, visits), optional
        Doppler shift of each visit (km/s, the apStar ``VRADn``: heliocentric velocity minus
        the barycentric correction). The spectra are in the star's rest frame, so the sky
        lines and bad detector columns of a visit land ``-v / 4.14`` pixels from their
        observed-frame positions. Default 0.

    Returns
    -------
    dict
        ``flux`` and ``error`` (float32), ``bitmask`` (int16, APOGEE_PIXMASK bits: BADPIX,
        BADDARK, BADFLAT, NOT_ENOUGH_PSF on bad detector columns and in the gaps, CRPIX,
        PERSIST_LOW/MED/HIGH, LITTROW_GHOST, SIG_SKYLINE), and ``visit_snr`` (n, n_visits).
        Chip gaps: flux 0, error 1e10, BADPIX, as in real apStar files.

    Raises
    ------
    ShapeError
        If the arrays are not (n, 8575) with matching n.
    SpectrumError
        If *snr* is not positive and finite, *visits* is not a positive integer, *velocity*
        is not finite (or of another shape), or *rng* is not a Generator (or one per spectrum).

    Examples
    --------
    >>> labels = {"TEFF": [4800.0], "LOGG": [2.5], "FE_H": [0.0]}
    >>> norm, cont = normalized_flux(labels), continuum_shape(labels)
    >>> out = observe(norm, cont, 100.0, np.random.default_rng(1))
    >>> out["flux"].shape, out["bitmask"].dtype
    ((1, 8575), dtype('int16'))
    >>> good = (out["bitmask"][0] & 0b1000011111111) == 0
    >>> round(float(np.median((norm * cont)[0, good] / out["error"][0, good])), 3)
    100.0
    """
    normalized = np.asarray(normalized, dtype=np.float64)
    continuum = np.asarray(continuum, dtype=np.float64)
    if normalized.ndim != 2 or normalized.shape[1] != APOGEE_N_PIXELS or continuum.shape != normalized.shape:
        raise ShapeError(f"observe: expected normalized and continuum of shape (n, {APOGEE_N_PIXELS}), got "
                         f"{normalized.shape} and {continuum.shape}")
    n = normalized.shape[0]
    snr = np.broadcast_to(np.asarray(snr, dtype=float), (n,)) if np.ndim(snr) <= 1 else None
    if snr is None or snr.shape != (n,) or not np.all(np.isfinite(snr)) or np.any(snr <= 0):
        raise SpectrumError(f"snr: expected a positive finite number or {n} of them")
    if visits is not None and (isinstance(visits, bool) or not isinstance(visits, (int, np.integer)) or visits < 1):
        raise SpectrumError(f"visits: expected a positive integer or None, got {visits!r}")
    velocities = _visit_velocities(velocity, n, visits or 1)
    generators = _generators(rng, n)
    instrument = _instrument()
    model = normalized * continuum
    if np.any(model[:, instrument["on_chip"]] <= 0) or not np.all(np.isfinite(model)):
        raise SpectrumError("observe: normalized * continuum must be positive and finite on the detector chips")
    results = [_observe_star(model[i], snr[i], generators[i], instrument, velocities[i]) for i in range(n)]
    flux = np.array([r[0] for r in results], dtype=np.float32)
    error = np.array([r[1] for r in results], dtype=np.float32)
    bitmask = np.array([r[2] for r in results]).astype(np.int16)
    if visits is None:
        flux, error, bitmask = flux[:, 0], error[:, 0], bitmask[:, 0]
    return dict(flux=flux, error=error, bitmask=bitmask, visit_snr=np.array([r[3] for r in results]))
