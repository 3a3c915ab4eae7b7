"""The :class:`Spectra` container: every batch of spectra travels in one of these.

Conventions (DESIGN §3): flux is ``(n_spectra, n_pixels)`` float32; uncertainties are
kept as a 1-sigma ``error`` array and exposed as ``ivar`` (``inf`` marks a pixel with no
information and is masked; NaN throughout means the source gave no errors at all);
``mask`` is boolean with **True meaning bad**, and non-finite flux or error is masked
automatically; wavelengths are vacuum Angstrom, either one shared grid ``(n_pixels,)``
or one grid per spectrum ``(n_spectra, n_pixels)`` (low-resolution surveys whose files
each carry their own grid). Per-spectrum columns (SNR, photometry, labels read from the
file...) live in ``info``, a dict of arrays whose first axis is ``n_spectra``, so they
follow every selection and concatenation; per-pixel companions such as a survey's raw
pixel bitmask or a pipeline's best-fit model are kept there too, shaped like ``flux``
(on the grid the file was read on). Transforms return new objects and append a record to ``meta["history"]``.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

import numpy as np

from .exceptions import LabelError, ShapeError, SpectrumError

__all__ = ["Spectra"]


def _as_2d(array, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise ShapeError(f"{name}: expected a 1-D or 2-D array (n_spectra, n_pixels), got shape {array.shape}")
    return array


class Spectra:
    """A batch of spectra on a wavelength grid, with errors, a bad-pixel mask and metadata.

    Parameters
    ----------
    flux : array_like, shape (n_spectra, n_pixels) or (n_pixels,)
        Flux values; stored as float32.
    wavelength : array_like, shape (n_pixels,) or (n_spectra, n_pixels)
        Vacuum wavelengths in Angstrom, increasing along the pixel axis.
    error : array_like, optional
        1-sigma flux uncertainties, same shape as *flux*. ``inf``/NaN/0 mark pixels without
        information (masked). Without *error* and *ivar* the errors are unknown: ``error``
        is NaN, ``ivar`` is 0, and no pixel is masked for that reason.
    ivar : array_like, optional
        Inverse variances instead of *error*; 0 means no information (masked).
    mask : array_like of bool, optional
        True marks a bad pixel. Non-finite flux or error pixels are added automatically.
    ids : sequence of str, optional
        One identifier per spectrum (defaults to ``"0", "1", ...``).
    meta : dict, optional
        Batch-wide metadata (survey, data release, source files, history of transforms).
    info : mapping of str to array_like, optional
        Per-spectrum columns, each of length n_spectra (SNR, photometry, labels...).
    allow_empty : bool
        Accept spectra whose pixels are all bad. By default such a spectrum is an error,
        because nothing downstream can use it.

    Raises
    ------
    ShapeError
        If shapes disagree.
    SpectrumError
        If an error is negative or a spectrum has no usable pixel.

    Examples
    --------
    >>> import numpy as np
    >>> spec = Spectra(np.ones((2, 5)), np.linspace(15100, 15200, 5), error=np.full((2, 5), 0.01),
    ...                ids=["a", "b"])
    >>> spec.n_spectra, spec.n_pixels
    (2, 5)
    >>> spec["b"].ids.tolist()
    ['b']
    >>> float(spec.ivar[0, 0])
    10000.0
    """

    def __init__(self, flux, wavelength, *, error=None, ivar=None, mask=None, ids=None,
                 meta: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
                 allow_empty: bool = False):
        flux = _as_2d(flux, "flux").astype(np.float32, copy=True)
        n_spectra, n_pixels = flux.shape
        self.wavelength = self._check_wavelength(wavelength, n_spectra, n_pixels)
        self.error = self._error_from(error, ivar, flux.shape)
        bad = ~np.isfinite(flux)
        if self.has_errors:
            bad |= ~np.isfinite(self.error)
        if mask is not None:
            mask = _as_2d(np.asarray(mask, dtype=bool), "mask")
            if mask.shape != flux.shape:
                raise ShapeError(f"mask: expected shape {flux.shape} like flux, got {mask.shape}")
            bad |= mask
        flux[~np.isfinite(flux)] = np.nan
        self.flux = flux
        self.mask = bad
        self.ids = self._check_ids(ids, n_spectra)
        self.meta = dict(meta or {})
        self.meta.setdefault("history", [])
        self.info = {key: self._check_info(key, value, n_spectra) for key, value in (info or {}).items()}
        if not allow_empty:
            empty = np.flatnonzero(self.mask.all(axis=1))
            if empty.size:
                source = self.meta.get("source", "spectra")
                raise SpectrumError(
                    f"{source}: spectrum {self.ids[empty[0]]!r} has no usable pixel (all flux NaN/inf or masked); "
                    f"{empty.size} such spectra. Remove them or pass allow_empty=True.")

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_wavelength(wavelength, n_spectra, n_pixels) -> np.ndarray:
        wavelength = np.asarray(wavelength, dtype=np.float64)
        if wavelength.ndim == 1:
            if wavelength.shape[0] != n_pixels:
                raise ShapeError(f"wavelength: expected {n_pixels} values (one per pixel), got {wavelength.shape[0]}")
            steps = np.diff(wavelength)
        elif wavelength.ndim == 2 and wavelength.shape == (n_spectra, n_pixels):
            steps = np.diff(wavelength, axis=1)
        else:
            raise ShapeError(f"wavelength: expected shape ({n_pixels},) or ({n_spectra}, {n_pixels}), "
                             f"got {wavelength.shape}")
        if not np.all(np.isfinite(wavelength)) or np.any(steps <= 0):
            raise SpectrumError("wavelength: expected finite values increasing along the pixel axis")
        return wavelength

    @staticmethod
    def _error_from(error, ivar, shape) -> np.ndarray:
        if error is not None and ivar is not None:
            raise SpectrumError("give either error or ivar, not both")
        if error is None and ivar is None:
            return np.full(shape, np.nan, dtype=np.float32)
        name = "error" if error is not None else "ivar"
        values = _as_2d(error if error is not None else ivar, name).astype(np.float64)
        if values.shape != shape:
            raise ShapeError(f"{name}: expected shape {shape} like flux, got {values.shape}")
        if error is not None and np.isnan(values).all():
            return values.astype(np.float32)  # unknown errors stay unknown (see has_errors)
        if np.any(values[np.isfinite(values)] < 0):
            raise SpectrumError(f"{name}: negative values found; uncertainties must be >= 0")
        if error is not None:
            values = np.where(np.isfinite(values) & (values > 0), values, np.inf)
            return values.astype(np.float32)
        with np.errstate(divide="ignore"):
            out = np.where(np.isfinite(values) & (values > 0), 1.0 / np.sqrt(values), np.inf)
        return out.astype(np.float32)

    @staticmethod
    def _check_ids(ids, n_spectra) -> np.ndarray:
        if ids is None:
            return np.array([str(i) for i in range(n_spectra)])
        ids = np.asarray([str(i).strip() for i in np.atleast_1d(ids)])
        if ids.shape != (n_spectra,):
            raise ShapeError(f"ids: expected {n_spectra} identifiers, got {ids.shape[0]}")
        return ids

    @staticmethod
    def _check_info(key, value, n_spectra) -> np.ndarray:
        value = np.asarray(value)
        if value.ndim == 0:
            value = np.repeat(value, n_spectra)
        if value.shape[0] != n_spectra:
            raise ShapeError(f"info[{key!r}]: expected {n_spectra} values (one per spectrum), got {value.shape[0]}")
        return value

    # ------------------------------------------------------------------ basic properties
    @property
    def n_spectra(self) -> int:
        """Number of spectra in the batch."""
        return self.flux.shape[0]

    @property
    def n_pixels(self) -> int:
        """Number of pixels per spectrum."""
        return self.flux.shape[1]

    def __len__(self) -> int:
        return self.n_spectra

    @property
    def has_errors(self) -> bool:
        """False when the source gave no uncertainties (``error`` all NaN)."""
        return not np.all(np.isnan(self.error))

    @property
    def ivar(self) -> np.ndarray:
        """Inverse variance, 0 for masked pixels or unknown errors."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ivar = 1.0 / np.square(self.error.astype(np.float64))
        ivar[self.mask | ~np.isfinite(ivar)] = 0.0
        return ivar.astype(np.float32)

    @property
    def shared_grid(self) -> bool:
        """True when every spectrum shares one wavelength grid."""
        return self.wavelength.ndim == 1

    @property
    def snr(self) -> np.ndarray:
        """Median flux/error over good pixels for each spectrum (``info['snr']`` if the file gave one)."""
        if "snr" in self.info:
            return np.asarray(self.info["snr"], dtype=float)
        with np.errstate(all="ignore"):
            ratio = np.where(self.mask, np.nan, np.abs(self.flux) / self.error)
            return np.nanmedian(np.where(np.isfinite(ratio), ratio, np.nan), axis=1)

    def __repr__(self) -> str:
        survey = self.meta.get("survey", "?")
        wl = self.wavelength
        return (f"<Spectra {self.n_spectra} x {self.n_pixels} px, {np.min(wl):.1f}-{np.max(wl):.1f} Å, "
                f"survey={survey}, {int(self.mask.sum())} masked pixels>")

    # ------------------------------------------------------------------ selection
    def _positions(self, key) -> np.ndarray:
        if isinstance(key, str):
            key = [key]
        if isinstance(key, slice):
            return np.arange(self.n_spectra)[key]
        key = np.asarray(key)
        if key.ndim == 0:
            key = key[np.newaxis]
        if key.dtype == bool:
            if key.shape != (self.n_spectra,):
                raise ShapeError(f"boolean selection: expected {self.n_spectra} values, got {key.shape[0]}")
            return np.flatnonzero(key)
        if key.dtype.kind in "US":
            lookup = {sid: i for i, sid in enumerate(self.ids)}
            missing = [k for k in key if k not in lookup]
            if missing:
                raise LabelError(f"unknown spectrum id {missing[0]!r} ({len(missing)} unknown ids)")
            return np.array([lookup[k] for k in key], dtype=int)
        if key.dtype.kind in "iu":
            if key.size and (key.max() >= self.n_spectra or key.min() < -self.n_spectra):
                raise ShapeError(f"index out of range for {self.n_spectra} spectra")
            return key.astype(int)
        raise ShapeError(f"cannot select spectra with {key.dtype} keys; use positions, ids, a slice or a mask")

    def __getitem__(self, key) -> "Spectra":
        rows = self._positions(key)
        wavelength = self.wavelength if self.shared_grid else self.wavelength[rows]
        out = self._new(flux=self.flux[rows], error=self.error[rows], mask=self.mask[rows],
                        wavelength=wavelength, ids=self.ids[rows],
                        info={k: v[rows] for k, v in self.info.items()})
        return out

    def _new(self, **fields) -> "Spectra":
        """Copy with some fields replaced, without re-validating unchanged ones."""
        out = copy.copy(self)
        for name, value in fields.items():
            setattr(out, name, value)
        out.meta = copy.deepcopy(self.meta) if "meta" not in fields else fields["meta"]
        return out

    def replace(self, *, step: str | None = None, **fields) -> "Spectra":
        """Return a new, validated batch with some fields replaced, recording *step* in the history.

        Examples
        --------
        >>> import numpy as np
        >>> spec = Spectra(np.full((1, 3), 2.0), [1.0, 2.0, 3.0], error=np.full((1, 3), 0.1))
        >>> half = spec.replace(flux=spec.flux / 2, error=spec.error / 2, step="divide by 2")
        >>> half.flux.tolist(), half.meta["history"]
        ([[1.0, 1.0, 1.0]], ['divide by 2'])
        """
        state = dict(flux=self.flux, wavelength=self.wavelength, error=self.error, mask=self.mask,
                     ids=self.ids, meta=copy.deepcopy(self.meta), info=dict(self.info))
        state.update(fields)
        if "ivar" in fields:
            state.pop("error")
        out = Spectra(allow_empty=True, **state)
        if step:
            out.meta["history"] = list(out.meta.get("history", [])) + [step]
        return out

    @classmethod
    def concatenate(cls, batches: Iterable["Spectra"]) -> "Spectra":
        """Stack batches that share a pixel count (and grid, if shared) into one.

        Examples
        --------
        >>> import numpy as np
        >>> a = Spectra(np.ones((1, 3)), [1.0, 2.0, 3.0], ids=["a"])
        >>> b = Spectra(np.ones((2, 3)), [1.0, 2.0, 3.0], ids=["b", "c"])
        >>> Spectra.concatenate([a, b]).ids.tolist()
        ['a', 'b', 'c']
        """
        batches = list(batches)
        if not batches:
            raise ShapeError("concatenate: expected at least one Spectra")
        first = batches[0]
        for other in batches[1:]:
            if other.n_pixels != first.n_pixels:
                raise ShapeError(f"concatenate: pixel counts differ ({first.n_pixels} vs {other.n_pixels}); "
                                 "resample to a common grid first")
        shared = all(b.shared_grid for b in batches) and all(
            np.array_equal(b.wavelength, first.wavelength) for b in batches)
        if shared:
            wavelength = first.wavelength
        else:
            wavelength = np.concatenate([np.broadcast_to(b.wavelength, b.flux.shape) for b in batches])
        keys = set.intersection(*(set(b.info) for b in batches))
        meta = copy.deepcopy(first.meta)
        sources = [b.meta.get("source") for b in batches]
        if any(sources):
            meta["source"] = sources if len(batches) > 1 else sources[0]
        return cls(np.concatenate([b.flux for b in batches]), wavelength,
                   error=np.concatenate([b.error for b in batches]),
                   mask=np.concatenate([b.mask for b in batches]),
                   ids=np.concatenate([b.ids for b in batches]), meta=meta,
                   info={k: np.concatenate([b.info[k] for b in batches]) for k in sorted(keys)},
                   allow_empty=True)

    # ------------------------------------------------------------------ views
    def plot(self, index=0, *, show_error: bool = True, show_mask: bool = True):
        """Return a HoloViews overlay of one spectrum: flux, ±1σ band and shaded bad pixels.

        Examples
        --------
        >>> import numpy as np
        >>> spec = Spectra(np.ones((1, 4)), [1.0, 2.0, 3.0, 4.0], error=np.full((1, 4), 0.1))
        >>> type(spec.plot()).__name__
        'Overlay'
        """
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (options need a loaded backend)

        row = int(self._positions(index)[0])
        wl = self.wavelength if self.shared_grid else self.wavelength[row]
        flux = np.where(self.mask[row], np.nan, self.flux[row])
        curve = hv.Curve((wl, flux), "Wavelength", "Flux", label=str(self.ids[row]))
        layers = [curve]
        if show_error and self.has_errors:
            err = np.where(np.isfinite(self.error[row]), self.error[row], np.nan)
            layers.insert(0, hv.Spread((wl, flux, err), "Wavelength", ["Flux", "Error"]).opts(alpha=0.3))
        if show_mask and self.mask[row].any():
            bad = wl[self.mask[row]]
            layers.append(hv.Spikes(bad, "Wavelength").opts(color="red", alpha=0.15))
        return hv.Overlay(layers)
