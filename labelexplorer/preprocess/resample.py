"""Resampling spectra onto a new shared wavelength grid.

Low-resolution surveys give each file its own grid; models want one. :func:`resample`
interpolates every spectrum linearly onto a common grid in one vectorised pass.
"""

from __future__ import annotations

import numpy as np

from ..exceptions import ShapeError, SpectrumError
from ..spectra import Spectra

__all__ = ["resample"]


def _check_grid(wavelength) -> np.ndarray:
    grid = np.asarray(wavelength, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2:
        raise ShapeError(f"wavelength: expected a 1-D grid of at least 2 values, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)) or np.any(np.diff(grid) <= 0):
        raise SpectrumError("wavelength: expected finite values increasing along the grid")
    return grid


def _neighbours(source: np.ndarray, grid: np.ndarray):
    """Left neighbour index, weight of the right neighbour and inside-range flag, shape (n, m)."""
    source = np.atleast_2d(source)
    right = np.stack([np.searchsorted(row, grid, side="left") for row in source])
    p = source.shape[1]
    left = np.clip(right - 1, 0, p - 2)
    rows = np.arange(source.shape[0])[:, None]
    x0, x1 = source[rows, left], source[rows, left + 1]
    weight = np.clip((grid - x0) / (x1 - x0), 0.0, 1.0)
    inside = (grid >= source[:, :1]) & (grid <= source[:, -1:])
    return left, weight, inside


def _gather(values: np.ndarray, index: np.ndarray, shared: bool) -> np.ndarray:
    # with a shared grid every spectrum has the same neighbours: gather whole columns at once
    return values[:, index[0]] if shared else np.take_along_axis(values, index, axis=1)


def _interpolate(values: np.ndarray, bad: np.ndarray, left: np.ndarray, weight: np.ndarray,
                 shared: bool) -> np.ndarray:
    """(1 - t) v_left + t v_right in float32; bad inputs count as 0 (the outputs they touch are masked)."""
    clean = np.where(bad, np.float32(0), values)  # so that 0 x inf or 0 x NaN cannot spoil a good pixel
    low, high = _gather(clean, left, shared), _gather(clean, left + 1, shared)
    return low + weight * (high - low)


def resample(spectra: Spectra, wavelength) -> Spectra:
    """Interpolate every spectrum linearly onto a new shared wavelength grid.

    Flux is interpolated linearly between the two neighbouring input pixels. Errors are
    interpolated the same way, ``(1 - t) sigma_left + t sigma_right``, which is never
    smaller than the quadrature sum of independent errors: conservative, because
    neighbouring output pixels share input pixels. An output pixel is masked (flux NaN,
    error inf) when it lies outside the input range or when an input pixel it draws on
    (with non-zero weight) is masked.

    Parameters
    ----------
    spectra : Spectra
        Input, on a shared grid ``(p,)`` or one grid per spectrum ``(n, p)``.
    wavelength : array_like, shape (m,)
        The new grid (vacuum Angstrom, increasing).

    Returns
    -------
    Spectra
        ``(n, m)`` on the new grid, ids/info/meta carried over, the step recorded in
        ``meta["history"]``.

    Examples
    --------
    >>> spec = Spectra([[1.0, 2.0, 3.0, 4.0]], [10.0, 20.0, 30.0, 40.0], error=[[0.1, 0.1, 0.2, 0.2]],
    ...                mask=[[False, False, False, True]])
    >>> out = resample(spec, [5.0, 15.0, 25.0, 35.0])
    >>> out.flux[0, 1:3].tolist(), out.mask[0].tolist()
    ([1.5, 2.5], [True, False, False, True])
    >>> [round(float(e), 3) for e in out.error[0, 1:3]]
    [0.1, 0.15]
    """
    if not isinstance(spectra, Spectra):
        raise ShapeError(f"resample: expected a Spectra object, got {type(spectra).__name__}")
    if spectra.n_pixels < 2:
        raise ShapeError(f"resample: expected spectra of at least 2 pixels to interpolate, got {spectra.n_pixels}")
    grid = _check_grid(wavelength)
    left, weight, inside = _neighbours(spectra.wavelength, grid)
    shared = spectra.shared_grid
    bad = ~inside | (_gather(spectra.mask, left, shared) & (weight < 1.0))
    bad |= _gather(spectra.mask, left + 1, shared) & (weight > 0.0)
    weight = weight.astype(np.float32)
    flux = _interpolate(spectra.flux, spectra.mask, left, weight, shared)
    fields = dict(flux=np.where(bad, np.nan, flux), wavelength=grid, mask=bad, error=None)
    if spectra.has_errors:
        error = _interpolate(spectra.error, spectra.mask, left, weight, shared)
        fields["error"] = np.where(bad, np.inf, error)
    step = f"resample: linear interpolation onto {grid.size} px, {grid[0]:.2f}-{grid[-1]:.2f} Å"
    return spectra.replace(step=step, **fields)
