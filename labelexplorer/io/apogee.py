"""APOGEE readers: apStar, aspcapStar and apVisit spectra, allStar label catalogs.

Facts used here (APOGEE data model, checked against the real DR12/DR13 files in
``shared/data``):

- apStar: HDU1 flux, HDU2 error, HDU3 ``APOGEE_PIXMASK`` bitmask (int16), each
  ``(NVISITS+2, 8575)``: row 0 the pixel-weighted combination (its bitmask row is the
  OR of the visit masks), row 1 the globally weighted combination (AND of the masks),
  rows 2+ the visits. A single-visit file has one row, the visit itself. The wavelength
  solution is log-linear in the headers (CRVAL1=4.179, CDELT1=6e-6). Chip gaps hold
  flux 0 and error 1e10.
- aspcapStar: HDU1 normalised flux, HDU2 error, HDU3 best-fit ASPCAP model (8575 px),
  HDU4 a one-row table with PARAM/FPARAM/PARAM_COV, ASPCAPFLAG and per-element arrays.
  PARAM order (ASPCAP, DR12-DR17): TEFF, LOGG, log10 vmicro, [M/H], [C/M], [N/M],
  [alpha/M], then (DR13+) log10 vsini and [O/M].
- apVisit: HDU1 flux, HDU2 error, HDU3 bitmask, HDU4 wavelength, each (3 chips, 4096);
  wavelengths decrease within and across chips.
- allStar: HDU1 a binary table, one row per star. DR12 names ``PARAM_M_H``/
  ``PARAM_ALPHA_M`` and ``<X>_H``; DR14+ ``M_H``/``ALPHA_M``, ``<X>_FE`` and ``FE_H``.
  Per-element arrays: DR12 ``ELEM`` (15 elements; [X/M] for C, N, O, Mg, Si, S, Ca, Ti
  relative to the uncalibrated FPARAM metallicity, [X/H] for the rest), DR13/DR14
  ``X_H`` (26 elements in the order of :data:`~labelexplorer.labels.ASPCAP_ELEMENTS`).

Every value at or below -9000 (the survey's -9999 "magic number" and -9999.99) becomes
NaN; negative uncertainties (DR12 writes -1 for "none") become NaN.
"""

from __future__ import annotations

import gzip
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from astropy.io.fits.verify import VerifyError, VerifyWarning

from ..exceptions import FileFormatError, LabelExplorerError, ShapeError, SpectrumError, UnknownNameError, did_you_mean
from ..labels import ASPCAP_ELEMENTS, _missing_to_nan
from ..preprocess.bitmask import DEFAULT_BAD_BITS, bad_pixel_mask
from ..preprocess.grid import APOGEE_LOG_START, APOGEE_LOG_STEP, APOGEE_N_PIXELS, apogee_wavelength
from ..spectra import Spectra
from .registry import hdu_data, register_reader

__all__ = ["read_apstar", "read_aspcapstar", "read_apvisit", "read_allstar"]

SENTINEL_ERROR = 1e9
"""Errors at or above this mean "no information" (apStar writes 1e10 in the chip gaps)."""

APSTAR_ROWS = ("combined", "global", "visits", "all")

# Release tokens found in APOGEE file names and version columns (reduction / ASPCAP / results versions).
_RELEASE_TOKENS = {"r5": "dr12", "v603": "dr12", "l25": "dr12", "r6": "dr13", "l30e": "dr13",
                   "r8": "dr14", "l31c": "dr14", "r12": "dr16", "l33": "dr16", "synspec": "dr17",
                   "mock": "mock"}  # the mock universe writes the DR13 layout with this token

# Positions of the canonical labels in the ASPCAP PARAM array (same for the 7- and 9-long layouts).
_PARAM_INDEX = {"TEFF": 0, "LOGG": 1, "M_H": 3, "C_M": 4, "N_M": 5, "ALPHA_M": 6}

# DR12: element order of ELEM and whether each entry is [X/H] (True) or [X/M] (False).
_DR12_ELEMENTS = ("C", "N", "O", "Na", "Mg", "Al", "Si", "S", "K", "Ca", "Ti", "V", "Mn", "Fe", "Ni")
_DR12_ELEM_TO_H = (False, False, False, True, False, True, False, False, True, False, False, True, True, True, True)
_ELEMENT_ORDER = {("dr12", 15): _DR12_ELEMENTS, ("dr13", 26): ASPCAP_ELEMENTS, ("dr14", 26): ASPCAP_ELEMENTS,
                  ("mock", 26): ASPCAP_ELEMENTS}

_ALLSTAR_RENAMES = {"PARAM_M_H": "M_H", "PARAM_ALPHA_M": "ALPHA_M"}
_HEADER_SKIP = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "COMMENT", "HISTORY", ""}


# ---------------------------------------------------------------------------- small helpers
def _guess_release(*texts) -> str:
    """The data release (``"dr12"``...) named by file names or version strings, else ``"unknown"``."""
    for text in texts:
        for token in re.findall(r"[a-z0-9]+", Path(str(text)).name.lower()):
            if re.fullmatch(r"dr1\d", token):
                return token
            if token in _RELEASE_TOKENS:
                return _RELEASE_TOKENS[token]
    return "unknown"


def _header_float(header, key: str) -> float:
    try:
        value = float(header[key])
    except (KeyError, TypeError, ValueError):
        return np.nan
    return np.nan if value <= -9000 else value


def _header_int(header, key: str) -> int:
    try:
        return int(header[key])
    except (KeyError, TypeError, ValueError):
        return -1


def _header_text(header, key: str) -> str:
    return str(header.get(key, "")).strip()


def _header_dict(header) -> dict:
    """The header's keyword values as a plain dict (no structural or COMMENT/HISTORY cards).

    Real files hold non-standard cards (``AKWISE = NAN``) that astropy refuses to parse
    until they are fixed; they are fixed here quietly (as strings) instead of warning users.
    """
    values = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        for card in header.cards:
            if card.keyword in _HEADER_SKIP:
                continue
            try:
                value = card.value
            except VerifyError:
                card.verify("silentfix")  # the in-memory card only; the file is open read-only
                value = card.value
            if isinstance(value, (str, int, float, bool)):
                values[card.keyword] = value
    return values


def _image_shape(hdu) -> tuple[int, ...] | None:
    """Numpy shape of an image HDU, from its header only; None for tables and empty HDUs."""
    if not getattr(hdu, "is_image", False) or not hdu.header.get("NAXIS", 0):
        return None
    return tuple(int(hdu.header[f"NAXIS{axis}"]) for axis in range(hdu.header["NAXIS"], 0, -1))


def _is_integer_image(hdu) -> bool:
    return hdu.header.get("BITPIX", -32) > 0 and hdu.header.get("BSCALE", 1) == 1


def _table_columns(hdu) -> list[str]:
    """Column names of a table HDU from its header (TTYPEn): building astropy's column
    definitions parses the table and cost tens of ms per file in detection."""
    header = hdu.header
    if str(header.get("XTENSION", "")).strip().upper() not in ("BINTABLE", "TABLE"):
        return []
    return [str(header.get(f"TTYPE{i}", "")).strip().upper() for i in range(1, int(header.get("TFIELDS", 0)) + 1)]


def _layout(hdul) -> str:
    """A one-line summary of the HDUs, for error messages."""
    parts = []
    for index, hdu in enumerate(hdul):
        shape = _image_shape(hdu)
        what = f"image {shape}" if shape else ("table" if _table_columns(hdu) else "no data")
        parts.append(f"HDU{index} {what}")
    return ", ".join(parts)


def _require(detect: Callable, hdul, name: str, expected: str) -> None:
    """FileFormatError unless *detect* recognises the layout (a forced ``format=`` on the wrong file)."""
    try:
        recognised = detect(hdul)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        recognised = False
    if not recognised:
        _check_gzip_complete(hdul, name)  # a cut-off .gz file opens silently with fewer HDUs
        raise FileFormatError(f"{name}: not {expected}; the file has {len(hdul)} HDUs ({_layout(hdul)})")


def _check_gzip_complete(hdul, name: str) -> None:
    """FileFormatError if *hdul* was read from a gzip file whose stream ends early."""
    info = _fileinfo(hdul, 0)
    filename = str(getattr(info.get("file"), "name", "")) if info else ""
    if getattr(info.get("file"), "compression", None) != "gzip" or not Path(filename).is_file():
        return
    try:
        with gzip.open(filename, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (EOFError, OSError) as exc:
        raise FileFormatError(f"{name}: truncated gzip file ({exc}); expected a complete file - "
                              "download it again") from exc


def _fileinfo(hdul, index: int) -> dict | None:
    """Where HDU *index* lies in its file (None for an HDUList built in memory).

    The HDU's own ``fileinfo`` is used: ``HDUList.fileinfo`` re-serialises every header.
    """
    return hdul[index].fileinfo() if len(hdul) else None


def _check_complete(hdul, name: str) -> None:
    """FileFormatError if the file on disk ends before its last HDU does (a cut-off download)."""
    info = _fileinfo(hdul, len(hdul) - 1)
    if not info:
        return  # built in memory: nothing to be truncated
    size = getattr(info.get("file"), "size", 0)
    if getattr(info.get("file"), "compression", None) or not size:
        return  # gzip: astropy reports no uncompressed size; truncated data fails in hdu_data
    end = info["datLoc"] + info["datSpan"]
    if end > size:
        raise FileFormatError(f"{name}: truncated FITS file ({size} bytes, but HDU{len(hdul) - 1} ends at byte "
                              f"{end}); expected a complete file - download it again")


def _check_shapes(name: str, **arrays) -> None:
    shapes = {key: np.shape(value) for key, value in arrays.items()}
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{key} {shape}" for key, shape in shapes.items())
        raise ShapeError(f"{name}: {listed}; expected the same shape in every HDU")


def _check_errors(error: np.ndarray, name: str) -> None:
    negative = np.isfinite(error) & (error < 0)
    if negative.any():
        raise SpectrumError(f"{name}: {int(negative.sum())} negative values in the error HDU (HDU2); "
                            "expected uncertainties >= 0")


def _bad_pixels(flux: np.ndarray, error: np.ndarray | None, bitmask=None, bad_bits=DEFAULT_BAD_BITS) -> np.ndarray:
    """Bad pixels: non-finite or zero flux, zero/non-finite/sentinel errors, flagged bits."""
    bad = ~np.isfinite(flux) | (flux == 0)
    if error is not None:
        bad |= ~np.isfinite(error) | (error <= 0) | (error >= SENTINEL_ERROR)
    if bitmask is not None:
        bad |= bad_pixel_mask(bitmask, bad_bits)
    return bad


def _clean_error(error: np.ndarray) -> np.ndarray:
    """Sentinel errors (1e10) become inf: the Spectra convention for "no information"."""
    return np.where(np.asarray(error) >= SENTINEL_ERROR, np.inf, error)


def _apogee_grid(hdul, name: str, n_pixels: int) -> np.ndarray:
    """The 8575-pixel grid, after checking the pixel count and the header's log-linear solution."""
    if n_pixels != APOGEE_N_PIXELS:
        raise ShapeError(f"{name}: {n_pixels} pixels per spectrum; expected the {APOGEE_N_PIXELS}-pixel "
                         "APOGEE grid")
    header = next((h.header for h in (hdul[1], hdul[0]) if "CRVAL1" in h.header), None)
    if header is None:
        return apogee_wavelength()  # no solution written: the format's grid is the only one
    start, step = float(header["CRVAL1"]), float(header.get("CDELT1", np.nan))
    start += step * (1 - float(header.get("CRPIX1", 1)))
    if not (abs(start - APOGEE_LOG_START) < 1e-7 and abs(step - APOGEE_LOG_STEP) < 1e-11):
        raise FileFormatError(f"{name}: wavelength solution log10(lambda) = {start} + {step} i is not the APOGEE "
                              f"grid; expected {APOGEE_LOG_START} + {APOGEE_LOG_STEP} i")
    return apogee_wavelength()


def _named(name: str, function: Callable, *args, **kwargs):
    """Call *function*; a LabelExplorerError it raises gets the file name in front (if it lacks it)."""
    try:
        return function(*args, **kwargs)
    except LabelExplorerError as exc:
        if name in str(exc):
            raise
        raise type(exc)(f"{name}: {exc}") from exc


def _bad_bit_list(bad_bits) -> list:
    return [bad_bits] if isinstance(bad_bits, (str, int)) else list(bad_bits)


def _star_info(header, name: str, release: str, n_rows: int) -> dict:
    """Per-star columns from a primary header, repeated for every row of the file."""
    values = {
        "APOGEE_ID": _apogee_id(header, name), "RA": _header_float(header, "RA"),
        "DEC": _header_float(header, "DEC"), "TELESCOPE": _header_text(header, "TELESCOP"),
        "FIELD": _header_text(header, "FIELD"), "J": _header_float(header, "J"),
        "H": _header_float(header, "H"), "K": _header_float(header, "K"),
        "file": Path(name).name, "release": release,
    }
    return {key: np.repeat(np.asarray(value), n_rows) for key, value in values.items()}


def _apogee_id(header, name: str) -> str:
    """OBJID/OBJ/APOGEE_ID from the header, else a 2MASS-style ID in the file name, else its stem."""
    for key in ("OBJID", "OBJ", "APOGEE_ID"):
        if _header_text(header, key):
            return _header_text(header, key)
    filename = Path(name).name
    found = re.search(r"2M\d{8}[+-]\d{7}", filename)
    return found.group(0) if found else re.sub(r"\.fits(\.gz)?$", "", filename, flags=re.IGNORECASE)


def _native(values: np.ndarray) -> np.ndarray:
    """The same values in native byte order (FITS is big-endian; pandas and torch want native)."""
    return values.astype(values.dtype.newbyteorder("="))


# ---------------------------------------------------------------------------- format detection
def _is_apstar(hdul) -> bool:
    """apStar: HDU1-3 images of one shape (1 or >= 4 rows), HDU3 integer, an APOGEE header."""
    if len(hdul) < 4:
        return False
    shapes = {_image_shape(hdul[index]) for index in (1, 2, 3)}
    shape = shapes.pop() if len(shapes) == 1 else None
    if not shape or len(shape) > 2 or (len(shape) == 2 and shape[0] == 3):
        return False
    if not _is_integer_image(hdul[3]) or _is_integer_image(hdul[1]):
        return False
    return "NVISITS" in hdul[0].header or str(hdul[1].header.get("CTYPE1", "")).upper() == "LOG-LINEAR"


def _is_aspcapstar(hdul) -> bool:
    """aspcapStar: HDU1-3 float 1-D images of one length, HDU4 a table of ASPCAP results."""
    if len(hdul) < 5:
        return False
    shapes = {_image_shape(hdul[index]) for index in (1, 2, 3)}
    if len(shapes) != 1 or len(next(iter(shapes)) or ()) != 1:
        return False
    if any(_is_integer_image(hdul[index]) for index in (1, 2, 3)):
        return False
    return bool({"PARAM", "FPARAM"} & set(_table_columns(hdul[4])))


def _is_apvisit(hdul) -> bool:
    """apVisit: HDU1-4 images of shape (3 chips, n), HDU3 integer, HDU4 float wavelengths."""
    if len(hdul) < 5 or "NVISITS" in hdul[0].header:
        return False
    shapes = {_image_shape(hdul[index]) for index in (1, 2, 3, 4)}
    shape = shapes.pop() if len(shapes) == 1 else None
    if not shape or len(shape) != 2 or shape[0] != 3:
        return False
    return _is_integer_image(hdul[3]) and not _is_integer_image(hdul[4])


def _is_allstar(hdul) -> bool:
    """allStar: HDU1 a table with APOGEE_ID and ASPCAP/reduction columns."""
    if len(hdul) < 2:
        return False
    columns = set(_table_columns(hdul[1]))
    return "APOGEE_ID" in columns and bool({"TEFF", "PARAM", "FPARAM", "ASPCAPFLAG", "SNR"} & columns)


# ---------------------------------------------------------------------------- apStar
def _apstar_rows(rows: str, nvisits: int) -> list[tuple[int, str, int]]:
    """(row index, kind, visit number) for the *rows* option."""
    if rows not in APSTAR_ROWS:
        raise UnknownNameError(f"rows={rows!r} is not a choice; expected one of {', '.join(APSTAR_ROWS)}"
                               f"{did_you_mean(rows, APSTAR_ROWS)}")
    if nvisits == 1:  # the only row is the visit and both combinations
        return [(0, "visit", 1)] if rows == "visits" else [(0, "global" if rows == "global" else "combined", 0)]
    visits = [(1 + k, "visit", k) for k in range(1, nvisits + 1)]
    chosen = {"combined": [(0, "combined", 0)], "global": [(1, "global", 0)], "visits": visits,
              "all": [(0, "combined", 0), (1, "global", 0)] + visits}
    return chosen[rows]


def _nvisits(header, n_rows: int, name: str) -> int:
    if "NVISITS" not in header:
        if n_rows == 2:
            raise FileFormatError(f"{name}: 2 rows and no NVISITS keyword; expected 1 row (one visit) or "
                                  "NVISITS+2 rows")
        return 1 if n_rows == 1 else n_rows - 2
    nvisits = _header_int(header, "NVISITS")
    expected = 1 if nvisits == 1 else nvisits + 2
    if nvisits < 1 or n_rows != expected:
        raise FileFormatError(f"{name}: NVISITS={nvisits} but the spectra have {n_rows} rows; expected "
                              f"{expected} (1 for a single visit, else NVISITS+2)")
    return nvisits


def _apstar_row_info(header, picks, nvisits: int) -> dict:
    """Per-row columns: SNR, flags and velocity of the combination or of each visit."""
    def pick(combined_key: str, visit_key: str, read):
        return [read(header, combined_key if visit == 0 else f"{visit_key}{visit}") for _, _, visit in picks]

    snr = pick("SNR", "SNRVIS", _header_float)
    if len(picks) == 1 and picks[0][1] == "visit" and np.isnan(snr[0]):
        snr = [_header_float(header, "SNR")]  # single-visit file without SNRVIS1
    return {"snr": np.array(snr), "VISIT": np.array([visit for _, _, visit in picks]),
            "ROW": np.array([kind for _, kind, _ in picks]),
            "STARFLAG": np.array(pick("STARFLAG", "FLAG", _header_int)),
            "VHELIO": np.array(pick("VHELIO", "VHELIO", _header_float)),
            "NVISITS": np.full(len(picks), nvisits)}


@register_reader("apstar", kind="spectra", detect=_is_apstar,
                 description="APOGEE apStar file (combined and visit spectra, 8575 px, bitmask)")
def read_apstar(hdul, name: str, *, rows: str = "combined", bad_bits: Iterable[int | str] = DEFAULT_BAD_BITS,
                allow_empty: bool = False) -> Spectra:
    """Read an APOGEE apStar file into a :class:`~labelexplorer.spectra.Spectra`.

    Usually called through :func:`labelexplorer.read`, which opens the file (path, file
    object or HDUList) and stacks lists of files.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The opened file.
    name : str
        The file name, for messages and ``meta["source"]``.
    rows : {"combined", "global", "visits", "all"}
        ``"combined"``: the pixel-weighted combination (row 0); ``"global"``: the globally
        weighted one (row 1); ``"visits"``: every visit (ids ``<APOGEE_ID>/visit<k>``);
        ``"all"``: all of them (``<APOGEE_ID>``, ``<APOGEE_ID>/global``, visits). A
        single-visit file has one row, returned once (as visit 1 for ``"visits"``).
    bad_bits : iterable of int or str
        ``APOGEE_PIXMASK`` bits that make a pixel bad (default
        :data:`~labelexplorer.preprocess.bitmask.DEFAULT_BAD_BITS`). Each spectrum uses its
        own bitmask row: the OR of the visits for row 0, the AND for row 1.
    allow_empty : bool
        Accept spectra without a usable pixel instead of raising.

    Returns
    -------
    Spectra
        On the 8575-pixel grid. Zero flux, zero/non-finite errors and the 1e10 error
        sentinel (error set to inf) are masked besides *bad_bits*. ``info``: ``snr``
        (header SNR, SNRVIS<k> for visits), VISIT (0 for combinations), ROW, NVISITS,
        STARFLAG, VHELIO, APOGEE_ID, RA, DEC, TELESCOPE, FIELD, J, H, K, ``file``,
        ``release`` and ``pixel_bitmask`` (the int bitmask rows, shape like flux, so it
        follows selections). ``meta``: survey, release, source, rows, bad_bits, flux_unit,
        header (primary-header keywords).

    Raises
    ------
    FileFormatError
        Not an apStar layout, truncated file, or rows that disagree with NVISITS.
    ShapeError
        Not 8575 pixels, or HDUs of different shapes.
    SpectrumError
        Negative errors, or (unless *allow_empty*) a spectrum with no usable pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> import labelexplorer as le
    >>> ones = np.ones((4, 8575), np.float32)      # NVISITS=2: combined, global, visit 1, visit 2
    >>> primary = fits.PrimaryHDU()
    >>> primary.header.update(OBJID="2M00000000+0000000", NVISITS=2, SNR=50.0, SNRVIS1=35.0, SNRVIS2=36.0)
    >>> bitmask = np.zeros((4, 8575), np.int16)
    >>> bitmask[2, :10] = 1                          # BADPIX in visit 1
    >>> hdul = fits.HDUList([primary, fits.ImageHDU(100 * ones), fits.ImageHDU(ones),
    ...                      fits.ImageHDU(bitmask), fits.ImageHDU(ones)])
    >>> spec = le.read(hdul, rows="visits")
    >>> spec.ids.tolist(), spec.info["snr"].tolist(), spec.mask.sum(axis=1).tolist()
    (['2M00000000+0000000/visit1', '2M00000000+0000000/visit2'], [35.0, 36.0], [10, 0])
    """
    _check_complete(hdul, name)
    _require(_is_apstar, hdul, name, "an apStar file: expected HDU1 flux, HDU2 error and HDU3 integer pixel "
                                     "bitmask, each (NVISITS+2, 8575) or (8575,), and an NVISITS keyword")
    header = _header_dict(hdul[0].header)
    flux = np.atleast_2d(hdu_data(hdul, 1, name, what="flux"))
    error = np.atleast_2d(hdu_data(hdul, 2, name, what="flux error"))
    bitmask = np.atleast_2d(hdu_data(hdul, 3, name, what="pixel bitmask"))
    _check_shapes(name, flux=flux, error=error, bitmask=bitmask)
    wavelength = _apogee_grid(hdul, name, flux.shape[1])
    nvisits = _nvisits(header, flux.shape[0], name)
    picks = _named(name, _apstar_rows, rows, nvisits)
    index = [row for row, _, _ in picks]
    flux, error, bitmask = flux[index], error[index], _native(bitmask[index])
    _check_errors(error, name)
    apogee_id = _apogee_id(header, name)
    suffix = {"combined": "", "global": "/global", "visit": "/visit"}
    ids = [f"{apogee_id}{suffix[kind]}{visit or ''}" for _, kind, visit in picks]
    release = _guess_release(name)
    info = _star_info(header, name, release, len(picks)) | _apstar_row_info(header, picks, nvisits)
    meta = dict(survey="APOGEE", format="apstar", release=release, source=name, rows=rows,
                bad_bits=_bad_bit_list(bad_bits), flux_unit=_header_text(hdul[1].header, "BUNIT"),
                header=header)
    info["pixel_bitmask"] = bitmask
    mask = _named(name, _bad_pixels, flux, error, bitmask, meta["bad_bits"])
    return _named(name, Spectra, flux, wavelength, error=_clean_error(error), mask=mask, ids=ids, info=info,
                  meta=meta, allow_empty=allow_empty)


# ---------------------------------------------------------------------------- per-element arrays
def _symbols(hdul, name: str) -> dict[str, np.ndarray]:
    """ELEM_SYMBOL / ELEMTOH from a symbol table HDU (DR13+ allStar HDU3), if the file has one."""
    for index in range(2, len(hdul)):
        columns = _table_columns(hdul[index])
        if "ELEM_SYMBOL" in columns:
            data = hdu_data(hdul, index, name, what="element symbol table")
            if len(data):
                return {key: np.atleast_1d(data[key][0]) for key in ("ELEM_SYMBOL", "ELEMTOH") if key in columns}
    return {}


def _element_order(width: int, release: str, symbols: dict) -> tuple[tuple[str, ...], np.ndarray] | None:
    """Element symbols of a per-element array and which entries are [X/H] (else [X/M])."""
    if "ELEM_SYMBOL" in symbols and len(symbols["ELEM_SYMBOL"]) == width:
        names = tuple(str(s).strip() for s in symbols["ELEM_SYMBOL"])
        to_h = np.asarray(symbols.get("ELEMTOH", np.ones(width)), dtype=bool)
        return names, to_h
    names = _ELEMENT_ORDER.get((release, width))
    if names is None:
        return None
    to_h = np.array(_DR12_ELEM_TO_H) if names == _DR12_ELEMENTS else np.ones(width, dtype=bool)
    return names, to_h


def _element_labels(arrays: dict[str, np.ndarray], release: str, symbols: dict) -> tuple[dict, str]:
    """``<X>_H`` and ``<X>_H_ERR`` columns from X_H (DR13+) or ELEM (DR12) arrays, and a note."""
    source = "X_H" if "X_H" in arrays else "ELEM" if "ELEM" in arrays else None
    if source is None:
        return {}, "no per-element arrays"
    values = _missing_to_nan(arrays[source])
    order = _element_order(values.shape[1], release, symbols)
    if order is None:
        return {}, (f"{source} ({values.shape[1]} elements) not exploded: element order of release "
                    f"{release!r} unknown and no ELEM_SYMBOL in the file")
    names, to_h = order
    if source == "ELEM" and not to_h.all():  # DR12 [X/M] entries are relative to the uncalibrated FPARAM [M/H]
        if "FPARAM" not in arrays:
            return {}, "ELEM not exploded: its [X/M] entries need the FPARAM array for [M/H]"
        metals = _missing_to_nan(arrays["FPARAM"][:, _PARAM_INDEX["M_H"]])
        values = values + np.where(to_h, 0.0, metals[:, np.newaxis])
    errors = _error_values(arrays.get(f"{source}_ERR", np.full(values.shape, np.nan)))
    out = {}
    for position, symbol in enumerate(names):
        out[f"{symbol.upper()}_H"] = values[:, position]
        out[f"{symbol.upper()}_H_ERR"] = errors[:, position]
    by_symbols = len(symbols.get("ELEM_SYMBOL", ())) == len(names)
    return out, f"<X>_H from {source} in the {'ELEM_SYMBOL' if by_symbols else release} element order"


def _error_values(values) -> np.ndarray:
    values = _missing_to_nan(values)
    values[values < 0] = np.nan
    return values


def _param_labels(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TEFF, LOGG, M_H, C_M, N_M, ALPHA_M and their errors (sqrt of the PARAM_COV diagonal)."""
    if "PARAM" not in arrays:
        return {}
    params = _missing_to_nan(arrays["PARAM"])
    n_params = params.shape[1]
    covariance = arrays.get("PARAM_COV")
    variances = None
    if covariance is not None and covariance[0].size == n_params * n_params:
        variances = np.diagonal(np.reshape(covariance, (-1, n_params, n_params)), axis1=1, axis2=2)
    out = {}
    for label, position in _PARAM_INDEX.items():
        if position < n_params:
            out[label] = params[:, position]
            if variances is not None:
                variance = _error_values(variances[:, position])  # 0: a parameter held fixed, no error
                out[f"{label}_ERR"] = np.sqrt(np.where(variance > 0, variance, np.nan))
    return out


# ---------------------------------------------------------------------------- aspcapStar
def _aspcap_table(hdul, name: str) -> dict[str, np.ndarray]:
    """The HDU4 results table as a dict of 2-D (rows, values) float arrays and 1-D others."""
    table = hdu_data(hdul, 4, name, what="ASPCAP results table")
    out = {}
    for column in table.columns.names:
        try:
            values = np.asarray(table[column])
        except (ValueError, TypeError, OSError) as exc:
            raise FileFormatError(f"{name}: column {column} of HDU4 is corrupt ({exc}); expected the ASPCAP "
                                  "results table") from exc
        if values.dtype.kind == "f" and values.ndim > 2:
            values = values.reshape(len(values), -1)
        out[column.strip().upper()] = values
    if len(table) != 1:
        raise FileFormatError(f"{name}: HDU4 has {len(table)} rows; expected the results of one star")
    return out


@register_reader("aspcapstar", kind="spectra", detect=_is_aspcapstar,
                 description="APOGEE aspcapStar file (normalised spectrum, ASPCAP model and labels)")
def read_aspcapstar(hdul, name: str, *, what: str = "spectrum", allow_empty: bool = False) -> Spectra:
    """Read an APOGEE aspcapStar file: normalised spectrum, best-fit model and ASPCAP labels.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The opened file.
    name : str
        The file name, for messages and ``meta["source"]``.
    what : {"spectrum", "model"}
        Return the observed normalised spectrum (default) or the ASPCAP best-fit model as
        flux (without errors).
    allow_empty : bool
        Accept a spectrum without a usable pixel instead of raising.

    Returns
    -------
    Spectra
        One spectrum on the 8575-pixel grid; zero flux (chip gaps, rejected pixels) and
        zero errors are masked. ``info``: TEFF, LOGG, M_H, C_M, N_M, ALPHA_M (+ ``_ERR``
        from PARAM_COV) from the calibrated PARAM array, ``<X>_H``/``<X>_H_ERR`` from the
        per-element arrays where the release's element order is known, ASPCAPFLAG, ``snr``,
        APOGEE_ID, RA, DEC, NVISITS, ``file``, ``release``, ``model_flux`` (the best-fit
        model, shape like flux); -9999 is NaN. ``meta``: survey, release, source, what, header.

    Raises
    ------
    FileFormatError
        Not an aspcapStar layout, or a truncated file.
    ShapeError
        Not 8575 pixels, or HDUs of different shapes.
    SpectrumError
        Negative errors, or (unless *allow_empty*) no usable pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> import labelexplorer as le
    >>> ones = np.ones(8575, np.float32)
    >>> table = fits.BinTableHDU.from_columns([
    ...     fits.Column("APOGEE_ID", "18A", array=["2M00000000+0000000"]),
    ...     fits.Column("PARAM", "9E", array=[[4800, 2.5, 0.2, -0.3, 0, 0, 0.1, 0.5, 0]]),
    ...     fits.Column("ASPCAPFLAG", "J", array=[0])])
    >>> hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(ones), fits.ImageHDU(ones / 100),
    ...                      fits.ImageHDU(0.98 * ones), table])
    >>> spec = le.read(hdul)
    >>> [round(float(spec.info[label][0]), 2) for label in ("TEFF", "LOGG", "M_H", "ALPHA_M")]
    [4800.0, 2.5, -0.3, 0.1]
    >>> model = le.read(hdul, what="model")
    >>> round(float(model.flux[0, 0]), 2), model.has_errors, spec.info["model_flux"].shape
    (0.98, False, (1, 8575))
    """
    if what not in ("spectrum", "model"):
        raise UnknownNameError(f"{name}: what={what!r} is not a choice; expected 'spectrum' or 'model'"
                               f"{did_you_mean(what, ('spectrum', 'model'))}")
    _check_complete(hdul, name)
    _require(_is_aspcapstar, hdul, name, "an aspcapStar file: expected HDU1 normalised flux, HDU2 error, HDU3 "
                                         "model (8575 px each) and HDU4 a table with PARAM")
    flux = np.atleast_2d(hdu_data(hdul, 1, name, what="normalised flux"))
    error = np.atleast_2d(hdu_data(hdul, 2, name, what="flux error"))
    model = np.atleast_2d(hdu_data(hdul, 3, name, what="best-fit model")).astype(np.float32)
    _check_shapes(name, flux=flux, error=error, model=model)
    wavelength = _apogee_grid(hdul, name, flux.shape[1])
    _check_errors(error, name)
    table = _aspcap_table(hdul, name)
    header = _header_dict(hdul[0].header)
    release = _guess_release(name, *(np.atleast_1d(table.get("FILE", ""))))
    info = _star_info(header, name, release, 1)
    if "APOGEE_ID" in table and str(table["APOGEE_ID"][0]).strip():
        info["APOGEE_ID"] = np.array([str(table["APOGEE_ID"][0]).strip()])
    elements, element_note = _element_labels(table, release, {})
    info |= _param_labels(table) | elements
    info |= {"ASPCAPFLAG": np.asarray(table.get("ASPCAPFLAG", [-1]), dtype=np.int64),
             "NVISITS": np.array([_header_int(header, "NVISITS")]), "snr": np.array([_header_float(header, "SNR")])}
    meta = dict(survey="APOGEE", format="aspcapstar", release=release, source=name, what=what,
                header=header, elements=element_note)
    info["model_flux"] = model
    if what == "model":
        return _named(name, Spectra, model, wavelength, mask=_bad_pixels(model, None), ids=info["APOGEE_ID"],
                      info=info, meta=meta, allow_empty=allow_empty)
    return _named(name, Spectra, flux, wavelength, error=_clean_error(error), mask=_bad_pixels(flux, error),
                  ids=info["APOGEE_ID"], info=info, meta=meta, allow_empty=allow_empty)


# ---------------------------------------------------------------------------- apVisit
@register_reader("apvisit", kind="spectra", detect=_is_apvisit,
                 description="APOGEE apVisit file (one visit, 3 chips x 4096 px, own wavelengths)")
def read_apvisit(hdul, name: str, *, bad_bits: Iterable[int | str] = DEFAULT_BAD_BITS,
                 allow_empty: bool = False) -> Spectra:
    """Read an APOGEE apVisit file: one visit on its own wavelength solution.

    The three chips are joined and sorted by wavelength (files store them decreasing), so
    the spectrum has 3 x 4096 = 12288 pixels on a grid of its own; visits of different
    stars or nights keep their own grids when stacked (2-D ``wavelength``).

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The opened file.
    name : str
        The file name, for messages and ``meta["source"]``.
    bad_bits : iterable of int or str
        ``APOGEE_PIXMASK`` bits that make a pixel bad (default
        :data:`~labelexplorer.preprocess.bitmask.DEFAULT_BAD_BITS`).
    allow_empty : bool
        Accept a spectrum without a usable pixel instead of raising.

    Returns
    -------
    Spectra
        One spectrum, id ``<APOGEE_ID>/<plate>-<mjd>-<fiber>``. ``info``: ``snr``,
        APOGEE_ID, PLATE, MJD, FIBERID, VHELIO, STARFLAG, RA, DEC, TELESCOPE, FIELD, J, H, K,
        ``file``, ``release``, ``pixel_bitmask`` (sorted like flux). ``meta``: survey,
        release, source, flux_unit, header.

    Raises
    ------
    FileFormatError
        Not an apVisit layout, a truncated file, or wavelengths that are not H-band
        Angstrom or that overlap between chips.
    ShapeError
        HDUs of different shapes.
    SpectrumError
        Negative errors, or (unless *allow_empty*) no usable pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> import labelexplorer as le
    >>> wave = np.stack([np.linspace(16950, 16470, 4096), np.linspace(16430, 15860, 4096),
    ...                  np.linspace(15810, 15140, 4096)])
    >>> ones = np.ones((3, 4096), np.float32)
    >>> primary = fits.PrimaryHDU()
    >>> primary.header.update(OBJID="2M00000000+0000000", PLATE="5095", MJD5=55844, FIBERID=128, SNR=45.0)
    >>> hdul = fits.HDUList([primary, fits.ImageHDU(100 * ones), fits.ImageHDU(ones),
    ...                      fits.ImageHDU(np.zeros((3, 4096), np.int16)), fits.ImageHDU(wave)])
    >>> spec = le.read(hdul)
    >>> spec.n_pixels, float(spec.wavelength[0]), spec.ids.tolist()
    (12288, 15140.0, ['2M00000000+0000000/5095-55844-128'])
    """
    _check_complete(hdul, name)
    _require(_is_apvisit, hdul, name, "an apVisit file: expected HDU1 flux, HDU2 error, HDU3 integer bitmask "
                                      "and HDU4 wavelength, each (3 chips, 4096)")
    parts = {what: hdu_data(hdul, index, name, what=what)
             for index, what in enumerate(("flux", "flux error", "pixel bitmask", "wavelength"), start=1)}
    _check_shapes(name, **{key.replace(" ", "_"): value for key, value in parts.items()})
    wave = np.asarray(parts["wavelength"], dtype=np.float64).ravel()
    order = np.argsort(wave, kind="stable")
    wavelength = wave[order]
    if not (np.all(np.isfinite(wavelength)) and np.all(np.diff(wavelength) > 0)
            and 14000 < wavelength[0] and wavelength[-1] < 18000):
        raise FileFormatError(f"{name}: the wavelengths of HDU4 are not finite, distinct H-band values; expected "
                              "vacuum Angstrom between 14000 and 18000 with chips that do not overlap")
    flux, error = (np.asarray(parts[key]).ravel()[order][np.newaxis] for key in ("flux", "flux error"))
    bitmask = _native(np.asarray(parts["pixel bitmask"]).ravel()[order][np.newaxis])
    _check_errors(error, name)
    header = _header_dict(hdul[0].header)
    release = _guess_release(name)
    info = _star_info(header, name, release, 1)
    visit = {"PLATE": _header_text(header, "PLATE"), "MJD": _header_int(header, "MJD5"),
             "FIBERID": _header_int(header, "FIBERID"), "VHELIO": _header_float(header, "VHELIO"),
             "STARFLAG": _header_int(header, "STARFLAG"), "snr": _header_float(header, "SNR")}
    info |= {key: np.array([value]) for key, value in visit.items()}
    apogee_id = info["APOGEE_ID"][0]
    spectrum_id = f"{apogee_id}/{visit['PLATE']}-{visit['MJD']}-{visit['FIBERID']}" if visit["PLATE"] else apogee_id
    meta = dict(survey="APOGEE", format="apvisit", release=release, source=name, bad_bits=_bad_bit_list(bad_bits),
                flux_unit=_header_text(hdul[1].header, "BUNIT"), header=header)
    info["pixel_bitmask"] = bitmask
    mask = _named(name, _bad_pixels, flux, error, bitmask, meta["bad_bits"])
    return _named(name, Spectra, flux, wavelength, error=_clean_error(error), mask=mask, ids=[spectrum_id],
                  info=info, meta=meta, allow_empty=allow_empty)


# ---------------------------------------------------------------------------- allStar
def _allstar_columns(table, name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Scalar columns (native byte order, strings stripped) and multi-value columns, by name."""
    scalars, arrays = {}, {}
    for column in table.columns.names:
        try:
            values = np.asarray(table[column])
        except (ValueError, TypeError, OSError) as exc:
            raise FileFormatError(f"{name}: column {column} of HDU1 is corrupt ({exc}); expected an allStar "
                                  "table") from exc
        if values.ndim > 1:
            arrays[column.upper()] = values.reshape(len(values), -1)
        elif values.dtype.kind in "SU":
            scalars[column] = np.char.strip(values.astype(str))
        else:
            scalars[column] = _native(values)
    return scalars, arrays


def _missing_values_to_nan(columns: dict[str, np.ndarray]) -> None:
    """-9999 and friends (<= -9000) become NaN in float columns; negative ``*_ERR`` too."""
    for key, values in columns.items():
        if values.dtype.kind == "f":
            values = np.where(values <= -9000, np.nan, values)
            if key.upper().endswith("_ERR"):
                values = np.where(values < 0, np.nan, values)
            columns[key] = values.astype(columns[key].dtype)


def _derive_abundances(columns: dict[str, np.ndarray]) -> dict[str, str]:
    """Add [X/Fe] from [X/H] (and back) where only one exists; returns {column: formula}."""
    if "FE_H" not in columns:
        return {}
    derived = {}
    for element in (e.upper() for e in ASPCAP_ELEMENTS if e != "Fe"):
        x_h, x_fe = f"{element}_H", f"{element}_FE"
        if x_h in columns and x_fe not in columns:
            columns[x_fe] = columns[x_h] - columns["FE_H"]
            derived[x_fe] = f"{x_h} - FE_H"
        elif x_fe in columns and x_h not in columns:
            columns[x_h] = columns[x_fe] + columns["FE_H"]
            derived[x_h] = f"{x_fe} + FE_H"
    return derived


@register_reader("allstar", kind="labels", detect=_is_allstar,
                 description="APOGEE allStar catalog (DR12-DR17 column conventions) as a pandas DataFrame")
def read_allstar(hdul, name: str):
    """Read an APOGEE allStar catalog into a pandas DataFrame with the column names users know.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The opened file (HDU1 the table).
    name : str
        The file name, for messages and ``df.attrs["source"]``.

    Returns
    -------
    pandas.DataFrame
        One row per table row. Every scalar column is kept (strings stripped, -9999 and
        -9999.99 as NaN, negative ``*_ERR`` as NaN). Canonical label columns are added
        where the file lacks them: DR12 ``PARAM_M_H``/``PARAM_ALPHA_M`` become ``M_H``/
        ``ALPHA_M``; TEFF, LOGG, M_H, ALPHA_M from the PARAM array; ``<X>_H`` from the
        per-element arrays (DR12 ELEM, DR13/DR14 X_H); ``<X>_FE = <X>_H - FE_H`` and back.
        Multi-value columns (PARAM, PARAM_COV, ELEM...) are not kept. ``df.attrs`` holds
        survey, format, release, source, renamed, derived, elements and dropped_columns.

    Raises
    ------
    FileFormatError
        Not an allStar layout, or a truncated/corrupt table.

    Examples
    --------
    >>> from astropy.io import fits
    >>> import labelexplorer as le
    >>> table = fits.BinTableHDU.from_columns([
    ...     fits.Column("APOGEE_ID", "18A", array=["2M1", "2M2"]),
    ...     fits.Column("TEFF", "E", array=[4800.0, -9999.0]),
    ...     fits.Column("FE_H", "E", array=[-0.2, -9999.0]),
    ...     fits.Column("MG_FE", "E", array=[0.25, -9999.0])])
    >>> df = le.read(fits.HDUList([fits.PrimaryHDU(), table]))
    >>> df["TEFF"].isna().tolist(), round(float(df["MG_H"][0]), 2), df.attrs["derived"]
    ([False, True], 0.05, {'MG_H': 'MG_FE + FE_H'})
    """
    import pandas as pd

    _check_complete(hdul, name)
    _require(_is_allstar, hdul, name, "an allStar catalog: expected HDU1 a table with APOGEE_ID and "
                                      "TEFF/PARAM/ASPCAPFLAG/SNR columns")
    table = hdu_data(hdul, 1, name, what="allStar table")
    columns, arrays = _allstar_columns(table, name)
    versions = [columns[key][0] for key in ("RESULTS_VERSION", "ASPCAP_VERSION", "FILE")
                if key in columns and len(columns[key])]
    release = _guess_release(name, *versions)
    renamed = {}
    for old, new in _ALLSTAR_RENAMES.items():
        for suffix in ("", "_ERR", "_FLAG"):
            if old + suffix in columns and new + suffix not in columns:
                columns[new + suffix] = columns.pop(old + suffix)
                renamed[old + suffix] = new + suffix
    _missing_values_to_nan(columns)
    elements, element_note = _element_labels(arrays, release, _symbols(hdul, name))
    added = {key: values for key, values in (_param_labels(arrays) | elements).items() if key not in columns}
    columns |= {key: values.astype(np.float32) for key, values in added.items()}
    derived = {key: "from the PARAM/element arrays" for key in added} | _derive_abundances(columns)
    frame = pd.DataFrame(columns)
    frame.attrs = dict(survey="APOGEE", format="allstar", release=release, source=name, renamed=renamed,
                       derived=derived, elements=element_note, dropped_columns=sorted(arrays))
    return frame
