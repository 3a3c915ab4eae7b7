"""Bad input to the APOGEE readers and to ``labelexplorer.read``: clear errors, untouched files.

Every case writes its own file under ``tmp_path`` (copies of real files are cut or edited
there, never in the shared folder) and checks the exception class, that the message names
the file and says what was expected, and that reading left the file byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import labelexplorer as le
from labelexplorer.exceptions import (FileFormatError, LabelError, LabelExplorerError, ShapeError, SpectrumError,
                                      UnknownNameError)
from labelexplorer.labels import canonical_label

APSTAR = "apogee/apStar/apStar-r6-2M00452143+1634446.fits"  # NVISITS=3: 5 rows
ASPCAP = "apogee/aspcapStar/aspcapStar-r6-l30e.2-2M00452143+1634446.fits"
APVISIT = "apogee/apVisit/apVisit-r13-5095-55844-128.fits"
ALLSTAR = "catalogs/APOGEE-allStar-v603-Hipparcos.fits.gz"


# ---------------------------------------------------------------------------- file makers
def _real(request, relative: str) -> Path:
    return request.getfixturevalue("real_data") / relative


def _copy(relative: str):
    def make(tmp_path, request):
        return Path(shutil.copy(_real(request, relative), tmp_path / Path(relative).name))
    return make


def _cut(relative: str, keep):
    """The first *keep* bytes (an int, or a function of the size) of a real file."""
    def make(tmp_path, request):
        data = _real(request, relative).read_bytes()
        target = tmp_path / Path(relative).name
        target.write_bytes(data[:keep(len(data)) if callable(keep) else keep])
        return target
    return make


def _edited(relative: str, edit):
    """A real file with its HDUs changed by *edit(hdul)* and written to tmp_path."""
    def make(tmp_path, request):
        target = tmp_path / Path(relative).name
        with fits.open(_real(request, relative)) as hdul:
            hdul = fits.HDUList([hdu.copy() for hdu in hdul])
        edit(hdul)
        hdul.writeto(target, output_verify="silentfix")
        return target
    return make


def _apstar_like(n_pixels: int = 8575, nvisits: int = 2, n_rows: int | None = None, crval1: float = 4.179):
    """A synthetic apStar-layout file (flux, error, int16 bitmask, sky)."""
    def make(tmp_path, request):
        rows = n_rows or (1 if nvisits == 1 else nvisits + 2)
        primary = fits.PrimaryHDU()
        primary.header.update(OBJID="2M00000000+0000000", NVISITS=nvisits, SNR=50.0, CRVAL1=crval1,
                              CDELT1=6e-6, CRPIX1=1)
        ones = np.ones((rows, n_pixels), np.float32)
        target = tmp_path / "apStar-synthetic.fits"
        fits.HDUList([primary, fits.ImageHDU(100 * ones), fits.ImageHDU(ones),
                      fits.ImageHDU(np.zeros((rows, n_pixels), np.int16)), fits.ImageHDU(ones)]).writeto(target)
        return target
    return make


def _text_file(content: str):
    def make(tmp_path, request):
        target = tmp_path / "apStar-notes.fits"
        target.write_text(content)
        return target
    return make


def _lone_primary(tmp_path, request):
    target = tmp_path / "lone-primary.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros(10, np.float32))]).writeto(target)
    return target


def _missing(tmp_path, request):
    return tmp_path / "apStar-r6-2M99999999+9999999.fits"


def _set(index: int, where, value):
    def edit(hdul):
        data = np.array(hdul[index].data)
        data[where] = value
        hdul[index].data = data
    return edit


def _same_wavelengths(hdul):
    hdul[4].data = np.tile(np.linspace(15200.0, 15800.0, 4096), (3, 1))  # the chips overlap


# ---------------------------------------------------------------------------- the cases
CASES = [
    # (make, read options, exception class, fragments the message must hold besides the file name)
    pytest.param(_cut(APSTAR, 2880), {}, FileFormatError, ["truncated"], id="truncated-in-primary-header"),
    pytest.param(_cut(APSTAR, 200_000), {"format": "apstar"}, FileFormatError, ["truncated", "complete file"],
                 id="truncated-in-flux-hdu-forced"),
    pytest.param(_cut(APSTAR, 200_000), {}, FileFormatError, ["not recognised", "format="],
                 id="truncated-in-flux-hdu-detected"),
    pytest.param(_cut(APSTAR, 500_000), {}, FileFormatError, ["truncated", "complete file"],
                 id="truncated-in-sky-hdu"),
    pytest.param(_cut(APSTAR, lambda size: size - 3000), {}, FileFormatError, ["truncated", "complete file"],
                 id="truncated-last-table"),
    pytest.param(_cut(ALLSTAR, lambda size: size // 2), {"format": "allstar"}, FileFormatError,
                 ["truncated gzip", "complete file"], id="truncated-gzip-allstar"),
    pytest.param(_text_file("flux,error\n1,2\n"), {}, FileFormatError, ["not a FITS file", "SIMPLE"],
                 id="not-fits"),
    pytest.param(_text_file(""), {"format": "apstar"}, FileFormatError, ["not a FITS file"], id="empty-file"),
    pytest.param(_missing, {}, FileFormatError, ["no such file"], id="missing-file"),
    pytest.param(_copy(ASPCAP), {"format": "apstar"}, FileFormatError,
                 ["not an apStar file", "HDU3 integer pixel bitmask"], id="aspcapstar-forced-as-apstar"),
    pytest.param(_copy(APSTAR), {"format": "aspcapstar"}, FileFormatError,
                 ["not an aspcapStar file", "HDU4 a table with PARAM"], id="apstar-forced-as-aspcapstar"),
    pytest.param(_copy(APSTAR), {"format": "apvisit"}, FileFormatError,
                 ["not an apVisit file", "HDU4 wavelength"], id="apstar-forced-as-apvisit"),
    pytest.param(_copy(APSTAR), {"format": "allstar"}, FileFormatError,
                 ["not an allStar catalog", "APOGEE_ID"], id="apstar-forced-as-allstar"),
    pytest.param(_copy(APVISIT), {"format": "apstar"}, FileFormatError, ["not an apStar file"],
                 id="apvisit-forced-as-apstar"),
    pytest.param(_lone_primary, {"format": "apstar"}, FileFormatError, ["not an apStar file", "1 HDUs"],
                 id="lone-primary-hdu-forced"),
    pytest.param(_lone_primary, {}, FileFormatError, ["not recognised", "apstar", "format="],
                 id="lone-primary-hdu-detected"),
    pytest.param(_apstar_like(n_pixels=8000), {}, ShapeError, ["8000 pixels", "8575"], id="apstar-8000-pixels"),
    pytest.param(_apstar_like(n_pixels=8000, nvisits=1), {"format": "apstar"}, ShapeError, ["8000", "8575"],
                 id="apstar-8000-pixels-single-visit-forced"),
    pytest.param(_apstar_like(nvisits=3, n_rows=4), {}, FileFormatError, ["NVISITS=3", "4 rows", "expected 5"],
                 id="apstar-rows-disagree-with-nvisits"),
    pytest.param(_apstar_like(crval1=4.2), {}, FileFormatError, ["not the APOGEE grid", "4.179"],
                 id="apstar-wrong-wavelength-solution"),
    pytest.param(_edited(APSTAR, _set(1, 0, np.nan)), {}, SpectrumError, ["no usable pixel", "allow_empty"],
                 id="apstar-all-nan-flux"),
    pytest.param(_edited(APSTAR, _set(2, (0, slice(1000, 1010)), -1.0)), {}, SpectrumError,
                 ["10 negative values", "expected uncertainties >= 0"], id="apstar-negative-errors"),
    pytest.param(_edited(ASPCAP, _set(2, slice(500, 501), -0.01)), {}, SpectrumError,
                 ["negative", "expected uncertainties >= 0"], id="aspcapstar-negative-errors"),
    pytest.param(_edited(ASPCAP, _set(1, slice(None), 0.0)), {}, SpectrumError, ["no usable pixel"],
                 id="aspcapstar-all-zero-flux"),
    pytest.param(_edited(APVISIT, _same_wavelengths), {}, FileFormatError, ["overlap", "14000 and 18000"],
                 id="apvisit-overlapping-chips"),
    pytest.param(_copy(APSTAR), {"format": "apstr"}, UnknownNameError, ["'apstr'", "did you mean 'apstar'"],
                 id="unknown-format-name"),
    pytest.param(_copy(APSTAR), {"rows": "visit"}, UnknownNameError, ["rows='visit'", "did you mean 'visits'"],
                 id="unknown-rows-choice"),
    pytest.param(_copy(APSTAR), {"bad_bits": ["BADPX"]}, UnknownNameError, ["'BADPX'", "BADPIX"],
                 id="unknown-bitmask-bit"),
    pytest.param(_copy(ASPCAP), {"what": "fit"}, UnknownNameError, ["what='fit'", "'model'"],
                 id="unknown-aspcapstar-what"),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("make, options, error, fragments", CASES)
def test_bad_input_raises_a_clear_error_and_leaves_the_file_alone(tmp_path, request, make, options, error,
                                                                  fragments):
    path = make(tmp_path, request)
    before = _sha256(path) if path.exists() else None
    with pytest.raises(LabelExplorerError) as caught:
        le.read(path, **options)
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message
    if before is not None:
        assert _sha256(path) == before


def test_a_list_names_the_bad_file_among_good_ones(tmp_path, request):
    good = _copy(APSTAR)(tmp_path, request)
    bad = _text_file("not a spectrum")(tmp_path, request)
    with pytest.raises(FileFormatError, match="apStar-notes.fits: not a FITS file"):
        le.read([good, bad])
    with pytest.raises(LabelExplorerError, match="at least one file"):
        le.read([])


def test_reading_real_files_never_modifies_them(request):
    paths = [_real(request, relative) for relative in (APSTAR, ASPCAP, APVISIT, ALLSTAR)]
    before = [_sha256(p) for p in paths]
    for path in paths:
        le.read(path)
    assert [_sha256(p) for p in paths] == before


@pytest.mark.parametrize("name, suggestion", [
    ("Tef", "TEFF"), ("[Mg/Fee]", None), ("log_gg", "LOGG"), ("MG_FEE", "MG_FE"), ("Unobtainium", None),
], ids=["Tef", "bracket-typo", "log_gg", "MG_FEE", "no-close-name"])
def test_unknown_label_name_is_a_label_error_with_suggestion(name, suggestion):
    with pytest.raises(LabelError) as caught:
        canonical_label(name)
    message = str(caught.value)
    assert repr(name) in message and "TEFF, LOGG, FE_H" in message
    if suggestion:
        assert f"did you mean {suggestion!r}" in message
