"""APOGEE continuum normalisation: a low-order Chebyshev per chip, fitted to continuum pixels.

The method follows The Cannon (Ness et al. 2015; Casey et al. 2016) and astroNN
(Leung & Bovy 2019): for each of the three detector chips, a degree-2 Chebyshev
polynomial in pixel position is fitted by weighted least squares (weights = inverse
variance) to the *continuum pixels* only, and the spectrum and its errors are divided
by it. All spectra of a batch are fitted at once: the normal equations of every
spectrum are built with one ``einsum`` per chip and solved as one stacked linear
system, so a batch costs a few array operations, not a Python loop over spectra.

Continuum pixels come either from a file (the astroNN ``dr{13,14,16,17}_contmask.npy``
masks on the 7514-pixel grid, The Cannon's pixels on the 7214-pixel grid; see
:func:`continuum_pixels_from_file`) or are derived from a training set the way The
Cannon does (:func:`derive_continuum_pixels`). Masks on one APOGEE grid are mapped
onto another (8575 ↔ 7514 ↔ 7214) by :func:`pixels_on_grid`.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from pathlib import Path

import numpy as np

from ..exceptions import FileFormatError, LabelError, ShapeError, SpectrumError
from ..spectra import Spectra
from .grid import APOGEE_N_PIXELS, chip_slices, n_gap_removed, release_for_pixels

__all__ = ["normalise_continuum", "continuum_pixels_from_file", "derive_continuum_pixels", "pixels_on_grid"]

_APOGEE_GRIDS = (APOGEE_N_PIXELS, n_gap_removed("dr17"), n_gap_removed("dr12"))
_SPREAD_STRIDE = 4
_DERIVE_CHUNK = 256  # spectra per chunk when deriving continuum pixels (bounds memory, keeps BLAS busy)


# ---------------------------------------------------------------------------- grid mapping
def _full_grid_index(n_pixels: int) -> np.ndarray:
    """Positions on the 8575 grid of the pixels of an APOGEE grid of *n_pixels*."""
    if n_pixels == APOGEE_N_PIXELS:
        return np.arange(APOGEE_N_PIXELS)
    release = release_for_pixels(n_pixels)
    return np.concatenate([np.arange(s.start, s.stop) for s in chip_slices(APOGEE_N_PIXELS, release)])


def pixels_on_grid(values: np.ndarray, n_pixels: int, fill=0) -> np.ndarray:
    """Map a per-pixel array from one APOGEE grid (8575, 7514 or 7214 px) onto another.

    Pixels of the target grid that the source grid lacks (chip gaps, the wider DR13+
    chip edges when going from 7214) get *fill*; pixels the target lacks are dropped.

    Parameters
    ----------
    values : array_like, shape (..., n_source)
        Per-pixel values (mask, weights) on an APOGEE grid, along the last axis.
    n_pixels : int
        Pixel count of the target grid: 8575, 7514 or 7214.
    fill : scalar
        Value for target pixels that have no source pixel.

    Raises
    ------
    ShapeError
        If either pixel count is not an APOGEE grid.

    Examples
    --------
    >>> mask = np.zeros(7514, dtype=bool); mask[0] = True
    >>> full = pixels_on_grid(mask, 8575)
    >>> full.shape, int(np.flatnonzero(full)[0])
    ((8575,), 246)
    >>> bool(pixels_on_grid(full, 7514)[0])
    True
    """
    values = np.asarray(values)
    n_source = values.shape[-1]
    if n_source == n_pixels:
        return values.copy()
    source, target = _full_grid_index(n_source), _full_grid_index(n_pixels)
    full = np.full(values.shape[:-1] + (APOGEE_N_PIXELS,), fill, dtype=values.dtype)
    full[..., source] = values
    return full[..., target]


def _continuum_mask(continuum_pixels, n_pixels: int) -> np.ndarray:
    """A boolean continuum mask on the *n_pixels* grid from a mask on any APOGEE grid."""
    mask = np.asarray(continuum_pixels)
    if mask.ndim != 1 or mask.dtype.kind not in "biu" or (mask.dtype.kind != "b" and np.any((mask != 0) & (mask != 1))):
        raise ShapeError(f"continuum_pixels: expected a 1-D boolean mask over the pixels, got dtype {mask.dtype} "
                         f"and shape {mask.shape}")
    mask = mask.astype(bool)
    if mask.size != n_pixels:
        if mask.size not in _APOGEE_GRIDS or n_pixels not in _APOGEE_GRIDS:
            raise ShapeError(f"continuum_pixels: a mask of {mask.size} pixels does not fit spectra of {n_pixels} "
                             f"pixels (APOGEE grids 8575, 7514 and 7214 are mapped onto each other)")
        mask = pixels_on_grid(mask, n_pixels, fill=False)
    return mask


# ---------------------------------------------------------------------------- batched fit
@functools.lru_cache(maxsize=32)
def _chebyshev_design(n_chip: int, degree: int) -> np.ndarray:
    """Chebyshev basis T_0..T_degree at the chip's pixels mapped onto [-1, 1], shape (n_chip, degree+1).

    Cached (read-only) because one-spectrum-at-a-time callers would rebuild it for every spectrum.
    """
    design = np.polynomial.chebyshev.chebvander(np.linspace(-1.0, 1.0, n_chip), degree)
    design.flags.writeable = False
    return design


def _solve_chip(flux: np.ndarray, weights: np.ndarray, design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares Chebyshev coefficients of every spectrum of one chip at once.

    *flux* and *weights* are (n, k) over the fitted pixels, *design* (k, degree + 1) their
    basis rows. Returns coefficients (n, degree + 1) and a bool (n,) that is True where the
    fit is impossible (fewer than degree + 2 pixels with positive weight).
    """
    n_terms = design.shape[1]
    failed = np.count_nonzero(weights > 0, axis=1) < n_terms + 1
    # scaling each spectrum's weights by their maximum leaves the solution unchanged and
    # keeps the normal equations well away from float overflow/underflow
    scale = weights.max(axis=1, initial=0.0, keepdims=True)
    scaled = np.divide(weights, scale, out=np.zeros_like(weights), where=scale > 0)
    scaled[failed] = 0.0
    # normal[n, i, j] = Σ_k w[n, k] T_i(x_k) T_j(x_k): one matrix product against the basis
    # products (an einsum over three operands would loop in C without BLAS)
    products = np.einsum("ki,kj->kij", design, design).reshape(len(design), n_terms * n_terms)
    normal = (scaled @ products).reshape(-1, n_terms, n_terms)
    rhs = (scaled * flux) @ design
    normal[failed] = np.eye(n_terms)  # placeholder system, result discarded
    return np.linalg.solve(normal, rhs[..., np.newaxis])[..., 0], failed


def _fit_inputs(spectra: Spectra, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flux (float64, bad pixels zeroed) and fit weights at *columns*: ivar, or 1 without errors.

    Flux exactly 0 marks chip gaps and missing data in APOGEE files, so it gets no weight.
    """
    flux = spectra.flux[:, columns].astype(np.float64)
    good = ~spectra.mask[:, columns] & (flux != 0)  # the mask already covers non-finite values
    if spectra.has_errors:
        with np.errstate(divide="ignore"):
            weights = np.where(good, 1.0 / np.square(spectra.error[:, columns].astype(np.float64)), 0.0)
    else:
        weights = good.astype(np.float64)
    return np.where(good, flux, 0.0), weights


def _continuum(spectra: Spectra, fit_mask: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuum (n, p; NaN off-chip and on failed chips) and per-chip failure flags (n, 3).

    Only the columns of *fit_mask* (p,) are read, which is what makes the batch path cheap.
    """
    continuum = np.full(spectra.flux.shape, np.nan)
    failures = []
    for chip in chip_slices(spectra.n_pixels):
        design = _chebyshev_design(chip.stop - chip.start, degree)
        rows = np.flatnonzero(fit_mask[chip])
        flux, weights = _fit_inputs(spectra, chip.start + rows)
        coefficients, failed = _solve_chip(flux, weights, design[rows])
        _evaluate(coefficients, failed, design, continuum[:, chip])
        failures.append(failed)
    return continuum, np.column_stack(failures)


def _evaluate(coefficients: np.ndarray, failed: np.ndarray, design: np.ndarray, out: np.ndarray) -> None:
    """Write the fitted continuum of one chip into *out* (NaN where the fit failed)."""
    # straight into the output (no (n, chip) temporary); with only degree + 1 terms
    # einsum's plain loop beats a BLAS call on a strided output
    np.einsum("nt,kt->nk", coefficients, design, out=out)
    out[failed] = np.nan


def _continuum_per_spectrum(flux: np.ndarray, weights: np.ndarray, degree: int) -> np.ndarray:
    """Continuum from full (n, p) flux and weight arrays, each spectrum with its own pixels."""
    continuum = np.full(flux.shape, np.nan)
    for chip in chip_slices(flux.shape[1]):
        design = _chebyshev_design(chip.stop - chip.start, degree)
        coefficients, failed = _solve_chip(flux[:, chip], weights[:, chip], design)
        _evaluate(coefficients, failed, design, continuum[:, chip])
    return continuum


def _check_degree(degree) -> int:
    if not isinstance(degree, (int, np.integer)) or degree < 0:
        raise ShapeError(f"degree: expected a non-negative integer polynomial degree, got {degree!r}")
    return int(degree)


def normalise_continuum(spectra: Spectra, continuum_pixels, degree: int = 2, *,
                        return_continuum: bool = False) -> Spectra | tuple[Spectra, np.ndarray]:
    """Divide APOGEE spectra by a per-chip Chebyshev continuum fitted to continuum pixels.

    Parameters
    ----------
    spectra : Spectra
        APOGEE spectra on the 8575-pixel grid or a gap-removed grid (7514 or 7214 px).
        Pixels with flux exactly 0 (chip gaps, missing data) are treated as bad.
    continuum_pixels : array_like of bool
        Continuum mask on any APOGEE grid (mapped onto the spectra's grid); see
        :func:`continuum_pixels_from_file` and :func:`derive_continuum_pixels`.
    degree : int
        Chebyshev degree per chip (2, as in The Cannon and astroNN).
    return_continuum : bool
        Also return the fitted continuum array (n_spectra, n_pixels), NaN where no
        continuum exists. It is not stored in ``meta`` (which is copied by every transform).

    Returns
    -------
    Spectra
        Normalised flux and error (both divided by the continuum); mask = input mask,
        zero-flux pixels, pixels outside the chips, and chips that could not be fitted.
        Pixels without a continuum get flux 1 and infinite error. ``meta["history"]``
        records the step and ``meta["continuum"]`` the settings. With
        *return_continuum*, a tuple ``(normalised, continuum)``.

    Warns
    -----
    UserWarning
        When a chip of some spectrum has fewer than ``degree + 2`` usable continuum
        pixels; that chip is masked.

    Examples
    --------
    >>> from labelexplorer.preprocess.grid import gap_removed_wavelength
    >>> wl = gap_removed_wavelength()
    >>> slope = np.linspace(0.8, 1.2, wl.size)
    >>> raw = Spectra(500.0 * slope[None], wl, error=np.full((1, wl.size), 5.0))
    >>> normed, continuum = normalise_continuum(raw, np.ones(wl.size, bool), return_continuum=True)
    >>> round(float(normed.flux.mean()), 4), round(float(continuum[0, 0]), 1)
    (1.0, 400.0)
    >>> normed.meta["history"][-1]
    'normalise_continuum(degree=2, chebyshev per chip, 7514 continuum pixels)'
    """
    if not isinstance(spectra, Spectra):
        raise ShapeError(f"normalise_continuum: expected a Spectra object, got {type(spectra).__name__}")
    degree = _check_degree(degree)
    mask = _continuum_mask(continuum_pixels, spectra.n_pixels)
    continuum, failures = _continuum(spectra, mask, degree)
    _warn_failures(failures, spectra.ids, degree)
    return _apply(spectra, continuum, mask, degree, return_continuum)


def _warn_failures(failures: np.ndarray, ids: np.ndarray, degree: int) -> None:
    if failures.any():
        rows, chips = np.nonzero(failures)
        warnings.warn(f"normalise_continuum: {rows.size} chip(s) of {np.unique(rows).size} spectra have fewer than "
                      f"{degree + 2} usable continuum pixels and were masked (first: spectrum {str(ids[rows[0]])!r}, "
                      f"chip {'bgr'[chips[0]]})", UserWarning, stacklevel=3)


def _apply(spectra: Spectra, continuum: np.ndarray, mask: np.ndarray, degree: int, return_continuum: bool):
    continuum32 = continuum.astype(np.float32)
    usable = continuum32 > 0  # False for NaN (no continuum) and for a pathological non-positive fit
    flux = np.divide(spectra.flux, continuum32, out=np.ones_like(spectra.flux), where=usable)
    no_information = np.inf if spectra.has_errors else np.nan  # unknown errors stay unknown
    error = np.divide(spectra.error, continuum32, out=np.full_like(spectra.error, no_information), where=usable)
    bad = spectra.mask | ~usable | (spectra.flux == 0)
    n_continuum = int(mask.sum())
    meta = copy.deepcopy(spectra.meta)
    meta["continuum"] = {"method": "chebyshev per chip", "degree": degree, "n_continuum_pixels": n_continuum}
    meta["history"] = list(meta.get("history", [])) + [
        f"normalise_continuum(degree={degree}, chebyshev per chip, {n_continuum} continuum pixels)"]
    # Spectra._new skips re-validation: dividing valid data by a positive finite continuum
    # keeps every invariant (float32, finite where unmasked, errors >= 0), and validating
    # a large batch again would cost more than the normalisation itself
    out = spectra._new(flux=flux, error=error, mask=bad, meta=meta)
    return (out, continuum) if return_continuum else out


# ---------------------------------------------------------------------------- mask files
def continuum_pixels_from_file(path: str | os.PathLike, n_pixels: int | None = None, *, key: str | None = None
                               ) -> np.ndarray:
    """Load a continuum-pixel mask from a ``.npy`` or ``.npz`` file.

    Parameters
    ----------
    path : path-like
        A boolean (or 0/1) 1-D array over an APOGEE grid: e.g. astroNN's
        ``dr17_contmask.npy`` (7514 px) or The Cannon's ``cannon_cont_pixels_apogee.npz``
        (7214 px). No pickle: object arrays are refused.
    n_pixels : int, optional
        Map the mask onto this APOGEE grid (8575, 7514 or 7214); default: as stored.
    key : str, optional
        Array name inside an ``.npz`` holding several arrays.

    Raises
    ------
    FileFormatError
        If the file is missing, unreadable, or does not hold a 1-D boolean mask over an
        APOGEE grid.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cont.npy"
    >>> mask = np.zeros(7514, bool); mask[[10, 20]] = True
    >>> np.save(path, mask)
    >>> int(continuum_pixels_from_file(path).sum()), continuum_pixels_from_file(path, 8575).shape
    (2, (8575,))
    """
    path = Path(path)
    array = _load_array(path, key)
    if array.ndim != 1 or array.dtype.kind not in "biu" or array.size not in _APOGEE_GRIDS:
        raise FileFormatError(f"{path}: expected a 1-D boolean continuum mask of 8575, 7514 or 7214 pixels, "
                              f"got dtype {array.dtype} and shape {array.shape}")
    if array.dtype.kind != "b" and np.any((array != 0) & (array != 1)):
        raise FileFormatError(f"{path}: expected a boolean (0/1) continuum mask, got other integer values")
    mask = array.astype(bool)
    if not mask.any():
        raise FileFormatError(f"{path}: the continuum mask selects no pixel")
    return mask if n_pixels is None else pixels_on_grid(mask, n_pixels, fill=False)


def _load_array(path: Path, key: str | None) -> np.ndarray:
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file (expected a .npy or .npz continuum mask)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FileFormatError(f"{path}: not a readable .npy/.npz array file without pickled objects ({exc})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded
    with loaded:
        names = list(loaded.files)
        if key is None and len(names) != 1:
            raise FileFormatError(f"{path}: holds arrays {names}; pass key= to choose the continuum mask")
        if key is not None and key not in names:
            raise FileFormatError(f"{path}: no array {key!r}; it holds {names}")
        try:
            return loaded[key or names[0]]
        except ValueError as exc:
            raise FileFormatError(f"{path}: array {key or names[0]!r} needs pickle, which is refused") from exc


# ---------------------------------------------------------------------------- derived masks
def _label_values(labels, n_spectra: int) -> np.ndarray:
    from ..labels import label_array

    if isinstance(labels, np.ndarray) and labels.dtype.names is None:
        values = np.array(np.atleast_2d(labels.T).T, dtype=np.float64)
        values[~np.isfinite(values) | (values <= -9000)] = np.nan
    else:
        values, _ = label_array(labels)
    if values.ndim != 2 or values.shape[0] != n_spectra:
        raise ShapeError(f"labels: expected {n_spectra} rows (one per spectrum), got shape {values.shape}")
    return values


def _first_guess_continuum(spectra: Spectra, degree: int, n_clip: int = 5, clip: float = 1.0
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-spectrum upper-envelope continuum: refit while dropping pixels below fit − clip·σ.

    Absorption lines pull a plain fit down; rejecting the pixels well below it converges
    on the pseudo-continuum (the classic asymmetric-clipping continuum fit). Returns the
    continuum and the fit inputs (flux, weights) it was computed from.
    """
    flux, weights = _fit_inputs(spectra, np.arange(spectra.n_pixels))
    keep = np.ones(flux.shape, dtype=bool)
    for _ in range(n_clip):
        continuum = _continuum_per_spectrum(flux, weights * keep, degree)
        residual = np.where(weights > 0, flux - continuum, np.nan)
        sample = residual[:, ::_SPREAD_STRIDE]  # a robust spread needs no more than every few pixels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = 1.4826 * np.nanmedian(np.abs(sample - np.nanmedian(sample, axis=1, keepdims=True)),
                                           axis=1, keepdims=True)
        keep = ~(residual < -clip * spread)
    return _continuum_per_spectrum(flux, weights * keep, degree), flux, weights


def _label_normal_equations(spectra: Spectra, design: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel normal equations of flux/pseudo-continuum = design · coefficients, (p, t, t) and (p, t).

    The weights are the inverse variances of the pseudo-normalised flux (ivar · continuum²).
    """
    continuum, flux, weights = _first_guess_continuum(spectra, degree)
    usable = np.isfinite(continuum) & (weights > 0)
    safe = np.where(usable, continuum, 1.0)
    weights = np.where(usable, weights * safe ** 2, 0.0)
    pseudo = np.where(usable, flux / safe, 0.0)
    n_terms = design.shape[1]
    # Σ_n w[n, p] x_i x_j as one matrix product (a three-operand einsum would loop without BLAS)
    products = np.einsum("ni,nj->nij", design, design).reshape(len(design), n_terms * n_terms)
    normal = (weights.T @ products).reshape(-1, n_terms, n_terms)
    return normal, (weights * pseudo).T @ design


def _solve_pixels(normal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve every pixel's small system; NaN coefficients where it is singular (no usable data)."""
    n_terms = normal.shape[-1]
    singular = np.linalg.matrix_rank(normal) < n_terms
    normal = np.where(singular[:, None, None], np.eye(n_terms), normal)
    coefficients = np.linalg.solve(normal, rhs[..., np.newaxis])[..., 0]
    coefficients[singular] = np.nan
    return coefficients


def derive_continuum_pixels(spectra: Spectra, labels, *, f_cut: float = 0.01, slope_cut: float = 0.004,
                            degree: int = 2) -> np.ndarray:
    """Find continuum pixels in a training set the way The Cannon does.

    Criterion (after Ness et al. 2015 and The Cannon's code): a pixel is continuum when
    its flux is close to 1 and barely depends on the labels. Concretely:

    1. Every spectrum is put on a pseudo-continuum: a degree-*degree* Chebyshev per chip
       fitted with asymmetric sigma clipping (pixels more than 1σ below the fit are
       dropped and the fit repeated, 5 times), so absorption lines do not drag it down.
    2. For every pixel, the pseudo-normalised flux is fitted as a linear function of the
       standardised labels, ``f = a + Σ_l b_l x_l`` (weights = inverse variance; one
       batched solve for all pixels), as in a first-order Cannon model.
    3. Continuum pixels are those with ``|a − 1| < f_cut`` (the flux at the mean labels
       is within *f_cut* of the continuum) and ``max_l |b_l| < slope_cut`` (a one-sigma
       change of any label moves the flux by less than *slope_cut*).

    Parameters
    ----------
    spectra : Spectra
        Training spectra on an APOGEE grid (raw or already normalised).
    labels : array_like (n_spectra, n_labels) or label table
        Training labels; rows with a missing label (NaN, -9999) are ignored.
    f_cut, slope_cut : float
        The two cuts above (fractions of the continuum).
    degree : int
        Chebyshev degree of the pseudo-continuum.

    Returns
    -------
    numpy.ndarray of bool, shape (n_pixels,)
        True for continuum pixels.

    Raises
    ------
    LabelError
        If fewer than ``n_labels + 2`` spectra have complete labels.

    Examples
    --------
    >>> from labelexplorer.preprocess.grid import gap_removed_wavelength
    >>> rng = np.random.default_rng(0)
    >>> wl = gap_removed_wavelength()
    >>> teff = rng.uniform(4000, 5000, 30)
    >>> depth = np.zeros(wl.size); depth[::5] = 0.3   # label-dependent lines on every 5th pixel
    >>> flux = 1 - depth[None] * (teff[:, None] / 5000) + rng.normal(0, 0.002, (30, wl.size))
    >>> spec = Spectra(flux, wl, error=np.full(flux.shape, 0.002))
    >>> cont = derive_continuum_pixels(spec, teff[:, None])
    >>> bool(cont[::5].any()), round(float(cont.mean()), 1)
    (False, 0.8)
    """
    degree = _check_degree(degree)
    values = _label_values(labels, spectra.n_spectra)
    complete = np.all(np.isfinite(values), axis=1)
    if complete.sum() < values.shape[1] + 2:
        raise LabelError(f"derive_continuum_pixels: {int(complete.sum())} spectra have complete labels; "
                         f"at least {values.shape[1] + 2} are needed")
    rows, values = np.flatnonzero(complete), values[complete]
    spread = values.std(axis=0)
    standardised = (values - values.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    design = np.column_stack([np.ones(len(rows)), standardised])  # first-order Cannon: 1, x_1..x_L
    normal = np.zeros((spectra.n_pixels, design.shape[1], design.shape[1]))
    rhs = np.zeros((spectra.n_pixels, design.shape[1]))
    # the normal equations are sums over stars: accumulate them in chunks so that memory stays
    # bounded for large training sets
    for start in range(0, len(rows), _DERIVE_CHUNK):
        chunk = slice(start, start + _DERIVE_CHUNK)
        part_normal, part_rhs = _label_normal_equations(spectra[rows[chunk]], design[chunk], degree)
        normal += part_normal
        rhs += part_rhs
    coefficients = _solve_pixels(normal, rhs)
    with np.errstate(invalid="ignore"):
        level_ok = np.abs(coefficients[:, 0] - 1.0) < f_cut
        slope_ok = np.max(np.abs(coefficients[:, 1:]), axis=1, initial=0.0) < slope_cut
    pixels = level_ok & slope_ok
    if not pixels.any():
        raise SpectrumError(f"derive_continuum_pixels: no pixel passes |a-1| < {f_cut} and |b| < {slope_cut}; "
                            "loosen the cuts")
    return pixels
