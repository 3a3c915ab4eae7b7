"""Uncertainty calibration (scale and floor) on held-out residuals."""

from __future__ import annotations

import numpy as np
import pytest

from labelexplorer.models.calibration import uncertainty_calibration, uncertainty_scale


@pytest.mark.parametrize("rows", [100, 5000])
def test_a_std_that_explains_nothing_gives_a_floor_not_a_bounded_scale(rows):
    rng = np.random.default_rng(rows)
    std = rng.uniform(0.001, 0.002, rows)  # noise draws of a high-S/N spectrum
    residual = rng.normal(0, 0.5, rows)   # the network's own error, 300x larger
    assert uncertainty_scale(residual, std) == 20.0  # one factor cannot reach it
    scale, floor = uncertainty_calibration(residual, std)
    assert scale == 1.0 and floor == pytest.approx(0.5, rel=0.15)
    z = residual / np.hypot(scale * std, floor)
    assert np.sqrt(np.mean(z ** 2)) == pytest.approx(1.0, abs=0.05)


def test_a_std_that_explains_the_error_keeps_its_scale():
    rng = np.random.default_rng(1)
    std = rng.uniform(0.05, 0.1, 4000)
    scale, floor = uncertainty_calibration(rng.normal(0, 1, 4000) * 3 * std, std)
    assert scale == pytest.approx(3.0, rel=0.05) and floor < 0.02


def test_a_floor_far_beyond_the_std_is_found_whole():
    """The floor's search bracket reaches the residuals' size, not only ten times the quoted std."""
    rng = np.random.default_rng(2)
    std = rng.uniform(0.01, 0.05, 4000)
    residual = rng.normal(0, 1, 4000) * np.hypot(2 * std, 1.0)
    scale, floor = uncertainty_calibration(residual, std)
    assert scale == 1.0 and floor == pytest.approx(1.0, rel=0.1)


def test_no_quoted_spread_at_all_gives_the_floor_alone():
    """A model run without MC passes or noise draws quotes zeros: its error is the floor."""
    residual = np.random.default_rng(3).normal(0, 0.2, 500)
    scale, floor = uncertainty_calibration(residual, np.zeros(500))
    assert scale == 1.0 and floor == pytest.approx(0.2, rel=0.1)
    assert uncertainty_calibration(np.zeros(500), np.zeros(500)) == (1.0, 0.0)
