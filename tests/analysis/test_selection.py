"""Label distance D (Ho et al. 2017) and polygon selection."""

from __future__ import annotations

import numpy as np
import pytest

from labelexplorer.analysis.selection import HO2017_SCALES, HO2017_THRESHOLD, in_polygon, label_distance
from labelexplorer.exceptions import ShapeError


def test_paired_distance_is_the_ho_formula():
    slam = np.array([[4800.0, 2.5, -0.2], [5000.0, 3.0, 0.0]])
    reference = np.array([[4700.0, 2.3, -0.3], [5000.0, 3.0, 0.0]])
    scales = [HO2017_SCALES[k] for k in ("TEFF", "LOGG", "M_H")]
    distance = label_distance(slam, reference, scales, paired=True)
    np.testing.assert_allclose(distance, [np.sqrt(1 + 1 + 1), 0.0])
    assert distance[0] < HO2017_THRESHOLD


def test_distance_to_training_set_is_to_the_nearest_star():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(500, 3))
    points = rng.normal(size=(20, 3)) * 2
    expected = np.min(np.linalg.norm((points[:, None] - train[None]) / 0.5, axis=2), axis=1)
    np.testing.assert_allclose(label_distance(points, train, 0.5), expected)


def test_nan_labels_give_nan_and_nan_training_rows_are_ignored():
    train = np.array([[0.0, 0.0], [np.nan, 5.0], [1.0, 1.0]])
    distance = label_distance([[0.0, 0.1], [np.nan, 1.0]], train, [1.0, 1.0])
    np.testing.assert_allclose(distance[0], 0.1)
    assert np.isnan(distance[1])


@pytest.mark.parametrize("labels, train, scales, paired, match", [
    ([[1.0, 2.0]], [[1.0, 2.0, 3.0]], 1.0, False, "label columns"),
    ([[1.0, 2.0]], [[1.0, 2.0]], [1.0, 0.0], False, "scales"),
    ([[1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0]], 1.0, True, "one row per star"),
    (np.zeros((2, 2, 2)), [[1.0, 2.0]], 1.0, False, "2-D"),
], ids=["label-count-differs", "zero-scale", "paired-row-count", "3d-labels"])
def test_label_distance_refuses_bad_input(labels, train, scales, paired, match):
    with pytest.raises(ShapeError, match=match):
        label_distance(labels, train, scales, paired=paired)


def test_polygon_matches_a_grid_count_for_a_concave_shape():
    l_shape = [(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)]  # area 3
    x, y = np.meshgrid(np.linspace(0.005, 2.995, 300), np.linspace(0.005, 2.995, 300))
    inside = in_polygon(x, y, l_shape)
    assert inside.shape == x.shape
    np.testing.assert_allclose(inside.mean() * 9.0, 3.0, rtol=0.01)
    assert in_polygon(0.5, 1.5, l_shape) and not in_polygon(1.5, 1.5, l_shape)


def test_polygon_orientation_and_nan():
    square = np.array([(0, 0), (1, 0), (1, 1), (0, 1)])
    points = ([0.5, 2.0, np.nan], [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(in_polygon(*points, square), in_polygon(*points, square[::-1]))
    assert in_polygon(*points, square).tolist() == [True, False, False]


@pytest.mark.parametrize("x, y, vertices, match", [
    ([0.0], [0.0], [(0, 0), (1, 1)], "vertices"),
    ([0.0], [0.0], [0, 1, 2], "vertices"),
    ([0.0, 1.0], [0.0], [(0, 0), (1, 0), (0, 1)], "same shape"),
], ids=["two-vertices", "flat-vertices", "x-y-shapes-differ"])
def test_polygon_refuses_bad_input(x, y, vertices, match):
    with pytest.raises(ShapeError, match=match):
        in_polygon(x, y, vertices)
