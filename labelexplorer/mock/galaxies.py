"""Mock SDSS galaxies: a population with gas-phase metallicities, gri colour cutouts, and their writer.

The population
--------------
Star-forming galaxies of an SDSS-like flux-limited sample (``r < 17.77``, ``0.02 < z``):

- stellar mass ``log_mstar`` from a normal distribution (mean 10.1, σ 0.55) truncated to
  8.5–11.5; bulge-to-total light ``bulge_fraction`` rising with mass (Beta distribution);
  a de Vaucouleurs-like bulge (Sérsic ``n ≈ 4``) and an exponential disk whose size
  follows a mass–size relation (``log R_e/kpc = 0.55 + 0.22 (log M - 10)``, 0.13 dex
  scatter) and carries two spiral arms (bluer than the disk, weaker with more bulge);
  isotropic inclinations, a disk of intrinsic thickness 0.15;
- **metallicity** ``oh_p50 = 12 + log(O/H)``: the Tremonti et al. (2004) mass–metallicity
  relation ``Z = -1.492 + 1.847 log M - 0.08026 (log M)^2`` plus a *morphology term*
  (``oh_morph``, σ ≈ 0.06 dex) plus intrinsic scatter (0.08 dex), 0.10 dex in total.
  The morphology term makes metallicity depend, at fixed mass, on what an image shows
  and integrated photometry hardly does — the "third parameter" paper 004 (Wu & Boada
  2019) suspected its CNN of reading:

  * compactness: disks smaller than the mass–size relation are more metal-rich
    (``-0.3 × Δlog R_e``; Ellison et al. 2008);
  * bulge prominence (light concentration): ``+0.25 × (B/T - <B/T | M>)``;
  * axis ratio: edge-on disks have lower fibre metallicities (``-0.06 × (0.5 - cos i)``,
    the aperture effect described by Tremonti et al. 2004 and paper 004);

  and the disk's colour gradient (redder inside, bluer outside) steepens with the
  metallicity offset (intrinsic scatter included) while leaving the integrated colour
  unchanged, so 128×128 images carry information that gri magnitudes do not;
- colours: red bulges (``g-r ≈ 0.75``), disks bluer at low mass and reddened by dust
  when inclined; magnitudes from the stellar mass with the colour-dependent mass-to-light
  ratio of Bell et al. (2003), ``log(M/L)_r = -0.306 + 1.097 (g-r)``; redshifts drawn
  uniformly in comoving volume up to the distance at which the galaxy would fall below
  the flux limit (flat ΛCDM, H0 = 70, Ωm = 0.3);
- SDSS-like ``objID`` strings (19 digits: the skyVersion/rerun/run/camcol/field/id bit
  layout of SDSS photometric object IDs), unique.

The images
----------
:func:`render_images` draws 128 × 128 gri cutouts covering 37.9″ (0.296″ per pixel, as
the SDSS cutouts of paper 004): Sérsic bulge + exponential disk with their axis ratios
and position angle, the colour gradient, Gaussian seeing of ~1.3″ FWHM (varying per
galaxy and band), sky noise with the pixel correlation of resampled SDSS frames,
occasional neighbouring stars and galaxies, then the Lupton et al. (2004) asinh colour
mapping (i → R, r → G, g → B) used by the SDSS cutout service. Everything is vectorised
over a batch of galaxies. :func:`write_galaxy_sample` writes the real layout:
``train/<objID>.jpg`` (JPEG quality 90) and ``train.csv`` with ``objID, oh_p50`` first.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, gammainc, ndtr, ndtri

from .._files import atomic_directory, atomic_path
from ..analysis.mzr import tremonti_mzr  # the relation lives with the MZR analysis (a leaf module)
from ..exceptions import LabelExplorerError, ShapeError

__all__ = ["tremonti_mzr", "galaxy_population", "render_images", "write_galaxy_sample", "PIXEL_SCALE",
           "FIELD_OF_VIEW"]

PIXEL_SCALE = 0.296
"""Arcseconds per pixel of a 128 × 128 cutout (paper 004)."""
FIELD_OF_VIEW = 128 * PIXEL_SCALE
"""Side of a cutout in arcseconds, whatever its pixel count."""

_FLUX_LIMIT = 17.77  # SDSS main-sample Petrosian r limit
_Z_MIN, _Z_MAX = 0.02, 0.30
_H0, _OMEGA_M = 70.0, 0.3
_SUN_ABS_R = 4.65  # AB absolute magnitude of the Sun in r
_DISK_THICKNESS = 0.15
# sky noise in nanomaggies per 0.296" pixel in g, r, i, with the stretch below matched to the real cutouts' look
_SKY_NOISE = np.array([0.00093, 0.0013, 0.0022])
_SKY_PEDESTAL = 0.5  # residual sky level in units of the noise (the real cutouts' background is not zero)
_BAND_SCALE = np.array([1.0, 1.1, 1.3])  # i, r, g weights before the asinh stretch (R, G, B balance)
_STRETCH, _Q = 14.0, 11.0  # Lupton et al. (2004) asinh parameters, tuned to the look of the real cutouts
_SEEING = 1.3  # arcsec FWHM, r band
_RENDER_COLUMNS = ("r", "bulge_fraction", "bulge_re", "disk_re", "sersic_bulge", "axis_ratio", "bulge_axis_ratio",
                   "position_angle", "g_r_bulge", "r_i_bulge", "g_r_disk", "r_i_disk", "colour_gradient",
                   "spiral_amplitude", "spiral_pitch", "seeing")
_CHUNK = 64


# ---------------------------------------------------------------------------- relations
def _mean_bulge_fraction(log_mstar):
    return 0.05 + 0.45 * expit((log_mstar - 10.4) / 0.35)


@functools.lru_cache(maxsize=1)
def _distances():
    """(z, luminosity distance, angular-diameter distance) in Mpc on a fine grid (flat ΛCDM)."""
    z = np.linspace(0.0, 0.6, 6001)
    inverse_h = 1.0 / np.sqrt(_OMEGA_M * (1 + z) ** 3 + 1 - _OMEGA_M)
    steps = 0.5 * (inverse_h[1:] + inverse_h[:-1]) * np.diff(z)
    comoving = 299792.458 / _H0 * np.concatenate([[0.0], np.cumsum(steps)])
    return z, comoving * (1 + z), comoving / (1 + z)


def _distance_modulus(z):
    grid, luminosity, _ = _distances()
    return 5.0 * np.log10(np.interp(z, grid, luminosity) * 1e5)


def _kpc_to_arcsec(size_kpc, z):
    grid, _, angular = _distances()
    return size_kpc / (np.interp(z, grid, angular) * 1e3) * 206264.806


def _sersic_b(n):
    """b_n of the Sérsic profile (Ciotti & Bertin 1999 expansion)."""
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n ** 2)


def _light_fraction(radius, half_light, n):
    """Fraction of a Sérsic profile's light inside *radius*."""
    return gammainc(2.0 * n, _sersic_b(n) * (np.maximum(radius, 0.0) / half_light) ** (1.0 / n))


def _combined_half_light(bulge_fraction, bulge_re, bulge_n, disk_re):
    """Half-light radius of bulge + disk (bisection on the summed curves of growth)."""
    low, high = np.zeros_like(disk_re), 10.0 * np.maximum(disk_re, bulge_re)
    for _ in range(50):
        middle = 0.5 * (low + high)
        inside = (bulge_fraction * _light_fraction(middle, bulge_re, bulge_n)
                  + (1 - bulge_fraction) * _light_fraction(middle, disk_re, 1.0))
        low, high = np.where(inside < 0.5, middle, low), np.where(inside < 0.5, high, middle)
    return 0.5 * (low + high)


def _combine_colours(bulge_fraction, bulge_colour, disk_colour):
    """Integrated colour of two components given the r-band bulge fraction."""
    bulge, disk = 10.0 ** (-0.4 * bulge_colour), 10.0 ** (-0.4 * disk_colour)
    return -2.5 * np.log10(bulge_fraction * bulge + (1 - bulge_fraction) * disk)


def _object_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unique SDSS-like objIDs: skyVersion 2, rerun 301, run, camcol, field and id bit-packed."""
    ids = np.empty(0, dtype=np.uint64)
    while ids.size < n:
        size = n - ids.size
        run = rng.integers(94, 8163, size).astype(np.uint64)
        camcol = rng.integers(1, 7, size).astype(np.uint64)
        field = rng.integers(11, 800, size).astype(np.uint64)
        number = rng.integers(1, 1500, size).astype(np.uint64)
        new = ((np.uint64(2) << np.uint64(59)) | (np.uint64(301) << np.uint64(48)) | (run << np.uint64(32))
               | (camcol << np.uint64(29)) | (field << np.uint64(16)) | number)
        ids = np.concatenate([ids, new])
        _, first = np.unique(ids, return_index=True)
        ids = ids[np.sort(first)]
    return np.array([str(int(value)) for value in ids])


# ---------------------------------------------------------------------------- population
def galaxy_population(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Draw *n* mock SDSS star-forming galaxies.

    Parameters
    ----------
    n : int
        Number of galaxies.
    rng : numpy.random.Generator
        Source of randomness (same seed, same population).

    Returns
    -------
    pandas.DataFrame
        One row per galaxy: ``objID`` (19-digit string), ``oh_p50``, ``log_mstar``, ``g``,
        ``r``, ``i`` (AB mag), ``redshift``, ``inclination`` (deg, 0 = face-on),
        ``axis_ratio`` (disk b/a), ``position_angle`` (deg; the major axis, from the image
        x axis toward +y), ``size`` (half-light radius along the major axis, arcsec),
        ``re_kpc``, ``bulge_fraction`` (r-band B/T), ``sersic_bulge``,
        ``sersic_disk`` (= 1), ``bulge_re``/``disk_re`` (arcsec), ``bulge_axis_ratio``,
        component colours ``g_r_bulge``, ``r_i_bulge``, ``g_r_disk``, ``r_i_disk``,
        ``colour_gradient`` (disk g-r change per scale length), ``spiral_amplitude`` and
        ``spiral_pitch`` (deg) of the two arms, ``seeing`` (arcsec),
        ``oh_mzr`` (Tremonti relation) and ``oh_morph`` (the morphology term).

    Examples
    --------
    >>> table = galaxy_population(500, np.random.default_rng(0))
    >>> list(table.columns[:4])
    ['objID', 'oh_p50', 'log_mstar', 'g']
    >>> bool(table.objID.str.len().eq(19).all() and table.objID.is_unique)
    True
    >>> bool(abs((table.oh_p50 - table.oh_mzr).std() - 0.10) < 0.02)
    True
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise LabelExplorerError(f"galaxy_population: n must be a positive integer; got {n!r}")
    log_mstar = ndtri(rng.uniform(ndtr((8.5 - 10.1) / 0.55), ndtr((11.5 - 10.1) / 0.55), n)) * 0.55 + 10.1
    shape = _structure(log_mstar, rng)
    oh_mzr = tremonti_mzr(log_mstar)
    oh_morph = (-0.3 * shape["size_offset"] + 0.25 * (shape["bulge_fraction"] - _mean_bulge_fraction(log_mstar))
                - 0.06 * (0.5 - shape["cos_i"]))
    intrinsic = rng.normal(0.0, 0.08, n)
    colour = _colours(log_mstar, shape, rng)
    # the disk colour gradient (mag per scale length, zero-mean in light) steepens for metal-rich galaxies
    colour["colour_gradient"] = -0.04 - 0.5 * (oh_morph + intrinsic)
    bulge_fraction = shape["bulge_fraction"]
    g_r = _combine_colours(bulge_fraction, colour["g_r_bulge"], colour["g_r_disk"])
    r_i = _combine_colours(bulge_fraction, colour["r_i_bulge"], colour["r_i_disk"])
    absolute_r = (_SUN_ABS_R - 2.5 * (log_mstar - (-0.306 + 1.097 * g_r))  # Bell et al. 2003 M/L
                  + shape["dust"] * (1.0 - bulge_fraction))
    redshift = _redshifts(absolute_r, rng)
    r = absolute_r + _distance_modulus(redshift)
    disk_re = _kpc_to_arcsec(shape["disk_kpc"], redshift)
    bulge_re = _kpc_to_arcsec(shape["bulge_kpc"], redshift)
    sersic_bulge = rng.uniform(3.0, 4.5, n)
    size = _combined_half_light(bulge_fraction, bulge_re, sersic_bulge, disk_re)
    return pd.DataFrame({
        "objID": _object_ids(n, rng), "oh_p50": np.clip(oh_mzr + oh_morph + intrinsic, 7.8, 9.4),
        "log_mstar": log_mstar, "g": r + g_r, "r": r, "i": r - r_i, "redshift": redshift,
        "inclination": np.degrees(np.arccos(shape["cos_i"])), "axis_ratio": shape["axis_ratio"],
        "position_angle": rng.uniform(0.0, 180.0, n), "size": size,
        "re_kpc": size / _kpc_to_arcsec(1.0, redshift), "bulge_fraction": bulge_fraction,
        "sersic_bulge": sersic_bulge, "sersic_disk": np.ones(n), "bulge_re": bulge_re, "disk_re": disk_re,
        "bulge_axis_ratio": rng.uniform(0.75, 1.0, n), **colour,
        "spiral_amplitude": rng.uniform(0.0, 0.6, n) * (1.0 - bulge_fraction) * expit((log_mstar - 9.3) / 0.3),
        "spiral_pitch": rng.uniform(12.0, 30.0, n),
        "seeing": np.clip(rng.normal(_SEEING, 0.15, n), 0.9, 1.9), "oh_mzr": oh_mzr, "oh_morph": oh_morph,
    })


def _structure(log_mstar, rng) -> dict:
    """Bulge fraction, disk and bulge sizes (kpc), inclination and dust of each galaxy."""
    n = log_mstar.size
    mean_bt = _mean_bulge_fraction(log_mstar)
    bulge_fraction = rng.beta(6.0 * mean_bt, 6.0 * (1.0 - mean_bt))
    size_offset = rng.normal(0.0, 0.13, n)
    disk_kpc = 10.0 ** (0.55 + 0.22 * (log_mstar - 10.0) + size_offset)
    bulge_kpc = np.maximum(0.22 * disk_kpc * 10.0 ** rng.normal(0.0, 0.1, n), 0.3)
    cos_i = rng.uniform(0.0, 1.0, n)  # isotropic orientations
    axis_ratio = np.sqrt(cos_i ** 2 + _DISK_THICKNESS ** 2 * (1.0 - cos_i ** 2))
    dust = 0.25 * np.log10(1.0 / axis_ratio) * expit((log_mstar - 9.3) / 0.3)  # dusty only above ~10^9.3
    return dict(bulge_fraction=bulge_fraction, size_offset=size_offset, disk_kpc=disk_kpc, bulge_kpc=bulge_kpc,
                cos_i=cos_i, axis_ratio=axis_ratio, dust=dust)


def _colours(log_mstar, shape, rng) -> dict:
    """Component colours: red bulges; disks bluer at low mass, reddened by dust when inclined."""
    n = log_mstar.size
    g_r_disk = 0.40 + 0.12 * (log_mstar - 10.0) + rng.normal(0.0, 0.07, n) + 0.35 * shape["dust"]
    return dict(
        g_r_bulge=0.72 + 0.05 * (log_mstar - 10.0) + rng.normal(0.0, 0.03, n),
        r_i_bulge=0.38 + 0.03 * (log_mstar - 10.0) + rng.normal(0.0, 0.02, n),
        g_r_disk=g_r_disk,
        r_i_disk=(0.20 + 0.05 * (log_mstar - 10.0) + 0.4 * (g_r_disk - 0.40) + rng.normal(0.0, 0.02, n)
                  + 0.15 * shape["dust"]),
    )


def _redshifts(absolute_r, rng):
    """Uniform in comoving volume between z = 0.02 and where the galaxy reaches the flux limit."""
    grid, luminosity, _ = _distances()
    modulus = 5.0 * np.log10(luminosity[1:] * 1e5)
    z_limit = np.interp(_FLUX_LIMIT - absolute_r, modulus, grid[1:])
    z_min = np.minimum(_Z_MIN, 0.7 * z_limit)  # the faintest dwarfs are only seen nearby
    z_max = np.minimum(z_limit, _Z_MAX)
    comoving = luminosity / (1 + grid)
    low, high = (np.interp(z, grid, comoving) ** 3 for z in (z_min, z_max))
    volume = low + rng.uniform(0.0, 1.0, absolute_r.size) * (high - low)
    return np.interp(np.cbrt(volume), comoving, grid)


# ---------------------------------------------------------------------------- images
def _sersic_image(x, y, half_light, n, axis_ratio, angle):
    """(batch, size, size) Sérsic surface brightness (peak-normalised), elliptical, rotated.

    Also returns the elliptical radius and the azimuth in the galaxy's own (deprojected) plane.
    """
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    major = x * cos + y * sin
    minor = (-x * sin + y * cos) / axis_ratio[:, None, None]
    radius = np.sqrt(major ** 2 + minor ** 2 + 0.09)  # 0.3 px softening keeps cusps finite
    scaled = radius / half_light[:, None, None]
    profile = np.exp(-_sersic_b(n)[:, None, None] * (scaled ** (1.0 / n[:, None, None]) - 1.0))
    return profile, radius, np.arctan2(minor, major)


def _normalise(image, half_light, n, half_size):
    """Scale each component to the light fraction its profile puts inside the frame."""
    total = image.sum(axis=(1, 2), keepdims=True)
    inside = _light_fraction(half_size, half_light, n)[:, None, None]
    return image / np.maximum(total, 1e-30) * inside


def _blur(images, sigma_pixels):
    """Gaussian seeing: multiply by the Gaussian's transfer function in Fourier space."""
    from scipy import fft

    size = images.shape[-1]
    radius2 = (np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2).astype(np.float32)
    transfer = np.exp(np.float32(-2.0 * math.pi ** 2) * sigma_pixels.astype(np.float32)[..., None, None] ** 2 * radius2)
    return fft.irfft2(fft.rfft2(images, workers=-1) * transfer, s=(size, size), workers=-1)


def _galaxy_light(table: pd.DataFrame, size: int, scale: float, rng) -> np.ndarray:
    """(batch, 3, size, size) fluxes in nanomaggies per pixel in g, r, i (before seeing and noise)."""
    n = len(table)
    column = {name: table[name].to_numpy(dtype=np.float32) for name in _RENDER_COLUMNS}
    offset = rng.normal(0.0, 0.4, (2, n)).astype(np.float32)
    coordinate = (np.arange(size) - size / 2.0 + 0.5).astype(np.float32)
    x = coordinate[None, None, :] - offset[0][:, None, None]
    y = coordinate[None, :, None] - offset[1][:, None, None]
    angle = np.radians(column["position_angle"])
    bulge_re = np.maximum(column["bulge_re"] / np.float32(scale), np.float32(0.3))
    disk_re = np.maximum(column["disk_re"] / np.float32(scale), np.float32(0.3))
    one = np.ones(n, np.float32)
    bulge, _, _ = _sersic_image(x, y, bulge_re, column["sersic_bulge"], column["bulge_axis_ratio"], angle)
    disk, radius, azimuth = _sersic_image(x, y, disk_re, one, column["axis_ratio"], angle)
    bulge = _normalise(bulge, bulge_re, column["sersic_bulge"], size / 2.0)
    disk = _normalise(disk, disk_re, one, size / 2.0)
    scale_length = (disk_re / np.float32(_sersic_b(1.0)))[:, None, None]
    # two logarithmic spiral arms, absent in the centre; cos averages out, so the disk keeps its flux
    pitch = np.radians(column["spiral_pitch"])[:, None, None]
    arms = (np.cos(2.0 * (azimuth - np.log(radius / scale_length) / np.tan(pitch)))
            * column["spiral_amplitude"][:, None, None] * -np.expm1(-(radius / scale_length) ** 2))
    # disk colour gradient about the light-weighted mean radius (2 scale lengths): integrated colour kept
    gradient = np.clip(column["colour_gradient"][:, None, None] * (radius / scale_length - 2.0), -0.4, 0.4)
    redder = np.exp(np.float32(-0.4 * math.log(10.0)) * gradient)  # g-band factor; i gets its inverse square root
    flux_r = 10.0 ** (-0.4 * (column["r"] - 22.5))
    light = np.empty((n, 3, size, size), np.float32)
    # per band: (colour relative to r of bulge and disk, disk gradient factor, arm contrast); arms are blue
    for band, (bulge_colour, disk_colour, gradient_factor, arm_contrast) in enumerate((
            (column["g_r_bulge"], column["g_r_disk"], redder, 1.3),
            (0.0, 0.0, 1.0, 1.0),
            (-column["r_i_bulge"], -column["r_i_disk"], 1.0 / np.sqrt(redder), 0.8))):
        bulge_flux = (flux_r * column["bulge_fraction"] * 10.0 ** (-0.4 * bulge_colour))[:, None, None]
        disk_flux = (flux_r * (1.0 - column["bulge_fraction"]) * 10.0 ** (-0.4 * disk_colour))[:, None, None]
        light[:, band] = bulge_flux * bulge + disk_flux * disk * gradient_factor * (1.0 + arm_contrast * arms)
    return light


def _neighbours(n: int, size: int, scale: float, rng) -> np.ndarray:
    """(batch, 3, size, size) stars and small background galaxies around the target (before seeing)."""
    light = np.zeros((n, 3, size, size), np.float32)
    rows = np.repeat(np.arange(n), rng.poisson(0.9, n))
    position = rng.uniform(0, size, (2, rows.size))
    away = np.hypot(position[0] - size / 2, position[1] - size / 2) > 8.0 * PIXEL_SCALE / scale
    rows, position = rows[away], position[:, away]
    m = rows.size
    r = 22.5 - rng.exponential(1.6, m)  # number counts rise toward faint magnitudes
    g_r = rng.uniform(0.2, 1.5, m)
    r_i = 0.4 * g_r + rng.normal(0.0, 0.05, m)
    width = np.where(rng.random(m) < 0.3, rng.uniform(0.3, 0.8, m) * PIXEL_SCALE / scale, 0.4)  # px; stars: points
    offsets = np.arange(-5, 6)
    px = np.floor(position[0]).astype(int)[:, None] + offsets
    py = np.floor(position[1]).astype(int)[:, None] + offsets
    dx = px - position[0][:, None] + 0.5
    dy = py - position[1][:, None] + 0.5
    weight = np.exp(-0.5 * (dx[:, None, :] ** 2 + dy[:, :, None] ** 2) / width[:, None, None] ** 2)
    weight /= weight.sum(axis=(1, 2), keepdims=True)
    inside = (px[:, None, :] >= 0) & (px[:, None, :] < size) & (py[:, :, None] >= 0) & (py[:, :, None] < size)
    index = np.broadcast_to(rows[:, None, None], weight.shape)[inside]
    ys = np.broadcast_to(py[:, :, None], weight.shape)[inside]
    xs = np.broadcast_to(px[:, None, :], weight.shape)[inside]
    for band, colour in enumerate((g_r, np.zeros(m), -r_i)):
        flux = 10.0 ** (-0.4 * (r + colour - 22.5))
        np.add.at(light[:, band], (index, ys, xs), (weight * flux[:, None, None])[inside])
    return light


def _sky_noise(n: int, size: int, scale: float, rng) -> np.ndarray:
    """Sky noise per band, correlated between neighbouring pixels like a resampled SDSS frame."""
    white = rng.standard_normal((n, 3, size + 1, size + 1), dtype=np.float32)
    # 2 x 2 box average (what bilinear resampling of a coarser frame does), rescaled to unit variance
    box = white[..., :-1, :-1] + white[..., 1:, :-1]
    box += white[..., :-1, 1:]
    box += white[..., 1:, 1:]
    box *= np.float32(0.5)
    box += np.float32(_SKY_PEDESTAL)
    return box * (_SKY_NOISE * PIXEL_SCALE / scale).astype(np.float32)[None, :, None, None]


def _lupton_rgb(light: np.ndarray) -> np.ndarray:
    """Lupton et al. (2004) asinh stretch of (g, r, i) to (R, G, B) = (i, r, g), as uint8."""
    rgb = light[:, ::-1] * _BAND_SCALE[None, :, None, None].astype(np.float32)
    intensity = np.maximum(rgb.mean(axis=1, keepdims=True), 1e-6)
    stretched = np.arcsinh(_STRETCH * _Q * intensity) / _Q
    rgb = np.clip(rgb * (stretched / intensity), 0.0, None)
    brightest = np.maximum(rgb.max(axis=1, keepdims=True), 1.0)  # saturate without changing the hue
    return np.round(np.clip(rgb / brightest, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)


def render_images(population: pd.DataFrame, rng: np.random.Generator, size: int = 128, *,
                  neighbours: bool = True, noise: bool = True) -> np.ndarray:
    """Render gri colour cutouts of a galaxy population like the SDSS cutout service.

    Parameters
    ----------
    population : pandas.DataFrame
        Output of :func:`galaxy_population` (rows may be edited, e.g. ``bulge_fraction``).
    rng : numpy.random.Generator
        Source of sky noise, neighbours and sub-pixel centring.
    size : int
        Pixels per side; the cutout always covers 37.9″ (0.296″/px at 128).
    neighbours, noise : bool
        Add neighbouring stars/galaxies and sky noise (both on by default, as in real cutouts).

    Returns
    -------
    ndarray, shape (n, size, size, 3), uint8
        RGB images (R = i, G = r, B = g) with an asinh stretch.

    Raises
    ------
    ShapeError
        If *size* is not a positive integer or columns are missing.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> images = render_images(galaxy_population(4, rng), rng)
    >>> images.shape, images.dtype.name
    ((4, 128, 128, 3), 'uint8')
    >>> bool(images[:, 60:68, 60:68].mean() > 4 * images[:, :10, :10].mean())  # a galaxy at the centre
    True
    """
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ShapeError(f"render_images: size must be an integer >= 8; got {size!r}")
    missing = [c for c in _RENDER_COLUMNS if c not in getattr(population, "columns", ())]
    if missing:
        raise ShapeError(f"render_images: population lacks columns {', '.join(missing)}; "
                         "expected a table from galaxy_population()")
    scale = FIELD_OF_VIEW / size
    out = np.empty((len(population), size, size, 3), np.uint8)
    for start in range(0, len(population), _CHUNK):
        table = population.iloc[start:start + _CHUNK]
        n = len(table)
        light = _galaxy_light(table, size, scale, rng)
        if neighbours:
            light += _neighbours(n, size, scale, rng)
        seeing = table["seeing"].to_numpy()[:, None] * np.array([1.06, 1.0, 0.96])  # worse in the blue
        light = _blur(light, seeing / 2.3548 / scale)
        if noise:
            light += _sky_noise(n, size, scale, rng)
        out[start:start + n] = _lupton_rgb(light)
    return out


# ---------------------------------------------------------------------------- writer
_CATALOG_FIRST = ("objID", "oh_p50")


def write_galaxy_sample(folder, population: pd.DataFrame, images: np.ndarray, *, quality: int = 90) -> Path:
    """Write cutouts and catalog in the layout of the real data: ``train/<objID>.jpg`` + ``train.csv``.

    Parameters
    ----------
    folder : str or Path
        Output folder (created); ``train/`` inside it is replaced atomically.
    population : pandas.DataFrame
        Catalog with ``objID`` and ``oh_p50`` (written first, as in the real ``train.csv``)
        and any further columns.
    images : ndarray (n, H, W, 3) uint8
        One image per catalog row.
    quality : int
        JPEG quality.

    Returns
    -------
    Path
        The ``train`` folder.

    Raises
    ------
    ShapeError
        If images and catalog disagree in number, or images are not (n, H, W, 3) uint8.
    LabelExplorerError
        If objID/oh_p50 are missing or objIDs are not unique.

    Examples
    --------
    >>> import tempfile
    >>> rng = np.random.default_rng(2)
    >>> table = galaxy_population(3, rng)
    >>> train = write_galaxy_sample(tempfile.mkdtemp(), table, render_images(table, rng, size=32))
    >>> sorted(p.name for p in train.parent.iterdir())
    ['train', 'train.csv']
    >>> len(list(train.glob("*.jpg")))
    3
    """
    from PIL import Image

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ShapeError(f"write_galaxy_sample: images have shape {images.shape} and dtype {images.dtype}; "
                         "expected (n, H, W, 3) uint8")
    missing = [c for c in _CATALOG_FIRST if c not in population.columns]
    if missing:
        raise LabelExplorerError(f"write_galaxy_sample: population lacks {', '.join(missing)}; "
                                 "expected the columns objID and oh_p50")
    if len(population) != images.shape[0]:
        raise ShapeError(f"write_galaxy_sample: {len(population)} catalog rows but {images.shape[0]} images; "
                         "expected one image per row")
    ids = population["objID"].astype(str).str.strip()
    if not ids.is_unique or not ids.str.fullmatch(r"\d+").all():
        raise LabelExplorerError("write_galaxy_sample: objIDs must be unique strings of digits "
                                 "(they become the file names)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    catalog = population.assign(objID=ids)
    catalog = catalog[list(_CATALOG_FIRST) + [c for c in catalog.columns if c not in _CATALOG_FIRST]]
    with atomic_directory(folder / "train") as tmp:
        for name, image in zip(ids, images):
            Image.fromarray(image).save(tmp / f"{name}.jpg", format="JPEG", quality=quality)
        with atomic_path(folder / "train.csv") as csv_tmp:
            catalog.to_csv(csv_tmp, index=False, float_format="%.6f")
    return folder / "train"
