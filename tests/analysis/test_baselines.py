"""Baselines for the galaxy CNN: constant mean and a random forest on gri photometry, on shared splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import labelexplorer as le
from labelexplorer.analysis.baselines import (baseline_table, constant_mean_predictions, cross_validated,
                                              image_photometry, kfold_splits, photometry_features,
                                              random_forest_predictions, score)
from labelexplorer.exceptions import LabelExplorerError, ShapeError


def _blobs(brightness, colour=(0.6, 0.8, 1.0), size=32):
    """Centred Gaussian galaxies; channels are (R, G, B) = (i, r, g)."""
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.5) ** 2) / (0.02 * size ** 2))
    return np.asarray(brightness)[:, None, None, None] * np.array(colour)[None, :, None, None] * blob


def test_kfold_splits_partition_the_rows_and_are_seeded():
    splits = kfold_splits(103, k=5, seed=3)
    tests = [test for _, test in splits]
    assert sorted(np.concatenate(tests).tolist()) == list(range(103))
    for train, test in splits:
        assert not set(train) & set(test) and len(train) + len(test) == 103
    again = kfold_splits(103, k=5, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    assert not np.array_equal(kfold_splits(103, k=5, seed=4)[0][1], splits[0][1])


@pytest.mark.parametrize("k", [1, 200, 2.5], ids=["one-fold", "more-folds-than-rows", "fractional"])
def test_bad_fold_counts_are_refused(k):
    with pytest.raises(LabelExplorerError, match="k: expected"):
        kfold_splits(100, k=k)


def test_constant_mean_is_the_training_mean():
    assert constant_mean_predictions([8.5, 9.5, np.nan], 3).tolist() == [9.0, 9.0, 9.0]


def test_image_photometry_orders_brightness_and_colour():
    mags = image_photometry(_blobs([0.2, 0.4, 0.8]))
    # twice the flux is 0.753 mag brighter in every band
    np.testing.assert_allclose(np.diff(mags["r"]), -2.5 * np.log10(2), atol=1e-6)
    # channels are (R, G, B) = (i, r, g): g - i = -2.5 log10(B / R)
    red = image_photometry(_blobs([0.5], colour=(1.0, 0.7, 0.4)))
    assert red.loc[0, "g"] - red.loc[0, "i"] == pytest.approx(-2.5 * np.log10(0.4 / 1.0), abs=1e-6)


def test_image_photometry_subtracts_the_sky():
    flat = image_photometry(_blobs([0.5]) + 0.2)
    clean = image_photometry(_blobs([0.5]))
    np.testing.assert_allclose(flat.to_numpy(), clean.to_numpy(), atol=0.02)


def test_image_photometry_works_on_one_pixel_images():
    mags = image_photometry(np.full((2, 3, 1, 1), 0.5))
    assert np.isfinite(mags.to_numpy()).all()


def test_photometry_comes_from_the_catalog_when_it_has_gri():
    images = le.ImageSet(_blobs([0.3, 0.6]), catalog=pd.DataFrame({"g": [17.0, 16.0], "r": [16.5, 15.5],
                                                                    "i": [16.2, 15.1], "oh_p50": [8.8, 9.0]}))
    features = photometry_features(images)
    assert features.attrs["source"] == "catalog" and features["i"].tolist() == [16.2, 15.1]


@pytest.mark.parametrize("catalog", [None, pd.DataFrame({"oh_p50": [8.8, 9.0]}),
                                     pd.DataFrame({"g": [17.0, -9999.0], "r": [16.5, 15.5], "i": [16.2, 15.1]})],
                         ids=["no-catalog", "no-magnitudes", "missing-magnitude"])
def test_photometry_is_measured_from_the_image_otherwise(catalog):
    features = photometry_features(le.ImageSet(_blobs([0.3, 0.6]), catalog=catalog))
    assert features.attrs["source"] == "image"
    assert features.loc[1, "r"] < features.loc[0, "r"]


def test_random_forest_learns_a_colour_relation_the_constant_cannot():
    rng = np.random.default_rng(0)
    g_r = rng.uniform(0.2, 1.0, 300)
    x = np.column_stack([17 + g_r, np.full(300, 17.0), np.full(300, 16.8)]) + rng.normal(0, 0.01, (300, 3))
    y = 8.4 + 0.6 * g_r + rng.normal(0, 0.03, 300)
    table = baseline_table(x, y, kfold_splits(300, 3))
    assert table.loc["constant mean", "rmse"] == pytest.approx(y.std(), rel=0.05)
    assert table.loc["random forest", "rmse"] < 0.3 * table.loc["constant mean", "rmse"]
    assert table.loc["random forest", "nmad"] < 0.06
    assert set(table.attrs["predictions"]) == {"constant mean", "random forest"}


def test_random_forest_skips_rows_without_labels():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (100, 3))
    y = x[:, 0].copy()
    y[::3] = np.nan
    assert np.isfinite(random_forest_predictions(x, y, x[:5], n_estimators=20)).all()


def test_cross_validated_predictions_are_out_of_fold():
    y = np.arange(10.0)
    seen = []

    def fit_predict(train, test):
        seen.append((set(train), set(test)))
        return np.full(len(test), -1.0)

    out = cross_validated(fit_predict, 10, kfold_splits(10, 5))
    assert (out == -1).all() and all(not a & b for a, b in seen)


def test_score_uses_the_shared_metrics():
    result = score([9.1, 8.9, 9.0, np.nan], [9.0, 9.0, 9.0, 9.0])
    assert result["n"] == 3 and result["rmse"] == pytest.approx(np.sqrt(0.02 / 3))
    assert result["bias"] == pytest.approx(0.0)


@pytest.mark.parametrize("call, error, match", [
    (lambda: image_photometry(np.zeros((2, 4, 8, 8))), ShapeError, r"\(n, 3, H, W\)"),
    (lambda: image_photometry(np.zeros((2, 3, 8, 8)), aperture=0.9), LabelExplorerError, "aperture"),
    (lambda: baseline_table(np.zeros((5, 3)), np.zeros(4), []), ShapeError, "features"),
], ids=["four-channels", "aperture-too-big", "feature-rows"])
def test_bad_input_is_explained(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.realdata
def test_real_cutouts_photometry_is_redder_in_i_than_g(real_data):
    images = le.read(real_data / "galaxies" / "sdss_gri_128" / "train", size=32)
    features = photometry_features(images)
    assert features.attrs["source"] == "image" and len(features) == 400
    assert np.isfinite(features.to_numpy()).all()
    # star-forming SDSS galaxies are brighter in i than in g (g - i > 0) for most of the sample
    assert (features["g"] - features["i"]).median() > 0
