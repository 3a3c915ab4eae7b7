"""Selecting stars in label space: the label distance D and polygon cuts.

Zhang, Liu & Deng (2020, §4.2) select reliable K giants from SLAM labels in two ways: a
polygon drawn in the Teff–logg plane, and the "label distance" of Ho et al. (2017)::

    D² = ((Teff − Teff_ref) / 100 K)² + ((logg − logg_ref) / 0.2 dex)² + (([M/H] − [Fe/H]_ref) / 0.1 dex)²

keeping stars with D < 2.5. :func:`label_distance` computes D either star by star against
reference labels (``paired=True``, the formula above) or against a whole training set
(the distance to the *nearest* training star, which is how a model tells that a fitted
star lies outside the label space it was trained on). :func:`in_polygon` is a vectorised
even–odd ray-casting test (no matplotlib needed).
"""

from __future__ import annotations

import numpy as np

from ..exceptions import ShapeError

__all__ = ["label_distance", "in_polygon", "HO2017_SCALES", "HO2017_THRESHOLD"]

HO2017_SCALES = {"TEFF": 100.0, "LOGG": 0.2, "FE_H": 0.1, "M_H": 0.1}
"""Label scales of the Ho et al. (2017) distance (K, dex, dex), as used by SLAM's paper."""

HO2017_THRESHOLD = 2.5
"""Stars with D below this are kept (Ho et al. 2017; Zhang, Liu & Deng 2020)."""


def _as_labels(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ShapeError(f"{name}: expected a 2-D array (n_stars, n_labels), got shape {values.shape}")
    return values


def label_distance(labels, training_labels, scales, *, paired: bool = False) -> np.ndarray:
    """Label distance D: the Euclidean distance in units of a per-label scale.

    Parameters
    ----------
    labels : array_like, shape (n_stars, n_labels)
        Labels to test (e.g. fitted by a model).
    training_labels : array_like, shape (n_train, n_labels)
        Reference labels: a training set (default), or one row per star with *paired*.
    scales : array_like, shape (n_labels,) or scalar
        Scale of each label (e.g. its scatter in the training set, or 100 K, 0.2, 0.1 dex).
    paired : bool
        If True, D of row i is measured against row i of *training_labels* (Ho et al.
        2017, eq. 11 of the SLAM paper); otherwise against the nearest training row.

    Returns
    -------
    numpy.ndarray, shape (n_stars,)
        D per star; NaN where a label of the star (or, paired, of its reference) is NaN.
        Training rows with a NaN label are ignored.

    Raises
    ------
    ShapeError
        If the label counts differ, a scale is not positive, or *paired* rows differ in number.

    Examples
    --------
    >>> train = np.array([[4800.0, 2.5], [5000.0, 3.0]])
    >>> label_distance([[4800.0, 2.7], [6000.0, 3.0]], train, [100.0, 0.2]).round(3).tolist()
    [1.0, 10.0]
    >>> label_distance([[4850.0, 2.5]], [[4800.0, 2.5]], [100.0, 0.2], paired=True).tolist()
    [0.5]
    """
    from scipy.spatial import cKDTree

    labels = _as_labels(labels, "labels")
    reference = _as_labels(training_labels, "training_labels")
    scales = np.broadcast_to(np.asarray(scales, dtype=np.float64), (labels.shape[1],))
    if reference.shape[1] != labels.shape[1]:
        raise ShapeError(f"training_labels: expected {labels.shape[1]} label columns like labels, "
                         f"got {reference.shape[1]}")
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise ShapeError(f"scales: expected finite positive values, got {scales.tolist()}")
    scaled, scaled_reference = labels / scales, reference / scales
    if paired:
        if reference.shape[0] != labels.shape[0]:
            raise ShapeError(f"training_labels: paired=True needs one row per star ({labels.shape[0]}), "
                             f"got {reference.shape[0]}")
        return np.sqrt(np.sum((scaled - scaled_reference) ** 2, axis=1))
    scaled_reference = scaled_reference[np.isfinite(scaled_reference).all(axis=1)]
    distance = np.full(labels.shape[0], np.nan)
    finite = np.isfinite(scaled).all(axis=1)
    if scaled_reference.shape[0] and finite.any():
        distance[finite] = cKDTree(scaled_reference).query(scaled[finite])[0]
    return distance


def in_polygon(x, y, vertices) -> np.ndarray:
    """Which points (x, y) lie inside a polygon (even–odd rule, vectorised ray casting).

    Parameters
    ----------
    x, y : array_like
        Point coordinates, same shape (any).
    vertices : array_like, shape (n_vertices, 2)
        Polygon corners in order; the polygon closes itself (last to first).

    Returns
    -------
    numpy.ndarray of bool, shape of *x*
        True inside; NaN coordinates are outside. Points exactly on an edge may fall either way.

    Raises
    ------
    ShapeError
        If *vertices* is not (n >= 3, 2) or *x* and *y* differ in shape.

    Examples
    --------
    >>> square = [(0, 0), (1, 0), (1, 1), (0, 1)]
    >>> in_polygon([0.5, 1.5, 0.2], [0.5, 0.5, 0.9], square).tolist()
    [True, False, True]
    >>> # a K-giant box in the Teff-logg plane
    >>> in_polygon([4500.0, 5800.0], [2.4, 4.4], [(4000, 1), (5200, 1), (5200, 3.5), (4000, 3.5)]).tolist()
    [True, False]
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 2 or vertices.shape[0] < 3:
        raise ShapeError(f"vertices: expected shape (n >= 3, 2), got {vertices.shape}")
    if x.shape != y.shape:
        raise ShapeError(f"x and y: expected the same shape, got {x.shape} and {y.shape}")
    px, py = x.ravel()[:, None], y.ravel()[:, None]
    x0, y0 = vertices[:, 0], vertices[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    # an edge is crossed by the rightward ray from the point when it straddles the point's y
    # and its crossing abscissa lies right of the point
    straddles = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    crossings = np.sum(straddles & (px < crossing_x), axis=1)
    return (crossings % 2 == 1).reshape(x.shape)
