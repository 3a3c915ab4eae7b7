"""Pseudo-continuum normalisation for low-resolution spectra (SLAM / laspec style, DESIGN §4.3).

A low-resolution spectrum has no line-free continuum to fit, so SLAM divides by a
*pseudo*-continuum: a smooth spline that follows the upper part of the spectrum. We fit
a cubic B-spline with knots every ``knot_spacing`` Angstrom by weighted least squares
(weights = inverse variance), with a small penalty on the second differences of the
spline coefficients (a P-spline) so that knot intervals without good pixels are bridged
smoothly. Pixels far from the fit are then rejected and the spline refitted, a few times.
The rejection is asymmetric, because absorption lines push pixels below the continuum far
more often than noise or emission pushes them above it: a pixel is dropped when its
relative residual ``f / cont - 1`` is below ``-k_low * s`` or above ``k_high * s``. The
scale ``s`` is measured in ``bin_width``-Angstrom wavelength bins: the median relative
error ``error / cont`` of the bin when the spectra carry errors (a scatter of the residuals
would be inflated by the very lines we want to reject), else a robust scatter
(1.4826 x median absolute deviation) of the kept residuals. The fit runs in two phases:
first only low pixels are rejected, lifting the spline out of the lines onto the upper
envelope; then high pixels (emission, cosmic rays) are rejected too. A fit dragged down
by line blanketing would otherwise reject the true continuum as "emission". The highest
10 % of each bin are never rejected as absorption, so no knot interval is emptied.
Narrow emission lines (chromospheric H-alpha, sky residuals) are rejected; an emission
line as broad as the knot spacing (quasars) is partly followed by the spline.

Speed: on a shared grid the spline basis is built once and every spectrum's weighted
normal equations are formed in one sparse-dense product (each pixel touches 4 of the
basis functions) and solved as one batch, so thousands of spectra take seconds.
Spectra with one grid per spectrum are fitted one by one with the same code.

The public pair is :func:`fit_pseudo_continuum` (the continuum array) and
:func:`pseudo_continuum_normalise` (the normalised :class:`~labelexplorer.spectra.Spectra`;
pass it a continuum you already fitted to avoid fitting twice).
"""

from __future__ import annotations

import inspect

import numpy as np

from ..exceptions import ShapeError, SpectrumError, UnknownNameError, did_you_mean
from ..spectra import Spectra

__all__ = ["fit_pseudo_continuum", "pseudo_continuum_normalise"]

_MAD_TO_SIGMA = 1.4826
_MIN_PIXELS_PER_BIN = 8  # fewer kept pixels than this: the bin borrows the spectrum's overall scatter
_RESCUE_QUANTILE = 0.9  # the top 10 % of a bin are never rejected as absorption
_CHUNK = 256  # spectra fitted together
_SCATTER_FLOOR = 1e-4  # relative; noise-free spectra would otherwise reject pixels over rounding errors


class _SplineBasis:
    """Cubic B-spline basis on one grid, with the products its normal equations need."""

    def __init__(self, wavelength: np.ndarray, knot_spacing: float):
        from scipy.interpolate import BSpline
        from scipy.sparse import csr_array

        low, high = float(wavelength[0]), float(wavelength[-1])
        n_intervals = max(int(round((high - low) / knot_spacing)), 1)
        knots = np.r_[[low] * 3, np.linspace(low, high, n_intervals + 1), [high] * 3]
        self.design = BSpline.design_matrix(wavelength, knots, 3).tocsr()  # (p, m), 4 entries per row
        p, m = self.design.shape
        self.m = m
        columns = self.design.indices.reshape(p, 4)
        values = self.design.data.reshape(p, 4)
        # row j of `outer` holds B_j B_j^T flattened, so W @ outer stacks every spectrum's B^T W B
        pairs = (columns[:, :, None] * m + columns[:, None, :]).reshape(p, 16)
        products = (values[:, :, None] * values[:, None, :]).reshape(p, 16)
        self.outer = csr_array((products.ravel(), pairs.ravel(), np.arange(0, 16 * p + 1, 16)), shape=(p, m * m))
        second_difference = np.diff(np.eye(m), n=2, axis=0)
        self.penalty = second_difference.T @ second_difference

    def fit(self, flux: np.ndarray, weight: np.ndarray, smoothing: float) -> np.ndarray:
        """Continuum (n, p) from weighted least squares with a second-difference penalty."""
        normal = np.asarray(self.outer.T @ weight.T).T.reshape(-1, self.m, self.m)
        rhs = np.asarray(self.design.T @ (weight * flux).T).T
        scale = np.trace(normal, axis1=1, axis2=2) / self.m
        normal = normal + (smoothing * scale)[:, None, None] * self.penalty
        normal[:, np.arange(self.m), np.arange(self.m)] += 1e-12 * scale[:, None]  # keeps empty knots solvable
        coefficients = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0]
        return np.asarray(self.design @ coefficients.T).T


def _nan_quantile(values: np.ndarray, quantile: float) -> np.ndarray:
    """Quantile over the last axis ignoring NaN, vectorised (np.nanquantile loops in Python)."""
    ordered = np.sort(values, axis=-1)  # NaN sorts last
    counts = np.sum(~np.isnan(values), axis=-1)
    position = quantile * np.maximum(counts - 1, 0)
    below = np.floor(position).astype(int)[..., None]
    above = np.minimum(below + 1, np.maximum(counts - 1, 0)[..., None])
    fraction = (position - below[..., 0])
    low = np.take_along_axis(ordered, below, axis=-1)[..., 0]
    high = np.take_along_axis(ordered, above, axis=-1)[..., 0]
    return np.where(counts > 0, low + fraction * (high - low), np.nan)


class _Bins:
    """Consecutive wavelength bins: a padded (n_bins, width) pixel index (-1 pads) and each pixel's bin."""

    def __init__(self, wavelength: np.ndarray, bin_width: float):
        label = np.floor((wavelength - wavelength[0]) / bin_width).astype(int)
        self.of_pixel = np.r_[0, np.cumsum(np.diff(label) > 0)]
        starts = np.flatnonzero(np.r_[True, np.diff(label) > 0])
        ends = np.r_[starts[1:], wavelength.size]
        index = starts[:, None] + np.arange(int(np.max(ends - starts)))[None, :]
        self.index = np.where(index < ends[:, None], index, -1)

    def gather(self, values: np.ndarray) -> np.ndarray:
        """(n, n_bins, width) copy of *values* (n, p), NaN where a bin is shorter than the widest."""
        padded = np.concatenate([values, np.full((values.shape[0], 1), np.nan)], axis=1)
        return padded[:, self.index]  # index -1 picks the NaN column

    def quantile(self, values: np.ndarray, quantile: float) -> np.ndarray:
        """Per-pixel quantile of the finite *values* of its bin, shape (n, p)."""
        return _nan_quantile(self.gather(values), quantile)[:, self.of_pixel]

    def scatter(self, residual: np.ndarray) -> np.ndarray:
        """Per-pixel 1.4826 x MAD of the finite residuals of its bin (the spectrum's own when too few)."""
        binned = self.gather(residual)
        centre = _nan_quantile(binned, 0.5)
        scatter = _MAD_TO_SIGMA * _nan_quantile(np.abs(binned - centre[..., None]), 0.5)
        overall = _MAD_TO_SIGMA * _nan_quantile(np.abs(residual - _nan_quantile(residual, 0.5)[:, None]), 0.5)
        enough = np.sum(~np.isnan(binned), axis=2) >= _MIN_PIXELS_PER_BIN
        return np.where(enough, scatter, overall[:, None])[:, self.of_pixel]


def _rejection_scale(bins: _Bins, residual, keep, continuum, error) -> np.ndarray:
    if error is None:
        scale = bins.scatter(np.where(keep, residual, np.nan))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(np.isfinite(residual), error / np.abs(continuum), np.nan)
        scale = bins.quantile(relative, 0.5)
    return np.maximum(np.nan_to_num(scale, nan=np.inf), _SCATTER_FLOOR)


def _fit_shared_grid(wavelength, flux, weight, good, error, options) -> np.ndarray:
    basis = _SplineBasis(wavelength, options["knot_spacing"])
    bins = _Bins(wavelength, options["bin_width"])
    # chunks keep the temporaries in cache; results do not depend on the chunk size
    return np.concatenate([
        _fit_rows(basis, bins, flux[rows], weight[rows], good[rows], None if error is None else error[rows], options)
        for rows in (slice(start, start + _CHUNK) for start in range(0, flux.shape[0], _CHUNK))])


def _fit_rows(basis, bins, flux, weight, good, error, options) -> np.ndarray:
    flux = np.where(good, flux, 0.0)
    keep = good.copy()
    continuum = basis.fit(flux, weight, options["smoothing"])
    for k_high in (np.inf, options["k_high"]):  # phase 1: lift onto the envelope; phase 2: also clip high
        active = np.arange(flux.shape[0])  # spectra whose selection still changes
        for _ in range(options["n_iter"]):
            f, g, c = flux[active], good[active], continuum[active]
            with np.errstate(divide="ignore", invalid="ignore"):
                residual = np.where(g & (c > 0), f / c - 1.0, np.nan)
            scale = _rejection_scale(bins, residual, keep[active], c, None if error is None else error[active])
            top_of_bin = residual >= bins.quantile(residual, _RESCUE_QUANTILE)
            new_keep = g & ((residual > -options["k_low"] * scale) | top_of_bin) & (residual < k_high * scale)
            # a spectrum whose every pixel would be rejected keeps its previous selection
            new_keep = np.where(new_keep.any(axis=1, keepdims=True), new_keep, keep[active])
            changed = np.any(new_keep != keep[active], axis=1)
            active = active[changed]
            if not active.size:
                break
            keep[active] = new_keep[changed]
            continuum[active] = basis.fit(flux[active], weight[active] * keep[active], options["smoothing"])
    return continuum


def fit_pseudo_continuum(spectra: Spectra, *, knot_spacing: float = 100.0, bin_width: float = 100.0,
                         k_low: float = 1.5, k_high: float = 3.0, n_iter: int = 10,
                         smoothing: float = 1e-3) -> np.ndarray:
    """Fit the pseudo-continuum of every spectrum: a smooth spline through its upper envelope.

    Parameters
    ----------
    spectra : Spectra
        Flux-calibrated (or raw) low-resolution spectra; masked pixels are ignored.
    knot_spacing : float
        Angstrom between spline knots (100 suits LAMOST's R ~ 1800).
    bin_width : float
        Angstrom width of the bins in which the residual scatter is measured.
    k_low, k_high : float
        Reject pixels more than ``k_low`` scales below / ``k_high`` above the fit, the scale
        being the bin's median relative error (or its residual scatter without errors).
    n_iter : int
        Maximum number of reject-and-refit rounds per phase; a spectrum stops as soon as
        its selection no longer changes.
    smoothing : float
        Weight of the second-difference penalty relative to the data (0: plain least squares).

    Returns
    -------
    numpy.ndarray, shape (n_spectra, n_pixels)
        The continuum at every pixel (masked pixels included), float64.

    Raises
    ------
    SpectrumError
        If a spectrum has no good pixel.

    Examples
    --------
    >>> wl = np.linspace(4000.0, 8000.0, 2000)
    >>> truth = 1.0 + 0.5 * np.sin(wl / 900.0)
    >>> flux = truth * (1 - 0.6 * np.exp(-0.5 * ((wl - 5000.0) / 3.0) ** 2))  # one absorption line
    >>> cont = fit_pseudo_continuum(Spectra(flux, wl, error=np.full(2000, 0.01)))
    >>> float(np.max(np.abs(cont[0] / truth - 1))) < 0.005
    True
    """
    if not isinstance(spectra, Spectra):
        raise ShapeError(f"fit_pseudo_continuum: expected a Spectra object, got {type(spectra).__name__}")
    options = dict(knot_spacing=float(knot_spacing), bin_width=float(bin_width), k_low=float(k_low),
                   k_high=float(k_high), n_iter=int(n_iter), smoothing=float(smoothing))
    if min(knot_spacing, bin_width, k_low, k_high) <= 0 or n_iter < 0 or smoothing < 0:
        raise ShapeError("fit_pseudo_continuum: knot_spacing, bin_width, k_low and k_high must be > 0, "
                         f"n_iter and smoothing >= 0; got {options}")
    good = ~spectra.mask
    empty = np.flatnonzero(~good.any(axis=1))
    if empty.size:
        raise SpectrumError(f"{spectra.meta.get('source', 'spectra')}: spectrum {str(spectra.ids[empty[0]])!r} has no "
                            f"good pixel ({empty.size} such spectra); expected some unmasked flux to fit a continuum")
    flux = spectra.flux.astype(np.float64)
    error = np.where(good, spectra.error, np.nan).astype(np.float64) if spectra.has_errors else None
    weight = np.where(good, spectra.ivar, 0.0).astype(np.float64) if spectra.has_errors else good.astype(np.float64)
    if spectra.shared_grid:
        return _fit_shared_grid(spectra.wavelength, flux, weight, good, error, options)
    return np.concatenate([
        _fit_shared_grid(spectra.wavelength[i], flux[i:i + 1], weight[i:i + 1], good[i:i + 1],
                         None if error is None else error[i:i + 1], options)
        for i in range(spectra.n_spectra)])


def pseudo_continuum_normalise(spectra: Spectra, *, continuum=None, **options) -> Spectra:
    """Divide every spectrum by its pseudo-continuum: flux / cont, error / cont (ivar x cont²).

    Parameters
    ----------
    spectra : Spectra
        The spectra to normalise.
    continuum : array_like, shape (n_spectra, n_pixels), optional
        A continuum from :func:`fit_pseudo_continuum`; fitted here when omitted.
    **options
        Passed to :func:`fit_pseudo_continuum` (``knot_spacing``, ``k_low``...).

    Returns
    -------
    Spectra
        Normalised spectra (near 1 in the continuum). Masked pixels stay masked; pixels
        where the continuum is not positive are masked too. The step and its options are
        recorded in ``meta["history"]`` and ``meta["pseudo_continuum"]``.

    Examples
    --------
    >>> wl = np.linspace(4000.0, 8000.0, 2000)
    >>> spec = Spectra(np.vstack([np.full(2000, 5.0), np.linspace(2.0, 4.0, 2000)]), wl,
    ...                error=np.full((2, 2000), 0.05))
    >>> norm = pseudo_continuum_normalise(spec)
    >>> np.allclose(norm.flux, 1.0, atol=1e-3), norm.meta["history"][-1].split(":")[0]
    (True, 'pseudo-continuum')
    >>> round(float(norm.error[0, 0]), 4)  # 0.05 / 5
    0.01
    """
    settings = _settings(options)
    if continuum is None:
        continuum = fit_pseudo_continuum(spectra, **settings)
    else:
        settings = {"continuum": "given by the caller"}
    continuum = np.asarray(continuum, dtype=np.float64)
    if continuum.shape != spectra.flux.shape:
        raise ShapeError(f"continuum: expected shape {spectra.flux.shape} like the flux, got {continuum.shape}")
    positive = np.isfinite(continuum) & (continuum > 0)
    safe = np.where(positive, continuum, 1.0)
    fields = dict(flux=np.where(positive, spectra.flux / safe, np.nan), mask=spectra.mask | ~positive,
                  error=np.where(positive, spectra.error / safe, np.inf) if spectra.has_errors else None)
    step = ("pseudo-continuum: divided by a cubic spline fitted with asymmetric iterative rejection ("
            + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")")
    out = spectra.replace(step=step, **fields)
    out.meta["pseudo_continuum"] = settings
    return out


def _settings(options: dict) -> dict:
    """The fit options with defaults filled in, or an error naming an unknown one."""
    parameters = inspect.signature(fit_pseudo_continuum).parameters
    unknown = [name for name in options if name not in parameters or name == "spectra"]
    if unknown:
        keywords = [name for name in parameters if name != "spectra"]
        raise UnknownNameError(f"pseudo_continuum_normalise: unknown option {unknown[0]!r}; known: "
                               f"{', '.join(keywords)}{did_you_mean(unknown[0], keywords)}")
    return {name: options.get(name, parameters[name].default) for name in parameters if name != "spectra"}
