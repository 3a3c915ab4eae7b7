"""Writers of the real survey file layouts for the mock universe.

Every layout copies the header keywords and HDU structure of the real files in
``shared/data`` (never their data):

``allStar``
    HDU1 binary table with the DR17 column conventions (``APOGEE_ID, TELESCOPE, FIELD,
    TEFF, LOGG, M_H, ALPHA_M, FE_H, <X>_FE``, ``*_ERR``, ``*_FLAG``, ``SNR, NVISITS,
    ASPCAPFLAG, STARFLAG, J, H, K, GAIAEDR3_*``, ``MEMBER``) plus the mock's own columns
    (``TRUE_<label>``, ``CLUSTER``, ``STAR_CLASS``, ``MOCK_INDEX``...).
``apStar``
    Header-only HDU0 with the DR13 keywords (``OBJID``, ``NVISITS``, ``SNR``, ``RA``,
    ``DEC``, per-visit ``SFILEn/SNRVISn/FLAGn``, ``CRVAL1/CDELT1/CRPIX1/CTYPE1/DC-FLAG``),
    HDU1 flux, HDU2 error, HDU3 int16 pixel bitmask. Rows: 0 pixel-weighted combination,
    1 global-weighted combination, 2.. the visits; a single-visit star has one row stored
    as a 1-D array, exactly like the real files. The sky/telluric/LSF HDUs 4-9 of the
    real files are not written (the mock has no sky model), which keeps the disk small.
``aspcapStar``
    HDU1 continuum-normalised flux, HDU2 its error, HDU3 the best-fit model, HDU4 a
    one-row table in the DR13 layout (``PARAM``/``FPARAM`` with 9 entries in the DR13
    order, ``PARAMFLAG``, ``ASPCAPFLAG``, 26-element ``FELEM/ELEM/X_H/X_M`` arrays).

Headers carry no timestamps, so the same inputs give byte-identical files. Every file
is written through :func:`labelexplorer._files.atomic_path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from .._files import atomic_path
from ..exceptions import ShapeError
from ..labels import ASPCAP_ELEMENTS, MISSING
from ..preprocess.grid import APOGEE_LOG_START, APOGEE_LOG_STEP, APOGEE_N_PIXELS, CHIP_RANGES
from .stellar import X_FE_LABELS

__all__ = ["write_allstar", "write_apstar", "write_aspcapstar", "write_bytes", "write_hdulist", "write_lamost_catalog",
           "apstar_bytes", "aspcapstar_bytes", "apstar_name", "aspcapstar_name", "chip_mask", "fparam_scale",
           "lamost_header", "PARAM_NAMES", "MOCK_RELEASE"]

MOCK_RELEASE = "mock"
"""Release token in file names (``apStar-mock-<APOGEE_ID>.fits``) and headers."""

PARAM_NAMES = ("TEFF", "LOGG", "LOG10VDOP", "METALS", "C", "N", "ALPHA", "LGVSINI", "O")
"""The 9 entries of the DR13 ``PARAM``/``FPARAM`` arrays, in file order."""

_GRID_CARDS = [
    ("CRVAL1", APOGEE_LOG_START, ""), ("CDELT1", APOGEE_LOG_STEP, ""), ("CRPIX1", 1, ""),
    ("CTYPE1", "LOG-LINEAR", ""), ("DC-FLAG", 1, ""),
]
_APSTAR_HISTORY = (
    "APSTAR: labelexplorer mock universe (simulated spectra)",
    "APSTAR: The data are in separate extensions:",
    "APSTAR:  HDU0 = Header only",
    "APSTAR:  All image extensions have:",
    "APSTAR:    row 1: combined spectrum with individual pixel weighting",
    "APSTAR:    row 2: combined spectrum with global weighting",
    "APSTAR:    row 3-nvisits+2: individual resampled visit spectra",
    "APSTAR:   unless nvisits=1, which only have a single row",
    "APSTAR:  All spectra shifted to rest (vacuum) wavelength scale",
    "APSTAR:  HDU1 - Flux (10^-17 ergs/s/cm^2/Ang)",
    "APSTAR:  HDU2 - Error (10^-17 ergs/s/cm^2/Ang)",
    "APSTAR:  HDU3 - Flag mask:",
    "APSTAR:    row 1: bitwise OR of all visits",
    "APSTAR:    row 2: bitwise AND of all visits",
    "APSTAR:    row 3-nvisits+2: individual visit masks",
    "APSTAR:  HDU4-9 (sky, telluric, LSF, RV structure) are not simulated",
)


# ---------------------------------------------------------------------------------- names
def apstar_name(apogee_id: str) -> str:
    """File name of a star's apStar file.

    Examples
    --------
    >>> apstar_name("2M00452143+1634446")
    'apStar-mock-2M00452143+1634446.fits'
    """
    return f"apStar-{MOCK_RELEASE}-{apogee_id}.fits"


def aspcapstar_name(apogee_id: str) -> str:
    """File name of a star's aspcapStar file.

    Examples
    --------
    >>> aspcapstar_name("2M00452143+1634446")
    'aspcapStar-mock-2M00452143+1634446.fits'
    """
    return f"aspcapStar-{MOCK_RELEASE}-{apogee_id}.fits"


# ---------------------------------------------------------------------------------- allStar
_ALLSTAR_FRONT = ("APOGEE_ID", "TELESCOPE", "FIELD", "RA", "DEC", "GLON", "GLAT", "J", "J_ERR", "H", "H_ERR",
                  "K", "K_ERR", "AK_TARG", "GAIAEDR3_PARALLAX", "GAIAEDR3_PARALLAX_ERROR",
                  "GAIAEDR3_PHOT_G_MEAN_MAG", "GAIAEDR3_PHOT_BP_MEAN_MAG", "GAIAEDR3_PHOT_RP_MEAN_MAG",
                  "NVISITS", "SNR", "VHELIO_AVG", "STARFLAG", "ASPCAPFLAG", "TEFF", "TEFF_ERR", "LOGG", "LOGG_ERR", "M_H",
                  "M_H_ERR", "ALPHA_M", "ALPHA_M_ERR", "VMICRO", "VSINI", "FE_H", "FE_H_ERR")
_DOUBLE_COLUMNS = ("RA", "DEC", "GLON", "GLAT")


def _allstar_columns(stars: pd.DataFrame) -> dict[str, np.ndarray]:
    """Table columns in allStar order, with the dtypes of the real files."""
    columns: dict[str, np.ndarray] = {}
    for name in _ALLSTAR_FRONT:
        columns[name] = stars[name].to_numpy()
    for label in X_FE_LABELS:
        columns[label] = stars[label].to_numpy()
        columns[f"{label}_ERR"] = stars[f"{label}_ERR"].to_numpy()
        columns[f"{label}_FLAG"] = np.where(stars[label].to_numpy() == MISSING, 1, 0).astype(np.int32)
    columns["MEMBER"] = stars["CLUSTER"].to_numpy()
    mock_front = ("MOCK_INDEX", "CLUSTER", "STAR_CLASS", "POPULATION", "MASS", "DISTANCE", "LAMOST_SNRG")
    for name in mock_front:
        if name in stars:
            columns[name] = stars[name].to_numpy()
    for name in stars.columns:
        if name.startswith("TRUE_"):
            columns[name] = stars[name].to_numpy()
    columns["HAS_SPECTRUM"] = stars["HAS_SPECTRUM"].to_numpy(dtype=bool)
    columns["HAS_LAMOST"] = stars["HAS_LAMOST"].to_numpy(dtype=bool)
    out = {}
    for name, values in columns.items():
        if values.dtype == object:
            out[name] = values.astype(str)
        elif values.dtype.kind == "f":
            out[name] = values.astype(np.float64 if name in _DOUBLE_COLUMNS else np.float32)
        elif values.dtype.kind in "iu" and name not in ("ASPCAPFLAG", "MOCK_INDEX"):
            out[name] = values.astype(np.int32)
        else:
            out[name] = values
    return out


def write_allstar(path, stars: pd.DataFrame, *, header: Mapping | None = None) -> Path:
    """Write *stars* as an allStar-like catalog (DR17 column conventions).

    Parameters
    ----------
    path : path-like
        Output file, written atomically.
    stars : pandas.DataFrame
        A table from :func:`labelexplorer.mock.stellar.population`.
    header : mapping, optional
        Extra keywords for the primary header (e.g. the seed).

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from astropy.io import fits
    >>> from labelexplorer.mock.stellar import population
    >>> out = write_allstar(pathlib.Path(tempfile.mkdtemp()) / "allStar-mock.fits", population(5))
    >>> with fits.open(out) as hdul:
    ...     len(hdul[1].data), "MG_FE" in hdul[1].columns.names, hdul[1].data["TEFF"].dtype.str
    (5, True, '>f4')
    """
    from astropy.io import fits
    from astropy.table import Table

    table = Table(_allstar_columns(stars))
    primary = fits.PrimaryHDU()
    primary.header["MOCK"] = (True, "simulated by the labelexplorer mock universe")
    primary.header["RELEASE"] = (MOCK_RELEASE, "data release token")
    for key, value in (header or {}).items():
        primary.header[key] = value
    hdu = fits.table_to_hdu(table)
    hdu.header["EXTNAME"] = "ALLSTAR"
    return write_hdulist(path, fits.HDUList([primary, hdu]))


# ---------------------------------------------------------------------------------- apStar
# ---------------------------------------------------------------------------------- raw FITS
# apStar/aspcapStar files are written card by card: astropy's HDU objects cost ~0.1 s per
# file, too slow for tens of thousands of stars. The FITS format is simple (80-character
# cards in 2880-byte blocks, big-endian data); tests read every layout back with astropy.
_BLOCK = 2880


def _float_text(value: float) -> str:
    """A FITS fixed-format real: shortest round-trip repr, upper-case exponent, always a point."""
    if not np.isfinite(value):
        value = MISSING  # FITS headers cannot hold NaN/inf; the survey marker says "no value"
    text = repr(float(value)).upper()
    if len(text) > 20:
        text = f"{value:.14G}"
    mantissa, _, exponent = text.partition("E")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + (f"E{exponent}" if exponent else "")


def _card(keyword: str, value, comment: str = "") -> str:
    """One 80-character header card (fixed format; a long comment is cut)."""
    if keyword in ("HISTORY", "COMMENT"):
        return f"{keyword:<8}{value}"[:80].ljust(80)
    if isinstance(value, (bool, np.bool_)):
        text = ("T" if value else "F").rjust(20)
    elif isinstance(value, (int, np.integer)):
        text = str(int(value)).rjust(20)
    elif isinstance(value, (float, np.floating)):
        text = _float_text(float(value)).rjust(20)
    else:
        quoted = str(value).replace("'", "''")
        text = f"'{quoted:<8}'".ljust(20)
    card = f"{keyword:<8}= {text}"
    if len(card) > 80:
        raise ValueError(f"header value of {keyword} too long for one card")
    if comment:
        card = f"{card} / {comment}"
    return card[:80].ljust(80)


def _header_bytes(cards: list[tuple]) -> bytes:
    text = "".join(_card(*card) for card in cards) + "END".ljust(80)
    return _padded(text.encode("ascii"), b" ")


def _padded(data: bytes, fill: bytes = b"\0") -> bytes:
    return data + fill * (-len(data) % _BLOCK)


_BITPIX = {"f4": -32, "f8": -64, "i2": 16, "i4": 32, "u1": 8}


def _image_bytes(data: np.ndarray, extra_cards: list[tuple]) -> bytes:
    """An IMAGE extension holding *data* (NAXIS1 is the last, fastest axis)."""
    data = np.ascontiguousarray(data)
    code = data.dtype.str[1:]
    cards = [("XTENSION", "IMAGE", "IMAGE extension"), ("BITPIX", _BITPIX[code], "Number of bits per data pixel"),
             ("NAXIS", data.ndim, "Number of data axes")]
    cards += [(f"NAXIS{axis}", size, "") for axis, size in enumerate(reversed(data.shape), start=1)]
    cards += [("PCOUNT", 0, "No Group Parameters"), ("GCOUNT", 1, "One Data Group"), *extra_cards]
    return _header_bytes(cards) + _padded(data.astype(data.dtype.newbyteorder(">")).tobytes())


def _primary_bytes(cards: list[tuple]) -> bytes:
    """A header-only primary HDU (like the real files: BITPIX 16, NAXIS 0)."""
    return _header_bytes([("SIMPLE", True, "image conforms to FITS standard"), ("BITPIX", 16, "bits per data value"),
                          ("NAXIS", 0, "number of axes"), ("EXTEND", True, "file may contain extensions"), *cards])


def write_bytes(path, data: bytes) -> Path:
    """Write a file's bytes atomically (temporary sibling, then rename).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> write_bytes(pathlib.Path(tempfile.mkdtemp()) / "x.bin", b"abc").read_bytes()
    b'abc'
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_hdulist(path, hdul) -> Path:
    """Write an astropy HDUList atomically.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from astropy.io import fits
    >>> out = write_hdulist(pathlib.Path(tempfile.mkdtemp()) / "x.fits", fits.HDUList([fits.PrimaryHDU()]))
    >>> out.name
    'x.fits'
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        hdul.writeto(tmp)
    return path


# ---------------------------------------------------------------------------------- apStar
def _visit_rows(flux: np.ndarray, nvisits: int, what: str) -> np.ndarray:
    """Check that *flux* has the apStar rows for *nvisits* visits; 1 visit -> a 1-D array."""
    flux = np.asarray(flux)
    expected = 1 if nvisits == 1 else nvisits + 2
    rows = flux.reshape(-1, flux.shape[-1]) if flux.ndim in (1, 2) else None
    if rows is None or rows.shape != (expected, APOGEE_N_PIXELS):
        raise ShapeError(f"apStar {what}: expected {expected} rows of {APOGEE_N_PIXELS} pixels for {nvisits} "
                         f"visit(s), got shape {flux.shape}")
    return rows[0] if nvisits == 1 else rows


def _star_cards(star: Mapping) -> list[tuple]:
    """Identification, photometry and targeting keywords common to apStar and aspcapStar."""
    return [
        ("J", round(float(star["J"]), 4), "2MASS J magnitude"),
        ("H", round(float(star["H"]), 4), "2MASS H magnitude"),
        ("K", round(float(star["K"]), 4), "2MASS Ks magnitude"),
        ("TARG1", 0, "First APOGEE targeting flag (bitwise)"),
        ("TARG2", 0, "Second APOGEE targeting flag (bitwise)"),
        ("TARG3", 0, "Third APOGEE targeting flag (bitwise)"),
        ("SURVEY", "apogee", "Survey name (for targeting flags)"),
        ("TELESCOP", str(star["TELESCOPE"]), "Telescope"),
        ("FIELD", str(star["FIELD"]), "Field name"),
        ("RA", float(star["RA"]), "right ascension, deg, J2000"),
        ("DEC", float(star["DEC"]), "declination, deg, J2000"),
        ("GLON", float(star["GLON"]), "galactic longitude, deg, J2000"),
        ("GLAT", float(star["GLAT"]), "galactic latitude, deg, J2000"),
    ]


def write_apstar(path, star: Mapping, flux, error, bitmask, *, visit_snr=None, visit_mjd=None,
                 visit_bc=None) -> Path:
    """Write one star's apStar-like file (see :func:`apstar_bytes` for the arguments).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from astropy.io import fits
    >>> star = dict(APOGEE_ID="2M00000000+0000000", NVISITS=2, SNR=80.0, RA=0.0, DEC=0.0, GLON=96.3,
    ...             GLAT=-60.2, J=12.0, H=11.5, K=11.4, TELESCOPE="apo25m", FIELD="096-60", STARFLAG=0)
    >>> rows = np.ones((4, 8575), np.float32)
    >>> out = write_apstar(pathlib.Path(tempfile.mkdtemp()) / "apStar.fits", star, rows, rows * 0.01,
    ...                    np.zeros((4, 8575), np.int16))
    >>> with fits.open(out) as hdul:
    ...     hdul[0].header["NVISITS"], hdul[1].data.shape, hdul[3].data.dtype.str
    (2, (4, 8575), '>i2')
    """
    return write_bytes(path, apstar_bytes(star, flux, error, bitmask, visit_snr=visit_snr, visit_mjd=visit_mjd,
                                          visit_bc=visit_bc))


def apstar_bytes(star: Mapping, flux, error, bitmask, *, visit_snr=None, visit_mjd=None, visit_bc=None) -> bytes:
    """One star's apStar-like file, as the bytes of the FITS file.

    Parameters
    ----------
    star : mapping
        One row of the population (``APOGEE_ID``, ``NVISITS``, ``SNR``, ``RA``, ``DEC``, ``J``...).
    flux, error : array_like, shape (NVISITS + 2, 8575), or (8575,) / (1, 8575) for one visit
        Rows: pixel-weighted combination, global-weighted combination, then each visit.
    bitmask : array_like of int, same shape
        ``APOGEE_PIXMASK`` values (row 0 OR of the visits, row 1 AND, then per visit).
    visit_snr, visit_mjd : sequence of float, optional
        Per-visit S/N and MJD for the ``SNRVISn``/``JDn`` keywords.
    visit_bc : sequence of float, optional
        Per-visit barycentric correction (km/s, ``BCn``; default 0): with the star's
        ``VHELIO_AVG`` (default 0) it gives each visit's Doppler shift ``VRADn``.

    Returns
    -------
    bytes
        HDU0 header, HDU1 flux, HDU2 error, HDU3 bitmask.

    Raises
    ------
    ShapeError
        If the arrays do not have the rows ``NVISITS`` implies.

    Examples
    --------
    >>> from astropy.io import fits
    >>> star = dict(APOGEE_ID="2M00000000+0000000", NVISITS=1, SNR=80.0, RA=0.0, DEC=0.0, GLON=96.3,
    ...             GLAT=-60.2, J=12.0, H=11.5, K=11.4, TELESCOPE="apo25m", FIELD="096-60")
    >>> one = np.ones(8575, np.float32)
    >>> hdul = fits.HDUList.fromstring(apstar_bytes(star, one, one * 0.01, np.zeros(8575, np.int16)))
    >>> hdul[1].data.shape, hdul[0].header["OBJID"]
    ((8575,), '2M00000000+0000000')
    """
    nvisits = int(star["NVISITS"])
    flux = _visit_rows(flux, nvisits, "flux").astype(np.float32)
    error = _visit_rows(error, nvisits, "error").astype(np.float32)
    bitmask = _visit_rows(bitmask, nvisits, "bitmask").astype(np.int16)
    snr = float(star["SNR"])
    visit_snr = np.full(nvisits, snr / np.sqrt(nvisits)) if visit_snr is None else np.asarray(visit_snr, float)
    visit_mjd = np.full(nvisits, 57000.0) if visit_mjd is None else np.asarray(visit_mjd, float)
    visit_bc = np.zeros(nvisits) if visit_bc is None else np.asarray(visit_bc, float)
    vhelio = float(star.get("VHELIO_AVG", 0.0))
    starflag = int(star.get("STARFLAG", 0))
    cards = [("OBJID", str(star["APOGEE_ID"]), "Object ID"),
             *_star_cards(star),
             ("NVISITS", nvisits, "number of visit spectra combined"),
             ("VRAD", 0.0, "Doppler shift (km/s) of this spectrum"),
             ("VHELIO", round(vhelio, 4), "mean heliocentric velocity (km/s)"),
             ("SNR", round(snr, 4), "final median Signal/Noise ratio"),
             ("STARFLAG", starflag, "bitwise OR of individual visit starflags"),
             ("ANDFLAG", starflag, "bitwise AND of individual visit starflags"),
             ("MOCK", True, "simulated by the labelexplorer mock universe")]
    for visit in range(nvisits):
        v = visit + 1
        fiber = 1 + (int(star.get("MOCK_INDEX", 0)) * 7 + 13 * visit) % 300
        mjd = int(visit_mjd[visit])
        cards += [("COMMENT", f"VISIT {v} INFORMATION:"),
                  (f"SFILE{v}", f"apVisit-{MOCK_RELEASE}-{mjd}-{fiber:03d}.fits", f"Visit #{v} spectrum file"),
                  (f"JD{v}", round(float(visit_mjd[visit]) + 2400000.5, 5), f"Julian date of visit {v}"),
                  (f"FIBER{v}", fiber, f"Fiber, visit {v}"),
                  (f"BC{v}", round(float(visit_bc[visit]), 4), f"Barycentric correction (km/s),visit {v}"),
                  (f"VRAD{v}", round(vhelio - float(visit_bc[visit]), 4), f"Doppler shift (km/s) of visit {v}"),
                  (f"VHELIO{v}", round(vhelio, 4), f"Heliocentric velocity (km/s), visit {v}"),
                  (f"SNRVIS{v}", round(float(visit_snr[visit]), 4), f"Signal/Noise ratio, visit {v}"),
                  (f"FLAG{v}", starflag, f"STARFLAG for visit {v}")]
    cards += [("COMMENT", "Wavelength polynomial coefficients (Ang):"),
              ("NWAVE", APOGEE_N_PIXELS, "Number of wavelengths in subsequent HDUs"),
              ("CRVAL1", APOGEE_LOG_START, "Start log10(wavelength) in subsequent HDUs"),
              ("CDELT1", APOGEE_LOG_STEP, "Dispersion in log10(wavelength)"),
              ("CRPIX1", 1, "Pixel of starting wavelength in subsequent HDUs"),
              ("CTYPE1", "LOG-LINEAR", "Logarithmic wavelength scale in subsequent HDUs"),
              ("DC-FLAG", 1, "Logarithmic wavelength scale in subsequent HDUs")]
    cards += [("HISTORY", line) for line in _APSTAR_HISTORY]
    return (_primary_bytes(cards)
            + _image_bytes(flux, [*_GRID_CARDS, ("BUNIT", "Flux (10^-17 erg/s/cm^2/Ang)", "")])
            + _image_bytes(error, [*_GRID_CARDS, ("BUNIT", "Error (10^-17 erg/s/cm^2/Ang)", "")])
            + _image_bytes(bitmask, [*_GRID_CARDS, ("BUNIT", "Flag Mask (bitwise)", "")]))


# ---------------------------------------------------------------------------------- aspcapStar
def _spectral_class(teff: float, logg: float) -> str:
    """The ASPCAP grid class name (``GKg_b``, ``Md_b``, ``Fd_b``, ``BA``)."""
    if teff > 7000:
        return "BA"
    kind = "g" if logg < 3.8 else "d"
    if teff < 3500:
        return f"M{kind}_b"
    if teff > 6000:
        return f"F{kind}_b"
    return f"GK{kind}_b"


def _param_arrays(star: Mapping, fparam_noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PARAM, FPARAM and PARAMFLAG in the DR13 order of :data:`PARAM_NAMES`."""

    def value(name):
        return float(star[name]) if name in star else MISSING

    def relative_to_metals(label):
        x_fe, fe_h, m_h = value(label), value("FE_H"), value("M_H")
        return MISSING if MISSING in (x_fe, fe_h, m_h) else x_fe + fe_h - m_h

    def log10(name):
        x = value(name)
        return MISSING if x == MISSING or x <= 0 else float(np.log10(x))

    param = np.array([value("TEFF"), value("LOGG"), log10("VMICRO"), value("M_H"), relative_to_metals("C_FE"),
                      relative_to_metals("N_FE"), value("ALPHA_M"), log10("VSINI"), relative_to_metals("O_FE")],
                     dtype=np.float32)
    true_m = star["TRUE_FE_H"] - star["TRUE_M_H"]
    true = np.array([star["TRUE_TEFF"], star["TRUE_LOGG"], np.log10(star["TRUE_VMICRO"]), star["TRUE_M_H"],
                     star["TRUE_C_FE"] + true_m, star["TRUE_N_FE"] + true_m, star["TRUE_ALPHA_M"],
                     np.log10(max(float(star["TRUE_VSINI"]), 0.5)), star["TRUE_O_FE"] + true_m], dtype=np.float64)
    # FPARAM is the raw grid fit: it exists where the calibrated PARAM was withheld.
    fparam = np.where(param == MISSING, true + fparam_noise, param).astype(np.float32)
    paramflag = np.where(param == MISSING, 1 << 16, 0).astype(np.int32)  # PARAM_BAD-like bit
    return param, fparam, paramflag


def _element_arrays(star: Mapping) -> dict[str, np.ndarray]:
    """26-element X_H, X_M (and their errors), ELEM/FELEM and ELEMFLAG, in ASPCAP element order."""
    fe_h, m_h = float(star["FE_H"]), float(star["M_H"])
    x_h, x_h_err = [], []
    for element in ASPCAP_ELEMENTS:
        if element == "Fe":
            x_h.append(fe_h)
            x_h_err.append(float(star["FE_H_ERR"]))
            continue
        label = f"{element.upper()}_FE"
        x_fe = float(star[label])
        ok = MISSING not in (x_fe, fe_h)
        x_h.append(x_fe + fe_h if ok else MISSING)
        x_h_err.append(float(star[f"{label}_ERR"]) if ok else MISSING)
    x_h, x_h_err = np.array(x_h), np.array(x_h_err)
    missing = (x_h == MISSING) | (m_h == MISSING)
    x_m = np.where(missing, MISSING, x_h - m_h)
    x_m_err = np.where(missing, MISSING, x_h_err)
    return {"FELEM": x_m, "FELEM_ERR": x_m_err, "ELEM": x_m, "ELEM_ERR": x_m_err, "X_H": x_h, "X_H_ERR": x_h_err,
            "X_M": x_m, "X_M_ERR": x_m_err, "ELEMFLAG": np.where(x_h == MISSING, 1 << 8, 0)}


_N_ELEMENTS = len(ASPCAP_ELEMENTS)
# (name, FITS TFORM, numpy type, shape, TDIM) of the HDU4 table, in the DR13 column order
_ASPCAP_COLUMNS = (
    ("FILE", "28A", "S28", (), None), ("RED_VERS", "5A", "S5", (), None), ("FIELD", "8A", "S8", (), None),
    ("LOCATION_ID", "J", ">i4", (), None), ("APOGEE_ID", "18A", "S18", (), None),
    ("RA", "D", ">f8", (), None), ("DEC", "D", ">f8", (), None), ("GLON", "D", ">f8", (), None),
    ("GLAT", "D", ">f8", (), None), ("J", "E", ">f4", (), None), ("H", "E", ">f4", (), None),
    ("K", "E", ">f4", (), None), ("AK_TARG", "E", ">f4", (), None), ("AK_TARG_METHOD", "16A", "S16", (), None),
    ("APOGEE_TARGET1", "J", ">i4", (), None), ("APOGEE_TARGET2", "J", ">i4", (), None),
    ("STARFLAG", "J", ">i4", (), None), ("ANDFLAG", "J", ">i4", (), None), ("SNR", "E", ">f4", (), None),
    ("VRAD", "E", ">f4", (), None), ("NVISITS", "I", ">i2", (), None), ("CLASS", "5A", "S5", (), None),
    ("PARAM", "9E", ">f4", (9,), None), ("PARAM_COV", "81E", ">f4", (9, 9), "(9,9)"),
    ("FPARAM", "9E", ">f4", (9,), None), ("FPARAM_COV", "81E", ">f4", (9, 9), "(9,9)"),
    ("PARAMFLAG", "9J", ">i4", (9,), None), ("PARAM_CHI2", "E", ">f4", (), None),
    ("ASPCAPFLAG", "J", ">i4", (), None),
    *((name, f"{_N_ELEMENTS}E", ">f4", (_N_ELEMENTS,), None)
      for name in ("FELEM", "FELEM_ERR", "ELEM", "ELEM_ERR", "X_H", "X_H_ERR", "X_M", "X_M_ERR")),
    ("ELEMFLAG", f"{_N_ELEMENTS}I", ">i2", (_N_ELEMENTS,), None),
)
_ASPCAP_DTYPE = np.dtype([(name, code, shape) for name, _, code, shape, _ in _ASPCAP_COLUMNS])


def _table_bytes(record: np.ndarray) -> bytes:
    """A one-row BINTABLE extension in the layout of :data:`_ASPCAP_COLUMNS`."""
    cards = [("XTENSION", "BINTABLE", "binary table extension"), ("BITPIX", 8, "8-bit bytes"),
             ("NAXIS", 2, "2-dimensional binary table"), ("NAXIS1", record.dtype.itemsize, "width of table in bytes"),
             ("NAXIS2", len(record), "number of rows in table"), ("PCOUNT", 0, "size of special data area"),
             ("GCOUNT", 1, "one data group (required keyword)"), ("TFIELDS", len(_ASPCAP_COLUMNS), "number of fields")]
    for number, (name, form, _, _, dim) in enumerate(_ASPCAP_COLUMNS, start=1):
        cards += [(f"TTYPE{number}", name, ""), (f"TFORM{number}", form, "")]
        if dim:
            cards.append((f"TDIM{number}", dim, ""))
    return _header_bytes(cards) + _padded(record.tobytes())


def _aspcap_record(star: Mapping, fparam_noise: np.ndarray) -> np.ndarray:
    """The one-row HDU4 results of *star* as a big-endian structured array."""
    param, fparam, paramflag = _param_arrays(star, fparam_noise)
    variance = np.where(param == MISSING, 0.0, np.square(_param_errors(star)))
    apogee_id = str(star["APOGEE_ID"])
    values = dict(
        FILE=apstar_name(apogee_id).removesuffix(".fits"), RED_VERS=MOCK_RELEASE, FIELD=str(star["FIELD"]),
        LOCATION_ID=0, APOGEE_ID=apogee_id, RA=star["RA"], DEC=star["DEC"], GLON=star["GLON"], GLAT=star["GLAT"],
        J=star["J"], H=star["H"], K=star["K"], AK_TARG=star["AK_TARG"], AK_TARG_METHOD="RJCE_WISE_ALLSKY",
        APOGEE_TARGET1=0, APOGEE_TARGET2=0, STARFLAG=int(star.get("STARFLAG", 0)),
        ANDFLAG=int(star.get("STARFLAG", 0)), SNR=star["SNR"], VRAD=0.0, NVISITS=int(star["NVISITS"]),
        CLASS=_spectral_class(float(star["TRUE_TEFF"]), float(star["TRUE_LOGG"])),
        PARAM=param, PARAM_COV=np.diag(variance), FPARAM=fparam, FPARAM_COV=np.diag(variance),
        PARAMFLAG=paramflag, PARAM_CHI2=1.0,
        ASPCAPFLAG=np.int64(star["ASPCAPFLAG"]).astype(np.uint32).astype(np.int32),  # the DR13 column is 32-bit
        **_element_arrays(star))
    record = np.zeros(1, dtype=_ASPCAP_DTYPE)
    for name, value in values.items():
        record[name] = value.encode("ascii") if isinstance(value, str) else value
    return record


def _param_errors(star: Mapping) -> np.ndarray:
    def err(name):
        key = f"{name}_ERR"
        return float(star[key]) if key in star and float(star[key]) != MISSING else 0.0

    return np.array([err("TEFF"), err("LOGG"), 0.05, err("M_H"), err("C_FE"), err("N_FE"), err("ALPHA_M"),
                     0.05, err("O_FE")])


def write_aspcapstar(path, star: Mapping, flux, error, model, *, fparam_noise=None) -> Path:
    """Write one star's aspcapStar-like file (see :func:`aspcapstar_bytes` for the arguments).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from astropy.io import fits
    >>> from labelexplorer.mock.stellar import population
    >>> star = population(1, seed=3).iloc[0].to_dict()
    >>> ones = np.ones(8575, np.float32)
    >>> out = write_aspcapstar(pathlib.Path(tempfile.mkdtemp()) / "a.fits", star, ones, ones * 0.01, ones)
    >>> with fits.open(out) as hdul:
    ...     len(hdul), hdul[4].data["PARAM"].shape, hdul[4].data["X_H"].shape
    (5, (1, 9), (1, 26))
    """
    return write_bytes(path, aspcapstar_bytes(star, flux, error, model, fparam_noise=fparam_noise))


def aspcapstar_bytes(star: Mapping, flux, error, model, *, fparam_noise=None) -> bytes:
    """One star's aspcapStar-like file (normalised spectrum, model, results), as FITS bytes.

    Parameters
    ----------
    star : mapping
        One row of the population (pipeline-like labels, ``TRUE_`` labels, photometry...).
    flux, error, model : array_like, shape (8575,)
        Normalised flux, its error and the best-fit model; pixels outside the chips are 0
        in the real files and should be here.
    fparam_noise : array_like, shape (9,), optional
        Noise added to the truth for the raw ``FPARAM`` entries whose calibrated value is
        withheld (-9999 in ``PARAM``); zeros when omitted.

    Returns
    -------
    bytes
        HDU0 header, HDU1-3 flux, error, model, HDU4 the results table.

    Raises
    ------
    ShapeError
        If an array does not have 8575 pixels.
    """
    arrays = []
    for what, values in (("flux", flux), ("error", error), ("model", model)):
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        if values.shape != (APOGEE_N_PIXELS,):
            raise ShapeError(f"aspcapStar {what}: expected {APOGEE_N_PIXELS} pixels, got {np.shape(values)}")
        arrays.append(values)
    noise = np.zeros(9) if fparam_noise is None else np.asarray(fparam_noise, dtype=float)
    cards = [("OBJ", str(star["APOGEE_ID"]), "Object ID"),
             ("RA", float(star["RA"]), "RA (J2000)"), ("DEC", float(star["DEC"]), "DEC (J2000)"),
             ("GLON", float(star["GLON"]), "Galactic longitude"), ("GLAT", float(star["GLAT"]), "Galactic latitude"),
             ("J", round(float(star["J"]), 4), "2MASS J magnitude"),
             ("H", round(float(star["H"]), 4), "2MASS H magnitude"),
             ("K", round(float(star["K"]), 4), "2MASS Ks magnitude"),
             ("FIELD", str(star["FIELD"]), "Field"), ("TELESCOP", str(star["TELESCOPE"]), "Telescope"),
             ("TARG1", 0, "APOGEE_TARGET1 target flag"), ("TARG2", 0, "APOGEE_TARGET2 target flag"),
             ("AKTARG", round(float(star["AK_TARG"]), 5), "Targeting extinction"),
             ("AKMETHOD", "RJCE_WISE_ALLSKY", "extinction method used for targeting"),
             ("SNR", round(float(star["SNR"]), 4), "signal-to-noise"),
             ("VRAD", 0.0, "radial velocity of this spectrum"),
             ("NVISITS", int(star["NVISITS"]), "number of visits"),
             ("MOCK", True, "simulated by the labelexplorer mock universe")]
    return (_primary_bytes(cards) + b"".join(_image_bytes(values, _GRID_CARDS) for values in arrays)
            + _table_bytes(_aspcap_record(star, noise)))


def fparam_scale() -> np.ndarray:
    """Typical raw-fit errors of the 9 FPARAM entries (scale of the noise on withheld values).

    Examples
    --------
    >>> fparam_scale().shape
    (9,)
    """
    return np.array([60.0, 0.12, 0.05, 0.05, 0.06, 0.08, 0.04, 0.05, 0.05])


def chip_mask() -> np.ndarray:
    """True for pixels on a detector chip (DR13-DR17 ranges), False in the gaps and edges.

    Examples
    --------
    >>> int(chip_mask().sum())
    7514
    """
    on_chip = np.zeros(APOGEE_N_PIXELS, dtype=bool)
    for start, end in CHIP_RANGES["dr17"]:
        on_chip[start:end] = True
    return on_chip


def lamost_header(star: Mapping, obsid: int, filename: str, snr_g: float, lasp: Mapping) -> dict:
    """Primary-header keywords of a LAMOST-like spectrum of *star* (DR8 names).

    *lasp* holds the LAMOST-pipeline-like labels (``TEFF, TEFF_ERR, LOGG, LOGG_ERR, FEH,
    FEH_ERR``).

    Examples
    --------
    >>> star = dict(APOGEE_ID="2M00000000+0000000", RA=0.0, DEC=0.0, GAIAEDR3_PHOT_G_MEAN_MAG=14.0,
    ...             TRUE_TEFF=5000.0)
    >>> header = lamost_header(star, 101, "spec-mock-1.fits", 50.0, {"TEFF": 5010.0})
    >>> header["OBSID"], header["CLASS"], header["SNRG"]
    (101, 'STAR', 50.0)
    """
    ra, dec = float(star["RA"]), float(star["DEC"])
    ra_h = ra / 15.0
    designation = (f"LAMOST J{int(ra_h):02d}{int(ra_h * 60) % 60:02d}{ra_h * 3600 % 60:05.2f}"
                   f"{'-' if dec < 0 else '+'}{int(abs(dec)):02d}{int(abs(dec) * 60) % 60:02d}"
                   f"{abs(dec) * 3600 % 60:04.1f}")
    header = {"FILENAME": filename, "OBSID": int(obsid), "AUTHOR": "labelexplorer mock universe",
              "DATA_V": "LAMOST MOCK", "TELESCOP": "LAMOST", "RA": ra, "DEC": dec, "DESIG": designation,
              "OBJNAME": str(star["APOGEE_ID"]), "OBJTYPE": "Star", "CLASS": "STAR",
              "SUBCLASS": _lamost_subclass(float(star["TRUE_TEFF"])), "Z": 0.0, "Z_ERR": 0.0,
              "SNRU": round(0.3 * snr_g, 2), "SNRG": round(snr_g, 2), "SNRR": round(1.5 * snr_g, 2),
              "SNRI": round(1.8 * snr_g, 2), "SNRZ": round(1.2 * snr_g, 2), "VACUUM": True, "MOCK": True}
    header.update({key: round(float(value), 4) for key, value in lasp.items()})
    return header


def _lamost_subclass(teff: float) -> str:
    for limit, name in ((3900, "M0"), (5300, "K3"), (6000, "G5"), (7300, "F5"), (10000, "A5")):
        if teff < limit:
            return name
    return "B9"


def write_lamost_catalog(path, stars: pd.DataFrame, lasp: pd.DataFrame, filenames) -> Path:
    """Write the catalog of the LAMOST-like spectra: file, ids, LASP-like and true labels.

    Columns follow the LAMOST LRS stellar-parameter catalog in lower case (``obsid``,
    ``filename``, ``designation``... ``teff``, ``teff_err``, ``logg``, ``feh``, ``snrg``),
    plus the cross-match ``APOGEE_ID``, ``MOCK_INDEX`` and ``TRUE_TEFF/TRUE_LOGG/TRUE_FE_H``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from astropy.table import Table
    >>> from labelexplorer.mock.stellar import population
    >>> stars = population(2, seed=0)
    >>> lasp = pd.DataFrame({"TEFF": [5000.0, 4000.0], "TEFF_ERR": [50.0, 60.0], "LOGG": [2.0, 4.5],
    ...                      "LOGG_ERR": [0.1, 0.1], "FEH": [0.0, -0.2], "FEH_ERR": [0.05, 0.05]})
    >>> out = write_lamost_catalog(pathlib.Path(tempfile.mkdtemp()) / "c.fits", stars, lasp, ["a", "b"])
    >>> Table.read(out)["teff"].tolist()
    [5000.0, 4000.0]
    """
    from astropy.io import fits
    from astropy.table import Table

    table = Table()
    table["obsid"] = 200_000_000 + stars["MOCK_INDEX"].to_numpy(dtype=np.int64)
    table["filename"] = np.asarray(filenames, dtype=str)
    table["ra"] = stars["RA"].to_numpy(dtype=np.float64)
    table["dec"] = stars["DEC"].to_numpy(dtype=np.float64)
    table["snrg"] = stars["LAMOST_SNRG"].to_numpy(dtype=np.float32)
    for name, column in (("teff", "TEFF"), ("logg", "LOGG"), ("feh", "FEH")):
        table[name] = lasp[column].to_numpy(dtype=np.float32)
        table[f"{name}_err"] = lasp[f"{column}_ERR"].to_numpy(dtype=np.float32)
    table["APOGEE_ID"] = stars["APOGEE_ID"].to_numpy().astype(str)
    table["MOCK_INDEX"] = stars["MOCK_INDEX"].to_numpy(dtype=np.int64)
    for label in ("TEFF", "LOGG", "FE_H", "M_H", "ALPHA_M"):
        table[f"TRUE_{label}"] = stars[f"TRUE_{label}"].to_numpy(dtype=np.float32)
    hdu = fits.table_to_hdu(table)
    hdu.header["EXTNAME"] = "LRS_STELLAR"
    return write_hdulist(path, fits.HDUList([fits.PrimaryHDU(), hdu]))
