"""Training coverage: nearest training spectra in a model's feature space and the labels they had."""

from __future__ import annotations

import numpy as np
import pytest

from labelexplorer.exceptions import ShapeError
from labelexplorer.models.coverage import TrainingCoverage


@pytest.fixture(scope="module")
def training():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(600, 4)) * [1.0, 5.0, 0.1, 0.0]  # unequal spreads and a dead unit
    known = np.column_stack([np.ones(600, bool), features[:, 0] < 0.0, rng.random(600) < 0.3])
    return features, known


def test_coverage_is_the_share_of_nearest_training_spectra_with_the_label(training):
    features, known = training
    coverage = TrainingCoverage(features, known, neighbours=10)
    queries = features[:50] + 0.01
    share, _ = coverage.assess(queries)
    scaled = features / features.std(axis=0).clip(1e-6)
    for row, query in enumerate(queries):
        distance = np.linalg.norm(scaled - query / features.std(axis=0).clip(1e-6), axis=1)
        nearest = np.argsort(distance)[:10]
        np.testing.assert_allclose(share[row], known[nearest].mean(axis=0))
    assert share.shape == (50, 3) and np.all(share[:, 0] == 1.0)


def test_labels_missing_on_one_side_are_uncovered_there_only(training):
    features, known = training
    share, _ = TrainingCoverage(features, known).assess([[-1.5, 0, 0, 0], [1.5, 0, 0, 0]])
    assert share[0, 1] > 0.9 and share[1, 1] < 0.1
    assert 0.0 < share[0, 2] < 0.8  # a label known for a random 30 %: partly covered everywhere


def test_distance_exceeds_one_far_from_the_training_spectra_only(training):
    features, known = training
    coverage = TrainingCoverage(features, known, quantile=0.99)
    _, own = coverage.assess(features)
    assert 0.0 < np.mean(own > 1.0) < 0.05  # itself among its neighbours: a little closer than the limit
    _, far = coverage.assess([[12.0, 0, 0, 0], [0, 0, 0, 0.5], [0.1, 0, 0, 0]])
    assert far[0] > 1.0 and far[1] > 1.0 and far[2] < 1.0  # [1]: a unit no training spectrum moved


def test_large_training_sets_keep_a_seeded_subset(training):
    features, known = training
    first = TrainingCoverage(features, known, max_rows=200, seed=1)
    again = TrainingCoverage(features, known, max_rows=200, seed=1)
    assert first.features.shape == (200, 4) and first.known.shape == (200, 3)
    np.testing.assert_array_equal(first.features, again.features)


def test_arrays_round_trip_and_old_models_have_none(training):
    features, known = training
    coverage = TrainingCoverage(features, known)
    restored = TrainingCoverage.from_arrays(coverage.to_arrays())
    queries = features[::7] * 1.1
    for a, b in zip(coverage.assess(queries), restored.assess(queries)):
        np.testing.assert_array_equal(a, b)
    assert TrainingCoverage.from_arrays({"label_mean": np.zeros(3)}) is None
    broken = {**coverage.to_arrays(), "coverage_known": np.ones((5, 3), np.uint8)}
    with pytest.raises(ValueError, match="inconsistent"):
        TrainingCoverage.from_arrays(broken)


@pytest.mark.parametrize("features, known, match", [
    (np.zeros((20, 3)), np.zeros((19, 2), bool), "same n"),
    (np.zeros(20), np.zeros((20, 2), bool), "same n"),
    (np.zeros((5, 3)), np.zeros((5, 2), bool), "more than 10"),
])
def test_bad_training_arrays_are_refused(features, known, match):
    with pytest.raises(ShapeError, match=match):
        TrainingCoverage(features, known)


def test_features_of_another_width_are_refused(training):
    with pytest.raises(ShapeError, match=r"\(n, 4\)"):
        TrainingCoverage(*training).assess(np.zeros((2, 3)))
