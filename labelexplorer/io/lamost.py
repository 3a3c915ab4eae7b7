"""Reader for LAMOST low-resolution spectra (DR1 to DR13 file layouts).

Three layouts exist in the public releases (facts read from the real files):

``DR1`` primary array
    ``(5, n)`` float32 rows *Flux, Inverse, Subcontinuum, Andmask, Ormask* (``EXTEN0``
    names them). The third row is the pipeline's continuum-normalised flux, **not** a
    wavelength array: the grid comes from the header, ``log10(lambda) = COEFF0 + COEFF1 i``.
``DR2``-``DR8`` primary array
    ``(5, n)`` rows *Flux, Inverse, Wavelength, Andmask, Ormask*.
``DR9`` and later
    An empty primary HDU plus a one-row binary table ``COADD`` with the columns
    ``FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK, NORMALIZATION``.

Every layout uses the same log-linear grid (``COEFF0 = 3.5682``, ``COEFF1 = 1e-4``) but
files hold 3904 to 3909 pixels. So that files of any release can be stacked, each
spectrum is placed on one fixed frame of :data:`LAMOST_FRAME_PIXELS` pixels starting at
``COEFF0 = 3.5682`` (pixels a file does not cover are NaN and masked); a file whose grid
is not on that frame keeps its own grid. Wavelengths are vacuum in every release read so
far (``VACUUM = T``); a file that declares air wavelengths is converted to vacuum.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..exceptions import FileFormatError
from ..spectra import Spectra
from .registry import hdu_data, register_reader

__all__ = ["read_lamost", "is_lamost", "air_to_vacuum", "lamost_wavelength", "LAMOST_LOG_START",
           "LAMOST_LOG_STEP", "LAMOST_FRAME_PIXELS"]

LAMOST_LOG_START = 3.5682
"""log10 of the first wavelength (Angstrom) of the LAMOST low-resolution grid."""
LAMOST_LOG_STEP = 1e-4
"""log10 wavelength step per pixel."""
LAMOST_FRAME_PIXELS = 3909
"""Pixels of the shared frame: 3700-9099 Angstrom, the longest grid in the public releases."""

_MISSING_BELOW = -9000.0  # LAMOST writes -9999 for "no value"
_SNR_KEYS = {"SNRU": ("SNRU", "SN_U"), "SNRG": ("SNRG", "SN_G"), "SNRR": ("SNRR", "SN_R"),
             "SNRI": ("SNRI", "SN_I"), "SNRZ": ("SNRZ", "SN_Z")}
_NUMBER_KEYS = ("RA", "DEC", "Z", "Z_ERR")
_LABEL_KEYS = {"TEFF": "TEFF", "TEFF_ERR": "TEFF_ERR", "LOGG": "LOGG", "LOGG_ERR": "LOGG_ERR",
               "FEH": "FE_H", "FEH_ERR": "FE_H_ERR", "RV": "RV", "RV_ERR": "RV_ERR"}
_TEXT_KEYS = ("CLASS", "SUBCLASS", "DESIG")
_COADD_COLUMNS = ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK")


def lamost_wavelength(n_pixels: int = LAMOST_FRAME_PIXELS, log_start: float = LAMOST_LOG_START,
                      log_step: float = LAMOST_LOG_STEP) -> np.ndarray:
    """Vacuum wavelengths (Angstrom) of a log-linear LAMOST grid, by default the shared frame.

    Examples
    --------
    >>> wl = lamost_wavelength()
    >>> wl.size, round(float(wl[0]), 2), round(float(wl[-1]), 1)
    (3909, 3699.99, 9099.1)
    """
    return 10.0 ** (log_start + log_step * np.arange(n_pixels))


def air_to_vacuum(wavelength) -> np.ndarray:
    """Convert air wavelengths (Angstrom) to vacuum.

    Uses the inverse of the Morton (2000) air/vacuum relation as fitted by N. Piskunov
    for VALD (``n = 1 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s^2)
    + 1.599740894897e-4 / (38.92568793293 - s^2)``, ``s = 1e4 / lambda_air``), accurate
    to well below a LAMOST pixel over 2000-20000 Angstrom.

    Examples
    --------
    >>> round(float(air_to_vacuum(6562.80)), 2)  # H-alpha
    6564.61
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    s2 = (1e4 / wavelength) ** 2
    n = 1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2) + 1.599740894897e-4 / (38.92568793293 - s2)
    return wavelength * n


# ---------------------------------------------------------------------------- detection
def _primary_rows(header) -> int:
    return int(header.get("NAXIS2", 0)) if int(header.get("NAXIS", 0)) == 2 else 0


def is_lamost(hdul) -> bool:
    """True for a LAMOST low-resolution spectrum file (from its headers only).

    Examples
    --------
    >>> from astropy.io import fits
    >>> hdu = fits.PrimaryHDU(np.zeros((5, 10), np.float32))
    >>> hdu.header["TELESCOP"] = "LAMOST"
    >>> is_lamost(fits.HDUList([hdu])), is_lamost(fits.HDUList([fits.PrimaryHDU()]))
    (True, False)
    """
    header = hdul[0].header
    if not str(header.get("TELESCOP", "")).strip().upper().startswith("LAMOST"):
        return False
    if "COADD" in hdul:
        return "FLUX" in [c.upper() for c in hdul["COADD"].columns.names]
    # a spectrum header without its data (truncated file) is still claimed, so the reader can say so
    return _primary_rows(header) >= 2 or str(header.get("FILENAME", "")).startswith("spec-")


# ---------------------------------------------------------------------------- layouts
def _row_names(header, n_rows: int) -> list[str]:
    """Names of the primary-array rows from EXTEN0 (e.g. 'Flux, Inverse, Wavelength, ...')."""
    names = [n.lower() for n in re.split(r"[,\s]+", str(header.get("EXTEN0", ""))) if n]
    if len(names) >= 2 and names[0].startswith("flux"):
        return names[:n_rows]
    return ["flux", "inverse", "third", "andmask", "ormask"][:n_rows]


def _looks_like_wavelength(row: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(row)) and np.all(np.diff(row) > 0) and 2500 < row[0] < row[-1] < 12000)


def _read_primary(hdul, name: str) -> dict:
    header = hdul[0].header
    data = hdu_data(hdul, 0, name, what="LAMOST primary array (flux, inverse variance, ...)")
    if data.ndim != 2 or data.shape[0] < 2:
        raise FileFormatError(f"{name}: LAMOST primary array has shape {data.shape}; expected (5, n_pixels) "
                              "rows flux, inverse variance, wavelength or subcontinuum, andmask, ormask")
    names = _row_names(header, data.shape[0])
    wavelength = None
    if "wavelength" in names:
        wavelength = data[names.index("wavelength")]
    elif "subcontinuum" not in names and data.shape[0] > 2 and _looks_like_wavelength(data[2]):
        wavelength = data[2]
    andmask = data[names.index("andmask")] if "andmask" in names else None
    layout = "primary array (" + ", ".join(names) + ")"
    return dict(flux=data[0], ivar=data[1], wavelength=wavelength, andmask=andmask, layout=layout)


def _read_coadd(hdul, name: str) -> dict:
    table = hdu_data(hdul, "COADD", name, what="LAMOST COADD table with FLUX, IVAR, WAVELENGTH, ANDMASK")
    columns = [c.upper() for c in table.columns.names]
    missing = [c for c in ("FLUX", "IVAR") if c not in columns]
    if missing or len(table) < 1:
        raise FileFormatError(f"{name}: COADD table lacks {', '.join(missing) or 'rows'}; expected one row with "
                              f"columns {', '.join(_COADD_COLUMNS)}")
    row = {c: np.asarray(table[c][0]) for c in _COADD_COLUMNS if c in columns}
    return dict(flux=row["FLUX"], ivar=row["IVAR"], wavelength=row.get("WAVELENGTH"), andmask=row.get("ANDMASK"),
                layout="COADD binary table (" + ", ".join(table.columns.names) + ")")


def _header_grid(header):
    """(log_start, log_step) of the log-linear grid the header declares, or None."""
    for start_key, step_key in (("COEFF0", "COEFF1"), ("CRVAL1", "CD1_1")):
        if start_key in header and step_key in header:
            return float(header[start_key]), float(header[step_key])
    return None


def _wavelength(parts: dict, header, name: str, n_pixels: int):
    """Float64 wavelengths and the (log_start, log_step) grid they follow, or None if not log-linear."""
    grid = _header_grid(header)
    formula = None if grid is None else 10.0 ** (grid[0] + grid[1] * np.arange(n_pixels))
    stored = parts["wavelength"]
    if stored is None:
        if formula is None:
            raise FileFormatError(f"{name}: no wavelength row/column and no COEFF0/COEFF1 header keywords; "
                                  "expected one of them to define the wavelength grid")
        return formula, grid
    stored = np.asarray(stored, dtype=np.float64)
    if not (np.all(np.isfinite(stored)) and np.all(np.diff(stored) > 0)):
        raise FileFormatError(f"{name}: the wavelength row/column is not finite and increasing; expected Angstroms "
                              "on the LAMOST log-linear grid")
    if formula is not None and np.all(stored > 0):
        # the stored column is float32; when it is the header's grid, use the exact float64 values
        offset_in_pixels = np.abs(np.log10(stored) - np.log10(formula)) / abs(grid[1])
        if np.max(offset_in_pixels) < 0.01:
            return formula, grid
    return stored, None


def _on_frame(grid, n_pixels: int):
    """First frame pixel of a grid on the shared LAMOST frame, or None if it is not on it."""
    if grid is None or abs(grid[1] - LAMOST_LOG_STEP) > 1e-9:
        return None
    start = (grid[0] - LAMOST_LOG_START) / LAMOST_LOG_STEP
    first = int(round(start))
    if abs(start - first) > 0.01 or first < 0 or first + n_pixels > LAMOST_FRAME_PIXELS:
        return None
    return first


def _pad(values: np.ndarray, first: int, fill) -> np.ndarray:
    out = np.full(LAMOST_FRAME_PIXELS, fill, dtype=np.result_type(values, type(fill)))
    out[first:first + values.size] = values
    return out


# ---------------------------------------------------------------------------- header values
def _number(header, keys) -> float:
    for key in keys:
        if key in header:
            try:
                value = float(header[key])
            except (TypeError, ValueError):
                return np.nan
            return np.nan if value <= _MISSING_BELOW else value
    return np.nan


def _release(header, names_layout: str) -> str:
    version = str(header.get("DATA_V", "")).strip()
    if version:
        return re.sub(r"^LAMOST\s*", "", version, flags=re.IGNORECASE) or version
    return "DR1" if "subcontinuum" in names_layout else "unknown"


def _vacuum(header) -> tuple[bool, str]:
    if "VACUUM" in header:
        return bool(header["VACUUM"]), "VACUUM keyword"
    if "AIRORVAC" in header:
        return str(header["AIRORVAC"]).strip().lower().startswith("vac"), "AIRORVAC keyword"
    return True, "assumed (the LAMOST pipeline writes vacuum wavelengths)"


def _spectrum_id(header, name: str) -> str:
    if "OBSID" in header and str(header["OBSID"]).strip():
        return str(header["OBSID"]).strip()
    filename = str(header.get("FILENAME", "")).strip() or Path(name).name
    return re.sub(r"\.fits(\.gz)?$", "", filename, flags=re.IGNORECASE)


def _info(header, name: str, release: str) -> dict:
    info = {key: np.array([_number(header, aliases)]) for key, aliases in _SNR_KEYS.items()}
    info["snr"] = info["SNRG"].copy()
    info.update({key: np.array([_number(header, (key,))]) for key in _NUMBER_KEYS})
    info.update({key: np.array([str(header.get(key, "")).strip()]) for key in _TEXT_KEYS})
    info.update({label: np.array([_number(header, (key,))]) for key, label in _LABEL_KEYS.items() if key in header})
    info["release"] = np.array([release])
    info["file"] = np.array([Path(name).name])
    return info


# ---------------------------------------------------------------------------- reader
@register_reader("lamost", kind="spectra", detect=is_lamost,
                 description="LAMOST low-resolution spectrum (DR1/DR2-8 primary array, DR9+ COADD table)")
def read_lamost(hdul, name: str, *, mask_bits: int | None = None, frame: bool = True) -> Spectra:
    """Read one LAMOST low-resolution spectrum file into a :class:`~labelexplorer.spectra.Spectra`.

    Usually called through :func:`labelexplorer.read`, which opens the file (path, file
    object or HDUList) and stacks lists of files.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The opened file.
    name : str
        The file name, for messages and ``meta["source"]``.
    mask_bits : int, optional
        ANDMASK bits that mark a pixel bad; default every bit (BADCCD, BADPROFILE,
        NOSKY, BRIGHTSKY, BADCENTER, NODATA). Pixels with inverse variance 0, and pixels
        with flux exactly 0 (how the pipeline pads the red end), are always bad.
    frame : bool
        Place the spectrum on the shared 3909-pixel LAMOST frame (default) so that files
        of different releases stack onto one grid; False keeps the file's own pixels.

    Returns
    -------
    Spectra
        One spectrum; ``ids`` is OBSID (else the file name stem); ``info`` holds SNRU..SNRZ
        (``snr`` = SNRG), RA, DEC, Z, Z_ERR, CLASS, SUBCLASS, DESIG, release, file, and
        TEFF/LOGG/FE_H (and errors, RV) when the header has them (-9999 becomes NaN);
        ``meta`` holds survey, release, source, layout and how the wavelengths were set.

    Raises
    ------
    FileFormatError
        If the file is truncated or its layout is not one of the LAMOST layouts.

    Examples
    --------
    >>> from astropy.io import fits
    >>> n = 3904
    >>> rows = np.stack([np.full(n, 100.0), np.full(n, 0.01), np.ones(n), np.zeros(n), np.zeros(n)])
    >>> hdu = fits.PrimaryHDU(rows.astype(np.float32))
    >>> hdu.header.update(TELESCOP="LAMOST", COEFF0=3.5682, COEFF1=1e-4, VACUUM=True, SN_G=25.0,
    ...                   EXTEN0="Flux Inverse Subcontinuum Andmask Ormask", TEFF=-9999.0)
    >>> spec = read_lamost(fits.HDUList([hdu]), "spec-demo.fits")
    >>> spec.n_pixels, spec.meta["release"], spec.ids.tolist(), float(spec.info["snr"][0])
    (3909, 'DR1', ['spec-demo'], 25.0)
    >>> int(spec.mask.sum()), bool(np.isnan(spec.info["TEFF"][0]))  # 5 frame pixels the file lacks
    (5, True)
    """
    header = hdul[0].header
    if "COADD" not in hdul and _primary_rows(header) == 0:
        raise FileFormatError(f"{name}: neither a COADD table nor a primary array (a truncated file? LAMOST "
                              "medium-resolution files, with COADD_B/COADD_R, are not supported); expected a "
                              "LAMOST low-resolution spectrum")
    parts = _read_coadd(hdul, name) if "COADD" in hdul else _read_primary(hdul, name)
    flux = np.asarray(parts["flux"], dtype=np.float64)
    ivar = np.asarray(parts["ivar"], dtype=np.float64)
    n_pixels = flux.size
    if ivar.size != n_pixels:
        raise FileFormatError(f"{name}: flux has {n_pixels} pixels but inverse variance has {ivar.size}; "
                              "expected equal lengths")
    # the pipeline pads the red end with flux exactly 0 but a non-zero ivar (DR5-DR13 files): no data
    bad = ~np.isfinite(ivar) | (ivar <= 0) | (flux == 0)
    if parts["andmask"] is not None:
        andmask = np.nan_to_num(np.asarray(parts["andmask"], dtype=np.float64)).astype(np.int64)
        bad |= (andmask & (mask_bits if mask_bits is not None else ~0)) != 0
    wavelength, grid = _wavelength(parts, header, name, n_pixels)
    history = []
    first = _on_frame(grid, n_pixels) if frame else None
    if first is not None:
        flux, ivar = _pad(flux, first, np.nan), _pad(ivar, first, 0.0)
        bad = _pad(bad, first, True)
        wavelength = lamost_wavelength()
    vacuum, vacuum_source = _vacuum(header)
    if not vacuum:
        wavelength = air_to_vacuum(wavelength)
        history.append("lamost: air to vacuum wavelengths (Morton 2000 relation, Piskunov inversion)")
    release = _release(header, parts["layout"].lower())
    if first is None:
        grid_note = f"native ({n_pixels} px)"
    else:
        grid_note = (f"LAMOST frame: the file's {n_pixels} px are frame pixels {first}-{first + n_pixels - 1}, "
                     "the rest NaN and masked")
    meta = dict(survey="LAMOST", release=release, source=name, layout=parts["layout"], grid=grid_note,
                air_or_vacuum=f"vacuum ({vacuum_source})" if vacuum else "air in the file, converted to vacuum",
                history=history)
    ivar = np.where(bad, 0.0, ivar)
    return Spectra(flux, wavelength, ivar=ivar, mask=bad, ids=[_spectrum_id(header, name)], meta=meta,
                   info=_info(header, name, release))
