"""Coefficients of dependence (CODs): which pixels depend on which label (SLAM paper §6).

In standardised flux a constant model has a mean squared error of 1, so
``COD_full,j = 1 − MSE_full,j`` is the fraction of pixel j's variation that the full
model explains. Retraining without label l gives ``MSE_l,j ≥ MSE_full,j``; the loss
``MSE_l,j − MSE_full,j`` is label l's share, and the per-label CODs are these losses
scaled to add up to the full COD (Zhang, Liu & Deng 2020, eqs. 12–13)::

    COD_l,j = COD_full,j × (MSE_l,j − MSE_full,j) / Σ_l' (MSE_l',j − MSE_full,j)

Cross-validated MSEs are noisy, so negative losses (a label that "helps" by chance to be
left out) count as zero; a pixel where no label loses anything shares its full COD
equally. The result is a :class:`CODSpectra`: arrays over the wavelength grid with the
label names, ready to plot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..exceptions import LabelError, ShapeError, did_you_mean
from ..labels import canonical_label

__all__ = ["CODSpectra", "cod_full", "cod_per_label", "cod_spectra"]


def cod_full(mse_full) -> np.ndarray:
    """``1 − MSE`` of standardised flux, clipped to [0, 1].

    Examples
    --------
    >>> cod_full([0.1, 1.2, -0.0]).tolist()
    [0.9, 0.0, 1.0]
    """
    return np.clip(1.0 - np.asarray(mse_full, dtype=np.float64), 0.0, 1.0)


def cod_per_label(mse_full, mse_without) -> np.ndarray:
    """Per-label CODs from the full MSE (n_pixels,) and leave-one-label-out MSEs (n_labels, n_pixels).

    Returns an array (n_labels, n_pixels) whose columns sum to :func:`cod_full`.

    Examples
    --------
    >>> per = cod_per_label([0.2, 0.5], [[0.8, 0.5], [0.4, 0.6]])
    >>> per.round(3).tolist()
    [[0.6, 0.0], [0.2, 0.5]]
    >>> per.sum(axis=0).round(3).tolist()
    [0.8, 0.5]
    """
    full = np.asarray(mse_full, dtype=np.float64)
    without = np.atleast_2d(np.asarray(mse_without, dtype=np.float64))
    if without.shape[1:] != full.shape or full.ndim != 1:
        raise ShapeError(f"mse_without: expected shape (n_labels, {full.size}) to match mse_full, got {without.shape}")
    loss = np.clip(without - full, 0.0, None)
    total = loss.sum(axis=0)
    share = np.where(total > 0, loss / np.where(total > 0, total, 1.0), 1.0 / without.shape[0])
    return share * cod_full(full)


@dataclass(frozen=True)
class CODSpectra:
    """COD spectra over a wavelength grid.

    Attributes
    ----------
    wavelength : ndarray (n_pixels,)
    label_names : list of str
    full : ndarray (n_pixels,)
        ``COD_full``.
    per_label : ndarray (n_labels, n_pixels)
        ``COD_l``; NaN when the leave-one-label-out MSEs are not known.

    Examples
    --------
    >>> cod = cod_spectra([5000.0, 5001.0, 5002.0], ["TEFF", "LOGG"], [0.1, 0.5, 0.9],
    ...                   [[0.9, 0.5, 0.9], [0.1, 0.9, 0.9]])
    >>> cod["TEFF"].round(2).tolist()
    [0.9, 0.0, 0.05]
    >>> cod.peaks("LOGG", n=1)
    [5001.0]
    >>> cod.to_pandas().columns.tolist()
    ['WAVELENGTH', 'COD_FULL', 'COD_TEFF', 'COD_LOGG']
    """

    wavelength: np.ndarray
    label_names: list[str]
    full: np.ndarray
    per_label: np.ndarray
    meta: dict = field(default_factory=dict)

    def __getitem__(self, label: str) -> np.ndarray:
        """The COD spectrum of one label (any accepted spelling), or ``"full"``."""
        if str(label).lower() == "full":
            return self.full
        key = canonical_label(label)
        if key not in self.label_names:
            raise LabelError(f"no COD for label {label!r}; available: {self.label_names}"
                             f"{did_you_mean(key, self.label_names)}")
        return self.per_label[self.label_names.index(key)]

    def dominant_label(self) -> np.ndarray:
        """Name of the label with the largest COD at each pixel (``""`` where unknown)."""
        known = np.isfinite(self.per_label).all(axis=0) & (self.full > 0)
        names = np.asarray(self.label_names)[np.argmax(np.nan_to_num(self.per_label, nan=-1.0), axis=0)]
        return np.where(known, names, "")

    def peaks(self, label: str, n: int = 5, min_separation: int = 3) -> list[float]:
        """Wavelengths of the *n* highest COD pixels of *label*, at least *min_separation* pixels apart."""
        values = np.nan_to_num(self[label], nan=-np.inf)
        chosen: list[int] = []
        for pixel in np.argsort(values)[::-1]:
            if len(chosen) == n or not np.isfinite(values[pixel]):
                break
            if all(abs(int(pixel) - c) >= min_separation for c in chosen):
                chosen.append(int(pixel))
        return [float(self.wavelength[c]) for c in chosen]

    def to_pandas(self):
        """A DataFrame with ``WAVELENGTH``, ``COD_FULL`` and ``COD_<LABEL>`` columns."""
        import pandas as pd

        columns = {"WAVELENGTH": self.wavelength, "COD_FULL": self.full}
        columns.update({f"COD_{name}": self.per_label[j] for j, name in enumerate(self.label_names)})
        frame = pd.DataFrame(columns)
        frame.attrs.update(self.meta)
        return frame


def cod_spectra(wavelength, label_names: Sequence[str], mse_full, mse_without=None, *,
                meta: dict | None = None) -> CODSpectra:
    """Build :class:`CODSpectra` from cross-validated MSEs of standardised flux.

    Parameters
    ----------
    wavelength : array_like (n_pixels,)
    label_names : sequence of str
    mse_full : array_like (n_pixels,)
        MSE of the model trained on all labels.
    mse_without : array_like (n_labels, n_pixels), optional
        MSE of the model trained without each label in turn; without it the per-label
        CODs are NaN.
    meta : dict, optional
        Provenance (model name, training hash).
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    full = np.asarray(mse_full, dtype=np.float64)
    names = [canonical_label(n) for n in label_names]
    if wavelength.shape != full.shape or full.ndim != 1:
        raise ShapeError(f"mse_full: expected one value per pixel ({wavelength.size}), got shape {full.shape}")
    if mse_without is None or not np.all(np.isfinite(mse_without)):
        per_label = np.full((len(names), full.size), np.nan)
    else:
        per_label = cod_per_label(full, mse_without)
        if per_label.shape[0] != len(names):
            raise ShapeError(f"mse_without: expected {len(names)} rows (one per label), got {per_label.shape[0]}")
    return CODSpectra(wavelength, names, cod_full(full), per_label, dict(meta or {}))
