"""Baselines for image-based label predictions, computed on the same splits as the model.

Wu & Boada (2019, Fig. 4 and §4.5) measure their CNN against two yardsticks:

* the **constant mean**: always predict the training set's mean label — the worst
  useful scatter (the label's own spread);
* a **random forest on photometry**: gri magnitudes only, the information a 1 × 1
  pixel image holds (the paper's RF: RMSE 0.130 dex for 12 + log(O/H)).

Photometry comes from the catalog when it has g, r, i magnitudes (the mock catalog
does; so does any SDSS query with ``petroMag_*``/``modelMag_*``/``cModelMag_*``); the
real cutouts of the shared sample come with metallicities only, so there
:func:`image_photometry` measures instrumental magnitudes from the image itself.

Every method is scored on out-of-fold predictions over the same
:func:`kfold_splits`, so the numbers compare like with like. Scores use
:mod:`labelexplorer.analysis.metrics`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..exceptions import LabelExplorerError, ShapeError
from .metrics import bias, nmad, outlier_fraction, rmse

__all__ = ["GRI", "kfold_splits", "image_photometry", "photometry_features", "constant_mean_predictions",
           "random_forest_predictions", "cross_validated", "score", "baseline_table"]

GRI = ("g", "r", "i")
_CATALOG_PREFIXES = ("", "petromag_", "cmodelmag_", "modelmag_", "mag_")
# SDSS colour cutouts map i -> R, r -> G, g -> B
_CHANNEL_OF_BAND = {"g": 2, "r": 1, "i": 0}


def kfold_splits(n: int, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold ``(train_rows, test_rows)`` pairs covering ``range(n)`` once as test rows.

    Examples
    --------
    >>> splits = kfold_splits(10, k=5, seed=0)
    >>> len(splits), sorted(np.concatenate([test for _, test in splits]).tolist()) == list(range(10))
    (5, True)
    """
    from sklearn.model_selection import KFold

    if int(k) != k or k < 2 or k > n:
        raise LabelExplorerError(f"k: expected an integer between 2 and the number of rows ({n}), got {k!r}")
    folds = KFold(n_splits=int(k), shuffle=True, random_state=seed).split(np.arange(n))
    return [(np.sort(train), np.sort(test)) for train, test in folds]


def image_photometry(images, aperture: float = 0.25) -> pd.DataFrame:
    """Instrumental g, r, i magnitudes measured from colour cutouts.

    Per band (i → R, r → G, g → B): the summed pixel values inside a circle of radius
    ``aperture × side`` centred on the cutout, minus the median of the pixels outside
    twice that radius times the aperture area, as ``-2.5 log10`` (floored at 1e-4 of the
    aperture area). The values are in the display units of the stretched cutout, not AB
    magnitudes, but they order galaxies by brightness and colour, which is what a
    tree ensemble needs.

    Parameters
    ----------
    images : ImageSet or ndarray (n, 3, H, W)
        Pixel values in [0, 1].
    aperture : float
        Aperture radius as a fraction of the image side.

    Returns
    -------
    pandas.DataFrame
        Columns ``g``, ``r``, ``i``.

    Examples
    --------
    >>> yy, xx = np.mgrid[:32, :32]
    >>> blob = np.exp(-((xx - 15.5) ** 2 + (yy - 15.5) ** 2) / 20.0)
    >>> images = np.stack([np.stack([0.8 * blob, 0.4 * blob, 0.2 * blob])])   # red: bright in i
    >>> mags = image_photometry(images)
    >>> bool(mags.loc[0, "i"] < mags.loc[0, "r"] < mags.loc[0, "g"])
    True
    """
    pixels = np.asarray(getattr(images, "images", images), dtype=np.float64)
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ShapeError(f"images: expected (n, 3, H, W) colour images, got shape {pixels.shape}")
    if not 0 < aperture <= 0.5:
        raise LabelExplorerError(f"aperture: expected a fraction of the image side in (0, 0.5], got {aperture!r}")
    height, width = pixels.shape[2:]
    yy, xx = np.mgrid[:height, :width]
    radius = np.hypot(yy - (height - 1) / 2, xx - (width - 1) / 2) / max(height, width)
    inside = radius <= aperture
    if not inside.any():  # a 1 x 1 or 2 x 2 image: every pixel is the galaxy
        inside = np.ones_like(inside)
    outside = radius > 2 * aperture
    area = inside.sum()
    total = pixels[:, :, inside].sum(axis=2)
    if outside.any():
        total = total - np.median(pixels[:, :, outside], axis=2) * area
    magnitudes = -2.5 * np.log10(np.maximum(total, 1e-4 * area))
    return pd.DataFrame({band: magnitudes[:, _CHANNEL_OF_BAND[band]] for band in GRI})


def _catalog_bands(catalog: pd.DataFrame | None) -> pd.DataFrame | None:
    """g, r, i columns of a catalog (plain or SDSS-named magnitudes), or None when absent or incomplete."""
    if catalog is None:
        return None
    lookup = {str(c).strip().lower(): c for c in catalog.columns}
    for prefix in _CATALOG_PREFIXES:
        names = [lookup.get(prefix + band) for band in GRI]
        if all(name is not None for name in names):
            values = catalog[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
            if np.isfinite(values).all() and (values > -9000).all():
                return pd.DataFrame(values, columns=list(GRI))
    return None


def photometry_features(images) -> pd.DataFrame:
    """gri magnitudes of every image: from the catalog when it has them, else measured from the image.

    Returns
    -------
    pandas.DataFrame
        Columns ``g``, ``r``, ``i``; ``attrs["source"]`` says ``"catalog"`` or ``"image"``.

    Examples
    --------
    >>> from labelexplorer import ImageSet
    >>> cat = pd.DataFrame({"petroMag_g": [17.1], "petroMag_r": [16.5], "petroMag_i": [16.2]})
    >>> features = photometry_features(ImageSet(np.zeros((1, 3, 4, 4)), catalog=cat))
    >>> features.attrs["source"], features.loc[0, "r"]
    ('catalog', np.float64(16.5))
    """
    table = _catalog_bands(getattr(images, "catalog", None))
    if table is not None:
        table.attrs["source"] = "catalog"
        return table
    table = image_photometry(images)
    table.attrs["source"] = "image"
    return table


def constant_mean_predictions(train_labels, n_test: int) -> np.ndarray:
    """The training mean, repeated for *n_test* rows (NaN labels ignored).

    Examples
    --------
    >>> constant_mean_predictions([8.8, 9.0, np.nan], 2).tolist()
    [8.9, 8.9]
    """
    return np.full(int(n_test), float(np.nanmean(np.asarray(train_labels, dtype=np.float64))))


def random_forest_predictions(train_features, train_labels, test_features, *, random_state: int = 0,
                              n_estimators: int = 200, min_samples_leaf: int = 5, n_jobs: int | None = None
                              ) -> np.ndarray:
    """Fit a random forest on *train_features* and predict *test_features* (rows with NaN labels skipped).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(0, 1, (400, 3)); y = 2 * x[:, 0] + rng.normal(0, 0.05, 400)
    >>> pred = random_forest_predictions(x[:300], y[:300], x[300:], n_estimators=50)
    >>> bool(rmse(pred, y[300:]) < 0.15)
    True
    """
    from sklearn.ensemble import RandomForestRegressor

    x = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(train_labels, dtype=np.float64).ravel()
    known = np.isfinite(y)
    forest = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                   random_state=random_state, n_jobs=n_jobs)
    forest.fit(x[known], y[known])
    return forest.predict(np.asarray(test_features, dtype=np.float64))


def cross_validated(fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], n: int,
                    splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Out-of-fold predictions: ``fit_predict(train_rows, test_rows)`` for every split.

    Rows that are in no test set stay NaN.

    Examples
    --------
    >>> y = np.arange(6.0)
    >>> splits = [(np.array([0, 1, 2]), np.array([3, 4, 5])), (np.array([3, 4, 5]), np.array([0, 1, 2]))]
    >>> cross_validated(lambda train, test: constant_mean_predictions(y[train], len(test)), 6, splits).tolist()
    [4.0, 4.0, 4.0, 1.0, 1.0, 1.0]
    """
    out = np.full(int(n), np.nan)
    for train_rows, test_rows in splits:
        out[test_rows] = np.asarray(fit_predict(train_rows, test_rows), dtype=np.float64).ravel()
    return out


def score(prediction, truth) -> dict[str, float]:
    """RMSE, NMAD, median bias and 3σ outlier fraction of ``prediction − truth`` (NaN pairs ignored).

    Examples
    --------
    >>> round(score([9.0, 9.1, 8.9], [9.0, 9.0, 9.0])["rmse"], 4)
    0.0816
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    good = np.isfinite(prediction) & np.isfinite(truth)
    p, t = prediction[good], truth[good]
    return {"n": int(good.sum()), "rmse": rmse(p, t), "nmad": nmad(p, t), "bias": bias(p, t),
            "outliers": outlier_fraction(p, t)}


def baseline_table(features, labels, splits: Sequence[tuple[np.ndarray, np.ndarray]], *,
                   random_state: int = 0) -> pd.DataFrame:
    """Scores of the constant mean and the random forest on *features*, out of fold on *splits*.

    Parameters
    ----------
    features : array_like (n, n_features) or DataFrame
        E.g. :func:`photometry_features`.
    labels : array_like (n,)
    splits : sequence of (train_rows, test_rows)

    Returns
    -------
    pandas.DataFrame
        Rows ``constant mean`` and ``random forest``; columns ``n``, ``rmse``, ``nmad``,
        ``bias``, ``outliers``; ``attrs["predictions"]`` holds the out-of-fold predictions.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> x = rng.uniform(0, 1, (300, 3)); y = 8.9 + 0.3 * x[:, 1] + rng.normal(0, 0.02, 300)
    >>> table = baseline_table(x, y, kfold_splits(300, 3))
    >>> bool(table.loc["random forest", "rmse"] < 0.5 * table.loc["constant mean", "rmse"])
    True
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ShapeError(f"features: expected shape ({y.size}, n_features) like the labels, got {x.shape}")
    predictions = {
        "constant mean": cross_validated(lambda train, test: constant_mean_predictions(y[train], len(test)),
                                         y.size, splits),
        "random forest": cross_validated(lambda train, test: random_forest_predictions(
            x[train], y[train], x[test], random_state=random_state), y.size, splits),
    }
    table = pd.DataFrame({name: score(pred, y) for name, pred in predictions.items()}).T
    table["n"] = table["n"].astype(int)
    table.attrs["predictions"] = predictions
    return table
