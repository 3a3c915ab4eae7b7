"""The LAMOST reader on every real file (DR1, DR5-DR9 and DR13 layouts), on edited copies and on bad input."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import labelexplorer as le
from labelexplorer.exceptions import FileFormatError
from labelexplorer.io.lamost import (LAMOST_FRAME_PIXELS, LAMOST_LOG_START, LAMOST_LOG_STEP, air_to_vacuum,
                                     lamost_wavelength)
from labelexplorer.io.registry import detect_format

pytestmark = pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")

# Names of the real files, listed at collection time with the real_data fixture's rule, to give
# each file its own test id; the tests themselves reach the files through real_data.
_LISTED = Path(os.environ.get("LABELEXPLORER_REAL_DATA")
               or Path(__file__).resolve().parents[2].parent / "shared" / "data")
LAMOST_FILES = sorted(str(p.relative_to(_LISTED / "lamost")) for p in (_LISTED / "lamost").glob("*/*.fits*"))
LAMOST_FILES = LAMOST_FILES or ["(no real data)"]
DR1_FILE = "lamost_dr1/spec-55862-B6212_sp06-117.fits"  # 1134 pixels with ANDMASK bits set
COADD_FILE = "cmost/spec-55859-F5902_sp01-001.fits.gz"  # DR9 COADD table
PRIMARY_FILE = "cmost/spec-55859-F5902_sp01-001_dr7.fits.gz"  # the same observation in the DR7 layout


def _raw(path: Path) -> dict:
    """Flux, ivar, andmask and header straight from the file, independently of the reader."""
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        if "COADD" in hdul:
            row = hdul["COADD"].data[0]
            return dict(flux=row["FLUX"].astype(float), ivar=row["IVAR"].astype(float),
                        andmask=row["ANDMASK"].astype(int), header=header)
        data = hdul[0].data.astype(float)
        return dict(flux=data[0], ivar=data[1], andmask=data[3].astype(int), header=header)


@pytest.mark.realdata
@pytest.mark.parametrize("relative", LAMOST_FILES)
def test_every_real_file_is_read_with_its_flux_mask_grid_and_header_values(real_data, relative):
    path = real_data / "lamost" / relative
    assert detect_format(path) == "lamost"
    spec = le.read(path)
    raw = _raw(path)
    header = raw["header"]
    n_file = raw["flux"].size
    first = int(round((header["COEFF0"] - LAMOST_LOG_START) / LAMOST_LOG_STEP))
    window = slice(first, first + n_file)

    assert spec.n_spectra == 1 and spec.n_pixels == LAMOST_FRAME_PIXELS and spec.shared_grid
    np.testing.assert_allclose(spec.wavelength, lamost_wavelength(), rtol=0)
    header_grid = header["COEFF0"] + header["COEFF1"] * np.arange(n_file)
    np.testing.assert_allclose(np.log10(spec.wavelength[window]), header_grid, atol=1e-9)
    # ivar 0, ANDMASK bits and the zero-flux padding at the red end are bad, and so are frame
    # pixels the file lacks; everything else is kept
    expected_bad = np.ones(LAMOST_FRAME_PIXELS, dtype=bool)
    expected_bad[window] = (raw["ivar"] <= 0) | (raw["andmask"] != 0) | (raw["flux"] == 0)
    np.testing.assert_array_equal(spec.mask[0], expected_bad)
    good = ~expected_bad
    np.testing.assert_allclose(spec.flux[0, good], raw["flux"][(good[window])], rtol=1e-6)
    np.testing.assert_allclose(spec.error[0, good], 1 / np.sqrt(raw["ivar"][good[window]]), rtol=1e-5)
    assert good.sum() > 0.4 * n_file

    expected_id = str(header["OBSID"]) if "OBSID" in header else header["FILENAME"].removesuffix(".fits")
    assert spec.ids.tolist() == [expected_id]
    snr_g = header.get("SNRG", header.get("SN_G"))
    assert spec.info["snr"][0] == pytest.approx(snr_g) and spec.info["SNRG"][0] == pytest.approx(snr_g)
    assert spec.info["RA"][0] == pytest.approx(header["RA"]) and spec.info["DEC"][0] == pytest.approx(header["DEC"])
    assert spec.info["Z"][0] == pytest.approx(header["Z"])
    assert spec.info["CLASS"][0] == header["CLASS"].strip() and spec.info["SUBCLASS"][0] == header["SUBCLASS"].strip()
    assert spec.meta["survey"] == "LAMOST" and spec.meta["source"] == str(path)
    release = header["DATA_V"].removeprefix("LAMOST ") if "DATA_V" in header else "DR1"
    assert spec.meta["release"] == release == spec.info["release"][0]
    assert header["VACUUM"] and spec.meta["air_or_vacuum"] == "vacuum (VACUUM keyword)"


@pytest.mark.realdata
def test_dr1_wavelengths_come_from_the_header_not_the_subcontinuum_row(real_data):
    path = real_data / "lamost" / DR1_FILE
    with fits.open(path) as hdul:
        assert "Subcontinuum" in hdul[0].header["EXTEN0"]
        third_row = hdul[0].data[2]
    spec = le.read(path, frame=False)
    assert spec.n_pixels == third_row.size == 3904
    assert spec.wavelength[0] == pytest.approx(10 ** 3.5682)
    assert spec.wavelength[-1] == pytest.approx(10 ** (3.5682 + 3903e-4))
    assert np.median(third_row) == pytest.approx(1.0, abs=0.01)  # a normalised flux, not Angstroms
    assert spec.meta["grid"].startswith("native") and spec.meta["release"] == "DR1"


@pytest.mark.realdata
def test_the_same_observation_reads_identically_from_the_dr7_array_and_the_dr9_table(real_data):
    table = le.read(real_data / "lamost" / COADD_FILE)
    array = le.read(real_data / "lamost" / PRIMARY_FILE)
    assert table.meta["layout"].startswith("COADD") and array.meta["layout"].startswith("primary")
    assert table.ids.tolist() == array.ids.tolist() == ["101001"]
    np.testing.assert_array_equal(table.flux, array.flux)
    np.testing.assert_array_equal(table.mask, array.mask)
    assert (table.meta["release"], array.meta["release"]) == ("DR9", "DR7")


@pytest.mark.realdata
def test_a_list_of_files_of_every_release_stacks_on_one_grid(real_data):
    paths = [real_data / "lamost" / relative for relative in LAMOST_FILES]
    spec = le.read(paths)
    assert spec.n_spectra == len(paths) == 60 and spec.shared_grid and spec.n_pixels == LAMOST_FRAME_PIXELS
    assert set(spec.info["release"]) == {"DR1", "DR5", "DR6", "DR7", "DR9", "DR13 Q1"}
    assert spec.info["file"].tolist() == [Path(p).name for p in LAMOST_FILES]
    assert set(spec.info["CLASS"]) == {"STAR", "QSO"}
    assert np.nanmax(spec.info["Z"]) == pytest.approx(0.308259)  # the quasar


@pytest.mark.realdata
def test_a_file_object_and_an_hdulist_read_like_the_path(real_data):
    path = real_data / "lamost" / DR1_FILE
    with open(path, "rb") as handle:
        from_handle = le.read(handle)
    with fits.open(path) as hdul:
        from_hdul = le.read(hdul)
    expected = le.read(path)
    np.testing.assert_array_equal(from_handle.flux, expected.flux)
    np.testing.assert_array_equal(from_hdul.mask, expected.mask)


# ---------------------------------------------------------------------------- built in memory
def _dr7_hdulist(n: int = 3909, **keywords) -> fits.HDUList:
    wavelength = lamost_wavelength(n)
    rows = np.stack([np.full(n, 50.0), np.full(n, 4.0), wavelength, np.zeros(n), np.zeros(n)]).astype(np.float32)
    hdu = fits.PrimaryHDU(rows)
    hdu.header.update(TELESCOP="LAMOST", DATA_V="LAMOST DR7", OBSID=42, COEFF0=LAMOST_LOG_START,
                      COEFF1=LAMOST_LOG_STEP, EXTEN0="Flux, Inverse, Wavelength, Andmask, Ormask", **keywords)
    return fits.HDUList([hdu])


def test_andmask_bits_mask_pixels_and_mask_bits_chooses_which():
    hdul = _dr7_hdulist()
    hdul[0].data[3, 100:110] = 2  # BADPROFILE
    hdul[0].data[3, 200:205] = 16  # BADCENTER
    hdul[0].data[1, 300] = 0.0  # no information
    hdul[0].data[0, 400] = 0.0  # zero-flux padding
    masked = {bits: np.flatnonzero(le.read(hdul, mask_bits=bits).mask[0]).tolist() for bits in (None, 2, 0)}
    assert masked[None] == list(range(100, 110)) + list(range(200, 205)) + [300, 400]
    assert masked[2] == list(range(100, 110)) + [300, 400]
    assert masked[0] == [300, 400]


def test_air_wavelengths_are_converted_to_vacuum_and_the_step_recorded():
    spec = le.read(_dr7_hdulist(VACUUM=False))
    np.testing.assert_allclose(spec.wavelength, air_to_vacuum(lamost_wavelength()))
    assert spec.wavelength[0] - lamost_wavelength()[0] == pytest.approx(1.05, abs=0.03)  # ~1 Angstrom at 3700
    assert any("air to vacuum" in step for step in spec.meta["history"])
    assert spec.meta["air_or_vacuum"].startswith("air")


def test_files_on_different_grids_stack_with_one_grid_per_spectrum_and_resample_onto_one():
    from labelexplorer.preprocess.resample import resample

    spec = le.read([_dr7_hdulist(VACUUM=True), _dr7_hdulist(VACUUM=False)])
    assert spec.wavelength.shape == (2, LAMOST_FRAME_PIXELS)
    np.testing.assert_allclose(spec.wavelength[1], air_to_vacuum(spec.wavelength[0]))
    shared = resample(spec, lamost_wavelength())
    assert shared.shared_grid and np.all(shared.flux[~shared.mask] == 50.0)
    assert shared.mask[1, 0] and not shared.mask[1, -1]  # the air grid starts ~1 A redder once in vacuum


@pytest.mark.parametrize(("air", "vacuum"), [(6562.80, 6564.61), (3933.66, 3934.78), (8542.09, 8544.44)],
                         ids=["H-alpha", "CaII-K", "CaII-8542"])
def test_air_to_vacuum_matches_tabulated_lines(air, vacuum):
    assert float(air_to_vacuum(air)) == pytest.approx(vacuum, abs=0.01)


def test_header_labels_are_read_and_minus_9999_becomes_nan():
    spec = le.read(_dr7_hdulist(TEFF=5012.0, LOGG=-9999.0, FEH=-0.31, SNRG=-9999.0))
    assert spec.info["TEFF"][0] == 5012.0 and spec.info["FE_H"][0] == pytest.approx(-0.31)
    assert np.isnan(spec.info["LOGG"][0]) and np.isnan(spec.info["snr"][0])
    assert "TEFF" not in le.read(_dr7_hdulist()).info  # no labels in the header: none invented


def test_a_grid_off_the_frame_keeps_its_own_pixels():
    hdul = _dr7_hdulist(n=100)
    hdul[0].header["COEFF0"] = LAMOST_LOG_START + 0.5 * LAMOST_LOG_STEP  # half a pixel off
    hdul[0].data[2] = 10 ** (hdul[0].header["COEFF0"] + LAMOST_LOG_STEP * np.arange(100))
    spec = le.read(hdul)
    assert spec.n_pixels == 100 and spec.meta["grid"].startswith("native")


# ---------------------------------------------------------------------------- bad input
def _truncated(tmp_path, real_data):
    data = (real_data / "lamost" / DR1_FILE).read_bytes()
    target = tmp_path / "spec-truncated.fits"
    target.write_bytes(data[: len(data) // 2])
    return target


def _gzip_cut(keep):
    def make(tmp_path, real_data):
        data = gzip.decompress((real_data / "lamost" / COADD_FILE).read_bytes())
        primary = len(fits.Header.fromstring(data.decode("ascii", "replace")[:28800]).tostring())
        target = tmp_path / "spec-truncated.fits.gz"
        target.write_bytes(gzip.compress(data[: keep(primary, len(data))]))
        return target
    return make


def _not_fits(tmp_path, real_data):
    target = tmp_path / "spec-not-fits.fits"
    target.write_text("flux,ivar\n1,2\n")
    return target


def _one_row(tmp_path, real_data):
    hdu = fits.PrimaryHDU(np.ones((1, 50), np.float32))
    hdu.header.update(TELESCOP="LAMOST", COEFF0=LAMOST_LOG_START, COEFF1=LAMOST_LOG_STEP)
    target = tmp_path / "spec-one-row.fits"
    hdu.writeto(target)
    return target


def _table_without_ivar(tmp_path, real_data):
    columns = [fits.Column(name="FLUX", format="10E", array=np.ones((1, 10), np.float32))]
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "LAMOST"
    target = tmp_path / "spec-no-ivar.fits"
    fits.HDUList([primary, fits.BinTableHDU.from_columns(columns, name="COADD")]).writeto(target)
    return target


def _scrambled_wavelengths(tmp_path, real_data):
    hdul = _dr7_hdulist(n=50)
    hdul[0].data[2] = hdul[0].data[2][::-1]
    target = tmp_path / "spec-scrambled.fits"
    hdul.writeto(target)
    return target


def _no_grid(tmp_path, real_data):
    hdu = fits.PrimaryHDU(np.ones((5, 50), np.float32))
    hdu.header.update(TELESCOP="LAMOST", EXTEN0="Flux Inverse Subcontinuum Andmask Ormask")
    target = tmp_path / "spec-no-grid.fits"
    hdu.writeto(target)
    return target


@pytest.mark.realdata
@pytest.mark.parametrize(("make", "expected"), [
    (_truncated, "truncated"),
    (_gzip_cut(lambda primary, size: primary), "expected a LAMOST low-resolution spectrum"),
    (_gzip_cut(lambda primary, size: size // 2), "HDU COADD"),
    (_not_fits, "not a FITS file"),
    (_one_row, "expected (5, n_pixels)"),
    (_table_without_ivar, "lacks IVAR"),
    (_no_grid, "no wavelength row/column and no COEFF0/COEFF1"),
    (_scrambled_wavelengths, "not finite and increasing"),
], ids=["truncated-fits", "gzip-without-table", "gzip-with-truncated-table", "not-fits", "one-row-array",
        "table-without-ivar", "no-wavelength-grid", "decreasing-wavelengths"])
def test_bad_lamost_files_raise_file_format_errors_naming_file_and_expectation(tmp_path, real_data, make, expected):
    path = make(tmp_path, real_data)
    before = path.read_bytes()
    with pytest.raises(FileFormatError) as error:
        le.read(path, format="lamost")
    assert str(path) in str(error.value) and expected in str(error.value)
    assert path.read_bytes() == before
