"""The LAMOST-like spectrum generator: grid, physics of the lines, noise, masks and the file writer."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

import labelexplorer as le
from labelexplorer.exceptions import LabelError, LabelExplorerError, ShapeError, SpectrumError
from labelexplorer.mock import lamost_physics as lp

WAVELENGTH = lp.lamost_wavelength()


def _labels(teff, logg, feh, **extra):
    size = np.broadcast(np.asarray(teff), np.asarray(logg), np.asarray(feh)).size
    labels = {key: np.broadcast_to(np.asarray(value, float), (size,)).copy()
              for key, value in dict(TEFF=teff, LOGG=logg, FE_H=feh, **extra).items()}
    return labels


def _equivalent_width(flux, low, high):
    inside = (WAVELENGTH > low) & (WAVELENGTH < high)
    return ((1.0 - flux[:, inside]) * np.gradient(WAVELENGTH)[inside]).sum(axis=1)


def _band(flux, low_air, high_air):
    low, high = le.io.lamost.air_to_vacuum(np.array([low_air, high_air]))
    return flux[:, (WAVELENGTH > low) & (WAVELENGTH < high)].mean(axis=1)


# ---------------------------------------------------------------------------- grid
def test_wavelength_grid_is_the_lamost_log_linear_vacuum_grid():
    assert WAVELENGTH.shape == (3909,)
    assert WAVELENGTH[0] == pytest.approx(3700.0, abs=0.1)
    assert 9000.0 < WAVELENGTH[-1] < 9100.0
    np.testing.assert_allclose(np.diff(np.log10(WAVELENGTH)), 1e-4, rtol=1e-6)


# ---------------------------------------------------------------------------- physics
def test_balmer_lines_peak_near_9000_k_and_weaken_in_hot_and_cool_stars():
    teff = np.array([4000, 5000, 6000, 7000, 8000, 9000, 10000, 12000, 16000, 25000, 40000.0])
    flux = lp.normalized_flux(_labels(teff, 4.0, -2.5))  # metal-poor: no metal lines blended into the windows
    h_beta = _equivalent_width(flux, 4842.0, 4883.0)
    h_delta = _equivalent_width(flux, 4083.0, 4123.0)
    for width in (h_beta, h_delta):
        peak = teff[np.argmax(width)]
        assert 8000 <= peak <= 11000
        assert width[teff == 25000] < 0.6 * width.max()
        assert width[teff == 40000] < 0.3 * width.max()
        assert width[teff == 4000] < 0.5 * width.max()
        assert width[teff == 5000] < width[teff == 7000] < width[teff == 9000]


def test_balmer_wings_of_a_stars_narrow_at_low_gravity():
    flux = lp.normalized_flux(_labels(9500.0, [4.2, 2.0], 0.0))
    h_gamma = _equivalent_width(flux, 4320.0, 4363.0)
    assert h_gamma[1] < 0.7 * h_gamma[0]


def test_metal_lines_and_ca_k_strengthen_with_metallicity_and_toward_cool_stars():
    flux = lp.normalized_flux(_labels([5800, 5800, 5800, 4800], 4.4, [-2.0, -0.5, 0.3, 0.0]))
    mg_b = _equivalent_width(flux, 5160.0, 5195.0)
    ca_k = _equivalent_width(flux, 3920.0, 3950.0)
    assert mg_b[0] < mg_b[1] < mg_b[2] < mg_b[3]
    assert ca_k[0] < ca_k[1] < ca_k[2]


def test_he_lines_only_in_hot_stars():
    flux = lp.normalized_flux(_labels([5800, 9500, 20000, 30000], 4.0, 0.0))
    he_4471 = 1.0 - flux[:, np.argmin(np.abs(WAVELENGTH - 4472.7))]
    assert he_4471[2] > 0.15 and he_4471[3] > 0.15
    assert he_4471[1] < 0.5 * he_4471[2]


@pytest.mark.parametrize("window, lines, min_alpha, min_feh", [
    ((5150.0, 5200.0), ("Mg I", (5168.76, 5174.13, 5185.05)), 0.75, 0.6),
    ((8480.0, 8690.0), ("Ca II", (8500.36, 8544.44, 8664.52)), 0.65, 0.35),
], ids=["Mg-b", "Ca-triplet"])
def test_mg_b_and_ca_triplet_respond_to_abundances_mostly_within_their_lines(window, lines, min_alpha, min_feh):
    """A solar-type dwarf: ~85% (Mg b) / ~75% (CaT) of the response to ALPHA_M lies within the lines'
    own profiles (±(2W + 3 Å)), which cover 48% / 21% of the window's pixels; for FE_H the blended
    Fe lines take a larger share (~70% / ~45% within)."""
    base = _labels(5800.0, 4.4, -0.3, ALPHA_M=0.0)
    flux = lp.normalized_flux(base)
    model = lp._model()
    star = lp._stars(base)
    width = lp._metal_widths(star, model["lines"])[1][0]
    inside_window = (WAVELENGTH > window[0]) & (WAVELENGTH < window[1])
    within_lines = np.zeros(WAVELENGTH.size, bool)
    for centre in lines[1]:
        index = np.flatnonzero((model["lines"]["species"] == lines[0])
                               & (np.abs(model["lines"]["wavelength"] - centre) < 0.5))[0]
        within_lines |= np.abs(WAVELENGTH - centre) < 2.0 * width[index] + 3.0
    pixel_share = (within_lines & inside_window).sum() / inside_window.sum()
    for label, minimum in (("ALPHA_M", min_alpha), ("FE_H", min_feh)):
        response = np.abs(lp.normalized_flux(dict(base, **{label: base[label] + 0.2})) - flux)[0]
        share = response[within_lines & inside_window].sum() / response[inside_window].sum()
        assert share > minimum
        assert share > 1.3 * pixel_share
        assert response[inside_window].max() > 0.005  # and the response is there at all


def test_tio_bands_appear_in_m_dwarfs_only():
    flux = lp.normalized_flux(_labels([3200, 3500, 4500, 5800, 9500], [5.0, 4.8, 4.6, 4.4, 4.1], 0.0))
    tio5 = _band(flux, 7126.0, 7135.0) / _band(flux, 7042.0, 7046.0)  # the TiO5 index of Reid et al. 1995
    assert tio5[0] < 0.5 and tio5[1] < 0.75
    assert np.all(tio5[2:] > 0.9)


def test_cah_is_a_dwarf_feature_and_cn_a_giant_feature():
    flux = lp.normalized_flux(_labels([3400, 3400, 4600, 4600], [5.0, 0.8, 4.6, 2.0], 0.0))
    cah = 1.0 - _band(flux, 6814.0, 6846.0) / _band(flux, 7042.0, 7046.0)  # CaH2 of Reid et al. 1995
    cn = 1.0 - _band(flux, 4150.0, 4210.0) / _band(flux, 4220.0, 4260.0)
    assert cah[0] > cah[1] + 0.1
    assert cn[3] > cn[2]


def test_spectra_are_deterministic_and_physical():
    labels = _labels([3300, 5800, 12000, 45000], [4.9, 4.4, 4.0, 4.0], [0.2, 0.0, -1.0, 0.0])
    first, second = lp.normalized_flux(labels), lp.normalized_flux(labels)
    assert first.dtype == np.float32 and first.shape == (4, WAVELENGTH.size)
    np.testing.assert_array_equal(first, second)
    assert np.all((first >= 0.0) & (first <= 1.0))
    assert np.all(first[3] > 0.3)  # an O star has few, shallow lines


# ---------------------------------------------------------------------------- observation
def test_noise_matches_the_requested_g_band_snr_and_the_reported_errors():
    labels = _labels(40000.0, 4.0, 0.0)  # nearly line-free in the g band: scatter is the noise
    targets = np.array([15.0, 60.0])
    spectra = lp.observe(np.repeat(lp.normalized_flux(labels), 2, axis=0), labels, targets,
                         np.random.default_rng(3))
    g_band = (WAVELENGTH > 4000.0) & (WAVELENGTH < 5500.0)
    for row, target in enumerate(targets):
        good = g_band & (spectra["ivar"][row] > 0)
        flux = spectra["flux"][row, good]
        error = 1.0 / np.sqrt(spectra["ivar"][row, good])
        assert np.median(flux / error) == pytest.approx(target, rel=0.1)
        # pixel-to-pixel scatter (second differences, robust) against the reported errors
        second = (flux[1:-1] - 0.5 * (flux[:-2] + flux[2:])) / np.sqrt(1.5)
        robust = 1.4826 * np.median(np.abs(second - np.median(second)))
        assert robust == pytest.approx(np.median(error), rel=0.15)


def test_observed_spectra_carry_lamost_masks_and_sky():
    n = 200
    labels = _labels(np.full(n, 5000.0), 2.5, -0.2)
    spectra = lp.observe(lp.normalized_flux(labels), labels, np.full(n, 8.0), np.random.default_rng(4))
    andmask, ormask = spectra["andmask"], spectra["ormask"]
    assert np.all((ormask & andmask) == andmask)
    assert np.all(spectra["ivar"][andmask != 0] == 0) and np.all(spectra["flux"][andmask != 0] == 0)
    assert np.all(spectra["ivar"][ormask != 0] == 0)
    assert (andmask & lp.MASK_BITS["BADCCD"]).any(axis=1).sum() > 2  # bad-CCD blocks in a few spectra
    oh_line = np.argmin(np.abs(WAVELENGTH - le.io.lamost.air_to_vacuum(8885.85)))
    continuum = np.argmin(np.abs(WAVELENGTH - 8700.0))
    assert (ormask[:, oh_line] & lp.MASK_BITS["BRIGHTSKY"]).mean() > 0.3
    assert (ormask[:, continuum] & lp.MASK_BITS["BRIGHTSKY"]).mean() < 0.05


def test_observe_is_deterministic_for_a_seed():
    labels = _labels([4500.0, 6500.0], [2.0, 4.0], 0.0)
    flux = lp.normalized_flux(labels)
    first = lp.observe(flux, labels, 50.0, np.random.default_rng(7))
    second = lp.observe(flux, labels, 50.0, np.random.default_rng(7))
    for key in ("flux", "ivar", "andmask", "ormask"):
        np.testing.assert_array_equal(first[key], second[key])


def test_continuum_is_bluer_for_hotter_stars_and_dips_at_the_dichroic():
    labels = _labels([3500.0, 10000.0], 4.5, 0.0)
    spectra = lp.observe(lp.normalized_flux(labels), labels, 300.0, np.random.default_rng(5))
    flux = np.where(spectra["ivar"] > 0, spectra["flux"], np.nan)
    blue_to_red = np.nanmedian(flux[:, (WAVELENGTH > 4400) & (WAVELENGTH < 4600)], axis=1) / \
        np.nanmedian(flux[:, (WAVELENGTH > 8100) & (WAVELENGTH < 8300)], axis=1)
    assert blue_to_red[1] > 3.0 * blue_to_red[0]
    dichroic = np.nanmedian(flux[1, (WAVELENGTH > 5840) & (WAVELENGTH < 5870)])
    beside = 0.5 * (np.nanmedian(flux[1, (WAVELENGTH > 5600) & (WAVELENGTH < 5650)])
                    + np.nanmedian(flux[1, (WAVELENGTH > 6050) & (WAVELENGTH < 6100)]))
    assert dichroic < 0.9 * beside


# ---------------------------------------------------------------------------- file writer
@pytest.fixture(scope="module")
def observed():
    labels = _labels([4800.0], [2.6], [-0.4], ALPHA_M=[0.1])
    spectra = lp.observe(lp.normalized_flux(labels), labels, 40.0, np.random.default_rng(11))
    spectra["andmask"][0, 100:120] = lp.MASK_BITS["BADCCD"]
    spectra["flux"][0, 100:120] = 0.0
    spectra["ivar"][0, 100:120] = 0.0
    return spectra


def _header(spectra):
    snr = lp.band_snr(spectra["flux"], spectra["ivar"], spectra["wavelength"])
    return dict(OBSID=123456789, DESIG="LAMOST J123456.78+012345.6", RA=188.7366, DEC=1.3960, CLASS="STAR",
                SUBCLASS="K1", Z=-0.000123, **{key: round(float(value[0]), 2) for key, value in snr.items()})


@pytest.mark.parametrize("layout, suffix, release", [
    ("dr8", ".fits.gz", "DR8"), ("dr8", ".fits", "DR8"), ("dr7", ".fits.gz", "DR7"), ("dr1", ".fits", "DR1"),
], ids=["dr8-gz", "dr8", "dr7-gz", "dr1"])
def test_written_files_read_back_identically(tmp_path, observed, layout, suffix, release):
    header = _header(observed)
    path = lp.write_lamost_spectrum(tmp_path / f"spec-mock-001{suffix}", observed["wavelength"], observed["flux"][0],
                                    observed["ivar"][0], observed["andmask"][0], header, layout=layout,
                                    ormask=observed["ormask"][0])
    spectrum = le.read(path)
    assert spectrum.meta["release"] == release
    assert spectrum.ids.tolist() == ["123456789"]
    np.testing.assert_array_equal(spectrum.flux[0].astype(np.float32), observed["flux"][0])
    # Spectra keeps errors, so ivar comes back through 1/sigma^2: equal to float32 precision
    np.testing.assert_allclose(spectrum.ivar[0], observed["ivar"][0], rtol=1e-6, atol=0)
    np.testing.assert_allclose(spectrum.wavelength, observed["wavelength"], rtol=1e-9)
    assert spectrum.mask[0, 100:120].all()
    for key in ("SNRU", "SNRG", "SNRR", "SNRI", "SNRZ", "RA", "DEC", "Z"):
        assert float(spectrum.info[key][0]) == pytest.approx(header[key])
    assert spectrum.info["SUBCLASS"][0] == "K1" and spectrum.info["DESIG"][0] == header["DESIG"]
    assert float(spectrum.info["snr"][0]) == pytest.approx(header["SNRG"])


@pytest.mark.realdata
def test_written_layouts_match_the_real_files(tmp_path, real_data, observed):
    folder = real_data / "lamost"
    header = _header(observed)
    args = (observed["wavelength"], observed["flux"][0], observed["ivar"][0], observed["andmask"][0], header)
    with fits.open(folder / "cmost" / "spec-55859-F5902_sp01-013_dr8.fits.gz") as real, \
            fits.open(lp.write_lamost_spectrum(tmp_path / "a.fits", *args, layout="dr8")) as mock:
        assert [h.name for h in mock] == [h.name for h in real]
        assert mock[1].columns.names == real[1].columns.names
        assert {c.format[-1] for c in mock[1].columns} == {c.format[-1] for c in real[1].columns}
        for key in ("TELESCOP", "OBSID", "DESIG", "RA", "DEC", "COEFF0", "COEFF1", "VACUUM", "CLASS", "SUBCLASS",
                    "Z", "SNRU", "SNRG", "SNRZ", "DATA_V"):
            assert key in real[0].header and key in mock[0].header
        assert mock[0].header["COEFF0"] == pytest.approx(real[0].header["COEFF0"])
        assert mock[0].header["TELESCOP"] == real[0].header["TELESCOP"]
    with fits.open(folder / "lamost_dr1" / "spec-55862-B6212_sp06-005.fits") as real, \
            fits.open(lp.write_lamost_spectrum(tmp_path / "b.fits", *args, layout="dr1")) as mock:
        assert len(mock) == len(real) == 1 and mock[0].data.shape[0] == real[0].data.shape[0] == 5
        assert mock[0].data.dtype == real[0].data.dtype
        assert mock[0].header["EXTEN0"] == real[0].header["EXTEN0"]
        for key in ("SN_U", "SN_G", "SN_Z", "COEFF0", "COEFF1", "DESIG", "CLASS"):
            assert key in real[0].header and key in mock[0].header
        assert "SNRG" not in mock[0].header


# ---------------------------------------------------------------------------- bad input
GOOD = {"TEFF": [5000.0], "LOGG": [3.0], "FE_H": [0.0]}


@pytest.mark.parametrize("labels, error, words", [
    ({"LOGG": [3.0], "FE_H": [0.0]}, LabelError, "TEFF"),
    ({"TEFF": [500.0], "LOGG": [3.0], "FE_H": [0.0]}, LabelError, "TEFF"),
    ({"TEFF": [5000.0], "LOGG": [np.nan], "FE_H": [0.0]}, LabelError, "LOGG"),
    ({"TEFF": [5000.0, 6000.0, 7000.0], "LOGG": [3.0, 4.0], "FE_H": [0.0]}, ShapeError, "LOGG"),
    ([5000.0, 3.0, 0.0], LabelError, "mapping"),
], ids=["missing-teff", "teff-too-cool", "nan-logg", "mismatched-lengths", "not-a-mapping"])
def test_bad_labels_raise_clear_errors(labels, error, words):
    with pytest.raises(error, match=words):
        lp.normalized_flux(labels)


@pytest.mark.parametrize("flux, snr, error, words", [
    (np.ones((1, 100)), 10.0, ShapeError, "3909"),
    (np.ones((1, 3909)), -5.0, SpectrumError, "snr"),
    (np.ones((1, 3909)), [10.0, 20.0, 30.0], ShapeError, "snr"),
], ids=["wrong-pixels", "negative-snr", "snr-length"])
def test_bad_observe_input_raises_clear_errors(flux, snr, error, words):
    with pytest.raises(error, match=words):
        lp.observe(flux, GOOD, snr, np.random.default_rng(0))


@pytest.mark.parametrize("change, error, words", [
    (dict(flux=np.ones(10)), ShapeError, "flux"),
    (dict(wavelength=np.linspace(3700.0, 9000.0, 3909)), ShapeError, "log-linear"),
    (dict(ivar=-np.ones(3909)), SpectrumError, "ivar"),
    (dict(layout="dr99"), LabelExplorerError, "layout"),
    (dict(header={"TOOLONGKEY": 1}), LabelExplorerError, "TOOLONGKEY"),
    (dict(header={"OBJ": object()}), LabelExplorerError, "OBJ"),
], ids=["short-flux", "linear-grid", "negative-ivar", "unknown-layout", "long-keyword", "bad-value"])
def test_bad_writer_input_raises_and_leaves_existing_file_intact(tmp_path, change, error, words):
    path = tmp_path / "spec.fits"
    path.write_bytes(b"previous content")
    change = dict(change)
    arguments = dict(wavelength=WAVELENGTH, flux=np.ones(3909), ivar=np.ones(3909), andmask=np.zeros(3909),
                     header={"OBSID": 1})
    layout = change.pop("layout", "dr8") if "layout" in change else "dr8"
    arguments.update(change)
    with pytest.raises(error, match=words):
        lp.write_lamost_spectrum(path, **arguments, layout=layout)
    assert path.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.fits"]
