"""The APOGEE readers on every real apStar, aspcapStar, apVisit and allStar file of the shared data.

Each check compares what the reader returns with the file read directly by astropy, or
with physics the file must obey (the 8575-pixel H-band grid, NVISITS+2 rows, SNR from the
header, normalised flux near 1).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

import labelexplorer as le
from labelexplorer.io.registry import detect_format
from labelexplorer.labels import ASPCAP_ELEMENTS
from labelexplorer.preprocess.bitmask import DEFAULT_BAD_BITS, bad_pixel_mask
from labelexplorer.preprocess.grid import apogee_wavelength
from labelexplorer.spectra import Spectra

realdata = pytest.mark.realdata

ALLSTAR = "catalogs/APOGEE-allStar-v603-Hipparcos.fits.gz"


def _listed(subfolder: str, pattern: str) -> list:
    """File names to parametrize over (the tests reach the files through ``real_data``).

    Listed at collection time from the folder the ``real_data`` fixture uses; without it a
    single placeholder lets that fixture skip (or fail under CI) with its message.
    """
    configured = os.environ.get("LABELEXPLORER_REAL_DATA")
    folder = (Path(configured) if configured else Path(__file__).resolve().parents[3] / "shared" / "data") / subfolder
    names = sorted(p.name for p in folder.glob(pattern)) if folder.is_dir() else []
    return [pytest.param(n, id=n, marks=realdata) for n in names] or [pytest.param(None, id="no-real-data")]


APSTAR_FILES = _listed("apogee/apStar", "apStar-*.fits")
ASPCAP_FILES = _listed("apogee/aspcapStar", "aspcapStar-*.fits")
APVISIT_FILES = _listed("apogee/apVisit", "apVisit-*.fits")


def _raw(path: Path) -> tuple[fits.Header, list[np.ndarray]]:
    """Primary header and image HDUs 1-3 read directly with astropy (2-D rows)."""
    with fits.open(path) as hdul:
        return hdul[0].header.copy(), [np.atleast_2d(np.array(hdul[i].data)) for i in (1, 2, 3)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- apStar
@pytest.mark.parametrize("filename", APSTAR_FILES)
def test_apstar_rows_follow_nvisits_and_header_snr(real_data, filename):
    path = real_data / "apogee" / "apStar" / filename
    header, (flux, _, _) = _raw(path)
    nvisits = header["NVISITS"]
    assert flux.shape[0] == (1 if nvisits == 1 else nvisits + 2)

    combined = le.read(path)
    visits = le.read(path, rows="visits")
    everything = le.read(path, rows="all")
    apogee_id = header["OBJID"].strip()
    assert combined.ids.tolist() == [apogee_id]
    assert combined.info["snr"][0] == pytest.approx(header["SNR"])
    assert visits.n_spectra == nvisits
    assert visits.ids.tolist() == [f"{apogee_id}/visit{k}" for k in range(1, nvisits + 1)]
    assert visits.info["VISIT"].tolist() == list(range(1, nvisits + 1))
    np.testing.assert_allclose(visits.info["snr"], [header[f"SNRVIS{k}"] for k in range(1, nvisits + 1)])
    assert everything.n_spectra == flux.shape[0]
    assert set(everything.info["NVISITS"]) == {nvisits}
    assert set(everything.info["APOGEE_ID"]) == {apogee_id}
    if nvisits > 1:
        assert everything.ids[1] == f"{apogee_id}/global"
        np.testing.assert_array_equal(le.read(path, rows="global").flux[0], flux[1])
        np.testing.assert_array_equal(visits.flux, flux[2:])
    else:  # the single row is the visit and the combination at once
        np.testing.assert_array_equal(visits.flux, combined.flux)


@pytest.mark.parametrize("filename", APSTAR_FILES)
def test_apstar_flux_grid_and_mask_match_the_file(real_data, filename):
    path = real_data / "apogee" / "apStar" / filename
    header, (flux, error, bitmask) = _raw(path)
    spec = le.read(path, rows="all")
    assert spec.n_pixels == 8575
    np.testing.assert_array_equal(spec.wavelength, apogee_wavelength())
    assert 15100 < spec.wavelength[0] < 15110 and 16990 < spec.wavelength[-1] < 17000
    np.testing.assert_array_equal(spec.flux, flux.astype(np.float32))
    np.testing.assert_array_equal(spec.info["pixel_bitmask"], bitmask)
    assert spec.info["pixel_bitmask"].shape == spec.flux.shape
    gaps = (flux == 0) | (error >= 1e9)
    expected = gaps | bad_pixel_mask(bitmask, DEFAULT_BAD_BITS)
    np.testing.assert_array_equal(spec.mask, expected)
    assert np.all(np.isinf(spec.error[error >= 1e9]))  # the 1e10 sentinel means "no information"
    assert np.all(spec.ivar[spec.mask] == 0)
    # the chip gaps (about 1060 px) are masked in every row, and real flux remains
    assert np.all(gaps.sum(axis=1) > 800)
    good = ~spec.mask
    assert np.all(good.sum(axis=1) > 4000)
    assert np.all(np.nanmedian(np.where(good, spec.flux, np.nan), axis=1) > 0)
    assert spec.meta["survey"] == "APOGEE" and spec.meta["release"] == "dr13"
    assert spec.meta["header"]["OBJID"] == header["OBJID"]
    assert set(spec.info["file"]) == {filename}


@realdata
def test_apstar_bad_bits_option_changes_the_mask(real_data):
    path = real_data / "apogee" / "apStar" / "apStar-r6-2M03442721+3220288.fits"
    default = le.read(path)
    only_badpix = le.read(path, bad_bits=["BADPIX"])
    assert only_badpix.mask.sum() < default.mask.sum()
    bitmask = default.info["pixel_bitmask"]
    assert np.all(only_badpix.mask[(bitmask & 1) != 0])


# ---------------------------------------------------------------------------- aspcapStar
@pytest.mark.parametrize("filename", ASPCAP_FILES)
def test_aspcapstar_labels_equal_the_results_table(real_data, filename):
    path = real_data / "apogee" / "aspcapStar" / filename
    with fits.open(path) as hdul:
        row = hdul[4].data[0]
        param, x_h, flag = np.array(row["PARAM"], float), np.array(row["X_H"], float), int(row["ASPCAPFLAG"])
        apogee_id, snr = row["APOGEE_ID"].strip(), hdul[0].header["SNR"]
    param[param <= -9000] = np.nan
    x_h[x_h <= -9000] = np.nan
    spec = le.read(path)
    # ASPCAP PARAM order: TEFF, LOGG, log vmicro, [M/H], [C/M], [N/M], [alpha/M], ...
    for label, index in {"TEFF": 0, "LOGG": 1, "M_H": 3, "C_M": 4, "N_M": 5, "ALPHA_M": 6}.items():
        np.testing.assert_array_equal(spec.info[label], param[index:index + 1], err_msg=label)
    for index, element in enumerate(ASPCAP_ELEMENTS):  # DR13 X_H order
        np.testing.assert_array_equal(spec.info[f"{element.upper()}_H"], x_h[index:index + 1], err_msg=element)
    assert spec.info["ASPCAPFLAG"][0] == flag
    assert spec.ids.tolist() == [apogee_id]
    assert spec.info["snr"][0] == pytest.approx(snr)
    assert spec.meta["release"] == "dr13"
    teff, logg = spec.info["TEFF"][0], spec.info["LOGG"][0]
    assert np.isnan(teff) or 2500 < teff < 8000  # physically sane where ASPCAP reported a value
    assert np.isnan(logg) or -0.5 < logg < 5.5


@pytest.mark.parametrize("filename", ASPCAP_FILES)
def test_aspcapstar_flux_is_normalised_and_model_is_kept(real_data, filename):
    path = real_data / "apogee" / "aspcapStar" / filename
    _, (flux, error, model) = _raw(path)
    spec = le.read(path)
    np.testing.assert_array_equal(spec.wavelength, apogee_wavelength())
    np.testing.assert_array_equal(spec.mask, (flux == 0) | (error <= 0))
    assert spec.mask.sum() >= 8575 - 7514  # at least the chip gaps
    good = spec.flux[~spec.mask]
    assert 0.85 < np.median(good) < 1.05
    np.testing.assert_array_equal(spec.info["model_flux"], model.astype(np.float32))
    fitted = le.read(path, what="model")
    np.testing.assert_array_equal(fitted.flux, model.astype(np.float32))
    np.testing.assert_array_equal(fitted.mask, model == 0)
    assert not fitted.has_errors
    assert 0.85 < np.median(fitted.flux[~fitted.mask]) < 1.05
    # the model follows the observed spectrum where both are good
    both = ~spec.mask & ~fitted.mask
    assert np.median(np.abs(spec.flux[both] - fitted.flux[both])) < 0.1


@realdata
def test_aspcapstar_giant_has_consistent_metallicities(real_data):
    path = real_data / "apogee" / "aspcapStar" / "aspcapStar-r6-l30e.2-2M17334253-1654573.fits"
    info = le.read(path).info
    assert info["TEFF"][0] == pytest.approx(3788.4, abs=0.1)
    assert abs(info["FE_H"][0] - info["M_H"][0]) < 0.1  # [Fe/H] tracks the overall [M/H]
    assert 0 < info["TEFF_ERR"][0] < 200 and 0 < info["FE_H_ERR"][0] < 0.2
    assert np.isnan(info["CE_H"][0])  # -9999 in the file


# ---------------------------------------------------------------------------- apVisit
@pytest.mark.parametrize("filename", APVISIT_FILES)
def test_apvisit_chips_are_joined_in_increasing_wavelength(real_data, filename):
    path = real_data / "apogee" / "apVisit" / filename
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        flux, error, wave = (np.array(hdul[i].data) for i in (1, 2, 4))
    spec = le.read(path)
    assert spec.n_pixels == 3 * 4096 == 12288
    assert np.all(np.diff(spec.wavelength) > 0)
    assert 15130 < spec.wavelength[0] < 15150 and 16950 < spec.wavelength[-1] < 16960
    order = np.argsort(wave.ravel())
    np.testing.assert_array_equal(spec.flux[0], flux.ravel()[order].astype(np.float32))
    np.testing.assert_array_equal(spec.error[0], error.ravel()[order].astype(np.float32))
    # the bluest pixel is the last one of the third chip in the file
    assert spec.flux[0, 0] == np.float32(flux[2, -1])
    assert spec.info["snr"][0] == pytest.approx(header["SNR"])
    assert spec.ids[0].startswith(header["OBJID"].strip() + "/")
    assert spec.info["pixel_bitmask"].shape == spec.flux.shape
    assert 0.9 < np.mean(~spec.mask) < 1.0  # a few percent of pixels flagged


# ---------------------------------------------------------------------------- allStar
@pytest.fixture(scope="module")
def allstar(real_data) -> pd.DataFrame:
    """The real DR12 allStar rows, read once for the tests below (a fresh copy each)."""
    return le.read(real_data / ALLSTAR)


@realdata
def test_allstar_rows_labels_and_missing_values(allstar):
    df = allstar.copy()
    assert isinstance(df, pd.DataFrame)
    assert len(df) == 3244
    assert df["TEFF"].notna().sum() == 773
    floats = df.select_dtypes("number").select_dtypes(exclude="integer")
    assert not (floats <= -9000).any().any()  # -9999 and -9999.99 are NaN
    assert not (df.filter(like="_ERR") < 0).any().any()  # DR12 wrote -1 for "no error"
    assert {"M_H", "ALPHA_M", "FE_H", "MG_FE", "AL_FE", "MG_H"} <= set(df.columns)
    assert "PARAM_M_H" not in df.columns and df.attrs["renamed"]["PARAM_M_H"] == "M_H"
    np.testing.assert_allclose(df["MG_FE"], df["MG_H"] - df["FE_H"], equal_nan=True)
    assert set(df["TELESCOPE"]) == {"apo1m", "apo25m"}
    assert df["APOGEE_ID"].str.len().eq(18).all()
    assert df.attrs["release"] == "dr12" and df.attrs["source"].endswith("Hipparcos.fits.gz")
    with_labels = df[df["TEFF"].notna()]
    assert with_labels["TEFF"].between(3500, 7500).all() and with_labels["LOGG"].between(-0.5, 4.5).all()
    assert df["SNR"].between(14, 4500).all()


@realdata
def test_allstar_dr12_arrays_explode_to_the_official_named_columns(real_data, allstar, tmp_path):
    """Without the named columns, PARAM and ELEM (with DR12's [X/M] convention) rebuild them."""
    with fits.open(real_data / ALLSTAR) as hdul:
        table = hdul[1].data
        named = [f"{e.upper()}_H" for e in ("C", "N", "O", "Na", "Mg", "Al", "Si", "S", "K", "Ca", "Ti", "V",
                                            "Mn", "Fe", "Ni")]
        drop = {"TEFF", "LOGG", "PARAM_M_H", "PARAM_ALPHA_M", *named, *(n + "_ERR" for n in named)}
        keep = [c for c in table.columns if c.name not in drop]
        trimmed = fits.BinTableHDU.from_columns(fits.ColDefs(keep), nrows=len(table))
        for column in keep:
            trimmed.data[column.name] = table[column.name]
        fits.HDUList([fits.PrimaryHDU(), trimmed]).writeto(tmp_path / "allStar-v603-trimmed.fits")
    original, rebuilt = allstar, le.read(tmp_path / "allStar-v603-trimmed.fits")
    assert rebuilt.attrs["release"] == "dr12"
    for column in ["TEFF", "LOGG", "M_H", "ALPHA_M", *named, *(n + "_ERR" for n in named), "MG_FE"]:
        np.testing.assert_allclose(rebuilt[column], original[column], rtol=1e-6, atol=1e-6, equal_nan=True,
                                   err_msg=column)


def _write_table(path: Path, columns: list[fits.Column], *extra_hdus) -> Path:
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns), *extra_hdus]).writeto(path)
    return path


def test_allstar_dr17_naming(tmp_path):
    path = _write_table(tmp_path / "allStar-dr17-synspec_rev1.fits", [
        fits.Column("APOGEE_ID", "20A", array=["  2M00000002+7417074", "2M00000019-1924498 "]),
        fits.Column("TELESCOPE", "8A", array=["apo25m", "lco25m"]),
        fits.Column("SNR", "E", array=[120.0, 45.0]),
        fits.Column("TEFF", "E", array=[4800.0, -9999.99]),
        fits.Column("LOGG", "E", array=[2.5, -9999.99]),
        fits.Column("M_H", "E", array=[-0.30, -9999.99]),
        fits.Column("ALPHA_M", "E", array=[0.20, -9999.99]),
        fits.Column("FE_H", "E", array=[-0.32, -9999.99]),
        fits.Column("FE_H_ERR", "E", array=[0.01, -9999.99]),
        fits.Column("MG_FE", "E", array=[0.25, -9999.99]),
        fits.Column("MG_FE_ERR", "E", array=[0.02, -9999.99]),
        fits.Column("CE_FE", "E", array=[-9999.99, 0.10]),
        fits.Column("ASPCAPFLAG", "K", array=[0, 2 ** 23]),
    ])
    df = le.read(path)
    assert detect_format(path) == "allstar"
    assert df.attrs["release"] == "dr17"
    assert df["APOGEE_ID"].tolist() == ["2M00000002+7417074", "2M00000019-1924498"]
    assert df["TEFF"].tolist()[0] == pytest.approx(4800.0) and np.isnan(df["TEFF"][1])
    assert df["MG_H"][0] == pytest.approx(-0.07, abs=1e-6)  # [Mg/H] = [Mg/Fe] + [Fe/H]
    assert df.attrs["derived"]["MG_H"] == "MG_FE + FE_H"
    assert np.isnan(df["CE_H"]).all()  # missing [Fe/H] or [Ce/Fe] stays missing
    assert np.isnan(df["MG_FE_ERR"][1]) and df["ASPCAPFLAG"].tolist() == [0, 2 ** 23]
    values, names = le.label_array(df, ["TEFF", "LOGG", "[Fe/H]", "[Mg/Fe]"])
    assert names == ["TEFF", "LOGG", "FE_H", "MG_FE"] and np.isnan(values[1]).all()


def test_allstar_element_symbol_table_sets_the_array_order(tmp_path):
    """DR13+ allStar files carry ELEM_SYMBOL in a later HDU; X_H arrays are exploded in that order."""
    symbols = fits.BinTableHDU.from_columns([fits.Column("ELEM_SYMBOL", "6A", dim="(2,3)",
                                                         array=np.array([["C", "Mg", "Fe"]]))])
    path = _write_table(tmp_path / "allStar-custom.fits", [
        fits.Column("APOGEE_ID", "18A", array=["2M1", "2M2"]),
        fits.Column("TEFF", "E", array=[4700.0, 5100.0]),
        fits.Column("X_H", "3E", array=[[0.1, 0.2, -0.1], [-9999.0, 0.0, -0.5]]),
    ], symbols)
    df = le.read(path)
    assert df["C_H"][0] == pytest.approx(0.1) and np.isnan(df["C_H"][1])
    assert df["MG_FE"].tolist() == pytest.approx([0.3, 0.5])
    assert df.attrs["dropped_columns"] == ["X_H"]


# ---------------------------------------------------------------------------- entry points
@pytest.mark.parametrize("relative, expected", [
    ("apogee/apStar/apStar-r6-2M00452143+1634446.fits", "apstar"),
    ("apogee/aspcapStar/aspcapStar-r6-l30e.2-2M00452143+1634446.fits", "aspcapstar"),
    ("apogee/apVisit/apVisit-r13-5095-55844-128.fits", "apvisit"),
    (ALLSTAR, "allstar"),
], ids=["apstar", "aspcapstar", "apvisit", "allstar"])
@realdata
def test_read_detects_each_format_and_forcing_it_agrees(real_data, relative, expected):
    path = real_data / relative
    before = _sha256(path)
    assert detect_format(path) == expected
    detected, forced = le.read(path), le.read(path, format=expected)
    if isinstance(detected, Spectra):
        assert detected.meta["format"] == expected
        np.testing.assert_array_equal(detected.flux, forced.flux)
        assert detected.ids.tolist() == forced.ids.tolist()
    else:
        assert detected.attrs["format"] == expected
        pd.testing.assert_frame_equal(detected, forced)
    assert _sha256(path) == before  # reading never modifies the input file


@realdata
def test_file_object_and_hdulist_give_the_same_spectra(real_data):
    path = real_data / "apogee" / "apStar" / "apStar-r6-2M06154934-0100415.fits"
    from_path = le.read(path, rows="all")
    with open(path, "rb") as handle:
        from_handle = le.read(handle, rows="all")
    with fits.open(path) as hdul:
        from_hdul = le.read(hdul, rows="all")
    for other in (from_handle, from_hdul):
        np.testing.assert_array_equal(other.flux, from_path.flux)
        np.testing.assert_array_equal(other.mask, from_path.mask)
        assert other.ids.tolist() == from_path.ids.tolist()
    assert from_handle.meta["source"].endswith(path.name)


@realdata
def test_a_list_and_a_folder_of_apstar_files_concatenate(real_data):
    folder = real_data / "apogee" / "apStar"
    paths = sorted(folder.glob("apStar-*.fits"))
    stacked = le.read(paths)
    assert stacked.n_spectra == len(paths)
    assert stacked.shared_grid and stacked.n_pixels == 8575
    assert stacked.ids.tolist() == [p.stem.split("-", 2)[-1] for p in paths]
    assert stacked.info["file"].tolist() == [p.name for p in paths]
    np.testing.assert_allclose(stacked.info["snr"], [fits.getheader(p)["SNR"] for p in paths])
    assert stacked.meta["source"] == [str(p) for p in paths]
    from_folder = le.read(folder)
    np.testing.assert_array_equal(from_folder.flux, stacked.flux)
    visits = le.read(paths, rows="visits")
    assert visits.n_spectra == sum(fits.getheader(p)["NVISITS"] for p in paths)


@realdata
def test_apvisit_files_of_different_nights_keep_their_own_grids(real_data):
    paths = sorted((real_data / "apogee" / "apVisit").glob("apVisit-*.fits"))
    stacked = le.read(paths)
    assert stacked.wavelength.shape == (len(paths), 12288)
    assert not np.array_equal(stacked.wavelength[0], stacked.wavelength[1])
