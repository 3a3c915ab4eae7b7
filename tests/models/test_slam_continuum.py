"""SLAM's continuum correction: a smooth multiplicative mismatch no longer biases the labels."""

from __future__ import annotations

import numpy as np
import pytest

import labelexplorer as le
from labelexplorer.exceptions import ShapeError
from labelexplorer.models.slam import SLAM, continuum_basis

FAST = dict(c_grid=(10.0,), gamma_grid=(0.3,), n_folds=3, n_jobs=1, progress=False, chunk_size=64,
            error_model_snr=(), outlier_sigma=None)
WAVELENGTH = np.linspace(4000.0, 5000.0, 120)
NOISE = 0.003


def _stars(n, seed):
    """Broad Teff-sensitive depressions (like Balmer wings) and narrow metal lines, pixels 8 Å apart."""
    rng = np.random.default_rng(seed)
    teff, feh = rng.uniform(4500, 6000, n), rng.uniform(-1.0, 0.3, n)
    broad = np.exp(-0.5 * ((WAVELENGTH[:, None] - np.array([4100.0, 4340.0, 4860.0])) / 60.0) ** 2).sum(axis=1)
    narrow = np.exp(-0.5 * ((WAVELENGTH[:, None] - np.linspace(4020, 4980, 30)) / 5.0) ** 2).sum(axis=1)
    flux = 1 - 0.3 * ((6500 - teff[:, None]) / 2000) * broad - 0.3 * 10 ** (0.5 * feh[:, None]) * narrow
    flux += rng.normal(0, NOISE, flux.shape)
    return flux, {"TEFF": teff, "FE_H": feh}


@pytest.fixture(scope="module")
def trained():
    flux, labels = _stars(120, seed=0)
    spectra = le.Spectra(flux, WAVELENGTH, error=np.full(flux.shape, NOISE))
    return SLAM(**FAST).fit(spectra, labels)


def test_continuum_correction_removes_the_bias_of_a_smooth_tilt(trained):
    flux, labels = _stars(40, seed=1)
    tilt = 1.0 + 0.08 * (WAVELENGTH - 4500.0) / 500.0 + 0.04 * np.cos((WAVELENGTH - 4000.0) / 300.0)
    tilted = le.Spectra(flux * tilt, WAVELENGTH, error=np.full(flux.shape, NOISE) * tilt)
    plain = trained.set_params(continuum_knots=None).predict(tilted)["TEFF"].mean - labels["TEFF"]
    corrected = trained.set_params(continuum_knots=150.0).predict(tilted)["TEFF"].mean - labels["TEFF"]
    trained.set_params(continuum_knots=None)
    assert abs(np.median(plain)) > 40  # K: the tilt alone biases Teff
    assert abs(np.median(corrected)) < 0.25 * abs(np.median(plain))


def test_continuum_correction_leaves_untilted_spectra_alone(trained):
    flux, labels = _stars(40, seed=2)
    spectra = le.Spectra(flux, WAVELENGTH, error=np.full(flux.shape, NOISE))
    plain = trained.set_params(continuum_knots=None).predict(spectra).mean
    corrected = trained.set_params(continuum_knots=150.0).predict(spectra).mean
    trained.set_params(continuum_knots=None)
    # no bias; some precision is the price where broad features and the continuum trade off
    plain_error, corrected_error = plain[:, 0] - labels["TEFF"], corrected[:, 0] - labels["TEFF"]
    assert abs(np.median(corrected_error - plain_error)) < 0.2 * np.std(plain_error)
    assert np.std(corrected_error) < 2.0 * np.std(plain_error)


def test_continuum_basis_is_a_partition_of_unity_over_any_pixels():
    pixels = np.r_[np.linspace(4000, 4300, 30), np.linspace(4700, 5000, 30)]  # a gap without pixels
    basis = continuum_basis(pixels, 100.0)
    np.testing.assert_allclose(basis.sum(axis=1), 1.0)
    assert basis.shape == (60, 13)


@pytest.mark.parametrize("knots", [0.0, -100.0, np.nan], ids=["zero", "negative", "nan"])
def test_bad_continuum_knots_are_refused(knots):
    flux, labels = _stars(12, seed=3)
    with pytest.raises(ShapeError, match="continuum_knots"):
        SLAM(**{**FAST, "continuum_knots": knots}).fit(le.Spectra(flux, WAVELENGTH), labels)
