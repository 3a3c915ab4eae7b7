"""The SLAM-style pseudo-continuum on synthetic spectra with a known continuum and on every real LAMOST file."""

from __future__ import annotations

import numpy as np
import pytest

import labelexplorer as le
from labelexplorer.exceptions import ShapeError, SpectrumError, UnknownNameError
from labelexplorer.io.lamost import lamost_wavelength
from labelexplorer.preprocess.pseudo_continuum import fit_pseudo_continuum, pseudo_continuum_normalise
from labelexplorer.spectra import Spectra

WAVELENGTH = lamost_wavelength()
INTERIOR = (WAVELENGTH > 3750) & (WAVELENGTH < 9050)  # the outer knot intervals are the least constrained


def _synthetic(n=8, snr=100.0, n_lines=120, seed=1, emission=False):
    """Planck-like continua x Gaussian absorption lines (LAMOST-like widths) + Gaussian noise."""
    rng = np.random.default_rng(seed)
    x = (WAVELENGTH - 6400.0) / 2700.0
    fluxes, truths = [], []
    for _ in range(n):
        temperature = rng.uniform(4500, 7000)
        planck = 1.0 / (WAVELENGTH**5 * np.expm1(1.4388e8 / (WAVELENGTH * temperature)))
        truth = 100.0 * planck / planck.max() * (1.0 + 0.1 * x + 0.05 * rng.normal() * x**2)
        depth, centre, width = rng.uniform(0.02, 0.5, n_lines), rng.uniform(3700, 9100, n_lines), rng.uniform(1.5, 3.0, n_lines)
        profile = np.prod(1.0 - depth[:, None] * np.exp(-0.5 * ((WAVELENGTH - centre[:, None]) / width[:, None]) ** 2), axis=0)
        if emission:  # a broad quasar-like line four times the continuum
            profile = profile + 3.0 * np.exp(-0.5 * ((WAVELENGTH - 6564.6) / 3.0) ** 2)
        fluxes.append(truth * profile + rng.normal(size=WAVELENGTH.size) * truth / snr)
        truths.append(truth)
    truths = np.array(truths)
    return Spectra(np.array(fluxes), WAVELENGTH, error=truths / snr), truths


def test_the_continuum_of_a_line_rich_spectrum_is_recovered_within_one_percent():
    spec, truth = _synthetic()
    ratio = fit_pseudo_continuum(spec) / truth - 1
    assert np.max(np.abs(ratio[:, INTERIOR])) < 0.01
    assert abs(np.median(ratio)) < 0.003  # no systematic offset from the asymmetric rejection
    assert np.max(np.abs(ratio)) < 0.03  # the spline ends stay sane too


def test_without_errors_the_residual_scatter_sets_the_rejection_scale():
    spec, truth = _synthetic(n=4, seed=2)
    unweighted = Spectra(spec.flux, spec.wavelength)
    ratio = fit_pseudo_continuum(unweighted) / truth - 1
    assert np.max(np.abs(ratio[:, INTERIOR])) < 0.02 and abs(np.median(ratio)) < 0.005


def test_an_emission_line_does_not_lift_the_continuum():
    spec, truth = _synthetic(n=2, seed=3, emission=True)
    ratio = fit_pseudo_continuum(spec) / truth - 1
    near = np.abs(WAVELENGTH - 6564.6) < 100
    assert np.max(np.abs(ratio[:, near])) < 0.02
    assert spec.flux[:, near].max() > 3 * truth[:, near].max()  # the line really is there


def test_normalised_flux_and_errors_are_divided_by_the_continuum():
    spec, truth = _synthetic(n=3, seed=4)
    continuum = fit_pseudo_continuum(spec)
    normalised = pseudo_continuum_normalise(spec, continuum=continuum)
    np.testing.assert_allclose(normalised.flux, spec.flux / continuum, rtol=1e-5)
    np.testing.assert_allclose(normalised.ivar, spec.ivar * continuum**2, rtol=1e-4)
    again = pseudo_continuum_normalise(spec)
    np.testing.assert_allclose(again.flux, normalised.flux, rtol=1e-6)
    assert again.meta["pseudo_continuum"]["k_low"] == 1.5 and again.meta["history"][-1].startswith("pseudo-continuum")
    assert spec.meta["history"] == []  # the input is untouched


def test_masked_pixels_stay_masked_and_do_not_steer_the_fit():
    spec, truth = _synthetic(n=2, seed=5)
    mask = np.zeros(spec.flux.shape, dtype=bool)
    mask[:, 1000:1100] = True
    flux = spec.flux.copy()
    flux[mask] = 1e6  # garbage under the mask
    masked = Spectra(flux, WAVELENGTH, error=spec.error, mask=mask)
    normalised = pseudo_continuum_normalise(masked)
    assert normalised.mask[mask].all() and normalised.mask.sum() == mask.sum()
    ratio = fit_pseudo_continuum(masked) / truth - 1
    assert np.max(np.abs(ratio[:, INTERIOR])) < 0.015  # bridged across the 200 A gap


def test_one_grid_per_spectrum_gives_the_same_continuum_as_a_shared_grid():
    spec, _ = _synthetic(n=2, seed=6)
    per_spectrum = Spectra(spec.flux, np.stack([WAVELENGTH, WAVELENGTH]), error=spec.error)
    np.testing.assert_allclose(fit_pseudo_continuum(per_spectrum), fit_pseudo_continuum(spec), rtol=1e-9)


@pytest.mark.realdata
def test_every_real_lamost_spectrum_normalises_to_about_one(real_data):
    paths = sorted((real_data / "lamost").glob("*/*.fits*"))
    spectra = le.read(paths)
    assert spectra.n_spectra == 60
    continuum = fit_pseudo_continuum(spectra)
    normalised = pseudo_continuum_normalise(spectra, continuum=continuum)
    window = (normalised.wavelength > 4500) & (normalised.wavelength < 8000)
    assert normalised.mask[spectra.mask].all()  # masked pixels stay masked
    # new masks only where the continuum is not positive: the negative garbage at the red end of SNR < 1 files
    added = normalised.mask & ~spectra.mask
    np.testing.assert_array_equal(added, ~spectra.mask & (continuum <= 0))
    assert added.sum() < 0.001 * added.size and not added[:, window].any()
    for i, name in enumerate(spectra.info["file"]):
        good = window & ~normalised.mask[i]
        assert np.isfinite(normalised.flux[i, ~normalised.mask[i]]).all(), name
        median = float(np.median(normalised.flux[i, good]))
        # M dwarfs are blanketed by molecular bands, so their pseudo-continuum sits above most pixels
        tolerance = 0.07 if spectra.info["SUBCLASS"][i].lstrip("d").startswith("M") else 0.05
        assert abs(median - 1) < tolerance, (name, spectra.info["SUBCLASS"][i], median)


def test_an_all_masked_spectrum_is_refused_by_name():
    flux = np.ones((2, 50))
    spec = Spectra(flux, np.linspace(4000, 5000, 50), mask=np.vstack([np.zeros(50, bool), np.ones(50, bool)]),
                   ids=["fine", "empty"], allow_empty=True)
    with pytest.raises(SpectrumError, match="'empty' has no good pixel"):
        pseudo_continuum_normalise(spec)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda s: pseudo_continuum_normalise(s, knot_spacng=50.0), UnknownNameError, "did you mean 'knot_spacing'"),
    (lambda s: fit_pseudo_continuum(s, knot_spacing=0.0), ShapeError, "knot_spacing"),
    (lambda s: pseudo_continuum_normalise(s, continuum=np.ones(5)), ShapeError, "continuum: expected shape"),
    (lambda s: fit_pseudo_continuum(s.flux), ShapeError, "expected a Spectra object"),
], ids=["misspelt-option", "zero-knot-spacing", "continuum-of-wrong-shape", "array-instead-of-spectra"])
def test_bad_arguments_are_refused_with_their_name(call, error, match):
    spec = Spectra(np.ones((1, 50)), np.linspace(4000, 5000, 50))
    with pytest.raises(error, match=match):
        call(spec)
