"""Continuum normalisation: exactness on synthetic spectra, batch = loop, grids, masks, real apStar files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from labelexplorer.exceptions import FileFormatError, LabelError, LabelExplorerError, ShapeError
from labelexplorer.preprocess.bitmask import bad_pixel_mask
from labelexplorer.preprocess.continuum import (continuum_pixels_from_file, derive_continuum_pixels,
                                                normalise_continuum, pixels_on_grid)
from labelexplorer.preprocess.grid import apogee_wavelength, chip_slices, gap_removed_wavelength
from labelexplorer.spectra import Spectra

GRIDS = {8575: apogee_wavelength(), 7514: gap_removed_wavelength("dr17"), 7214: gap_removed_wavelength("dr12")}


def _chip_polynomials(n_spectra: int, n_pixels: int, rng) -> np.ndarray:
    """A random degree-2 Chebyshev continuum per chip and spectrum (0 in the gaps), like real apStar shapes."""
    continuum = np.zeros((n_spectra, n_pixels))
    for chip in chip_slices(n_pixels):
        x = np.linspace(-1, 1, chip.stop - chip.start)
        coefficients = np.column_stack([rng.uniform(200, 800, n_spectra), rng.uniform(-60, 60, n_spectra),
                                        rng.uniform(-30, 30, n_spectra)])
        continuum[:, chip] = coefficients @ np.polynomial.chebyshev.chebvander(x, 2).T
    return continuum


def _line_pixels(n_pixels: int) -> np.ndarray:
    lines = np.zeros(n_pixels, dtype=bool)
    lines[5::7] = True
    return lines


def _synthetic(n_spectra=6, n_pixels=7514, snr=None, seed=1):
    """Spectra = continuum × (1 − lines); continuum pixels are line free. Returns spectra, truth, mask."""
    rng = np.random.default_rng(seed)
    continuum = _chip_polynomials(n_spectra, n_pixels, rng)
    lines = _line_pixels(n_pixels)
    normalised = 1.0 - 0.4 * lines[None] * rng.uniform(0.3, 1.0, (n_spectra, 1))
    flux = continuum * normalised
    error = np.full(flux.shape, 1.0) if snr is None else continuum / snr
    if snr is not None:
        flux = flux + rng.normal(0, 1, flux.shape) * error
    continuum_pixels = ~lines
    continuum_pixels[::3] = False  # a sparse continuum mask, like the real ones
    spectra = Spectra(flux, GRIDS[n_pixels], error=np.where(continuum > 0, error, np.inf), mask=continuum == 0)
    return spectra, normalised, continuum, continuum_pixels


@pytest.mark.parametrize("n_pixels", [8575, 7514, 7214], ids=["8575-full-grid", "7514-dr17", "7214-dr12"])
def test_noise_free_continuum_is_recovered_exactly(n_pixels):
    spectra, truth, continuum, continuum_pixels = _synthetic(n_pixels=n_pixels)
    normed, fitted = normalise_continuum(spectra, continuum_pixels, return_continuum=True)
    on_chip = continuum > 0
    np.testing.assert_allclose(fitted[on_chip], continuum[on_chip], rtol=1e-6)
    np.testing.assert_allclose(normed.flux[on_chip], truth[on_chip], atol=1e-5)
    np.testing.assert_allclose(normed.error[on_chip], 1.0 / continuum[on_chip], rtol=1e-5)
    # chip gaps have no continuum: left masked, neutral value 1, no information
    assert normed.mask[~on_chip].all()
    assert np.all(normed.flux[~on_chip] == 1.0) and np.all(np.isinf(normed.error[~on_chip]))
    assert not normed.mask[on_chip].any()


def test_history_meta_and_input_left_untouched():
    spectra, _, _, continuum_pixels = _synthetic(n_spectra=2)
    before = spectra.flux.copy()
    normed = normalise_continuum(spectra, continuum_pixels)
    np.testing.assert_array_equal(spectra.flux, before)
    assert normed.meta["history"][-1].startswith("normalise_continuum(degree=2")
    assert normed.meta["continuum"]["n_continuum_pixels"] == int(continuum_pixels.sum())
    assert spectra.meta["history"] == []
    assert normed.flux.dtype == np.float32 and normed.error.dtype == np.float32


def test_batch_equals_one_spectrum_at_a_time():
    spectra, _, _, continuum_pixels = _synthetic(n_spectra=8, snr=80, seed=3)
    rng = np.random.default_rng(4)
    extra_bad = rng.random(spectra.flux.shape) < 0.2  # different bad pixels per spectrum
    spectra = spectra.replace(mask=spectra.mask | extra_bad)
    batch = normalise_continuum(spectra, continuum_pixels)
    for row in range(spectra.n_spectra):
        single = normalise_continuum(spectra[row], continuum_pixels)
        np.testing.assert_allclose(batch.flux[row], single.flux[0], rtol=1e-6)
        np.testing.assert_array_equal(batch.mask[row], single.mask[0])


def test_noisy_continuum_median_is_one():
    spectra, truth, continuum, continuum_pixels = _synthetic(n_spectra=5, snr=100, seed=5)
    normed = normalise_continuum(spectra, continuum_pixels)
    on_chip = continuum[0] > 0
    for row in range(5):
        assert abs(np.median(normed.flux[row, continuum_pixels & on_chip]) - 1) < 0.002
        line = _line_pixels(spectra.n_pixels) & on_chip
        assert abs(np.median(normed.flux[row, line]) - truth[row, line][0]) < 0.005


def test_weights_are_inverse_variance():
    spectra, _, continuum, continuum_pixels = _synthetic(n_spectra=1)
    flux = spectra.flux.copy()
    chip = chip_slices(7514)[1]
    hot = chip.start + np.flatnonzero(continuum_pixels[chip])[:40]
    flux[0, hot] *= 1.5  # a bright artefact on continuum pixels
    for hot_error, affected in [(1e6, False), (1.0, True)]:
        error = spectra.error.copy()
        error[0, hot] = hot_error
        _, fitted = normalise_continuum(spectra.replace(flux=flux, error=error), continuum_pixels,
                                        return_continuum=True)
        worst = np.max(np.abs(fitted[0, chip] / continuum[0, chip] - 1.0))
        assert (worst > 0.005) == affected, (hot_error, worst)
        assert worst < 1e-4 or affected


def test_spectra_without_errors_use_equal_weights():
    spectra, truth, continuum, continuum_pixels = _synthetic(n_spectra=2)
    no_errors = Spectra(spectra.flux, spectra.wavelength, mask=spectra.mask)
    normed = normalise_continuum(no_errors, continuum_pixels)
    on_chip = continuum > 0
    np.testing.assert_allclose(normed.flux[on_chip], truth[on_chip], atol=1e-5)
    assert not normed.has_errors


def test_zero_flux_pixels_are_masked_not_fitted():
    spectra, truth, continuum, continuum_pixels = _synthetic(n_spectra=1)
    flux = spectra.flux.copy()
    flux[0, 2000:2100] = 0.0  # missing data, as in apStar files
    normed = normalise_continuum(spectra.replace(flux=flux), continuum_pixels)
    assert normed.mask[0, 2000:2100].all()
    np.testing.assert_allclose(normed.flux[0, 100:1900], truth[0, 100:1900], atol=1e-5)


def test_chip_without_continuum_pixels_is_masked_with_a_warning():
    spectra, truth, continuum, continuum_pixels = _synthetic(n_spectra=3)
    blue, green, red = chip_slices(7514)
    mask = spectra.mask.copy()
    mask[1, green] = True  # the whole green chip of spectrum 1 is bad
    with pytest.warns(UserWarning, match=r"1 chip\(s\) of 1 spectra.*'1', chip g"):
        normed = normalise_continuum(spectra.replace(mask=mask), continuum_pixels)
    assert normed.mask[1, green].all()
    assert not normed.mask[1, blue].any() and not normed.mask[0, green].any()
    np.testing.assert_allclose(normed.flux[1, red], truth[1, red], atol=1e-5)


def test_too_few_continuum_pixels_masks_the_chip():
    spectra, _, _, _ = _synthetic(n_spectra=2)
    few = np.zeros(7514, dtype=bool)
    few[[10, 500, 1000]] = True  # 3 pixels on the blue chip: degree 2 needs at least 4
    few[4000:4100] = True
    few[6000:6100] = True
    with pytest.warns(UserWarning, match="fewer than 4"):
        normed = normalise_continuum(spectra, few)
    assert normed.mask[:, chip_slices(7514)[0]].all()
    assert not normed.mask[:, chip_slices(7514)[1]].any()


def test_degree_is_a_parameter():
    spectra, _, continuum, continuum_pixels = _synthetic(n_spectra=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, flat = normalise_continuum(spectra, continuum_pixels, degree=0, return_continuum=True)
    chip = chip_slices(7514)[0]
    assert np.ptp(flat[0, chip]) == pytest.approx(0.0, abs=1e-6)  # a constant per chip
    assert normalise_continuum(spectra, continuum_pixels, degree=4).meta["continuum"]["degree"] == 4


@pytest.mark.parametrize("continuum_pixels, error", [
    pytest.param(np.ones(100, bool), ShapeError, id="mask-length-not-an-apogee-grid"),
    pytest.param(np.arange(7514), ShapeError, id="integer-indices-not-a-mask"),
    pytest.param(np.ones((2, 7514), bool), ShapeError, id="two-dimensional-mask"),
    pytest.param(np.ones(7514, float), ShapeError, id="float-mask"),
])
def test_bad_continuum_masks_are_refused(continuum_pixels, error):
    spectra, _, _, _ = _synthetic(n_spectra=1)
    with pytest.raises(error, match="continuum_pixels"):
        normalise_continuum(spectra, continuum_pixels)


@pytest.mark.parametrize("kwargs", [pytest.param({"degree": -1}, id="negative-degree"),
                                    pytest.param({"degree": 1.5}, id="non-integer-degree")])
def test_bad_degree_is_refused(kwargs):
    spectra, _, _, continuum_pixels = _synthetic(n_spectra=1)
    with pytest.raises(ShapeError, match="degree"):
        normalise_continuum(spectra, continuum_pixels, **kwargs)


def test_non_apogee_pixel_count_and_non_spectra_are_refused():
    spectra = Spectra(np.ones((1, 500)), np.linspace(15000, 16000, 500))
    with pytest.raises(ShapeError, match="500"):
        normalise_continuum(spectra, np.ones(500, bool))
    with pytest.raises(ShapeError, match="Spectra"):
        normalise_continuum(np.ones((1, 7514)), np.ones(7514, bool))


# ---------------------------------------------------------------------------- grid mapping
def test_pixels_on_grid_round_trips_between_grids():
    rng = np.random.default_rng(0)
    mask = rng.random(7514) < 0.1
    full = pixels_on_grid(mask, 8575)
    np.testing.assert_array_equal(pixels_on_grid(full, 7514), mask)
    np.testing.assert_array_equal(full[246:3274], mask[:3028])
    assert not full[:246].any() and not full[3274:3585].any()
    # DR12 chips lie inside the DR13+ chips: 7214 → 7514 → 7214 is lossless
    dr12 = rng.random(7214) < 0.1
    np.testing.assert_array_equal(pixels_on_grid(pixels_on_grid(dr12, 7514), 7214), dr12)
    np.testing.assert_allclose(pixels_on_grid(GRIDS[7514], 8575)[pixels_on_grid(np.ones(7514, bool), 8575)],
                               GRIDS[7514])


def test_pixels_on_grid_refuses_other_pixel_counts():
    with pytest.raises(ShapeError):
        pixels_on_grid(np.ones(100), 7514)


# ---------------------------------------------------------------------------- mask files
@pytest.mark.parametrize("relative, n_pixels, expected", [
    pytest.param("apogee/masks/dr17_contmask.npy", 7514, 532, id="astroNN-dr17"),
    pytest.param("apogee/masks/dr14_contmask.npy", 7514, 529, id="astroNN-dr14"),
    pytest.param("apogee/grid/cannon_cont_pixels_apogee.npz", 7214, 529, id="cannon-7214"),
])
def test_real_continuum_mask_files(real_data, relative, n_pixels, expected):
    mask = continuum_pixels_from_file(real_data / relative)
    assert mask.dtype == bool and mask.shape == (n_pixels,) and mask.sum() == expected
    full = continuum_pixels_from_file(real_data / relative, 8575)
    assert full.sum() == expected  # every continuum pixel lies on a chip
    on_chip = np.zeros(8575, bool)
    for chip in chip_slices(8575):
        on_chip[chip] = True
    assert not full[~on_chip].any()
    for chip in chip_slices(8575):
        assert full[chip].sum() > 50  # each chip gets continuum pixels


def _write_bad_mask(folder, case):
    path = folder / f"{case}.npy"
    if case == "missing":
        return path
    if case == "text":
        path.write_text("not an array")
    elif case == "pickled-objects":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "wrong-length":
        np.save(path, np.ones(100, bool))
    elif case == "float-values":
        np.save(path, np.ones(7514))
    elif case == "non-binary-integers":
        np.save(path, np.arange(7514))
    elif case == "selects-nothing":
        np.save(path, np.zeros(7514, bool))
    elif case == "npz-several-arrays":
        path = folder / "several.npz"
        np.savez(path, a=np.ones(7514, bool), b=np.ones(7514, bool))
    elif case == "truncated":
        np.save(path, np.ones(7514, bool))
        path.write_bytes(path.read_bytes()[:200])
    return path


@pytest.mark.parametrize("case", ["missing", "text", "pickled-objects", "wrong-length", "float-values",
                                  "non-binary-integers", "selects-nothing", "npz-several-arrays", "truncated"])
def test_bad_mask_files_raise_file_format_errors(tmp_path, case):
    path = _write_bad_mask(tmp_path, case)
    with pytest.raises(FileFormatError, match=str(path.name)):
        continuum_pixels_from_file(path)


def test_npz_key_selects_the_array(tmp_path):
    path = tmp_path / "several.npz"
    chosen = np.zeros(7514, bool)
    chosen[:10] = True
    np.savez(path, other=np.ones(7514, bool), chosen=chosen)
    assert continuum_pixels_from_file(path, key="chosen").sum() == 10
    with pytest.raises(FileFormatError, match="'absent'"):
        continuum_pixels_from_file(path, key="absent")


# ---------------------------------------------------------------------------- derived masks
def _training_set(n_spectra=60, seed=7, snr=200):
    """Spectra with label-dependent lines on a known set of pixels, over random chip continua."""
    rng = np.random.default_rng(seed)
    labels = np.column_stack([rng.uniform(4000, 5200, n_spectra), rng.uniform(-1.0, 0.3, n_spectra)])
    n_pixels = 7514
    line_strength = np.zeros(n_pixels)
    line_strength[3::6] = rng.uniform(0.05, 0.4, line_strength[3::6].size)
    sensitive = line_strength > 0
    depth = line_strength[None] * (1.2 - (labels[:, :1] - 4000) / 2000) * 10 ** (0.5 * labels[:, 1:])
    normalised = 1.0 - depth
    continuum = _chip_polynomials(n_spectra, n_pixels, rng)
    noise = rng.normal(0, 1.0 / snr, normalised.shape)
    spectra = Spectra(continuum * (normalised + noise), GRIDS[n_pixels], error=continuum / snr)
    return spectra, labels, sensitive, normalised


def test_derived_continuum_pixels_avoid_label_dependent_lines():
    spectra, labels, sensitive, normalised = _training_set()
    pixels = derive_continuum_pixels(spectra, labels)
    assert not (pixels & sensitive).any()
    assert pixels[~sensitive].mean() > 0.5  # most line-free pixels are found
    normed = normalise_continuum(spectra, pixels)
    np.testing.assert_allclose(np.median(normed.flux - normalised, axis=1), 0.0, atol=0.002)


def test_derived_pixels_ignore_rows_with_missing_labels():
    spectra, labels, sensitive, _ = _training_set(n_spectra=40)
    labels = labels.copy()
    labels[:5, 0] = -9999.0
    labels[5:8, 1] = np.nan
    pixels = derive_continuum_pixels(spectra, labels)
    assert not (pixels & sensitive).any()


def test_derived_pixels_do_not_depend_on_the_chunk_size(monkeypatch):
    from labelexplorer.preprocess import continuum

    spectra, labels, _, _ = _training_set(n_spectra=30)
    whole = derive_continuum_pixels(spectra, labels)
    monkeypatch.setattr(continuum, "_DERIVE_CHUNK", 7)  # 30 stars in five chunks
    np.testing.assert_array_equal(derive_continuum_pixels(spectra, labels), whole)


def test_derived_pixels_accept_a_label_table():
    import pandas as pd

    spectra, labels, sensitive, _ = _training_set(n_spectra=30)
    table = pd.DataFrame({"TEFF": labels[:, 0], "FE_H": labels[:, 1]})
    np.testing.assert_array_equal(derive_continuum_pixels(spectra, table), derive_continuum_pixels(spectra, labels))


@pytest.mark.parametrize("labels, error", [
    pytest.param(np.full((30, 2), -9999.0), LabelError, id="all-labels-missing"),
    pytest.param(np.ones((7, 2)), ShapeError, id="wrong-number-of-rows"),
])
def test_derive_refuses_unusable_labels(labels, error):
    spectra, _, _, _ = _training_set(n_spectra=30)
    with pytest.raises(error):
        derive_continuum_pixels(spectra, labels)


def test_derive_reports_impossible_cuts():
    spectra, labels, _, _ = _training_set(n_spectra=30)
    with pytest.raises(LabelExplorerError, match="loosen"):
        derive_continuum_pixels(spectra, labels, f_cut=1e-9, slope_cut=1e-9)


# ---------------------------------------------------------------------------- real spectra
def _read_apstar_combined(path):
    """Combined rows (0 and, with several visits, 1) of a real apStar file, read with astropy."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        flux, error, bitmask = (np.atleast_2d(hdul[i].data).astype(np.float64) for i in (1, 2, 3))
    rows = slice(0, 2) if flux.shape[0] > 1 else slice(0, 1)
    bad = bad_pixel_mask(bitmask[rows].astype(np.int64))
    return Spectra(flux[rows], apogee_wavelength(), error=error[rows], mask=bad,
                   ids=[f"{path.stem}[{i}]" for i in range(flux[rows].shape[0])])


def test_real_apstar_spectra_normalise_to_one_on_the_continuum(real_data):
    paths = sorted((real_data / "apogee" / "apStar").glob("apStar-*.fits"))
    assert len(paths) >= 5
    spectra = Spectra.concatenate([_read_apstar_combined(path) for path in paths])
    mask = continuum_pixels_from_file(real_data / "apogee" / "masks" / "dr17_contmask.npy")
    normed = normalise_continuum(spectra, mask)  # the 7514-grid mask is mapped onto 8575
    continuum = pixels_on_grid(mask, 8575)
    for row in range(normed.n_spectra):
        good = continuum & ~normed.mask[row]
        assert good.sum() > 200, normed.ids[row]
        assert abs(np.median(normed.flux[row, good]) - 1.0) < 0.03, normed.ids[row]
        for chip in chip_slices(8575):
            chip_good = good[chip]
            assert abs(np.median(normed.flux[row, chip][chip_good]) - 1.0) < 0.05, (normed.ids[row], chip)
        # absorption lines stay below the continuum: the spectrum is not flattened away
        assert np.median(normed.flux[row, ~normed.mask[row]]) < np.median(normed.flux[row, good])
    gaps = ~pixels_on_grid(np.ones(7514, bool), 8575)
    assert normed.mask[:, gaps].all()


def test_real_apstar_read_by_the_project_reader_normalises(real_data):
    pytest.importorskip("labelexplorer.io.apogee", reason="the APOGEE reader is not there yet")
    import labelexplorer

    paths = sorted((real_data / "apogee" / "apStar").glob("apStar-*.fits"))
    spectra = labelexplorer.read(paths)
    assert spectra.n_pixels == 8575 and spectra.n_spectra >= len(paths)
    mask = continuum_pixels_from_file(real_data / "apogee" / "masks" / "dr17_contmask.npy", 8575)
    normed = normalise_continuum(spectra, mask)
    for row in range(normed.n_spectra):
        good = mask & ~normed.mask[row]
        assert abs(np.median(normed.flux[row, good]) - 1.0) < 0.03, normed.ids[row]


def test_real_dr14_giant_matches_its_given_normalised_flux(real_data):
    example = np.load(real_data / "apogee" / "example_dr14" / "apogee_dr14_example.npz", allow_pickle=False)
    wavelength = example["wavelength_nm"] * 10.0
    np.testing.assert_allclose(wavelength, GRIDS[7514], rtol=1e-9)
    given, good = example["normalized_flux"], example["good_pixel_mask"]
    # put the published normalised spectrum back on a smooth, non-polynomial instrumental continuum
    shape = 800.0 * np.exp(-(((wavelength - 15900.0) / 1500.0) ** 2)) * (1 + 0.05 * np.sin(wavelength / 400.0))
    raw = Spectra(given * shape, wavelength, error=example["normalized_error"] * shape, mask=~good)
    mask = continuum_pixels_from_file(real_data / "apogee" / "masks" / "dr14_contmask.npy")
    normed = normalise_continuum(raw, mask)
    ours, ok = normed.flux[0], ~normed.mask[0]
    # ASPCAP's own normalisation puts the DR14 continuum pixels ~3 % above 1; ours puts them at 1
    assert abs(np.median(ours[mask & ok]) - 1.0) < 0.01
    ratio = ours[ok] / given[ok]
    assert np.all(np.abs(ratio - 1.0) < 0.06)
    # the two differ by a smooth factor per chip only: every line is kept, point for point
    full_ratio = np.full(ours.shape, np.nan)
    full_ratio[ok] = ours[ok] / given[ok]
    for chip in chip_slices(7514):
        values = full_ratio[chip]
        x = np.linspace(-1, 1, values.size)
        finite = np.isfinite(values)
        smooth = np.polynomial.chebyshev.chebfit(x[finite], values[finite], 6)
        residual = values[finite] - np.polynomial.chebyshev.chebval(x[finite], smooth)
        assert np.max(np.abs(residual)) < 1e-4
