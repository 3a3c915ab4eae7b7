"""Resampling onto a shared grid: smooth functions survive, masks and range limits propagate."""

from __future__ import annotations

import numpy as np
import pytest

from labelexplorer.exceptions import ShapeError, SpectrumError
from labelexplorer.preprocess.resample import resample
from labelexplorer.spectra import Spectra


def _smooth(wavelength):
    return 2.0 + np.sin(wavelength / 150.0) + 1e-4 * (wavelength - 6000.0)


def test_a_smooth_function_is_preserved_on_a_shifted_coarser_grid():
    source = 10 ** (3.5682 + 1e-4 * np.arange(3909))
    spec = Spectra(_smooth(source), source, error=np.full(3909, 0.01), ids=["s"], info={"snr": [100.0]})
    grid = np.linspace(4000.0, 9000.0, 1777)
    out = resample(spec, grid)
    # linear interpolation error <= h^2/8 max|f''| = (2.1 A)^2 / 8 / 150^2 ~ 2.5e-5
    np.testing.assert_allclose(out.flux[0], _smooth(grid), atol=5e-5)
    assert not out.mask.any() and out.shared_grid and np.array_equal(out.wavelength, grid)
    assert out.ids.tolist() == ["s"] and out.info["snr"].tolist() == [100.0]
    assert out.meta["history"][-1].startswith("resample: linear interpolation onto 1777 px")


def test_spectra_with_their_own_grids_land_on_one_grid():
    base = np.linspace(4000.0, 8000.0, 800)
    grids = np.stack([base, base + 1.7, base * 1.0003])  # e.g. rest frames of stars with different RVs
    spec = Spectra(_smooth(grids), grids, error=np.full(grids.shape, 0.02))
    assert not spec.shared_grid
    grid = np.linspace(4100.0, 7900.0, 500)
    out = resample(spec, grid)
    np.testing.assert_allclose(out.flux, np.broadcast_to(_smooth(grid), (3, 500)), atol=2e-4)
    assert out.shared_grid and not out.mask.any()


def test_masked_pixels_mask_the_output_pixels_that_touch_them():
    source = np.arange(100.0)
    mask = np.zeros(100, dtype=bool)
    mask[40] = True
    spec = Spectra(source * 2.0, source, error=np.ones(100), mask=mask)
    grid = np.arange(0.25, 99.0, 0.5)
    out = resample(spec, grid)
    expected = (grid > 39) & (grid < 41)
    np.testing.assert_array_equal(out.mask[0], expected)
    np.testing.assert_allclose(out.flux[0, ~expected], 2 * grid[~expected])
    assert np.isnan(out.flux[0, expected]).all() and np.isinf(out.error[0, expected]).all()


def test_pixels_outside_the_input_range_are_masked_and_have_no_flux():
    spec = Spectra(np.ones((2, 10)), np.arange(10.0, 20.0), error=np.full((2, 10), 0.1))
    out = resample(spec, np.arange(5.0, 25.0))
    outside = (np.arange(5.0, 25.0) < 10) | (np.arange(5.0, 25.0) > 19)
    assert (out.mask == outside).all() and np.isnan(out.flux[:, outside]).all()
    assert np.all(out.flux[:, ~outside] == 1.0)


def test_an_output_pixel_on_an_input_pixel_ignores_a_masked_neighbour():
    spec = Spectra([[1.0, 2.0, np.nan]], [1.0, 2.0, 3.0], error=[[0.1, 0.2, np.inf]])
    assert spec.mask[0].tolist() == [False, False, True]
    out = resample(spec, [1.0, 2.0, 2.5])
    assert out.mask[0].tolist() == [False, False, True] and out.flux[0, :2].tolist() == [1.0, 2.0]
    np.testing.assert_allclose(out.error[0, :2], [0.1, 0.2])


def test_errors_are_interpolated_conservatively():
    error = np.array([[0.1, 0.3, 0.2, 0.4]])
    spec = Spectra(np.ones((1, 4)), [1.0, 2.0, 3.0, 4.0], error=error)
    out = resample(spec, [1.5, 2.25, 3.9])
    interpolated = np.array([0.2, 0.275, 0.38])
    quadrature = np.sqrt([0.25 * 0.01 + 0.25 * 0.09, 0.75**2 * 0.09 + 0.25**2 * 0.04, 0.01 * 0.04 + 0.81 * 0.16])
    np.testing.assert_allclose(out.error[0], interpolated, rtol=1e-6)
    assert np.all(out.error[0] >= quadrature)


def test_spectra_without_errors_stay_without_errors_and_unmasked():
    spec = Spectra(np.ones((2, 5)), np.arange(5.0))
    out = resample(spec, [0.5, 1.5, 2.5])
    assert not out.has_errors and not out.mask.any() and np.all(out.flux == 1.0)


@pytest.mark.parametrize(("grid", "error", "match"), [
    ([3.0, 2.0, 1.0], SpectrumError, "increasing"),
    ([1.0, np.nan, 3.0], SpectrumError, "finite"),
    ([[1.0, 2.0]], ShapeError, "1-D grid"),
    ([1.0], ShapeError, "at least 2"),
], ids=["decreasing", "nan", "two-dimensional", "single-value"])
def test_a_bad_target_grid_is_refused(grid, error, match):
    spec = Spectra(np.ones((1, 4)), [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(error, match=match) as raised:
        resample(spec, grid)
    assert "wavelength" in str(raised.value)


def test_something_else_than_spectra_is_refused():
    with pytest.raises(ShapeError, match="expected a Spectra object"):
        resample(np.ones((2, 4)), [1.0, 2.0])
