"""Coefficients of dependence: the arithmetic, and SLAM's leave-one-label-out CODs on a toy."""

from __future__ import annotations

import numpy as np
import pytest

import labelexplorer as le
from labelexplorer.analysis.cod import CODSpectra, cod_full, cod_per_label, cod_spectra
from labelexplorer.exceptions import LabelError, LabelExplorerError, ShapeError
from labelexplorer.models.slam import SLAM

FAST = dict(c_grid=(10.0,), gamma_grid=(0.3,), n_folds=3, n_jobs=1, progress=False, chunk_size=16,
            error_model_snr=(), outlier_sigma=None)


def test_per_label_cods_sum_to_the_full_cod():
    rng = np.random.default_rng(0)
    full = rng.uniform(0.0, 1.0, 50)
    without = full + rng.uniform(-0.1, 0.5, (3, 50))  # some negative losses (CV noise)
    per = cod_per_label(full, without)
    np.testing.assert_allclose(per.sum(axis=0), cod_full(full), atol=1e-12)
    assert (per >= 0).all()


def test_label_whose_removal_costs_most_gets_the_largest_share():
    per = cod_per_label([0.1], [[0.9], [0.3], [0.1]])
    np.testing.assert_allclose(per[:, 0], [0.9 * 0.8 / 1.0, 0.9 * 0.2 / 1.0, 0.0])


@pytest.mark.parametrize("full, without, match", [
    ([0.1, 0.2], [[0.3, 0.4, 0.5]], "mse_without"),
    ([[0.1, 0.2]], [[0.3, 0.4]], "mse_without"),
], ids=["pixel-count-differs", "full-not-1d"])
def test_mismatched_shapes_are_refused(full, without, match):
    with pytest.raises(ShapeError, match=match):
        cod_per_label(full, without)


def test_cod_spectra_without_leave_one_out_has_nan_per_label():
    cod = cod_spectra([1.0, 2.0], ["Teff"], [0.2, 0.4])
    assert isinstance(cod, CODSpectra)
    np.testing.assert_allclose(cod.full, [0.8, 0.6])
    assert np.isnan(cod["TEFF"]).all()
    with pytest.raises(LabelError, match="available"):
        cod["LOGG"]


def _two_label_toy(n=80, n_pixels=30, seed=0):
    """Pixels 0-9 depend on Teff only, 10-19 on [Fe/H] only, 20-29 on nothing (pure noise)."""
    rng = np.random.default_rng(seed)
    teff, feh = rng.uniform(4200, 5400, n), rng.uniform(-1.0, 0.3, n)
    flux = np.ones((n, n_pixels))
    flux[:, :10] -= 0.3 * np.sin((teff[:, None] - 4200) / 600 + np.linspace(0, 1, 10)) ** 2
    flux[:, 10:20] -= 0.2 * ((feh[:, None] + 1.0) / 1.3) ** 1.5 * np.linspace(0.5, 1.0, 10)
    flux += rng.normal(0, 0.003, flux.shape)
    spectra = le.Spectra(flux, np.linspace(5000, 5030, n_pixels), error=np.full(flux.shape, 0.003))
    return spectra, {"TEFF": teff, "FE_H": feh}


@pytest.fixture(scope="module")
def cod_model():
    spectra, labels = _two_label_toy()
    model = SLAM(**FAST).fit(spectra, labels)
    return model, model.compute_cod(spectra, labels), spectra, labels


def test_cod_of_a_label_peaks_at_the_pixels_that_depend_on_it(cod_model):
    _, cod, _, _ = cod_model
    teff, feh = cod["TEFF"], cod["FE_H"]
    assert teff[:10].mean() > 0.8 and feh[:10].mean() < 0.1
    assert feh[10:20].mean() > 0.8 and teff[10:20].mean() < 0.1
    assert cod.full[20:].mean() < 0.15  # noise pixels: nothing to explain
    assert all(5000 <= w < 5010.5 for w in cod.peaks("TEFF", n=3))
    assert (cod.dominant_label()[10:20] == "FE_H").all()


def test_model_cods_sum_to_the_full_cod(cod_model):
    _, cod, _, _ = cod_model
    np.testing.assert_allclose(np.nansum(cod.per_label, axis=0), cod.full, atol=1e-12)
    assert cod.to_pandas().shape == (30, 4)


def test_cods_survive_save_and_load(cod_model, tmp_path):
    model, cod, _, _ = cod_model
    loaded = le.load_model(model.save(tmp_path / "slam"))
    np.testing.assert_allclose(loaded.cod().per_label, cod.per_label)


def test_compute_cod_needs_the_training_data(cod_model):
    model, _, spectra, labels = cod_model
    other = dict(labels, TEFF=labels["TEFF"] + 1.0)
    with pytest.raises(LabelExplorerError, match="trained on"):
        model.compute_cod(spectra, other)
