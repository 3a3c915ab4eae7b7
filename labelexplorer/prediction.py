"""The :class:`LabelPrediction`: every method returns its labels in one of these.

Three uncertainties travel with every label (DESIGN §3): ``model_std`` (epistemic:
MC-dropout spread, SLAM's formal error), ``predictive_std`` (aleatoric: learned
variance, spread over noise realisations) and ``total_std = sqrt(model² + predictive²)``.
A quantity a method cannot provide is NaN, never absent, so downstream code never needs
to ask which method produced a prediction. Per-star ``flags`` are named boolean arrays
(``outside_training_set``, ``not_converged``, ``low_snr``, ...).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from .exceptions import LabelError, ShapeError, did_you_mean
from .labels import canonical_label

__all__ = ["LabelPrediction", "LabelEstimate"]


class LabelEstimate(NamedTuple):
    """One label's values for every star: mean and the three uncertainties."""

    mean: np.ndarray
    model_std: np.ndarray
    predictive_std: np.ndarray
    total_std: np.ndarray


class LabelPrediction:
    """Predicted labels with their uncertainties and per-star flags.

    Parameters
    ----------
    label_names : sequence of str
        Label names (canonicalised, e.g. ``"[Fe/H]"`` becomes ``"FE_H"``).
    mean : array_like, shape (n_stars, n_labels)
    model_std, predictive_std : array_like, optional
        Same shape as *mean*; missing means NaN (the method cannot provide it).
    ids : sequence of str, optional
        One identifier per star.
    samples : array_like, shape (n_samples, n_stars, n_labels), optional
        Raw draws (MC passes or noise realisations), when kept.
    flags : mapping of str to bool array (n_stars,), optional
    meta : dict, optional
        Model name, version, hash and other provenance.

    Examples
    --------
    >>> import numpy as np
    >>> pred = LabelPrediction(["Teff", "logg"], [[4800.0, 2.5]], model_std=[[30.0, 0.04]],
    ...                        predictive_std=[[40.0, 0.03]], ids=["star1"])
    >>> float(pred["TEFF"].total_std[0])
    50.0
    >>> pred.to_pandas().columns.tolist()[:4]
    ['ID', 'TEFF', 'TEFF_ERR', 'TEFF_MODEL_STD']
    """

    def __init__(self, label_names: Sequence[str], mean, model_std=None, predictive_std=None, *,
                 ids=None, samples=None, flags: Mapping[str, Any] | None = None,
                 meta: Mapping[str, Any] | None = None):
        self.label_names = [canonical_label(n) for n in label_names]
        self.mean = np.atleast_2d(np.asarray(mean, dtype=np.float64))
        n_stars, n_labels = self.mean.shape
        if n_labels != len(self.label_names):
            raise ShapeError(f"mean: expected {len(self.label_names)} label columns, got {n_labels}")
        self.model_std = self._std(model_std, "model_std")
        self.predictive_std = self._std(predictive_std, "predictive_std")
        self.ids = np.array([str(i) for i in (range(n_stars) if ids is None else ids)])
        if self.ids.shape != (n_stars,):
            raise ShapeError(f"ids: expected {n_stars} identifiers, got {self.ids.shape[0]}")
        self.samples = None if samples is None else np.asarray(samples, dtype=np.float32)
        if self.samples is not None and self.samples.shape[1:] != self.mean.shape:
            raise ShapeError(f"samples: expected shape (n_samples, {n_stars}, {n_labels}), got {self.samples.shape}")
        self.flags = {}
        for name, values in (flags or {}).items():
            values = np.asarray(values, dtype=bool)
            if values.shape != (n_stars,):
                raise ShapeError(f"flags[{name!r}]: expected {n_stars} booleans, got shape {values.shape}")
            self.flags[name] = values
        self.meta = dict(meta or {})

    def _std(self, values, name) -> np.ndarray:
        if values is None:
            return np.full(self.mean.shape, np.nan)
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        if values.shape != self.mean.shape:
            raise ShapeError(f"{name}: expected shape {self.mean.shape} like mean, got {values.shape}")
        if np.any(values[np.isfinite(values)] < 0):
            raise ShapeError(f"{name}: standard deviations must be >= 0")
        return values

    @property
    def total_std(self) -> np.ndarray:
        """``sqrt(model_std² + predictive_std²)``, using whichever parts are known.

        NaN only when neither part is known.
        """
        both = np.stack([self.model_std, self.predictive_std])
        known = np.isfinite(both).any(axis=0)
        total = np.sqrt(np.nansum(np.square(both), axis=0))
        return np.where(known, total, np.nan)

    @property
    def n_stars(self) -> int:
        """Number of stars (rows)."""
        return self.mean.shape[0]

    def __len__(self) -> int:
        return self.n_stars

    def __repr__(self) -> str:
        flagged = {k: int(v.sum()) for k, v in self.flags.items()}
        return f"<LabelPrediction {self.n_stars} stars x {self.label_names}, flags={flagged}>"

    def label_index(self, name: str) -> int:
        """Column of label *name* (any accepted spelling)."""
        key = canonical_label(name)
        if key not in self.label_names:
            raise LabelError(f"label {name!r} was not predicted; available: {self.label_names}"
                             f"{did_you_mean(key, self.label_names)}")
        return self.label_names.index(key)

    def __getitem__(self, key):
        """``pred["TEFF"]`` gives a :class:`LabelEstimate`; anything else selects stars."""
        if isinstance(key, str):
            j = self.label_index(key)
            return LabelEstimate(self.mean[:, j], self.model_std[:, j], self.predictive_std[:, j],
                                 self.total_std[:, j])
        rows = np.arange(self.n_stars)[key] if isinstance(key, slice) else np.asarray(key)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.atleast_1d(rows)
        return LabelPrediction(self.label_names, self.mean[rows], self.model_std[rows],
                               self.predictive_std[rows], ids=self.ids[rows],
                               samples=None if self.samples is None else self.samples[:, rows],
                               flags={k: v[rows] for k, v in self.flags.items()}, meta=self.meta)

    @classmethod
    def concatenate(cls, parts: Sequence["LabelPrediction"]) -> "LabelPrediction":
        """Stack predictions of the same labels (e.g. batches of a catalog run).

        Examples
        --------
        >>> a = LabelPrediction(["TEFF"], [[5000.0]], ids=["a"])
        >>> b = LabelPrediction(["TEFF"], [[4000.0]], ids=["b"])
        >>> LabelPrediction.concatenate([a, b]).ids.tolist()
        ['a', 'b']
        """
        parts = list(parts)
        if not parts:
            raise ShapeError("concatenate: expected at least one LabelPrediction")
        names = parts[0].label_names
        if any(p.label_names != names for p in parts):
            raise LabelError("concatenate: predictions have different label names")
        flag_names = set().union(*(p.flags for p in parts))
        keep_samples = all(p.samples is not None for p in parts) and len({p.samples.shape[0] for p in parts}) == 1
        return cls(names, np.concatenate([p.mean for p in parts]),
                   np.concatenate([p.model_std for p in parts]),
                   np.concatenate([p.predictive_std for p in parts]),
                   ids=np.concatenate([p.ids for p in parts]),
                   samples=np.concatenate([p.samples for p in parts], axis=1) if keep_samples else None,
                   flags={f: np.concatenate([p.flags.get(f, np.zeros(p.n_stars, bool)) for p in parts])
                          for f in sorted(flag_names)},
                   meta=parts[0].meta)

    def columns(self) -> dict[str, np.ndarray]:
        """Flat columns: ``ID``, then per label ``X``, ``X_ERR`` (total), ``X_MODEL_STD``,
        ``X_PRED_STD``, then ``FLAG_<NAME>`` per flag."""
        out: dict[str, np.ndarray] = {"ID": self.ids}
        total = self.total_std
        for j, name in enumerate(self.label_names):
            out[name] = self.mean[:, j]
            out[f"{name}_ERR"] = total[:, j]
            out[f"{name}_MODEL_STD"] = self.model_std[:, j]
            out[f"{name}_PRED_STD"] = self.predictive_std[:, j]
        for flag, values in self.flags.items():
            out[f"FLAG_{flag.upper()}"] = values
        return out

    def to_pandas(self):
        """Return a pandas DataFrame of :meth:`columns` (metadata in ``.attrs``)."""
        import pandas as pd

        frame = pd.DataFrame(self.columns())
        frame.attrs.update(self.meta)
        return frame

    def to_table(self):
        """Return an astropy Table of :meth:`columns` (metadata in ``.meta``).

        Examples
        --------
        >>> LabelPrediction(["LOGG"], [[2.5]]).to_table().colnames
        ['ID', 'LOGG', 'LOGG_ERR', 'LOGG_MODEL_STD', 'LOGG_PRED_STD']
        """
        from astropy.table import Table

        return Table(self.columns(), meta=dict(self.meta))
