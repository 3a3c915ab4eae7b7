"""SLAM's per-element CODs peak in the element's own lines, on spectra of the mock's H-band physics.

The mock's [Mg/Fe] and [Al/Fe] change only the Mg and Al lines (plus blends), so a
leave-one-label-out COD that works must put those labels' dependence inside the Mg and Al
windows of the line list. The training labels are drawn independently: leave-one-label-out
cannot attribute a label the others predict (see ``benchmarks/eval_slam_mock.py``), and the
second test shows that limit.
"""

from __future__ import annotations

import numpy as np
import pytest

import labelexplorer as le
from labelexplorer.exceptions import ShapeError
from labelexplorer.mock.apogee_physics import normalized_flux
from labelexplorer.models.slam import SLAM, cod_window_contrast
from labelexplorer.preprocess.grid import apogee_wavelength
from labelexplorer.preprocess.linelist import load_linelist
from labelexplorer.preprocess.windows import MOLECULE_ELEMENTS, windows_from_linelist

FAST = dict(c_grid=(10.0,), gamma_grid=(0.3,), n_folds=3, n_jobs=1, progress=False, chunk_size=64,
            error_model_snr=(), outlier_sigma=None)
ELEMENTS = {"MG_FE": "Mg", "AL_FE": "Al"}
NOISE = 0.005  # S/N 200


def _pixels():
    """The windows of the two strongest Mg and Al lines, and pixels of other species' lines and continuum."""
    wavelength = apogee_wavelength()
    windows = windows_from_linelist(load_linelist(), wavelength, group=MOLECULE_ELEMENTS, weight_by_strength=False)
    mg, al = windows.mask("Mg"), windows.mask("Al")
    strong = (mg & (wavelength > 15750) & (wavelength < 15775)) | (al & (wavelength > 16720) & (wavelength < 16760))
    elsewhere = np.flatnonzero(~mg & ~al)
    chosen = np.unique(np.r_[np.flatnonzero(strong), elsewhere[::150]])
    return chosen, wavelength[chosen], {"MG_FE": mg[chosen], "AL_FE": al[chosen]}


def _giants(n, seed, mg_from_feh=False):
    """Giants' labels with independent [Mg/Fe] and [Al/Fe] (or [Mg/Fe] nearly fixed by [Fe/H])."""
    rng = np.random.default_rng(seed)
    feh = rng.uniform(-0.8, 0.2, n)
    mg = -0.3 * feh + rng.normal(0.0, 0.01, n) if mg_from_feh else rng.uniform(-0.1, 0.4, n)
    return {"TEFF": rng.uniform(4200, 5000, n), "LOGG": rng.uniform(1.6, 3.0, n), "FE_H": feh,
            "MG_FE": mg, "AL_FE": rng.uniform(-0.2, 0.5, n)}


def _cod(labels, seed):
    pixels, wavelength, windows = _pixels()
    flux = normalized_flux(labels)[:, pixels].astype(np.float64)
    flux += np.random.default_rng(seed).normal(0.0, NOISE, flux.shape)
    spectra = le.Spectra(flux, wavelength, error=np.full(flux.shape, NOISE))
    model = SLAM(**FAST).fit(spectra, labels)
    return model.compute_cod(spectra, labels), windows


@pytest.fixture(scope="module")
def independent():
    return _cod(_giants(100, seed=0), seed=1)


@pytest.mark.parametrize("label", ["MG_FE", "AL_FE"])
def test_element_cod_peaks_in_its_own_lines(independent, label):
    cod, windows = independent
    table = cod_window_contrast(cod, windows, n_top=10)
    row = table.loc[label]
    assert row["top_fraction"] >= 0.9 and row["chance"] < 0.35  # its strongest pixels are its own lines
    assert row["ratio"] > 10  # mean COD inside its windows vs outside
    assert row["max"] > 0.1
    other = next(name for name in ELEMENTS if name != label)
    assert cod[label][windows[other]].mean() < 0.2 * row["mean_in"]  # not the other element's lines


def test_label_the_others_predict_gets_little_cod(independent):
    cod_free, windows = independent
    cod_tied, _ = _cod(_giants(100, seed=0, mg_from_feh=True), seed=1)  # [Mg/Fe] = -0.3 [Fe/H] +- 0.01
    inside = windows["MG_FE"]
    assert cod_tied["MG_FE"][inside].mean() < 0.2 * cod_free["MG_FE"][inside].mean()
    assert cod_tied.full[inside].mean() > 0.8  # the pixels are as well explained: by FE_H instead


@pytest.mark.parametrize("mask, match", [
    ([True, False], "expected a boolean mask over the 3"),
    ([False, False, False], "0 inside"),
    ([True, True, True], "3 inside"),
], ids=["wrong-length", "empty-window", "window-everywhere"])
def test_bad_window_masks_are_refused(mask, match):
    from labelexplorer.analysis.cod import cod_spectra

    cod = cod_spectra([1.0, 2.0, 3.0], ["TEFF", "MG_FE"], [0.2, 0.2, 0.2], [[0.5, 0.5, 0.9], [0.9, 0.9, 0.5]])
    with pytest.raises(ShapeError, match=match):
        cod_window_contrast(cod, {"MG_FE": mask})
