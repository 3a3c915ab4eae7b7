import numpy as np
import pytest

from labelexplorer.analysis import metrics


def test_sigma_mad_matches_gaussian_sigma_and_ignores_outliers():
    rng = np.random.default_rng(3)
    values = rng.normal(0.0, 0.05, 50_000)
    values[:500] = 10.0  # 1 % gross outliers barely move a robust scatter
    assert metrics.sigma_mad(values) == pytest.approx(0.05, rel=0.03)
    assert metrics.rmse(values) > 0.9  # while the RMSE explodes


def test_nan_entries_are_ignored_and_empty_gives_nan():
    assert metrics.bias([1.0, np.nan, 3.0], [0.0, 0.0, 0.0]) == 2.0
    assert np.isnan(metrics.sigma_mad([np.nan, np.nan]))


def test_calibration_ratio_detects_underestimated_errors():
    rng = np.random.default_rng(4)
    truth = np.zeros(10_000)
    prediction = rng.normal(0, 0.2, 10_000)
    assert metrics.calibration_ratio(prediction, truth, np.full(10_000, 0.1)) == pytest.approx(2.0, rel=0.05)


def test_summarize_reports_every_label():
    truth = {"TEFF": np.array([5000.0, 4000.0, 4500.0, 4700.0]), "LOGG": np.array([2.5, 1.0, np.nan, 3.0])}
    pred = {"TEFF": truth["TEFF"] + 10.0, "LOGG": truth["LOGG"] - 0.1}
    table = metrics.summarize(pred, truth, std={"TEFF": np.full(4, 10.0), "LOGG": np.full(4, 0.1)})
    assert table.loc["TEFF", "bias"] == pytest.approx(10.0)
    assert table.loc["LOGG", "n"] == 3
    assert table.loc["LOGG", "bias"] == pytest.approx(-0.1)
