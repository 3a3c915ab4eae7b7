"""The mass–metallicity relation: Tremonti polynomial and binned scatter of predicted vs true metallicity."""

from __future__ import annotations

import numpy as np
import pytest

from labelexplorer.analysis.mzr import (TREMONTI_SCATTER, binned_mzr, compare_mzr, mzr_offsets, mzr_scatter,
                                        tremonti_mzr)
from labelexplorer.exceptions import ShapeError


@pytest.mark.parametrize("log_mass, expected", [
    (10.0, -1.492 + 18.47 - 8.026),   # 8.952
    (9.0, -1.492 + 16.623 - 6.50106),
    (11.0, -1.492 + 20.317 - 9.71146),
    (8.5, -1.492 + 15.6995 - 5.7987850),
], ids=["1e10", "1e9", "1e11", "10^8.5"])
def test_tremonti_polynomial_values(log_mass, expected):
    assert float(tremonti_mzr(log_mass)) == pytest.approx(expected, abs=1e-9)


def test_tremonti_relation_rises_and_flattens():
    mass = np.linspace(8.5, 11.5, 31)
    slope = np.diff(tremonti_mzr(mass))
    assert np.all(slope > 0) and np.all(np.diff(slope) < 0)
    # slope at log M = 10 is 1.847 - 2 * 0.08026 * 10 = 0.242 dex per dex
    assert (tremonti_mzr(10.001) - tremonti_mzr(9.999)) / 0.002 == pytest.approx(0.2418, abs=1e-3)


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(4)
    mass = rng.normal(10.1, 0.5, 40000).clip(8.5, 11.5)
    true = tremonti_mzr(mass) + rng.normal(0, TREMONTI_SCATTER, mass.size)
    return rng, mass, true


def test_binned_median_and_scatter_recover_the_input(sample):
    _, mass, true = sample
    table = binned_mzr(mass, true)
    assert np.allclose(table["mass"].diff().dropna(), 0.2)
    populated = table[table["n"] > 1000]
    assert len(populated) >= 6
    # median follows the curve at the bin centre; scatter 0.10 dex (+ the slope across a 0.2 dex bin)
    np.testing.assert_allclose(populated["median"], populated["tremonti"], atol=0.01)
    np.testing.assert_allclose(populated["std"], 0.10, atol=0.006)
    np.testing.assert_allclose(populated["nmad"], 0.10, atol=0.008)
    np.testing.assert_allclose(populated["rmse_tremonti"], 0.10, atol=0.006)
    assert (populated["p84"] - populated["p16"]).between(0.18, 0.22).all()


def test_sparse_bins_are_left_out():
    table = binned_mzr([9.0, 9.05, 10.5], [8.6, 8.7, 9.0], bins=[8.9, 9.1, 10.4, 10.6], min_count=2)
    assert table["n"].tolist() == [2] and table["median"].tolist() == [pytest.approx(8.65)]


def test_global_scatter_about_curve_and_running_median(sample):
    _, mass, true = sample
    stats = mzr_scatter(mass, true + 0.05)
    assert stats["median_offset"] == pytest.approx(0.05, abs=0.005)
    assert stats["std_running_median"] == pytest.approx(0.10, abs=0.004)
    assert stats["rmse_tremonti"] == pytest.approx(np.hypot(0.10, 0.05), abs=0.004)
    assert stats["n"] == mass.size


def test_random_prediction_errors_widen_the_mzr_and_a_hidden_parameter_does_not(sample):
    """Paper 004 §5.2: random errors add scatter; tracking the residual keeps the MZR tight."""
    rng, mass, true = sample
    noisy = true + rng.normal(0, 0.085, mass.size)
    table_noisy = compare_mzr(mass, noisy, true)
    tracking = tremonti_mzr(mass) + 0.9 * (true - tremonti_mzr(mass))
    table_tracking = compare_mzr(mass, tracking, true)
    busy = table_noisy["n"] > 1000
    np.testing.assert_allclose(table_noisy.loc[busy, "std_pred"], np.hypot(0.10, 0.085), atol=0.01)
    np.testing.assert_allclose(table_noisy.loc[busy, "rmse_residual"], 0.085, atol=0.008)
    assert (table_tracking.loc[busy, "std_pred"] < table_tracking.loc[busy, "std_true"]).all()
    np.testing.assert_allclose(table_tracking["median_pred"], table_tracking["median_true"], atol=0.02)


def test_offsets_from_the_curve():
    np.testing.assert_allclose(mzr_offsets([10.0, 11.0], [9.0, 9.0]), [9.0 - 8.952, 9.0 - 9.11354], atol=1e-9)


def test_nan_pairs_are_ignored():
    table = binned_mzr([9.9, 10.0, np.nan, 10.05], [8.9, np.nan, 9.0, 9.0], bins=[9.8, 10.2], min_count=1)
    assert table["n"].tolist() == [2]


@pytest.mark.parametrize("call, match", [
    (lambda: binned_mzr([10.0, 10.1], [9.0]), "one value per stellar mass"),
    (lambda: binned_mzr([10.0], [9.0], bins=[10.5, 10.0]), "increasing bin edges"),
    (lambda: binned_mzr([10.0], [9.0], bins=[10.0]), "at least 2"),
    (lambda: compare_mzr([10.0, 10.1], [9.0, 9.0], [9.0]), "same length"),
], ids=["length-mismatch", "decreasing-bins", "one-edge", "compare-lengths"])
def test_bad_input_is_explained(call, match):
    with pytest.raises(ShapeError, match=match):
        call()
